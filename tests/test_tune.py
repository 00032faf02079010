"""`searcher tune`: pairs from the source and from feedback, seeded training, the gate, the model directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searcher import EmbeddingSettings, Hyperparameters, Index, Settings, tune
from searcher.cli import app
from searcher.errors import ConfigError, ModelMismatchError, SourceError, TuneError, TuneRejectedError
from searcher.sources import read_records
from searcher.tune import Pair, distinct_batches, gate_scores, self_pairs

TOPICS = [
    ("password", "How do I reset my password?", "Use the forgot password link on the sign-in page."),
    ("invoice", "Where can I download my invoice?", "Invoices are under Billing, as PDF files."),
    ("delete", "How do I delete my account?", "Settings, Account, then Delete account; it takes a week."),
    ("export", "Can I export my notes?", "Choose File, Export, and pick Markdown or PDF."),
    ("offline", "Does the app work offline?", "Yes: notes you opened once stay available without network."),
    ("share", "How do I share a notebook?", "Open the notebook, press Share and type a colleague's email."),
    ("refund", "Can I get a refund?", "Refunds are granted within 30 days of purchase, on request."),
    ("language", "How do I change the language?", "Settings, General, Language: pick one from the list."),
    ("sync", "Why are my notes not syncing?", "Check that you are signed in on both devices and online."),
    ("storage", "How much storage do I get?", "Free plans hold 1 GB; paid plans hold 100 GB."),
    ("darkmode", "Is there a dark mode?", "Settings, Appearance, Theme: choose Dark."),
    ("printing", "How do I print a note?", "Open the note and press Ctrl+P, or choose File, Print."),
]


def write_faq(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for key, question, answer in TOPICS:
            alternatives = [f"{question.rstrip('?')} please", f"help with {key}"]
            row = {"id": key, "question": question, "answer": answer, "alternatives": alternatives}
            handle.write(json.dumps(row) + "\n")
    return path


def write_beir(directory: Path, qrels: dict[str, str]) -> Path:
    """A BEIR directory whose documents have titles, with one qrels file per split (given as raw text)."""
    (directory / "qrels").mkdir(parents=True)
    with (directory / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for key, question, answer in TOPICS:
            handle.write(json.dumps({"_id": key, "title": question, "text": answer}) + "\n")
    with (directory / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for key, _, _ in TOPICS:
            handle.write(json.dumps({"_id": f"q-{key}", "text": f"trouble with {key}"}) + "\n")
    for split, text in qrels.items():
        (directory / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return directory


def judged(keys) -> str:
    return "query-id\tcorpus-id\tscore\n" + "".join(f"q-{key}\t{key}\t1\n" for key in keys)


def quick(epochs: int = 1, learning_rate: float = 1e-3, seed: int = 0) -> Hyperparameters:
    return Hyperparameters(epochs=epochs, batch_size=4, learning_rate=learning_rate, seed=seed)


def test_self_pairs_pair_headings_and_alternatives_with_the_body(tmp_path):
    faq = tmp_path / "faq.jsonl"
    faq.write_text(
        json.dumps({"id": "a", "question": "Q1?", "answer": "A1.", "alternatives": ["Q1 again", "A1."]})
        + "\n"
        + json.dumps({"id": "b", "question": "Only a question?", "alternatives": ["Other wording"]})
        + "\n"
    )
    beir = write_beir(tmp_path / "beir", {})
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"id": "t", "text": "Just a text."}) + "\n")

    faq_pairs = self_pairs(read_records(faq))
    assert faq_pairs == [Pair("Q1?", "a", "self"), Pair("Q1 again", "a", "self"), Pair("Other wording", "b", "self")]
    beir_pairs = self_pairs(read_records(beir))
    assert Pair("How do I reset my password?", "password", "self") in beir_pairs
    assert len(beir_pairs) == len(TOPICS)
    assert self_pairs(read_records(texts)) == []


def test_batches_never_hold_a_document_or_a_query_twice():
    rng = random.Random(3)
    pairs = [Pair(f"query {rng.randrange(20)}", f"doc {rng.randrange(8)}", "self") for _ in range(200)]
    batches = distinct_batches(pairs, 6, random.Random(0))
    assert sorted(map(repr, (pair for batch in batches for pair in batch))) == sorted(map(repr, pairs))
    for batch in batches:
        assert 1 <= len(batch) <= 6
        assert len({pair.document for pair in batch}) == len(batch)
        assert len({pair.query for pair in batch}) == len(batch)


def test_tuned_model_is_a_sentence_transformers_directory_that_searcher_reads(tmp_path, tiny_model):
    out = tmp_path / "tuned"
    report = tune(write_faq(tmp_path / "faq.jsonl"), out, base=str(tiny_model), hyperparameters=quick(), force=True)

    assert report.written and out.is_dir()
    assert report.pairs["self"] > 0 and report.steps == report.planned_steps > 0
    assert report.fingerprint != report.base_fingerprint
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling", "model.safetensors", "tune.json"} <= {
        path.name for path in out.iterdir()
    }
    assert (out / "model.safetensors").stat().st_mode == (out / "config.json").stat().st_mode  # not owner-only
    saved = json.loads((out / "tune.json").read_text())
    assert saved["base"] == str(tiny_model) and saved["fingerprint"] == report.fingerprint
    assert saved["hyperparameters"]["batch_size"] == 4 and saved["searcher_version"]
    assert set(saved["gate"]["before"]) == {"top1", "ndcg_at_10"}
    # `auto` reads the pooling it was tuned with (the base declares none, so it was tuned on the last layer).
    index = Index.create(tmp_path / "idx", Settings.of(model=str(out), device="cpu"))
    assert (index.manifest.spec.layer, index.manifest.spec.pooling) == (-1, "mean")
    index.add(read_records(tmp_path / "faq.jsonl"))
    assert len(index.search("reset my password", k=3)) == 3
    assert not list(tmp_path.glob(".tuned*")), "the staging directory is gone"


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_model):
    faq = write_faq(tmp_path / "faq.jsonl")
    runs = [
        tune(faq, tmp_path / name, base=str(tiny_model), hyperparameters=quick(seed=seed), force=True)
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    assert runs[0].fingerprint == runs[1].fingerprint
    assert runs[2].fingerprint != runs[0].fingerprint
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_a_huge_learning_rate_is_refused_and_writes_nothing(tmp_path):
    faq = write_faq(tmp_path / "faq.jsonl")
    out = tmp_path / "tuned"
    result = CliRunner().invoke(
        app, ["tune", str(faq), "--out", str(out), "--learning-rate", "0.05", "--epochs", "2", "--batch-size", "8"]
    )
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: the tuned model is worse than its base") and "nothing written" in message
    assert not out.exists() and list(tmp_path.iterdir()) == [faq]


def test_force_writes_a_worse_model_and_the_report_says_so(tmp_path):
    faq, out = write_faq(tmp_path / "faq.jsonl"), tmp_path / "tuned"
    harmful = Hyperparameters(epochs=2, batch_size=8, learning_rate=0.05)
    with pytest.raises(TuneRejectedError) as rejected:
        tune(faq, out, hyperparameters=harmful)
    assert rejected.value.report.gate.worse and not rejected.value.report.written and not out.exists()
    report = tune(faq, out, hyperparameters=harmful, force=True)
    assert report.written and report.gate.worse and out.is_dir()
    assert json.loads((out / "tune.json").read_text())["gate"]["after"] == report.gate.after


def test_max_minutes_stops_after_the_current_step_and_still_checks_and_writes(tmp_path, tiny_model):
    out = tmp_path / "tuned"
    report = tune(
        write_faq(tmp_path / "faq.jsonl"),
        out,
        base=str(tiny_model),
        hyperparameters=quick(epochs=5),
        max_minutes=1e-9,
        force=True,
    )
    assert report.steps == 1 and report.planned_steps > 1 and report.stopped_early
    assert report.gate.queries > 0 and (out / "tune.json").is_file()


def test_feedback_pairs_are_learned_and_an_unknown_id_names_its_line(tmp_path, tiny_model):
    faq = write_faq(tmp_path / "faq.jsonl")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"query": f"my {key} question", "id": key}) + "\n" for key, _, _ in TOPICS) + "\n"
    )
    report = tune(
        faq, tmp_path / "tuned", pairs_files=[pairs], base=str(tiny_model), hyperparameters=quick(), force=True
    )
    assert 0 < report.pairs["feedback"] < len(TOPICS)  # the rest were held back to check on

    pairs.write_text(json.dumps({"query": "a", "id": "password"}) + "\n" + json.dumps({"query": "b", "id": "nope"}))
    with pytest.raises(SourceError, match=r"pairs.jsonl:2: unknown document id 'nope'"):
        tune(faq, tmp_path / "other", pairs_files=[pairs], base=str(tiny_model))
    pairs.write_text(json.dumps({"id": "password"}) + "\n")
    with pytest.raises(SourceError, match=r"pairs.jsonl:1: .*non-empty query"):
        tune(faq, tmp_path / "other", pairs_files=[pairs], base=str(tiny_model))
    pairs.write_text(json.dumps({"query": "ok", "id": "password"}) + "\n" + '{"query": "\\ud800", "id": "password"}\n')
    with pytest.raises(SourceError, match=r"pairs.jsonl:2: the query holds a lone surrogate"):
        tune(faq, tmp_path / "other", pairs_files=[pairs], base=str(tiny_model))


def test_qrels_are_read_only_for_the_splits_named(tmp_path, tiny_model):
    # A test split that cannot even be parsed: tuning without naming it must not touch it.
    beir = write_beir(tmp_path / "beir", {"test": "not a qrels file", "train": judged(["password", "invoice"])})
    quiet = tune(beir, tmp_path / "a", base=str(tiny_model), hyperparameters=quick(), force=True)
    assert quiet.pairs["split"] == 0
    trained = tune(beir, tmp_path / "b", split="train", base=str(tiny_model), hyperparameters=quick(), force=True)
    assert trained.pairs["split"] + trained.gate.queries >= 2
    with pytest.raises(SourceError, match="no qrels for split 'dev'"):
        tune(beir, tmp_path / "c", split="dev", base=str(tiny_model))


def test_a_check_split_replaces_held_back_pairs(tmp_path, tiny_model):
    beir = write_beir(tmp_path / "beir", {"dev": judged(["password", "invoice", "refund"])})
    report = tune(beir, tmp_path / "a", check_split="dev", base=str(tiny_model), hyperparameters=quick(), force=True)
    assert report.gate.checked_on == "split dev" and report.gate.queries == 3
    assert report.pairs["self"] == len(TOPICS)  # nothing held back
    with pytest.raises(ConfigError, match="also the training split"):
        tune(beir, tmp_path / "b", split="dev", check_split="dev")


def test_refusals_before_any_training(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": str(i), "text": f"text {i}"}) + "\n" for i in range(5)))
    with pytest.raises(TuneError, match="too few to tune"):
        tune(texts, tmp_path / "out")
    taken = tmp_path / "taken"
    (taken / "something").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already exists"):
        tune(texts, taken)
    with pytest.raises(ConfigError, match="batch_size must be at least 2"):
        Hyperparameters(batch_size=1)
    with pytest.raises(ConfigError, match="learning_rate"):
        Hyperparameters(learning_rate=float("nan"))


def test_an_index_built_with_the_base_refuses_the_tuned_model(tmp_path, tiny_model, tiny_embedder):
    from searcher.embedder import Embedder

    out = tmp_path / "tuned"
    tune(write_faq(tmp_path / "faq.jsonl"), out, base=str(tiny_model), hyperparameters=quick(), force=True)
    Index.create(tmp_path / "idx", embedder=tiny_embedder).add(read_records(tmp_path / "faq.jsonl"))
    tuned = Embedder(EmbeddingSettings(str(out), layer=-2, precision="fp32"), "cpu")
    with pytest.raises(ModelMismatchError, match="other settings \\(model\\)"):
        Index.open(tmp_path / "idx", embedder=tuned)
    result = CliRunner().invoke(
        app, ["index", str(tmp_path / "faq.jsonl"), "--index", str(tmp_path / "idx"), "--model", str(out)]
    )
    assert result.exit_code != 0
    assert f"was built with model {str(tiny_model)!r}, not {str(out)!r}" in result.output


def test_cli_tunes_end_to_end_and_reports_both_models(tmp_path, tiny_model):
    out = tmp_path / "tuned"
    faq = write_faq(tmp_path / "faq.jsonl")
    arguments = ["tune", str(faq), "--out", str(out), "--base", str(tiny_model), "--epochs", "1", "--batch-size", "4"]
    result = CliRunner().invoke(app, [*arguments, "--force", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["written"] and report["out"] == str(out) and report["pairs"]["self"] > 0
    result = CliRunner().invoke(app, [*arguments, "--force"])
    assert result.exit_code == 2 and "already exists" in result.output


def test_without_epochs_a_small_set_gets_three_passes_and_a_large_one_a_single_pass(tmp_path, tiny_model):
    faq = write_faq(tmp_path / "faq.jsonl")
    small = tune(faq, tmp_path / "a", base=str(tiny_model), hyperparameters=Hyperparameters(batch_size=4), force=True)
    assert small.hyperparameters.epochs == 3
    pairs = tmp_path / "pairs.jsonl"
    keys = [key for key, _, _ in TOPICS]
    pairs.write_text(
        "".join(json.dumps({"query": f"question {i}", "id": keys[i % len(keys)]}) + "\n" for i in range(900))
    )
    large = tune(
        faq,
        tmp_path / "b",
        pairs_files=[pairs],
        base=str(tiny_model),
        hyperparameters=Hyperparameters(batch_size=8),
        force=True,
    )
    assert large.hyperparameters.epochs == 1 and large.planned_steps >= 100
    assert json.loads((tmp_path / "b" / "tune.json").read_text())["hyperparameters"]["epochs"] == 1


def test_the_gate_never_counts_a_query_finding_its_own_text(tiny_embedder):
    targets = {"self": "card still not arrived", "other": "when will my new card come"}
    checks = {"q": ("card still not arrived", {"other"})}
    assert gate_scores(tiny_embedder, targets, checks) == {"top1": 1.0, "ndcg_at_10": 1.0}
