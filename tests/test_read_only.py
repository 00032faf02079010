"""Readers never write: opening, searching, listing and checking an index change no file; read-only storage works."""

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from searcher import Index, Record
from searcher.cli import app
from searcher.paths import VECTORS_FILE

RECORDS = [Record(str(i), text) for i, text in enumerate(["reset my password", "cancel billing", "export notes"])]


def snapshot(directory):
    """Every file under DIRECTORY with its size and modification time."""
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(directory.iterdir())}


@pytest.fixture
def index_path(tiny_index):
    index = tiny_index(RECORDS, "ro")
    index.close()
    return index.path


def test_opening_searching_listing_and_checking_change_no_file(index_path, caplog):
    (index_path / VECTORS_FILE).unlink()  # a reader would once have saved the rebuilt file here
    before = snapshot(index_path)
    with Index.open(index_path) as index:
        assert index.search("password", k=1)[0].id == "0"
        assert index.search("billing", k=1, mode="keyword")[0].id == "1"
        assert index.check() == [
            "vectors.faiss is missing (searches rebuild it in memory each time the index is opened)"
        ]
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(index_path)]).exit_code == 1
    assert runner.invoke(app, ["info", str(index_path)]).exit_code == 0
    assert runner.invoke(app, ["list", "--home", str(index_path.parent)]).exit_code == 0
    assert snapshot(index_path) == before


def test_list_and_info_read_sqlite_only(index_path):
    (index_path / VECTORS_FILE).write_bytes(b"not faiss")  # would fail to load, or be rebuilt with a warning
    result = CliRunner().invoke(app, ["info", str(index_path), "--json"])
    assert result.exit_code == 0 and "Warning" not in result.stderr
    assert json.loads(result.stdout)["documents"] == 3


READ_ONLY_MOUNT = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'


def on_read_only_mount(source, mount_point, *command):
    """COMMAND run with SOURCE mounted read-only at MOUNT_POINT, in a mount namespace of its own."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", READ_ONLY_MOUNT, "sh", str(source), str(mount_point), *command],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_an_index_on_read_only_storage_answers_and_refuses_writes_in_one_line(index_path, tmp_path, tiny_model):
    mount_point = tmp_path / "mounted"
    mount_point.mkdir()
    if shutil.which("unshare") is None or on_read_only_mount(tmp_path, mount_point, "true").returncode != 0:
        pytest.skip("no permission to make a read-only mount here")
    searcher = [sys.executable, "-m", "searcher"]
    mounted = str(mount_point / index_path.name)
    query = on_read_only_mount(
        index_path.parent, mount_point, *searcher, "query", "password", "--index", mounted, "--json"
    )
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["results"][0]["id"] == "0"
    check = on_read_only_mount(index_path.parent, mount_point, *searcher, "check", mounted)
    assert check.returncode == 0 and "consistent: 3 documents" in check.stdout
    delete = on_read_only_mount(index_path.parent, mount_point, *searcher, "delete", "--index", mounted, "0")
    assert delete.returncode == 1 and delete.stderr.strip() == "Error: cannot write index 'ro': Read-only file system"
