"""The reliability audit's rows on embedding, storage and index files: each test failed before its fix."""

import http.server
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
from test_hostile_input import assert_one_line_error
from typer.testing import CliRunner

from searcher import Index, Record, load_settings, writes
from searcher.cli import app
from searcher.errors import SourceError
from searcher.paths import DOCS_FILE, LOCK_FILE, VECTORS_FILE

runner = CliRunner()
DOCUMENTS = [Record(f"d{i}", f"stored document number {i} about topic {i % 7}", {"n": i}) for i in range(600)]


def cli(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def execute(index_path, statement, *values):
    """Change docs.sqlite behind searcher's back, as damage or an older searcher would."""
    connection = sqlite3.connect(index_path / DOCS_FILE)
    with connection:
        connection.execute(statement, values)
    connection.close()


def damage_page(index_path, table):
    """Overwrite a leaf page in the middle of TABLE with bytes that are no b-tree page."""
    connection = sqlite3.connect(index_path / DOCS_FILE)
    leaves = [
        page
        for (page,) in connection.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,)
        )
    ]
    size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    page = leaves[len(leaves) // 2]
    with (index_path / DOCS_FILE).open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(bytes(range(256)) * (size // 256))


def assert_problems(result, *messages):
    """`searcher check` listed problems (each message in one of them) and exited 1, without a traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("Problem: ")]
    assert problems and all(any(message in line for line in problems) for message in messages), result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: ")


def assert_warned_then_failed(result, message):
    """One `Error:` line with MESSAGE, after the warning that the vector file is rebuilt, and no traceback."""
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    *warnings, error = result.stderr.strip().splitlines()
    assert all(line.startswith("Warning: the vector file") for line in warnings), warnings
    assert error.startswith("Error: ") and message in error, error


def assert_each_finds_itself(index_path, documents):
    with Index.open(index_path) as index:
        assert index.check() == []
        for record in documents:
            assert index.search(record.text, k=1)[0].id == record.id


@pytest.fixture
def stored(tiny_index):
    """The path of a closed index holding DOCUMENTS."""
    index = tiny_index(DOCUMENTS, "stored")
    index.close()
    return index.path


def test_row1_a_documents_wordings_are_embedded_within_the_batch_budgets(tiny_embedder, monkeypatch):
    phrasings = [f"another wording {i} of the question" + " word" * (i % 9) for i in range(300)]
    shapes = []
    model = tiny_embedder.model

    def recorded(ids, mask):
        shapes.append(tuple(ids.shape))
        return model(ids, mask)

    monkeypatch.setattr(tiny_embedder, "model", recorded)
    batches = list(
        tiny_embedder.embed_documents(
            [("a short text", "", ()), ("the question", "", phrasings)], batch_size=16, batch_tokens=256
        )
    )
    assert len(shapes) > 1 and all(texts <= 16 and texts * tokens <= 256 for texts, tokens in shapes), shapes
    vectors = {position: [] for position in (0, 1)}
    for batch in batches:
        rows = iter(batch.vectors)
        for position in batch.positions:  # every document comes whole, in one batch: text, then each phrasing
            assert not vectors[position]
            vectors[position] = [next(rows) for _ in range(1 + (len(phrasings) if position else 0))]
    np.testing.assert_allclose(vectors[0], tiny_embedder.embed(["a short text"]), atol=1e-5)
    np.testing.assert_allclose(vectors[1], tiny_embedder.embed(["the question", *phrasings]), atol=1e-5)


def test_row1_a_record_with_too_many_wordings_is_refused_before_anything_is_written(tiny_index):
    index = tiny_index([Record("kept", "a kept document")])
    wordings = tuple(f"wording number {i}" for i in range(writes.MAX_PHRASINGS + 1))
    with pytest.raises(SourceError, match=f"document 'big' has {writes.MAX_PHRASINGS + 1:,} alternative wordings"):
        index.add([Record("first", "a document before it"), Record("big", "the question", {}, wordings)])
    assert [document.id for document in index.documents()] == ["kept"]
    index.add([Record("most", "the question", {}, wordings[:-1])])
    assert index.vector_count == 2 + writes.MAX_PHRASINGS


def test_row2_check_finds_fields_that_are_not_json_and_query_json_stays_valid(stored):
    execute(stored, "UPDATE documents SET fields = ? WHERE id = 'd3'", '{"n": NaN, "ok": 1}')  # an older searcher
    assert_problems(cli("check", stored), "1 documents have fields that are not valid JSON, e.g. 'd3'")
    result = cli("query", DOCUMENTS[3].text, "--index", stored, "--json", "-k", "1")
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(result.stdout, parse_constant=refuse)["results"][0]["fields"] == {"n": None, "ok": 1}
    repaired = cli("check", stored, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert_each_finds_itself(stored, DOCUMENTS[3:4])


def test_row2_a_damaged_vector_never_puts_nan_into_query_json(stored):
    nan = np.full(32, np.nan, dtype=np.float32).tobytes()
    execute(stored, "UPDATE vectors SET vector = ? WHERE document = (SELECT rowid FROM documents WHERE id = 'd4')", nan)
    result = cli("query", "topic", "--index", stored, "--filter", '{"n": 4}', "--json")  # scored from SQLite
    assert_one_line_error(result, "a result holds a number JSON cannot (NaN or infinity): run `searcher check`")
    assert result.stdout == ""


def test_row2_fields_json_cannot_hold_are_refused(stored):
    with Index.open(stored) as index:
        with pytest.raises(SourceError, match="document 'nan'"):
            index.add([Record("fine", "a fine document"), Record("nan", "a document", {"score": float("nan")})])
        assert len(index) == len(DOCUMENTS) and index.check() == []


def test_row3_two_writers_creating_the_same_new_index_both_succeed(tiny_model, tmp_path):
    settings = load_settings(model=str(tiny_model), device="cpu")
    for attempt in range(3):
        path, start, failures = tmp_path / f"new-{attempt}", threading.Barrier(2), []

        def write(writer, path=path, start=start, failures=failures):
            try:
                start.wait()
                with Index.for_adding(path, settings) as index:
                    index.add([Record(f"{writer}{i}", f"document {i} written by {writer}") for i in range(20)])
            except Exception as error:  # any error at all fails the test, tracebacks included
                failures.append(repr(error))

        writers = [threading.Thread(target=write, args=(writer,)) for writer in ("a", "b")]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        assert failures == []
        with Index.open(path) as index:
            assert len(index) == 40 and index.check() == []


@pytest.mark.slow
def test_row3_two_index_processes_creating_the_same_new_index_both_succeed(tiny_model, tmp_path):
    home = tmp_path / "home"
    sources = []
    for writer in ("a", "b"):
        sources.append(tmp_path / f"{writer}.jsonl")
        rows = ({"id": f"{writer}{i}", "text": f"document {i} written by {writer}"} for i in range(50))
        sources[-1].write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = [sys.executable, "-m", "searcher", "index", "--index", "new", "--model", tiny_model, "--home", home]
    processes = [
        subprocess.Popen([*map(str, command), str(source)], stderr=subprocess.PIPE, text=True) for source in sources
    ]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    with Index.open("new", home) as index:
        assert len(index) == 100 and index.check() == []


def test_row5_a_damaged_vectors_page_is_listed_and_repaired_from_the_documents(stored):
    damage_page(stored, "vectors")
    assert_problems(cli("check", stored), "database disk image is malformed")
    (stored / VECTORS_FILE).unlink()  # searches then read every stored vector
    assert_warned_then_failed(cli("query", "topic 3", "--index", stored), "docs.sqlite is damaged")
    repaired = cli("check", stored, "--repair")
    assert repaired.exit_code == 0 and "Traceback" not in repaired.output, repaired.output
    assert "documents had no vector and were embedded again" in repaired.stderr
    assert "(repaired)" in repaired.stdout
    assert_each_finds_itself(stored, DOCUMENTS[::7])


def test_row5_repair_says_how_many_documents_a_damaged_page_lost(stored):
    damage_page(stored, "documents")
    assert_problems(cli("check", stored), "database disk image is malformed")
    repaired = cli("check", stored, "--repair")
    assert repaired.exit_code == 0 and "Traceback" not in repaired.output, repaired.output
    with Index.open(stored) as index:
        kept = {document.id for document in index.documents()}
    lost = len(DOCUMENTS) - len(kept)
    assert 0 < lost < 100
    assert f"{lost} of {len(DOCUMENTS)} documents could not be read and are lost" in repaired.stderr
    assert_each_finds_itself(stored, [record for record in DOCUMENTS if record.id in kept][::7])


def test_row5_a_vector_of_the_wrong_size_is_listed_and_embedded_again(stored):
    execute(
        stored,
        "UPDATE vectors SET vector = x'0011223344' WHERE document = (SELECT rowid FROM documents WHERE id = 'd5')",
    )
    assert_problems(
        cli("check", stored),
        "1 vectors are damaged (the wrong size, not of unit length, or of a passage outside its text), e.g. of 'd5'",
    )
    (stored / VECTORS_FILE).unlink()
    assert_warned_then_failed(cli("query", "topic 3", "--index", stored), "a stored vector is 5 bytes long, not 128")
    repaired = cli("check", stored, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert_each_finds_itself(stored, DOCUMENTS[5:6])


def test_row11_a_tampered_model_path_is_refused_before_its_weights_are_loaded(stored, tiny_model, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model, tampered, ignore=shutil.ignore_patterns("*.safetensors"))
    (tampered / "pytorch_model.bin").write_bytes(pickle.dumps(print))  # torch's weights-only loader refuses it
    execute(stored, "UPDATE manifest SET value = ? WHERE key = 'model'", json.dumps(str(tampered)))
    assert_one_line_error(cli("query", "topic", "--index", stored), "was built with a different copy of")


class RecordingHub(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # what http.server calls for a GET request
        self.requests.append(self.path)
        self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *_args):
        pass


@pytest.mark.slow
def test_row11_opening_an_index_never_downloads_its_model(stored, tmp_path):
    execute(stored, "UPDATE manifest SET value = ? WHERE key = 'model'", json.dumps("someone/not-cached-model"))
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    environment = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}", "HF_HOME": tmp_path}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "searcher", "query", "topic", "--index", str(stored)],
            env=os.environ | {key: str(value) for key, value in environment.items()},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        hub.shutdown()
    assert RecordingHub.requests == []
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "Error: model 'someone/not-cached-model' is not in the local Hugging Face cache, and opening an index "
        "downloads nothing; download it first (for example with `searcher embed x --model someone/not-cached-model`)"
    ]


def test_row12_a_huge_k_in_keyword_mode(stored):
    result = cli("query", "topic", "--index", stored, "-k", "99999999999999999999", "--mode", "keyword", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == len(DOCUMENTS)


def test_row12_a_write_lock_that_is_a_symbolic_link(stored, tmp_path):
    (stored / LOCK_FILE).unlink()
    (stored / LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    source = tmp_path / "more.jsonl"
    source.write_text('{"id": "more", "text": "one more"}\n')
    for command in (
        ["index", source, "--index", stored],
        ["drop", stored, "--yes"],
        ["delete", "d1", "--index", stored],
    ):
        assert_one_line_error(cli(*command), "cannot write index 'stored': Too many levels of symbolic links")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("DELETE FROM manifest WHERE key = 'dimension'", "dimension is missing"),
        ("UPDATE manifest SET value = 'minus two' WHERE key = 'layer'", "the manifest's 'layer' is not JSON"),
        ("UPDATE manifest SET value = '\"fancy\"' WHERE key = 'index_type'", "index_type 'fancy' is not one of"),
        ("UPDATE manifest SET value = '0' WHERE key = 'dimension'", "dimension 0 is not a positive integer"),
        (
            "INSERT INTO manifest (key, value) VALUES ('thresholds', '{\"dense\": NaN}')",
            "thresholds {'dense': nan} is not an object of scores",
        ),
    ],
)
def test_row12_a_damaged_manifest_is_one_line_and_listed_by_check(stored, statement, problem):
    execute(stored, statement)
    assert_problems(cli("check", stored), problem)
    assert_one_line_error(cli("query", "topic", "--index", stored), problem)
    assert_one_line_error(cli("info", stored), problem)
    listed = cli("list", "--home", stored.parent, "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["name"] for row in json.loads(listed.stdout) if problem in row.get("error", "")] == ["stored"]
