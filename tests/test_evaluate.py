"""searcher eval: metrics, dataset loading and the temporary-index evaluation."""

import json

import pytest
from typer.testing import CliRunner

from searcher import Settings, load_settings
from searcher.cli import app
from searcher.errors import ConfigError, SourceError
from searcher.evaluate import evaluate, load_dataset, retrieval_metrics, sweep

DOCS = [
    {"_id": "pw", "title": "Password", "text": "Reset your password with the forgot password link."},
    {"_id": "bill", "title": "Billing", "text": "Invoices are in the billing section."},
    {"_id": "dark", "title": "Dark mode", "text": "Turn on dark mode under appearance."},
    {"_id": "export", "title": "Export", "text": "Export notes as markdown files."},
]
QUERIES = [
    {"_id": "q1", "text": "Reset your password with the forgot password link."},
    {"_id": "q2", "text": "Export notes as markdown files."},
    {"_id": "q3", "text": "an unjudged query"},
]


def write_beir(directory, qrels="query-id\tcorpus-id\tscore\nq1\tpw\t2\nq2\texport\t1\nq2\tbill\t0\n"):
    (directory / "qrels").mkdir(parents=True)
    (directory / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (directory / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (directory / "qrels" / "test.tsv").write_text(qrels)
    return directory


def test_metrics_on_hand_made_rankings():
    qrels = {"a": {"d1": 1}, "b": {"d2": 2, "d3": 1}}
    rankings = {"a": ["d9", "d1"], "b": ["d2", "d3"]}
    metrics = retrieval_metrics(rankings, qrels)
    assert metrics["top1"] == pytest.approx(0.5)
    assert metrics["mrr_at_10"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["recall_at_10"] == pytest.approx(1.0)
    # a: 1/log2(3) against an ideal of 1; b: perfect order of graded gains.
    assert metrics["ndcg_at_10"] == pytest.approx((1 / 1.5849625 + 1.0) / 2, rel=1e-6)


def test_graded_gain_rewards_the_better_document_first():
    qrels = {"q": {"great": 2, "good": 1}}
    right = retrieval_metrics({"q": ["great", "good"]}, qrels)["ndcg_at_10"]
    wrong = retrieval_metrics({"q": ["good", "great"]}, qrels)["ndcg_at_10"]
    assert right == pytest.approx(1.0) and wrong < right


def test_beir_loading_skips_unjudged_queries_and_zero_grades(tmp_path):
    dataset = load_dataset(write_beir(tmp_path / "faq"))
    assert set(dataset.queries) == {"q1", "q2"}
    assert dataset.qrels == {"q1": {"pw": 2}, "q2": {"export": 1}}


def test_missing_split_names_the_available_ones(tmp_path):
    with pytest.raises(SourceError, match="no qrels for split 'dev' \\(available: test\\)"):
        load_dataset(write_beir(tmp_path / "faq"), split="dev")


def test_sts_lines_are_tab_separated_unquoted_with_extra_columns(tmp_path):
    (tmp_path / "sts-test.csv").write_text(
        'main\tfile\t2012\t1\t4.500\tA "quoted sentence.\tAnother one.\textra\tcolumns\n'
        "main\tfile\t2012\t2\t0.0\tDogs bark.\tCats sleep.\n"
    )
    dataset = load_dataset(tmp_path)
    assert dataset.pairs == [('A "quoted sentence.', "Another one.", 4.5), ("Dogs bark.", "Cats sleep.", 0.0)]


def test_bad_sts_line_is_named(tmp_path):
    (tmp_path / "sts-test.csv").write_text("only\tthree\tcolumns\n")
    with pytest.raises(SourceError, match="sts-test.csv:1"):
        load_dataset(tmp_path / "sts-test.csv")


def test_unknown_dataset_layout(tmp_path):
    with pytest.raises(SourceError, match="neither a BEIR directory"):
        load_dataset(tmp_path)


def test_retrieval_through_a_temporary_index(tmp_path, tiny_model):
    dataset = load_dataset(write_beir(tmp_path / "faq"))
    results = evaluate(dataset, [load_settings(model=str(tiny_model), device="cpu")], ["dense", "keyword", "hybrid"])
    assert [r["config"]["mode"] for r in results] == ["dense", "keyword", "hybrid"]
    for result in results:
        # Each judged query is the exact text of its relevant document.
        assert result["top1"] == 1.0 and result["ndcg_at_10"] == pytest.approx(1.0)
        assert (result["queries"], result["docs"]) == (2, 4)
        assert (result["config"]["layer"], result["config"]["pooling"]) == (-2, "mean")


def test_sts_correlation(tmp_path, tiny_model):
    rows = [
        ("A man plays a guitar.", "A man plays a guitar.", 5.0),
        ("A man plays a guitar.", "A man is playing music.", 3.0),
        ("A man plays a guitar.", "Stock markets fell sharply on Monday.", 0.0),
    ]
    (tmp_path / "sts-test.csv").write_text(
        "".join(f"g\tf\ty\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows))
    )
    (result,) = evaluate(load_dataset(tmp_path), [load_settings(model=str(tiny_model), device="cpu")])
    assert result["pairs"] == 3
    assert -1.0 <= result["spearman"] <= 1.0 and -1.0 <= result["pearson"] <= 1.0


def test_sweep_makes_every_combination():
    configs = sweep(["-1", "-2"], ["mean", "cls", "max"], Settings())
    assert [(c.embedding.layer, c.embedding.pooling) for c in configs] == [
        (-1, "mean"),
        (-1, "cls"),
        (-1, "max"),
        (-2, "mean"),
        (-2, "cls"),
        (-2, "max"),
    ]


def test_invalid_mode_is_refused_before_indexing(tmp_path):
    with pytest.raises(ConfigError, match="invalid mode semantic"):
        evaluate(load_dataset(write_beir(tmp_path / "faq")), [Settings()], ["dense", "semantic"])


def test_eval_command_sweep_json_and_out(tmp_path, tiny_model):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(write_beir(tmp_path / "faq")),
            "--model",
            str(tiny_model),
            "--layer",
            "-1,-2",
            "--pooling",
            "mean",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [(r["config"]["layer"], r["config"]["pooling"]) for r in printed] == [(-1, "mean"), (-2, "mean")]
    assert json.loads(out.read_text()) == printed


def test_eval_command_table_marks_the_best(tmp_path, tiny_model):
    result = CliRunner().invoke(
        app, ["eval", str(write_beir(tmp_path / "faq")), "--model", str(tiny_model), "--mode", "dense,keyword"]
    )
    assert result.exit_code == 0, result.output
    assert "layer -2 mean chunk" in result.stdout and "dense" in result.stdout and "★" in result.stdout
