import json

import pytest
from typer.testing import CliRunner

from searcher.cli import app

runner = CliRunner()

FAQ_LINES = [
    {
        "id": "pw",
        "question": "How do I reset my password?",
        "answer": "Use the forgot password link.",
        "category": "account",
    },
    {
        "id": "cancel",
        "question": "How do I cancel my subscription?",
        "answer": "Open billing settings.",
        "category": "billing",
    },
    {"id": "dark", "question": "Is there a dark mode?", "answer": "Yes, under Appearance.", "category": "display"},
]


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def faq_file(tmp_path):
    path = tmp_path / "faq.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in FAQ_LINES), encoding="utf-8")
    return path


@pytest.fixture
def indexed(faq_file, tiny_model, tmp_path):
    result = run("index", faq_file, "--index", "faq", "--model", tiny_model, "--home", tmp_path / "home")
    assert result.exit_code == 0, result.output
    return tmp_path / "home"


def test_index_prints_a_summary(indexed, faq_file, tiny_model):
    result = run("index", faq_file, "--index", "faq", "--home", indexed)
    assert result.exit_code == 0, result.output
    assert "Indexed 3 documents into faq" in result.stdout
    assert "0 new, 0 updated, 3 unchanged" in result.stdout


def test_query_json_round_trip(indexed):
    text = "How do I cancel my subscription? Open billing settings."
    result = run("query", text, "--index", "faq", "--home", indexed, "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["query"], answer["index"]) == (text, "faq")
    assert [r["rank"] for r in answer["results"]] == [1, 2]
    top = answer["results"][0]
    assert (top["id"], top["fields"]["category"], top["fields"]["answer"]) == (
        "cancel",
        "billing",
        "Open billing settings.",
    )
    assert top["score"] == pytest.approx(1.0, abs=1e-5)
    assert answer["results"][0]["score"] >= answer["results"][1]["score"]


def test_query_table(indexed):
    result = run("query", "dark mode", "--index", "faq", "--home", indexed)
    assert result.exit_code == 0, result.output
    assert "rank" in result.stdout and "dark" in result.stdout


def test_info_and_list_json(indexed, tiny_model):
    info = json.loads(run("info", "faq", "--home", indexed, "--json").stdout)
    assert info["documents"] == 3
    assert info["manifest"]["model"] == str(tiny_model)
    assert (info["manifest"]["layer"], info["manifest"]["pooling"]) == (-2, "mean")
    listed = json.loads(run("list", "--home", indexed, "--json").stdout)
    assert [(row["name"], row["documents"]) for row in listed] == [("faq", 3)]


def test_home_from_environment(faq_file, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCHER_HOME", str(tmp_path / "env-home"))
    assert run("index", faq_file, "--index", "envfaq", "--model", tiny_model).exit_code == 0
    assert (tmp_path / "env-home" / "envfaq" / "docs.sqlite").exists()


def test_config_file_settings_are_used(faq_file, tiny_model, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'model = "{tiny_model}"\nlayer = 0\npooling = "cls"\n')
    assert run("index", faq_file, "--index", "cfg", "--config", config, "--home", tmp_path).exit_code == 0
    manifest = json.loads(run("info", "cfg", "--home", tmp_path, "--json").stdout)["manifest"]
    assert (manifest["layer"], manifest["pooling"]) == (0, "cls")


def test_stdin_source(tiny_model, tmp_path):
    result = run(
        "index",
        "-",
        "--index",
        "piped",
        "--model",
        tiny_model,
        "--home",
        tmp_path,
        input='{"id": "a", "text": "from stdin"}\n',
    )
    assert result.exit_code == 0, result.output
    assert "Indexed 1 documents" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("query", "password", "--index", "missing"), 1, "no index named 'missing'"),
        (("query", "  ", "--index", "faq"), 2, "empty query"),
        (("query", "password", "--index", "faq", "-k", "0"), 2, "Invalid value for '-k'"),
        (("info", "missing"), 1, "no index named 'missing'"),
        (("index", "/no/such/file.jsonl", "--index", "faq"), 1, "no such file or directory"),
        (("index", "{faq}", "--index", "faq", "--pooling", "cls"), 2, "built with pooling 'mean'"),
        (("index", "{faq}", "--index", "new", "--pooling", "median"), 2, "choose one of auto, mean, max, cls"),
        (("index", "{faq}", "--index", "new", "--layer", "top"), 2, "use 'auto' or an integer"),
        (("index", "{faq}", "--index", "new", "--batch-size", "0"), 2, "batch_size must be a positive integer"),
        (("index", "{faq}", "--index", "new", "--model", "/no/such/model"), 1, "model directory not found"),
        (("index", "{faq}", "--index", "new", "--config", "/no/such.toml"), 2, "config file not found"),
        (("query", "--index", "faq"), 2, "Missing argument"),
        (("frobnicate",), 2, "No such command"),
    ],
)
def test_errors_are_one_line_without_traceback(indexed, faq_file, args, code, message):
    result = run(*(str(a).replace("{faq}", str(faq_file)) for a in args), "--home", indexed)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_record_names_the_line(tiny_model, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    result = run("index", source, "--index", "bad", "--model", tiny_model, "--home", tmp_path)
    assert result.exit_code == 1
    assert f"Error: {source}:2: invalid JSON" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_no_arguments_shows_help():
    result = run()
    assert "Usage" in result.stdout and "query" in result.stdout
    assert "Error" not in result.output
