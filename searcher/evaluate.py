"""Measuring quality on a user's data: BEIR retrieval metrics and STS correlations.

Retrieval runs through a temporary `Index` (the real indexing and query paths); STS pairs are embedded by
the same `Embedder` the indexer uses.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Settings
from .errors import CalibrationError, ConfigError, SourceError
from .inbox import not_covered_cut
from .index import Index
from .manifest import EmbeddingSpec
from .search import SEARCH_MODES, Hit
from .sources import read_records

RETRIEVAL_DEPTH = 100  # enough for recall@100; nDCG/MRR/top-1 look at the first 10
RETRIEVAL_METRICS = ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "top1")
STS_METRICS = ("spearman", "pearson")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR directory's judged queries for one split; the corpus is read when indexed."""

    name: str
    path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # of the queries that have any


@dataclass(frozen=True)
class StsDataset:
    name: str
    pairs: list[tuple[str, str, float]]


def load_dataset(path: str | Path, split: str = "test") -> BeirDataset | StsDataset:
    """A BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or an STS-B file or directory."""
    path = Path(path)
    if (path / "corpus.jsonl").is_file():
        return load_beir(path, split)
    sts_file = path / f"sts-{split}.csv" if path.is_dir() else path
    if sts_file.is_file():
        return StsDataset(path.name if path.is_dir() else path.stem, load_sts(sts_file))
    raise SourceError(f"{path}: neither a BEIR directory (corpus.jsonl) nor an STS file (sts-{split}.csv)")


def load_beir(path: Path, split: str) -> BeirDataset:
    qrels_file = path / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        available = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        raise SourceError(f"{path}: no qrels for split {split!r} (available: {', '.join(available) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            grade = int(row["score"])
            if grade > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = grade
    queries, metadata = {}, {}
    with (path / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
                if isinstance(query.get("metadata"), dict):
                    metadata[query["_id"]] = query["metadata"]
    # Unjudged queries are skipped, and so are judgments of queries the queries file lacks.
    return BeirDataset(path.name, path, queries, {qid: qrels[qid] for qid in queries}, metadata)


def load_sts(path: Path) -> list[tuple[str, str, float]]:
    """STS-B pairs: tab-separated and unquoted; score in column 5, sentences in 6 and 7, extra columns ignored."""
    pairs = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            try:
                pairs.append((row[5], row[6], float(row[4])))
            except (IndexError, ValueError):
                raise SourceError(
                    f"{path}:{line_number}: expected a score in column 5 and sentences in columns 6 and 7"
                ) from None
    return pairs


def retrieval_metrics(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 (graded gain), recall@10/@100, MRR@10 and top-1 accuracy over the judged queries."""
    totals = {"ndcg_at_10": 0.0, "recall_at_10": 0.0, "recall_at_100": 0.0, "mrr_at_10": 0.0, "top1": 0.0}
    for query_id, relevant in qrels.items():
        ranked = rankings.get(query_id, [])
        gains = [relevant.get(doc_id, 0) for doc_id in ranked]
        ideal = sorted(relevant.values(), reverse=True)[:10]
        dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains[:10]))
        totals["ndcg_at_10"] += dcg / sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
        totals["recall_at_10"] += sum(1 for gain in gains[:10] if gain) / len(relevant)
        totals["recall_at_100"] += sum(1 for gain in gains[:100] if gain) / len(relevant)
        first = next((rank for rank, gain in enumerate(gains[:10]) if gain), None)
        totals["mrr_at_10"] += 0.0 if first is None else 1.0 / (first + 1)
        totals["top1"] += 1.0 if gains[:1] and gains[0] else 0.0
    return {name: value / max(len(qrels), 1) for name, value in totals.items()}


def passage_accuracy(dataset: BeirDataset, best: dict[str, Hit]) -> float | None:
    """The share of top-1 hits on a relevant document whose passage overlaps the span that answers the query;
    None if the corpus has no such spans.

    A span is named in a document's `metadata` (an object of name: [start, end) objects, such as
    stackfaq-pages' "threads") and the query's metadata names it (its "thread").
    """
    judged = correct = 0
    for query_id, hit in best.items():
        if hit.id not in dataset.qrels[query_id] or hit.passage is None:
            continue
        # JSON object keys are strings: a query may name its span by a number ("thread": 0).
        names = {
            str(value) for value in dataset.query_metadata.get(query_id, {}).values() if isinstance(value, str | int)
        }
        spans = [
            span
            for group in dict(hit.fields.get("metadata") or {}).values()
            if isinstance(group, dict)
            for name, span in group.items()
            if name in names
        ]
        if spans:
            judged += 1
            correct += any(hit.passage.start < end and start < hit.passage.end for start, end in spans)
    return correct / judged if judged else None


def sweep(
    layers: Sequence[int | str],
    poolings: Sequence[str],
    base: Settings,
    chunks: Sequence[int | str] = ("auto",),
    overlaps: Sequence[int | None] = (None,),
) -> list[Settings]:
    """One Settings per (layer, pooling, chunk, chunk overlap) combination."""
    return [
        base.replace(layer=layer, pooling=pooling, chunk=chunk, chunk_overlap=overlap)
        for layer, pooling, chunk, overlap in itertools.product(layers, poolings, chunks, overlaps)
    ]


def evaluate(
    dataset: BeirDataset | StsDataset,
    configs: Sequence[Settings],
    modes: Sequence[str] = ("dense",),
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One result per configuration (and, for retrieval, per search mode)."""
    invalid = [mode for mode in modes if mode not in SEARCH_MODES]
    if invalid or not modes:
        raise ConfigError(f"invalid mode {', '.join(invalid) or '(none)'}: choose from {', '.join(SEARCH_MODES)}")
    results = []
    for settings in configs:
        if progress:
            embedding = settings.embedding
            chunk = embedding.chunk or "none"
            progress(f"{dataset.name}: layer {embedding.layer}, pooling {embedding.pooling}, chunk {chunk}")
        if isinstance(dataset, StsDataset):
            results.append(evaluate_sts(dataset, settings))
        else:
            results.extend(evaluate_retrieval(dataset, settings, modes))
    return results


def evaluate_retrieval(dataset: BeirDataset, settings: Settings, modes: Sequence[str]) -> list[dict[str, Any]]:
    """Index the corpus into a temporary index, then run every judged query in each mode."""
    with (
        tempfile.TemporaryDirectory(prefix="searcher-eval-") as home,
        Index.create("eval", settings, home=home) as index,
    ):
        started = time.perf_counter()
        report = index.add(read_records(dataset.path), settings.runtime.batch_size, settings.runtime.batch_tokens)
        indexed = time.perf_counter()
        results = []
        for mode in modes:
            started_queries = time.perf_counter()
            hits = index.search_many(list(dataset.queries.values()), RETRIEVAL_DEPTH, mode=mode)
            rankings = {
                query_id: [hit.id for hit in found] for query_id, found in zip(dataset.queries, hits, strict=True)
            }
            searched = time.perf_counter() - started_queries
            best = {query_id: found[0] for query_id, found in zip(dataset.queries, hits, strict=True) if found}
            accuracy = passage_accuracy(dataset, best)
            results.append(
                {
                    "dataset": dataset.name,
                    "config": _config(index.manifest.spec) | {"mode": mode},
                    **retrieval_metrics(rankings, dataset.qrels),
                    **({"passage_accuracy": accuracy} if accuracy is not None else {}),
                    "queries": len(dataset.queries),
                    "docs": len(index),
                    "vectors": index.vector_count,
                    "split": report.split,
                    "truncated": report.truncated,
                    "index_bytes": index.info()["size_bytes"],
                    "seconds": {"index": round(indexed - started, 2), "queries": round(searched, 2)},
                }
            )
    return results


def evaluate_sts(dataset: StsDataset, settings: Settings) -> dict[str, Any]:
    """Spearman and Pearson correlation between cosine similarity and the gold scores."""
    # Imported here: scipy and torch take seconds, and only this kind of evaluation needs both.
    from scipy.stats import pearsonr, spearmanr

    from .embedder import Embedder

    started = time.perf_counter()
    embedder = Embedder(settings.embedding, settings.runtime.device)
    batches = settings.runtime.batch_size, settings.runtime.batch_tokens
    first = embedder.embed([a for a, _, _ in dataset.pairs], *batches)
    second = embedder.embed([b for _, b, _ in dataset.pairs], *batches)
    similarity = (first * second).sum(axis=1)
    gold = np.array([score for _, _, score in dataset.pairs])
    return {
        "dataset": dataset.name,
        "config": _config(embedder.spec),
        "spearman": float(spearmanr(similarity, gold).statistic),
        "pearson": float(pearsonr(similarity, gold).statistic),
        "pairs": len(dataset.pairs),
        "seconds": {"embed": round(time.perf_counter() - started, 2)},
    }


def _config(spec: EmbeddingSpec) -> dict[str, Any]:
    """The spec without its fingerprint, as results report their configuration."""
    return {key: value for key, value in spec.as_dict().items() if key != "fingerprint"}


@dataclass(frozen=True)
class Calibration:
    """The lowest score threshold whose top-1 precision reaches the target, and what it costs in coverage."""

    mode: str
    threshold: float
    target: float
    precision: float
    coverage: float
    queries: int
    not_covered: float | None = None  # the inbox's cut (dense only): see `inbox.not_covered_cut`


def calibrate(index: Index, dataset: BeirDataset, target: float, mode: str = "dense") -> Calibration:
    """Choose and store the index's "good match" threshold from DATASET's judged queries.

    For every judged query the best hit is either relevant or not; among all thresholds whose top-1
    precision (over the queries scoring at or above it) reaches TARGET, the lowest is kept, so as many
    questions as possible still get an answer.
    """
    if not 0 < target <= 1:
        raise ConfigError(f"precision must be between 0 and 1, got {target}")
    texts = list(dataset.queries.values())
    # Dense questions are embedded once: for their threshold and for the inbox's "not covered" cut.
    vectors = index.embed_queries(texts) if mode == "dense" else None
    # Judged questions are not customers': they stay out of the question log whatever the index's setting.
    found = index.search_many(texts, 1, mode, vectors=vectors, log=False)
    outcomes = []
    for query_id, best in zip(dataset.queries, found, strict=True):
        outcomes.append((best[0].score, best[0].id in dataset.qrels[query_id]) if best else (float("-inf"), False))
    threshold, precision, coverage = choose_threshold(outcomes, target)
    not_covered = None if vectors is None else not_covered_cut(vectors, np.array([score for score, _ in outcomes]))
    calibration = Calibration(mode, threshold, target, precision, coverage, len(outcomes), not_covered)
    index.set_threshold(
        mode,
        calibration.threshold,
        {
            "dataset": dataset.name,
            "target_precision": target,
            "precision": calibration.precision,
            "coverage": calibration.coverage,
            "queries": calibration.queries,
        }
        | ({} if not_covered is None else {"not_covered": not_covered}),
    )
    return calibration


def choose_threshold(outcomes: list[tuple[float, bool]], target: float) -> tuple[float, float, float]:
    """(threshold, precision, coverage) for the lowest score whose top-1 precision reaches TARGET.

    OUTCOMES are (best score, best hit relevant) per query; a threshold admits every query scoring at
    least that much, ties included.
    """
    ordered = sorted(outcomes, key=lambda outcome: -outcome[0])
    correct = np.cumsum([relevant for _, relevant in ordered])
    answered = np.arange(1, len(ordered) + 1)
    precision = correct / answered
    ends = [i for i in range(len(ordered)) if i + 1 == len(ordered) or ordered[i + 1][0] < ordered[i][0]]
    reaching = [i for i in ends if precision[i] >= target and ordered[i][0] > float("-inf")]
    if not reaching:
        best = max(ends, key=lambda i: precision[i], default=None)
        reached = f"; the best is {precision[best]:.3f}, at {ordered[best][0]:.3f}" if best is not None else ""
        raise CalibrationError(f"no threshold reaches top-1 precision {target} on {len(ordered)} queries{reached}")
    chosen = max(reaching)
    return float(ordered[chosen][0]), float(precision[chosen]), float(answered[chosen] / len(ordered))
