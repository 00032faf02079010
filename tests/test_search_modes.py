"""Keyword and hybrid search, FAQ entries with alternative phrasings, and the calibrated no-match threshold."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app
from searcher.errors import CalibrationError, ConfigError, IndexLockedError
from searcher.evaluate import BeirDataset, calibrate, choose_threshold
from searcher.paths import writer_lock

DOCS = [
    Record(
        "pw",
        "How do I reset my password?",
        {"question": "How do I reset my password?", "answer": "Use the link."},
        ("I forgot my login credentials",),
    ),
    Record("bill", "Where are my invoices for billing?", {}),
    Record("dark", "Does the app have a dark mode?", {}),
    Record("export", "Export notes as markdown files", {}),
]


@pytest.fixture
def index(tiny_index):
    return tiny_index(DOCS, "modes")


def test_keyword_mode_ranks_by_bm25(index):
    hits = index.search("markdown export", k=3, mode="keyword")
    assert [hit.id for hit in hits] == ["export"]
    assert hits[0].score > 0


def test_keyword_mode_survives_fts_syntax(index):
    assert [hit.id for hit in index.search('"markdown AND (export*', mode="keyword")] == ["export"]
    assert index.search("?!", mode="keyword") == []


def test_hybrid_scores_are_cosine_plus_weighted_relative_bm25(index, tiny_embedder):
    query = "export markdown"
    vector = tiny_embedder.embed([query])[0]
    hits = index.search(query, k=4, mode="hybrid", keyword_weight=0.5)
    assert len(hits) == 4
    by_id = {hit.id: hit.score for hit in hits}
    export_cosine = float(tiny_embedder.embed([DOCS[3].text])[0] @ vector)
    assert by_id["export"] == pytest.approx(export_cosine + 0.5, abs=1e-5)  # the only keyword match: relative BM25 = 1
    dark_cosine = float(tiny_embedder.embed([DOCS[2].text])[0] @ vector)
    assert by_id["dark"] == pytest.approx(dark_cosine, abs=1e-5)


def test_hybrid_with_zero_weight_is_dense(index):
    dense = index.search("password help", k=4)
    hybrid = index.search("password help", k=4, mode="hybrid", keyword_weight=0.0)
    assert [h.id for h in hybrid] == [h.id for h in dense]
    np.testing.assert_allclose([h.score for h in hybrid], [h.score for h in dense], atol=1e-5)


def test_keyword_index_follows_replacement(index):
    index.add([Record("export", "Print a note on paper", {})])
    assert index.search("markdown", mode="keyword") == []
    assert [h.id for h in index.search("paper", mode="keyword")] == ["export"]


def test_a_faq_entry_scores_by_its_best_phrasing(index):
    best = index.search("I forgot my login credentials", k=1)[0]
    assert (best.id, best.matched, best.question, best.answer) == (
        "pw",
        "I forgot my login credentials",
        "I forgot my login credentials",
        "Use the link.",
    )
    assert best.score == pytest.approx(1.0, abs=1e-5)
    plain = index.search("How do I reset my password?", k=1)[0]
    assert (plain.matched, plain.question) == (None, "How do I reset my password?")


def test_each_document_appears_once_however_many_phrasings_match(index):
    hits = index.search("password login", k=4)
    assert sorted(hit.id for hit in hits) == sorted(record.id for record in DOCS)


def test_replacing_a_faq_entry_drops_its_old_phrasings(index):
    index.add([Record("pw", "How do I reset my password?", {"question": "How do I reset my password?"})])
    assert index.search("I forgot my login credentials", k=1)[0].matched is None
    assert len(index.vectors) == len(DOCS)


def test_min_score_leaves_out_weak_hits(index):
    scores = [hit.score for hit in index.search("dark mode", k=4)]
    kept = index.search("dark mode", k=4, min_score=scores[1])
    assert len(kept) == 2


def test_invalid_mode(index):
    with pytest.raises(ConfigError, match="choose one of dense, keyword, hybrid"):
        index.search("x", mode="fuzzy")


def judged(queries):
    return BeirDataset(
        "judged",
        None,
        {f"q{i}": text for i, (text, _) in enumerate(queries)},
        {f"q{i}": {doc: 1} for i, (_, doc) in enumerate(queries)},
    )


@pytest.mark.parametrize(
    ("target", "expected"), [(0.75, (0.6, 0.75, 0.8)), (0.8, (0.8, 1.0, 0.4)), (1.0, (0.8, 1.0, 0.4))]
)
def test_threshold_is_the_lowest_score_reaching_the_precision(target, expected):
    outcomes = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False)]
    assert choose_threshold(outcomes, target) == pytest.approx(expected)


def test_tied_scores_are_admitted_together():
    with pytest.raises(CalibrationError, match="the best is 0.500"):
        choose_threshold([(0.7, True), (0.7, False)], 0.9)


def test_calibration_stores_the_threshold_and_marks_hits(index):
    dataset = judged([(r.text, r.id) for r in DOCS])
    result = calibrate(index, dataset, target=0.9)
    assert (result.precision, result.coverage, result.queries) == (1.0, 1.0, len(DOCS))
    lowest_correct = min(index.search(r.text, 1)[0].score for r in DOCS)
    assert result.threshold == pytest.approx(lowest_correct)
    assert index.manifest.thresholds["dense"] == result.threshold
    marks = [(h.score, h.below_threshold) for h in index.search("completely unrelated words", k=4)]
    assert all(below == (score < result.threshold) for score, below in marks)


def test_calibration_that_cannot_reach_the_target(index):
    dataset = judged([(DOCS[0].text, "bill")])
    with pytest.raises(CalibrationError, match="no threshold reaches top-1 precision 0.9"):
        calibrate(index, dataset, target=0.9)


def test_query_command_modes_faq_columns_and_thresholds(index, tmp_path):
    runner = CliRunner()
    index.set_threshold("dense", 0.999, {"dataset": "hand-made"})
    result = runner.invoke(
        app, ["query", "I forgot my login credentials", "--index", str(index.path), "--json", "-k", "2"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["mode"], answer["threshold"]) == ("dense", 0.999)
    first, second = answer["results"]
    assert (first["id"], first["matched"], first["answer"], first["below_threshold"]) == (
        "pw",
        "I forgot my login credentials",
        "Use the link.",
        False,
    )
    assert second["below_threshold"] is True
    table = runner.invoke(app, ["query", "dark theme", "--index", str(index.path)])
    assert "matched question" in table.stdout or "text" in table.stdout
    assert "No good match" in table.stdout
    keyword = runner.invoke(app, ["query", "markdown", "--index", str(index.path), "--mode", "keyword", "--json"])
    assert [r["id"] for r in json.loads(keyword.stdout)["results"]] == ["export"]


def test_calibrate_command(index, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in DOCS))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": r.id, "text": r.text}) + "\n" for r in DOCS))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{r.id}\t{r.id}\t1\n" for r in DOCS)
    )
    result = CliRunner().invoke(app, ["calibrate", str(beir), "--index", str(index.path), "--target-precision", "0.9"])
    assert result.exit_code == 0, result.output
    assert "top-1 precision 1.000" in result.stdout
    assert Index.open(index.path).manifest.calibration["dense"]["queries"] == len(DOCS)


def test_a_threshold_is_stored_under_the_writer_lock(index):
    """Thresholds of all modes live in one manifest value: read, merged and written as one, so that two
    calibrations at once (two processes, two modes) cannot lose one of them."""
    index.set_threshold("dense", 0.5, {"dataset": "first"})
    with Index.open(index.path, lock_timeout=0.1) as other, writer_lock(index.path):
        with pytest.raises(IndexLockedError):
            other.set_threshold("keyword", 3.0, {"dataset": "second"})
    index.set_threshold("keyword", 3.0, {"dataset": "second"})
    assert index.manifest.thresholds == {"dense": 0.5, "keyword": 3.0}
