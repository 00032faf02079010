"""Teaching the model a desk's own wording: `searcher tune`.

Pairs of (query, document) come from the source itself (a title or FAQ question, and each alternative
wording, paired with the body it heads) and from feedback (a JSONL file of questions and the document that
answered each, or a BEIR qrels split named on purpose). A float32 copy of the base model learns them with
in-batch negatives (see `ContrastiveTrainer`). Queries held back from training, or a named check split, then
score base and tuned model alike; the tuned model is written only if it is not worse.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import EmbeddingSettings, require_positive
from .errors import ConfigError, SourceError, TuneError, TuneRejectedError
from .evaluate import load_beir, retrieval_metrics
from .index import embedding_module
from .sources import LONE_SURROGATE, Record, read_json_objects, read_records
from .writes import latest_documents

if TYPE_CHECKING:
    from .embedder import Embedder

SELF, FEEDBACK, SPLIT = "self", "feedback", "split"
HOLD_OUT = 0.1  # share of each kind's queries held back from training to check the tuned model on
MAX_HELD_OUT = 1000  # per kind: enough to measure by, and the rest is better spent on training
# Without --epochs: passes enough for this many steps (a small FAQ learns little from one), at most MAX_EPOCHS,
# so that thousands of pairs take one pass: minutes on two CPU cores.
MIN_STEPS = 100
MAX_EPOCHS = 3
TOLERANCE = 0.005  # a tuned model worse than its base by more than half a point is not written
GATE_METRICS = ("top1", "ndcg_at_10")
TUNE_FILE = "tune.json"


@dataclasses.dataclass(frozen=True)
class Pair:
    """A query and the id of the document that answers it; KIND says where the pair came from."""

    query: str
    document: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """How the model is tuned; the same values, data and base give the same weights."""

    epochs: int | None = None  # None: enough passes for MIN_STEPS steps, at most MAX_EPOCHS
    batch_size: int = 32
    learning_rate: float = 2e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs is not None:
            require_positive("epochs", self.epochs)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(
                f"batch_size must be at least 2 (a query's negatives are the others), got {self.batch_size!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not 0 < self.learning_rate < float("inf"):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate!r}")


@dataclasses.dataclass(frozen=True)
class TrainingStep:
    """Where a tuning run is, after one optimizer step."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float


@dataclasses.dataclass(frozen=True)
class Gate:
    """Top-1 accuracy and nDCG@10 of the base and the tuned model on queries neither trained on."""

    checked_on: str
    queries: int
    before: dict[str, float]
    after: dict[str, float]

    @property
    def worse(self) -> list[str]:
        """The metrics on which the tuned model lost more than TOLERANCE."""
        return [metric for metric in GATE_METRICS if self.after[metric] < self.before[metric] - TOLERANCE]

    def summary(self) -> str:
        return ", ".join(
            f"{name} {self.before[metric]:.3f} → {self.after[metric]:.3f}"
            for metric, name in zip(GATE_METRICS, ("top-1", "nDCG@10"), strict=True)
        )


@dataclasses.dataclass(frozen=True)
class TuneReport:
    """What a tuning run learned from, what it did, and how base and tuned model compare."""

    out: Path
    written: bool
    base: str
    base_fingerprint: str
    fingerprint: str
    pairs: dict[str, int]  # training pairs by kind
    records: int
    records_without_pairs: int  # records with only a text: nothing to pair it with
    hyperparameters: Hyperparameters
    steps: int
    planned_steps: int
    gate: Gate
    seconds: dict[str, float]
    device: str
    precision: str

    @property
    def stopped_early(self) -> bool:
        return self.steps < self.planned_steps

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "out": str(self.out),
            "stopped_early": self.stopped_early,
            "searcher_version": version("searcher"),
        }


def tune(
    source: str | Path,
    out: str | Path,
    *,
    pairs_files: Sequence[str | Path] = (),
    split: str | None = None,
    check_split: str | None = None,
    base: str | None = None,
    hyperparameters: Hyperparameters | None = None,
    max_minutes: float | None = None,
    device: str = "auto",
    force: bool = False,
    text_fields: Sequence[str] = (),
    id_field: str | None = None,
    on_step: Callable[[TrainingStep], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> TuneReport:
    """Fine-tune BASE (default: the bundled model) on SOURCE's own pairs and feedback; write it to OUT.

    OUT is written only if the tuned model scores no worse than BASE (see `Gate`), or with FORCE; otherwise
    TuneRejectedError, carrying the report, and nothing is written. Qrels are read only for the SPLIT and
    CHECK_SPLIT named. MAX_MINUTES stops training after the step that passes it; the model is still checked.
    """
    out = Path(out)
    hyperparameters = hyperparameters or Hyperparameters()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists: remove it or choose another --out")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"max_minutes must be a positive number, got {max_minutes!r}")
    if check_split is not None and check_split == split:
        raise ConfigError(f"--check-split {check_split} is also the training split: a check must use unseen queries")
    phase = on_phase or (lambda message: None)
    documents, _, _ = latest_documents(read_records(source, text_fields, id_field))
    targets = {record.id: record.body or record.text for record in documents}
    pairs = self_pairs(documents)
    for pairs_file in pairs_files:
        pairs += read_feedback(pairs_file, targets)
    if split:
        pairs += split_pairs(source, split, targets)
    rng = random.Random(hyperparameters.seed)
    if check_split:
        training, checks, checked_on = pairs, split_checks(source, check_split, targets), f"split {check_split}"
    else:
        training, checks = hold_out(pairs, rng)
        checked_on = "held-back pairs"
    if len(training) < 2 or not checks:
        raise TuneError(
            f"{source}: {len(pairs)} pair(s) to learn from, too few to tune and check on; records need a title, "
            "a FAQ question or alternative wordings, or give --pairs FILE or --split NAME"
        )

    embedding = embedding_module()  # torch, imported only once tuning starts
    base_embedder = embedding.Embedder(EmbeddingSettings(base), device)
    # A sentence-transformers directory can only declare pooling of the last layer: tune that layer.
    learner = (
        base_embedder
        if base_embedder.layer in (-1, base_embedder.layers)
        else embedding.Embedder(EmbeddingSettings(base, layer=-1), device)
    )
    epochs = hyperparameters.epochs or min(
        MAX_EPOCHS, math.ceil(MIN_STEPS / math.ceil(len(training) / hyperparameters.batch_size))
    )
    hyperparameters = dataclasses.replace(hyperparameters, epochs=epochs)
    batches = [
        (epoch, batch)
        for epoch in range(1, epochs + 1)
        for batch in distinct_batches(training, hyperparameters.batch_size, rng)
    ]
    phase(f"Tuning {base_embedder.model_id} on {len(training):,} pairs: {len(batches):,} steps")
    started = time.perf_counter()
    trainer = embedding.ContrastiveTrainer(learner, len(batches), hyperparameters.learning_rate, hyperparameters.seed)
    deadline = started + (max_minutes or float("inf")) * 60
    steps = _train(trainer, batches, targets, epochs, deadline, on_step)
    trained = time.perf_counter()

    staging = out.parent / f".{out.name}.tuning"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        trainer.save(staging)
        tuned = embedding.Embedder(EmbeddingSettings(str(staging)), device, traced=False)  # it may be refused
        phase(f"Checking base and tuned model on {len(checks):,} {checked_on}")
        gate = Gate(
            checked_on, len(checks), gate_scores(base_embedder, targets, checks), gate_scores(tuned, targets, checks)
        )
        report = TuneReport(
            out=out,
            written=force or not gate.worse,
            base=base_embedder.model_id,
            base_fingerprint=base_embedder.fingerprint,
            fingerprint=tuned.fingerprint,
            pairs={kind: sum(pair.kind == kind for pair in training) for kind in (SELF, FEEDBACK, SPLIT)},
            records=len(documents),
            records_without_pairs=len(documents) - len({pair.document for pair in pairs if pair.kind == SELF}),
            hyperparameters=hyperparameters,
            steps=steps,
            planned_steps=len(batches),
            gate=gate,
            seconds={"train": round(trained - started, 1), "check": round(time.perf_counter() - trained, 1)},
            device=str(learner.device),
            precision=learner.precision,
        )
        if not report.written:
            raise TuneRejectedError(
                f"the tuned model is worse than its base on {gate.queries:,} {checked_on} ({gate.summary()}); "
                "nothing written (--force writes it anyway)",
                report,
            )
        (staging / TUNE_FILE).write_text(json.dumps(report.as_dict() | {"finished": _now()}, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # an empty directory, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def self_pairs(documents: Iterable[Record]) -> list[Pair]:
    """Pairs a source gives without labels: its heading and each alternative wording, each with the body."""
    pairs = []
    for record in documents:
        target = record.body or record.text
        queries = [record.heading] if record.heading and record.body else []
        queries += [phrasing for phrasing in record.phrasings if phrasing != target]
        pairs += [Pair(query, record.id, SELF) for query in dict.fromkeys(queries)]
    return pairs


def read_feedback(path: str | Path, documents: dict[str, str]) -> list[Pair]:
    """Pairs from a JSONL file of {"query": text, "id": document id}; every id must be one of DOCUMENTS."""
    return [_feedback_pair(row, location, documents) for location, row in read_json_objects(path)]


def _feedback_pair(row: dict[str, Any], location: str, documents: dict[str, str]) -> Pair:
    query, document = row.get("query"), row.get("id")
    if not isinstance(query, str) or not query.strip():
        raise SourceError(f'{location}: expected {{"query": text, "id": document id}} with a non-empty query')
    if LONE_SURROGATE.search(query):
        raise SourceError(f"{location}: the query holds a lone surrogate (half of a UTF-16 pair), which is not text")
    if isinstance(document, bool) or not isinstance(document, (str, int)):
        raise SourceError(f"{location}: id must be a string or an integer, got {json.dumps(document)}")
    if str(document) not in documents:
        raise SourceError(f"{location}: unknown document id {str(document)!r}: not in the source")
    return Pair(query.strip(), str(document), FEEDBACK)


def split_pairs(source: str | Path, split: str, documents: dict[str, str]) -> list[Pair]:
    """Pairs from a BEIR directory's queries and qrels/SPLIT.tsv: each judged-relevant document of each query."""
    return [
        Pair(query, document, SPLIT)
        for query, relevant in split_checks(source, split, documents).values()
        for document in sorted(relevant)
    ]


def split_checks(source: str | Path, split: str, documents: dict[str, str]) -> dict[str, tuple[str, set[str]]]:
    """Each judged query of SPLIT with its relevant documents, all of which must be in DOCUMENTS."""
    if not (Path(source) / "corpus.jsonl").is_file():
        raise ConfigError(f"{source}: a split needs SOURCE to be a BEIR directory (corpus.jsonl, qrels/)")
    dataset = load_beir(Path(source), split)
    for relevant in dataset.qrels.values():
        unknown = next((document for document in relevant if document not in documents), None)
        if unknown is not None:
            raise SourceError(f"{source}/qrels/{split}.tsv: document {unknown!r} is not in the corpus")
    return {query_id: (text, set(dataset.qrels[query_id])) for query_id, text in dataset.queries.items()}


def hold_out(pairs: list[Pair], rng: random.Random) -> tuple[list[Pair], dict[str, tuple[str, set[str]]]]:
    """Training pairs, and a seeded share of each kind's queries held back as checks (query, relevant ids)."""
    held: set[tuple[str, str]] = set()
    for kind in (SELF, FEEDBACK, SPLIT):
        queries = list(dict.fromkeys(pair.query for pair in pairs if pair.kind == kind))
        if len(queries) > 1:
            count = min(MAX_HELD_OUT, max(1, round(len(queries) * HOLD_OUT)))
            held |= {(kind, query) for query in rng.sample(queries, count)}
    checks: dict[str, tuple[str, set[str]]] = {}
    for pair in pairs:
        if (pair.kind, pair.query) in held:
            checks.setdefault(f"{pair.kind}:{pair.query}", (pair.query, set()))[1].add(pair.document)
    return [pair for pair in pairs if (pair.kind, pair.query) not in held], checks


def distinct_batches(pairs: list[Pair], size: int, rng: random.Random) -> list[list[Pair]]:
    """PAIRS shuffled into batches of SIZE in which no document and no query occurs twice.

    In-batch negatives treat every other pair's document as wrong for a query: a second pair of the same
    document, or of the same query, would teach the model that a right answer is wrong.
    """
    pending = list(pairs)
    rng.shuffle(pending)
    batches = []
    while pending:
        batch: list[Pair] = []
        taken: set[str] = set()
        rest = []
        for pair in pending:
            keys = {f"d:{pair.document}", f"q:{pair.query}"}
            if len(batch) < size and not keys & taken:
                batch.append(pair)
                taken |= keys
            else:
                rest.append(pair)
        batches.append(batch)
        pending = rest
    return batches


def gate_scores(
    embedder: Embedder, targets: dict[str, str], checks: dict[str, tuple[str, set[str]]]
) -> dict[str, float]:
    """Top-1 and nDCG@10 of the CHECKS' queries ranked by EMBEDDER against every document's target text."""
    ids = list(targets)
    documents = embedder.embed(list(targets.values()))
    queries = embedder.embed([query for query, _ in checks.values()])
    positions_of: dict[str, list[int]] = {}
    for position, text in enumerate(targets.values()):
        positions_of.setdefault(text, []).append(position)
    rankings = {}
    for (query_id, (query, relevant)), vector in zip(checks.items(), queries, strict=True):
        scores = documents @ vector
        # A query that is itself some document's text (an utterance paired with another of its intent) would
        # find that document first, tuned or not: it is left out, as a query never needs to find itself.
        scores[[i for i in positions_of.get(query, []) if ids[i] not in relevant]] = -np.inf
        best = np.argpartition(-scores, min(10, len(ids) - 1))[:10]
        rankings[query_id] = [ids[i] for i in best[np.argsort(-scores[best])]]
    metrics = retrieval_metrics(
        rankings, {query_id: dict.fromkeys(relevant, 1) for query_id, (_, relevant) in checks.items()}
    )
    return {metric: round(metrics[metric], 4) for metric in GATE_METRICS}


def _train(
    trainer: Any,
    batches: list[tuple[int, list[Pair]]],
    targets: dict[str, str],
    epochs: int,
    deadline: float,
    on_step: Callable[[TrainingStep], None] | None,
) -> int:
    """Steps taken: one per (epoch, batch), each query against its document's TARGETS text, until DEADLINE passes."""
    for step, (epoch, batch) in enumerate(batches, start=1):
        loss = trainer.step([pair.query for pair in batch], [targets[pair.document] for pair in batch])
        if not np.isfinite(loss):
            raise TuneError(f"training diverged at step {step} (loss {loss}): lower --learning-rate")
        if on_step:
            on_step(TrainingStep(epoch, epochs, step, len(batches), loss))
        if time.perf_counter() >= deadline:
            return step
    return len(batches)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
