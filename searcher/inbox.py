"""What the FAQ does not cover, and what in it is confusable: the inbox and the audit, from vectors alone.

Dense search always returns something, so an unanswered question does not show as "no results". Neither
does the best score alone tell it apart: a question the FAQ does not cover often scores as well on a nearby
entry as a covered question phrased oddly does. What tells it apart is density: customers ask about a gap
again and again, in many wordings, and those questions are close to one another and all far from every
entry. So a question's *coverage* is its best score averaged with those of the logged questions nearest to
it; a stray question with no close neighbour is noise, never a gap. Questions whose coverage is under the
"not covered" cut are grouped by meaning (average-linkage clusters of their vectors), biggest group first.

The cut is chosen by `calibrate` from the judged questions, all covered by definition: the coverage under
which only NOT_COVERED_PERCENTILE % of them fall. Tuned on StackFAQ with other removed threads than those
benchmarks/inbox.py reports.

No model here: the index embeds and searches, this module only compares vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

# A question's coverage averages its best score with those of its nearest logged questions, at most this many,
# each at least this similar to it (a question with none is a stray: left out of the inbox).
NEIGHBOURS = 5
NEIGHBOUR_SIMILARITY = 0.6
# The "not covered" cut: the coverage under which this share of the judged (covered) questions fall.
NOT_COVERED_PERCENTILE = 5.0
# Questions of one group are on average at least this similar (average linkage over cosine distance 0.5).
GROUP_SIMILARITY = 0.5
MIN_GROUP = 2  # one question alone is noise
# The newest questions the inbox reads: grouping compares every pair (memory grows with the square).
MAX_QUESTIONS = 5_000
SAMPLE_QUESTIONS = 3  # the questions a group shows in a table; JSON lists all
# Entries whose vectors are at least this alike are listed as confusable: a question matching one scores
# about as well on the other.
CONFUSABLE_SIMILARITY = 0.9


SPAN_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def span_seconds(text: str) -> float:
    """A span such as 30m, 12h, 7d or 2w in seconds."""
    number, unit = text[:-1], text[-1:].lower()
    try:
        seconds = float(number) * SPAN_UNITS[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"invalid span {text!r}: a number and one of {', '.join(SPAN_UNITS)}, e.g. 7d") from None
    if not seconds > 0:
        raise ConfigError(f"invalid span {text!r}: it must be more than nothing")
    return seconds


def asked_after(span: str | None) -> float | None:
    """The unix time SPAN (such as 7d) ago, from which questions count; None (all of them) without a span."""
    return None if span is None else time.time() - span_seconds(span)


@dataclass(frozen=True)
class Group:
    """Questions of one meaning that the FAQ does not cover: the nearest entry to their centroid and its
    score, and whether they read as another wording of it ("alternative") or as something new ("new")."""

    queries: list[str]  # most central first
    nearest_id: str | None
    nearest_score: float | None
    suggestion: str

    @property
    def size(self) -> int:
        return len(self.queries)

    def as_json(self) -> dict[str, object]:
        nearest = None if self.nearest_id is None else {"id": self.nearest_id, "score": self.nearest_score}
        return {"size": self.size, "queries": self.queries, "nearest": nearest, "suggestion": self.suggestion}


def coverage(vectors: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Each question's best score averaged with its nearest questions' (see NEIGHBOURS); +inf for a stray.

    VECTORS: unit rows, one per question; BEST: each question's best score on the index (-inf: no hit).
    """
    count = len(vectors)
    result = np.full(count, np.inf)
    for start in range(0, count, 1024):  # bounded memory: a block of rows against all
        similar = vectors[start : start + 1024] @ vectors.T
        for row, scores in enumerate(similar):
            scores[start + row] = -np.inf  # not its own neighbour
            nearest = np.argsort(-scores)[:NEIGHBOURS]
            nearest = nearest[scores[nearest] >= NEIGHBOUR_SIMILARITY]
            if len(nearest):
                result[start + row] = np.mean([best[start + row], *best[nearest]])
    return result


def not_covered_cut(vectors: np.ndarray, best: np.ndarray) -> float | None:
    """The coverage under which NOT_COVERED_PERCENTILE % of these covered (judged) questions fall; None when
    none of them has a close neighbour to be judged by."""
    judged = coverage(vectors, best)
    judged = judged[np.isfinite(judged)]
    return float(np.percentile(judged, NOT_COVERED_PERCENTILE)) if len(judged) else None


def groups(vectors: np.ndarray) -> list[np.ndarray]:
    """Positions of VECTORS grouped by meaning (average linkage, cosine), each group's most central first,
    biggest group first."""
    from scipy.cluster.hierarchy import fcluster, linkage  # here: the command line starts without SciPy

    if len(vectors) < MIN_GROUP:
        return [np.arange(len(vectors))] if len(vectors) else []
    labels = fcluster(linkage(vectors, method="average", metric="cosine"), 1 - GROUP_SIMILARITY, "distance")
    found = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        centrality = vectors[members] @ vectors[members].mean(axis=0)
        found.append(members[np.argsort(-centrality, kind="stable")])
    return sorted(found, key=lambda members: (-len(members), members[0]))


def inbox(
    questions: Sequence[str],
    vectors: np.ndarray,
    best: np.ndarray,
    cut: float,
    nearest: Callable[[np.ndarray], list[tuple[str, float] | None]],
) -> list[Group]:
    """The groups of QUESTIONS (with their VECTORS and BEST scores) whose coverage is under CUT, biggest first.

    NEAREST gives the best entry (id, score) of each of some unit vectors, or None where the index has none.
    A group whose centroid's nearest entry scores at least CUT is suggested as another wording of it.
    """
    uncovered = np.flatnonzero(coverage(vectors, best) < cut)
    found = [uncovered[members] for members in groups(vectors[uncovered])]
    found = [members for members in found if len(members) >= MIN_GROUP]
    centroids = np.array([vectors[members].mean(axis=0) for members in found], dtype=np.float32)
    if len(found):
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    result = []
    for members, entry in zip(found, nearest(centroids) if len(found) else [], strict=True):
        close = entry is not None and entry[1] >= cut
        result.append(
            Group(
                [questions[position] for position in members],
                entry[0] if entry else None,
                entry[1] if entry else None,
                "alternative" if close else "new",
            )
        )
    return result


@dataclass(frozen=True)
class Audit:
    """Entry pairs the model can barely tell apart (ids and their similarity), entries no logged question
    found first, and entries whose own question (heading) does not find them first."""

    confusable: list[tuple[str, str, float]]
    never_matched: list[str]
    not_self_retrieved: list[str]

    def as_json(self) -> dict[str, object]:
        return {
            "confusable": [{"a": a, "b": b, "score": score} for a, b, score in self.confusable],
            "never_matched": self.never_matched,
            "not_self_retrieved": self.not_self_retrieved,
        }


def confusable_pairs(ids: Sequence[str], vectors: np.ndarray, min_similarity: float) -> list[tuple[str, str, float]]:
    """Pairs of IDS whose VECTORS (unit rows) are at least MIN_SIMILARITY alike, most alike first."""
    pairs = []
    for start in range(0, len(ids), 1024):
        similar = vectors[start : start + 1024] @ vectors.T
        rows, columns = np.nonzero(similar >= min_similarity)
        for row, column in zip(rows, columns, strict=True):
            if start + row < column:
                pairs.append((ids[int(start + row)], ids[int(column)], round(float(similar[row, column]), 4)))
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))
