"""Indexing on Ray (a local cluster): the same vectors and results as the local path, resumable, same errors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import searcher.distributed
from searcher import Index, Record, load_settings, read_records
from searcher.cli import app
from searcher.distributed import STAGING_DIR, RayOptions, ReadOptions, add_source, source_files

pytestmark = pytest.mark.slow  # starts a local Ray cluster

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()
TOPICS = ["billing", "sync", "export", "sharing"]
RECORDS = [
    Record(
        f"d{i}",
        f"note {i} about {TOPICS[i % 4]} " + "word " * (i % 40) + ("A longer part. " * 90 if i % 50 == 0 else ""),
        {"n": i},
        (f"another wording of note {i}",) if i % 7 == 0 else (),
    )
    for i in range(150)
]
SETTINGS = load_settings(precision="fp32", device="cpu", batch_size=8)


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    environment = {"SEARCHER_CACHE_DIR": str(tmp_path_factory.mktemp("ray-cache")), "HF_HUB_OFFLINE": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": environment})
    yield
    ray.shutdown()


def write_jsonl(path, records):
    path.write_text(
        "".join(
            json.dumps({"id": r.id, "question": r.text, "n": r.fields["n"], "alternatives": list(r.phrasings)}) + "\n"
            for r in records
        )
    )
    return path


def new_index(path, tiny_model):
    return Index.create(path, SETTINGS.replace(model=str(tiny_model)))


def on_ray(index, source, shard_documents=20, skip_errors=False, on_embedded=None, on_stored=None):
    return add_source(
        index,
        str(source),
        source_files(str(source)),
        ReadOptions(skip_errors=skip_errors),
        SETTINGS.runtime,
        RayOptions(actors=2, shard_documents=shard_documents),
        on_embedded,
        on_stored,
    )


def stored(index, document_id):
    (document,) = [document for document in index.documents() if document.id == document_id]
    return document.text, document.fields


def vectors_by_document(index):
    return {(document_id, owner.phrasing, owner.span): vector for document_id, owner, vector in index.stored_vectors()}


def test_ray_and_local_paths_store_the_same_documents_and_vectors_and_answer_alike(tmp_path, tiny_model):
    source = write_jsonl(tmp_path / "faq.jsonl", RECORDS)
    with new_index(tmp_path / "local", tiny_model) as local, new_index(tmp_path / "ray", tiny_model) as distributed:
        local_report = local.add(read_records(source))
        ray_report, skipped = on_ray(distributed, source)
        assert skipped == [] and (ray_report.added, ray_report.truncated) == (
            local_report.added,
            local_report.truncated,
        ) == (150, 0)
        expected, got = vectors_by_document(local), vectors_by_document(distributed)
        assert (ray_report.split, ray_report.passages) == (local_report.split, local_report.passages)
        assert ray_report.split == 3 and ray_report.passages > 150
        assert got.keys() == expected.keys() and len(got) == ray_report.passages + 22
        assert max(float(np.abs(got[key] - expected[key]).max()) for key in got) < 1e-4
        assert distributed.check() == [] and not list((distributed.path / STAGING_DIR).iterdir())
        assert stored(distributed, "d14") == stored(local, "d14")
        for query in ("billing note", RECORDS[33].text, "another wording of note 14"):
            assert [(hit.id, round(hit.score, 4)) for hit in distributed.search(query, k=5)] == [
                (hit.id, round(hit.score, 4)) for hit in local.search(query, k=5)
            ]


def test_a_rerun_embeds_only_what_changed(tmp_path, tiny_model):
    source = write_jsonl(tmp_path / "faq.jsonl", RECORDS[:60])
    with new_index(tmp_path / "ray", tiny_model) as index:
        on_ray(index, source)
        changed = [
            Record(r.id, r.text + " edited", r.fields, r.phrasings) if i % 10 == 0 else r
            for i, r in enumerate(RECORDS[:60])
        ]
        write_jsonl(source, changed + [RECORDS[1]])  # d1 repeated: the last one wins
        embedded = []
        report, _ = on_ray(index, source, on_embedded=embedded.append)
        assert (report.added, report.updated, report.unchanged, report.duplicates) == (0, 6, 54, 1) and sum(
            embedded
        ) == 6
        assert stored(index, "d10")[0].endswith(" edited") and len(index) == 60 and index.check() == []


def test_shards_staged_before_a_crash_are_stored_without_embedding_them_again(tmp_path, tiny_model):
    source = write_jsonl(tmp_path / "faq.jsonl", RECORDS)
    with new_index(tmp_path / "ray", tiny_model) as index:
        stored_shards = []

        def crash_after_two_shards(documents):
            stored_shards.append(documents)
            if len(stored_shards) == 2:
                time.sleep(3)  # the actors stage more shards meanwhile
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            on_ray(index, source, shard_documents=10, on_stored=crash_after_two_shards)
        staged = {
            id for path in (index.path / STAGING_DIR).glob("*.parquet") for id in pq.read_table(path)["id"].to_pylist()
        }
        done = {document.id for document in index.documents()}
        assert len(done) == 20 and len(staged - done) > 0
        embedded = []
        report, _ = on_ray(index, source, shard_documents=10, on_embedded=embedded.append)
        assert sum(embedded) == 150 - len(done | staged) and (report.added, report.documents) == (150 - len(done), 150)
        assert len(index) == 150 and index.check() == [] and not list((index.path / STAGING_DIR).iterdir())


def test_shard_directories_of_parquet_and_jsonl_files_and_file_uris(tmp_path, tiny_model):
    shards = tmp_path / "shards"
    (shards / "part").mkdir(parents=True)
    for number, chunk in enumerate((RECORDS[:50], RECORDS[50:100])):
        pq.write_table(
            searcher.distributed.pa.table(
                {"id": [r.id for r in chunk], "text": [r.text for r in chunk], "n": [r.fields["n"] for r in chunk]}
            ),
            shards / f"part-{number}.parquet",
        )
    (shards / "part" / "rest.jsonl").write_text(
        "".join(json.dumps({"id": r.id, "text": r.text, "n": r.fields["n"]}) + "\n" for r in RECORDS[100:])
    )
    (shards / "README").write_text("not a shard")
    assert [path.rsplit("/", 1)[-1] for path in source_files(str(shards))] == [
        "part-0.parquet",
        "part-1.parquet",
        "rest.jsonl",
    ]
    assert source_files(f"file://{shards}/") == [
        f"file://{shards}/part-0.parquet",
        f"file://{shards}/part-1.parquet",
        f"file://{shards}/part/rest.jsonl",
    ]
    with new_index(tmp_path / "dir", tiny_model) as from_directory, new_index(tmp_path / "uri", tiny_model) as from_uri:
        assert on_ray(from_directory, shards)[0].added == 150
        assert on_ray(from_uri, f"file://{shards}/part-1.parquet")[0].added == 50
        assert stored(from_directory, "d60")[1] == {"n": 60} and from_uri.search(RECORDS[70].text, k=1)[0].id == "d70"


def on_both_engines(tmp_path, tiny_model, source, *options):
    """`searcher index SOURCE` on the local engine, then on Ray, each into an index of its own."""
    return [
        runner.invoke(
            app,
            [
                "index",
                str(source),
                "--index",
                str(tmp_path / engine),
                "--model",
                str(tiny_model),
                "--engine",
                engine,
                *options,
            ],
        )
        for engine in ("local", "ray")
    ]


def test_bad_input_fails_as_on_the_local_path(tmp_path, tiny_model):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    outputs = on_both_engines(tmp_path, tiny_model, source)
    assert outputs[0].exit_code == outputs[1].exit_code == 1
    assert outputs[0].stderr == outputs[1].stderr and "bad.jsonl:2: invalid JSON" in outputs[1].stderr
    (tmp_path / "bad.xml").write_text("<a/>")
    for arguments, message in (
        (["missing.jsonl"], "no such file or directory: missing.jsonl"),
        (["-"], "--engine ray reads files, not standard input"),
        ([str(tmp_path / "bad.xml")], "unsupported file type .xml"),
    ):
        result = runner.invoke(
            app, ["index", *arguments, "--index", str(tmp_path / "x"), "--model", str(tiny_model), "--engine", "ray"]
        )
        assert result.exit_code == 1 and message in result.stderr and not (tmp_path / "x").exists()
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    result = runner.invoke(
        app,
        [
            "index",
            str(tmp_path / "broken.parquet"),
            "--index",
            str(tmp_path / "y"),
            "--model",
            str(tiny_model),
            "--engine",
            "ray",
        ],
    )
    assert result.exit_code == 1 and result.stderr.startswith(
        f"Error: {tmp_path / 'broken.parquet'}: not a readable Parquet file"
    )


def test_malformed_records_are_skipped_on_request_as_on_the_local_path(tmp_path, tiny_model):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n{"id": "c", "text": "also fine"}\n')
    outputs = on_both_engines(tmp_path, tiny_model, source, "--on-error", "skip")
    assert outputs[0].exit_code == outputs[1].exit_code == 0
    assert outputs[0].stderr == outputs[1].stderr and "Skipped 1 malformed records; the first: " in outputs[1].stderr
    assert "2 new" in outputs[1].stdout


def test_the_command_killed_mid_run_resumes_without_duplicates_or_losses(tmp_path, tiny_model):
    records = [Record(f"k{i}", f"passage {i} on {TOPICS[i % 4]} " + "filler " * (i % 50)) for i in range(600)]
    source = write_jsonl(tmp_path / "big.jsonl", [Record(r.id, r.text, {"n": i}) for i, r in enumerate(records)])
    target = tmp_path / "killed"
    arguments = [
        "index",
        str(source),
        "--index",
        str(target),
        "--model",
        str(tiny_model),
        "--engine",
        "ray",
        "--shard-size",
        "20",
        "--precision",
        "fp32",
        "--batch-size",
        "4",
    ]
    command = subprocess.Popen(
        [sys.executable, "-m", "searcher", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"RAY_ADDRESS": ""},
    )
    stored, deadline = 0, time.monotonic() + 120
    while stored < 40 and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            stored = (
                sqlite3.connect(f"file:{target / 'docs.sqlite'}?mode=ro", uri=True)
                .execute("SELECT count(*) FROM documents")
                .fetchone()[0]
            )
        except sqlite3.OperationalError:  # not made yet, or its tables not yet
            pass
    command.send_signal(signal.SIGKILL)
    command.wait()
    assert 0 < stored < 600, "the run was not caught mid-way"
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "Indexed 600 documents" in result.stdout
    with Index.open(target) as index:
        assert len(index) == 600 and index.check() == [] and index.vector_count == 600
        assert index.search(records[321].text, k=1)[0].id == "k321"


def test_asking_for_gpus_the_cluster_lacks_is_refused_rather_than_waited_for(tmp_path, tiny_model):
    source = write_jsonl(tmp_path / "faq.jsonl", RECORDS[:5])
    result = runner.invoke(
        app,
        [
            "index",
            str(source),
            "--index",
            str(tmp_path / "x"),
            "--model",
            str(tiny_model),
            "--engine",
            "ray",
            "--gpus-per-actor",
            "1",
        ],
    )
    assert result.exit_code == 2 and "--gpus-per-actor 1, but the Ray cluster has 0 GPUs" in result.stderr
    assert not (tmp_path / "x").exists()


def test_without_ray_installed_the_message_says_how_to_get_it(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(searcher.distributed, "ray", None)
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n')
    result = runner.invoke(
        app, ["index", str(source), "--index", str(tmp_path / "x"), "--model", str(tiny_model), "--engine", "ray"]
    )
    assert result.exit_code == 2 and "--engine ray needs Ray: pip install 'searcher[ray]'" in result.stderr
