"""Ranking: dense, keyword and hybrid search over one index's store and vectors, given the query's vector.

The model is not here: `Index.search_many` embeds every query in one forward pass, then ranks each one
with a `Ranker`. Scores are cosine similarities (dense), BM25 (keyword) or cosine plus a weighted share of
the query's best BM25 score (hybrid). Results are documents, each scored by its best-matching vector: a
passage of its text or an alternative phrasing. Each hit shows the passage that answered, with the words a
keyword query matched in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import faq
from .errors import ConfigError, EmptyQueryError, InvalidFilterError
from .store import DocumentStore, VectorOwner, filter_sql
from .vectorfile import LiveVectors

SEARCH_MODES = ("dense", "keyword", "hybrid")
HYBRID_DEPTH = 100  # candidates taken from each side before fusion
KEYWORD_SCAN_FACTOR = 10
# A filter passing at most this many documents is searched exactly over their stored vectors.
FILTER_EXACT_LIMIT = 20_000
# Weight of the relative BM25 score in hybrid mode, chosen on SciFact train and a Banking77 train-only dev split
# (benchmarks/tune_hybrid.py): +0.070 nDCG@10 on the first, -0.001 on the second.
KEYWORD_WEIGHT = 0.2
# Past these, a filter costs every search it is part of too much: SQLite tests each field of each document.
MAX_FILTER_FIELDS = 32
MAX_FILTER_CHOICES = 1_000  # values over all of a filter's fields
SQLITE_INTEGERS = range(-(2**63), 2**63)

# Document rowid -> (score, the vector that scored it; None for BM25 alone).
Scored = dict[int, tuple[float, VectorOwner | None]]
Span = tuple[int, int]


@dataclass(frozen=True)
class Passage:
    """The part of a hit's text that answered: its [start, end) in the text, in characters, and where in it
    the query's words were matched (keyword and hybrid search), also as spans of the document's text."""

    start: int
    end: int
    text: str
    highlights: tuple[Span, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "highlights": [list(h) for h in self.highlights],
        }


@dataclass(frozen=True)
class Hit:
    """One search result: the document's external id, score, text and metadata."""

    id: str
    score: float
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    matched: str | None = None  # the alternative phrasing that matched best, if not the document's text
    below_threshold: bool = False  # under the index's calibrated "good match" threshold
    passage: Passage | None = None  # the part of TEXT that answered (all of it for a short text)

    @property
    def question(self) -> str | None:
        """For a FAQ entry, the wording of its question that matched; None for other documents."""
        return faq.matched_question(self.fields, self.matched)

    @property
    def answer(self) -> str | None:
        """For a FAQ entry, its answer; None for other documents."""
        return faq.answer(self.fields)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "text": self.text,
            "fields": self.fields,
            "matched": self.question,
            "answer": self.answer,
            "below_threshold": self.below_threshold,
            "passage": self.passage.as_json() if self.passage else None,
        }


def search_response(index: str, query: str, mode: str, threshold: float | None, hits: list[Hit]) -> dict[str, Any]:
    """One query's answer as `searcher query --json` and the HTTP API give it, hits ranked from 1."""
    results = [{"rank": rank, **hit.as_json()} for rank, hit in enumerate(hits, start=1)]
    return {"query": query, "index": index, "mode": mode, "threshold": threshold, "results": results}


@dataclass(frozen=True)
class SearchOptions:
    """How to search: K results, MODE, a score floor, the hybrid keyword weight, metadata FILTERS."""

    k: int = 10
    mode: str = "dense"
    min_score: float | None = None
    keyword_weight: float = KEYWORD_WEIGHT
    filters: dict[str, Any] | None = None  # {field: value} or {field: {"in": [values]}}, see `store.filter_sql`

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be a positive integer, got {self.k!r}")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"invalid mode {self.mode!r}: choose one of {', '.join(SEARCH_MODES)}")
        if self.filters is not None:
            check_filters(self.filters)

    @property
    def needs_vector(self) -> bool:
        return self.mode != "keyword"


def check_query(text: str) -> None:
    if not text or not text.strip():
        raise EmptyQueryError("empty query: give some text to search for")


def check_filters(filters: dict[str, Any]) -> None:
    """Refuse, as InvalidFilterError, a filter over the limits or holding what SQLite cannot take (integers
    past 64 bits, NaN, infinities, a NUL in a field name, lone surrogates), before any search begins.

    Its form, {field: value} or {field: {"in": [values]}}, is checked by `store.filter_sql`.
    """
    filter_sql(filters)
    if len(filters) > MAX_FILTER_FIELDS:
        raise InvalidFilterError(f"a filter tests at most {MAX_FILTER_FIELDS} fields, got {len(filters):,}")
    choices = 0
    for name, wanted in filters.items():
        if "\0" in name or not _is_text(name):  # SQLite's JSON paths end at a NUL
            raise InvalidFilterError(f"invalid filter field name {name!r}")
        values = wanted["in"] if isinstance(wanted, dict) else [wanted]
        choices += len(values)
        if choices > MAX_FILTER_CHOICES:
            raise InvalidFilterError(f"a filter lists at most {MAX_FILTER_CHOICES:,} values over all its fields")
        for value in values:
            _check_filter_value(name, value)


def _check_filter_value(name: str, value: Any) -> None:
    if isinstance(value, int) and value not in SQLITE_INTEGERS:
        raise InvalidFilterError(f"filter on {name!r}: integers are 64-bit, from -2**63 to 2**63 - 1")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilterError(f"filter on {name!r}: numbers must be finite, got {value}")
    if isinstance(value, str) and not _is_text(value):
        raise InvalidFilterError(f"filter on {name!r}: a value holds a lone surrogate, which is not text")


def _is_text(value: str) -> bool:
    """Whether VALUE can be written as UTF-8, as SQLite takes it: not if it holds half a surrogate pair."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Ranker:
    """Ranks the documents of one store for a query, with its vectors in VECTORS."""

    def __init__(self, store: DocumentStore, vectors: LiveVectors) -> None:
        self._store = store
        self._vectors = vectors

    def rank(
        self, text: str, vector: np.ndarray | None, options: SearchOptions
    ) -> list[tuple[int, float, VectorOwner | None]]:
        """(document rowid, score, the vector that scored it) of the best documents for TEXT (whose VECTOR is
        given for dense and hybrid), best first.

        FILTERS never cost recall: a selective filter is searched exactly over its documents, a broad one by
        fetching past the documents it leaves out.
        """
        k, filters = options.k, options.filters
        # Keyword search filters inside its own SQL; the vector side needs the passing documents' rowids.
        allowed = self._store.matching_documents(filters) if filters and options.needs_vector else None
        if options.mode == "keyword":
            scored: Scored = {rowid: (score, None) for rowid, score in self._store.keyword_search(text, k, filters)}
        elif vector is None or not len(self._vectors) or allowed == set():
            scored = {}
        elif options.mode == "dense":
            scored = self.dense(vector, k, allowed)
        else:
            scored = self.hybrid(text, vector, k, options.keyword_weight, filters, allowed)
        ranked = sorted(scored.items(), key=lambda item: -item[1][0])[:k]
        return [
            (rowid, score, owner)
            for rowid, (score, owner) in ranked
            if options.min_score is None or score >= options.min_score
        ]

    def dense(self, vector: np.ndarray, k: int, allowed: set[int] | None = None) -> Scored:
        """Best (cosine, vector) of the K nearest documents, only ALLOWED ones if given.

        Documents with several passages or phrasings, and filters, need a deeper look than K vectors.
        """
        if allowed is not None and len(allowed) <= FILTER_EXACT_LIMIT:
            return dict(sorted(self.score_documents(vector, allowed).items(), key=lambda item: -item[1][0])[:k])
        total = len(self._vectors)
        share = 1 if allowed is None else -(-self._store.count() // len(allowed))  # expect the filter's share
        fetch = min(total, k * share)
        while True:
            matches = self._vectors.search(vector, fetch, self._exact_vectors)
            owners = self._store.vector_owners([vector_id for vector_id, _ in matches])
            best: Scored = {}
            for vector_id, score in matches:
                owner = owners.get(vector_id)  # None: replaced by a writer since the vectors were loaded
                if owner and (allowed is None or owner.document in allowed):
                    best.setdefault(owner.document, (score, owner))
            if len(best) >= k or fetch >= total:
                return best
            fetch = min(fetch * 4, total)

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        keyword_weight: float,
        filters: dict[str, Any] | None,
        allowed: set[int] | None,
    ) -> Scored:
        """Dense and BM25 candidates, each scored exactly on both sides, then combined."""
        depth = max(k, HYBRID_DEPTH)
        dense = self.dense(vector, depth, allowed)
        # BM25 scores well past the keyword top `depth`, so dense candidates get theirs from the same query;
        # a document outside the scan scores far below the best and counts as 0.
        keyword_ranked = self._store.keyword_search(text, depth * KEYWORD_SCAN_FACTOR, filters)
        keyword = dict(keyword_ranked)
        keyword_only = [rowid for rowid, _ in keyword_ranked[:depth] if rowid not in dense]
        if keyword_only:
            dense |= self.score_documents(vector, keyword_only)
        best_keyword = keyword_ranked[0][1] if keyword_ranked else 1.0
        return {
            rowid: (cosine + keyword_weight * keyword.get(rowid, 0.0) / best_keyword, owner)
            for rowid, (cosine, owner) in dense.items()
        }

    def score_documents(self, vector: np.ndarray, documents: Iterable[int]) -> Scored:
        """Exact (cosine, vector) of each of DOCUMENTS, from its best-matching stored vector."""
        owners, vectors = self._store.document_vectors(list(documents), self._vectors.dimension)
        best: Scored = {}
        for owner, score in sorted(zip(owners, vectors @ vector, strict=True), key=lambda item: -item[1]):
            best.setdefault(owner.document, (float(score), owner))
        return best

    def _exact_vectors(self, vector_ids: np.ndarray) -> np.ndarray:
        return self._store.vectors_by_id(vector_ids.tolist(), self._vectors.dimension)

    def hits(
        self, text: str, ranked: list[tuple[int, float, VectorOwner | None]], threshold: float | None, mode: str
    ) -> list[Hit]:
        """RANKED documents as hits for query TEXT searched in MODE, marked `below_threshold` under THRESHOLD."""
        rowids = [rowid for rowid, _, _ in ranked]
        documents = self._store.documents(rowids)
        matches = self._store.keyword_matches(text, rowids) if mode != "dense" else {}
        passages = self._store.passage_spans([rowid for rowid, _, owner in ranked if owner is None])
        hits = []
        for rowid, score, owner in ranked:
            document = documents.get(rowid)
            if document is None:  # deleted by a writer since the vectors were loaded
                continue
            words = matches.get(rowid, [])
            if owner is None:  # found by its words alone: the passage holding most of them
                span = max(passages.get(rowid, []), key=lambda passage: len(_within(words, passage)), default=None)
            else:
                span = owner.span
            start, end = span or (0, len(document.text))
            hits.append(
                Hit(
                    id=document.id,
                    score=score,
                    text=document.text,
                    fields=document.fields,
                    matched=owner.phrasing if owner else None,
                    below_threshold=threshold is not None and score < threshold,
                    passage=Passage(start, end, document.text[start:end], tuple(_within(words, (start, end)))),
                )
            )
        return hits


def _within(spans: list[Span], passage: Span) -> list[Span]:
    """The SPANS that lie inside PASSAGE."""
    return [span for span in spans if passage[0] <= span[0] and span[1] <= passage[1]]
