"""Embedding on Ray (a local cluster): the same vectors and results as the local path, resumable, same errors."""

import numpy as np
import pytest
from typer.testing import CliRunner

import searcher.distributed
from searcher import Index, Record, Settings
from searcher.cli import app
from searcher.config import BATCH_TOKENS
from searcher.distributed import RayOptions, engine

ray = pytest.importorskip("ray")
runner = CliRunner()
RECORDS = [
    Record(f"d{i}", f"note {i} about {['billing', 'sync', 'export', 'sharing'][i % 4]} " + "word " * (i % 40),
           {"n": i}, (f"another wording of note {i}",) if i % 7 == 0 else ())
    for i in range(150)
]


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    environment = {"SEARCHER_CACHE_DIR": str(tmp_path_factory.mktemp("ray-cache")), "HF_HUB_OFFLINE": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": environment})
    yield
    ray.shutdown()


def new_index(path, tiny_model):
    return Index.create(path, Settings(model=str(tiny_model), precision="fp32", device="cpu"))


def vectors_by_document(index):
    ids, vectors = index._store.vectors(index.manifest["dimension"])
    owners = index._store.vector_owners(ids.tolist())
    documents = index._store.documents(sorted({document for document, _ in owners.values()}))
    return {(documents[owners[i][0]].id, owners[i][1]): vector for i, vector in zip(ids.tolist(), vectors)}


def test_ray_and_local_paths_store_the_same_vectors_and_answer_alike(tmp_path, tiny_model):
    with new_index(tmp_path / "local", tiny_model) as local, new_index(tmp_path / "ray", tiny_model) as distributed:
        local_report = local.add(RECORDS)
        ray_report = distributed.add(RECORDS, engine=engine(distributed, BATCH_TOKENS, RayOptions(actors=2, batch_size=16)))
        assert (ray_report.added, ray_report.truncated) == (local_report.added, local_report.truncated) == (150, 0)
        expected, got = vectors_by_document(local), vectors_by_document(distributed)
        assert got.keys() == expected.keys() and len(got) == 150 + 22
        assert max(float(np.abs(got[key] - expected[key]).max()) for key in got) < 1e-4
        assert distributed.check() == []
        for query in ("billing note", RECORDS[33].text, "another wording of note 14"):
            assert [(hit.id, round(hit.score, 4)) for hit in distributed.search(query, k=5)] == \
                   [(hit.id, round(hit.score, 4)) for hit in local.search(query, k=5)]


def test_an_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, tiny_model):
    with new_index(tmp_path / "ray", tiny_model) as index:
        ray_engine = engine(index, BATCH_TOKENS, RayOptions(actors=1, batch_size=20))
        handed = []

        def crashing(documents):
            handed.append(len(documents))
            for number, batch in enumerate(ray_engine(documents)):
                if number == 3:
                    raise KeyboardInterrupt  # a kill after three batches were stored
                yield batch

        with pytest.raises(KeyboardInterrupt):
            index.add(RECORDS, engine=crashing)
        stored = len(index)
        assert 0 < stored < 150
        report = index.add(RECORDS, engine=crashing)
        assert (report.added, report.unchanged) == (150 - stored, stored) and handed[-1] == 150 - stored
        assert len(index) == 150 and index.check() == []
        assert index.search(RECORDS[120].text, k=1)[0].id == "d120"


def test_the_command_with_ray(tmp_path, tiny_model):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(f'{{"id": "{r.id}", "text": "{r.text}"}}\n' for r in RECORDS[:30]))
    arguments = ["index", str(source), "--index", str(tmp_path / "cmd"), "--model", str(tiny_model), "--engine", "ray", "--actors", "2"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "Indexed 30 documents" in result.stdout and "30 new" in result.stdout


def test_bad_input_fails_as_on_the_local_path(tmp_path, tiny_model):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    outputs = [runner.invoke(app, ["index", str(source), "--index", str(tmp_path / engine_name), "--model", str(tiny_model),
                                   "--engine", engine_name]) for engine_name in ("local", "ray")]
    assert outputs[0].exit_code == outputs[1].exit_code != 0
    assert outputs[0].stderr.replace("local", "ENGINE") == outputs[1].stderr.replace("ray", "ENGINE")
    assert "bad.jsonl:2" in outputs[1].stderr


def test_without_ray_installed_the_message_says_how_to_get_it(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(searcher.distributed, "ray", None)
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n')
    result = runner.invoke(app, ["index", str(source), "--index", str(tmp_path / "x"), "--model", str(tiny_model), "--engine", "ray"])
    assert result.exit_code != 0 and "--engine ray needs Ray: pip install 'searcher[ray]'" in result.stderr
