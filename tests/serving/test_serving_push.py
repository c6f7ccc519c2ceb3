"""serving.push: versions only grow, a push is atomic, old versions are pruned."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from serving import push as push_module
from serving.push import list_versions, push


@pytest.fixture
def export_dir(tmp_path) -> Path:
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"graph")
    (export / "variables" / "variables.index").write_bytes(b"index")
    (export / "assets.extra").mkdir()
    (export / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"warmup")
    return export


def _visible(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if not p.name.startswith("."))


def test_push_copies_into_growing_versions(export_dir, tmp_path):
    base = tmp_path / "models"
    assert list_versions(base, "deepfm") == []
    assert [push(export_dir, base) for _ in range(3)] == [1, 2, 3]
    assert list_versions(base, "deepfm") == [1, 2, 3]
    assert (base / "deepfm" / "3" / "variables" / "variables.index").read_bytes() == b"index"
    assert (base / "deepfm" / "3" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert _visible(base / "deepfm") == ["1", "2", "3"]


def test_push_keeps_newest_and_never_reuses_a_version(export_dir, tmp_path):
    base = tmp_path / "models"
    for _ in range(4):
        push(export_dir, base, "ranker", keep=2)
    assert list_versions(base, "ranker") == [3, 4]
    for version in list_versions(base, "ranker"):
        shutil.rmtree(base / "ranker" / str(version))
    assert push(export_dir, base, "ranker", keep=2) == 5


def test_list_versions_ignores_non_versions(tmp_path):
    model_dir = tmp_path / "deepfm"
    for name in ("7", "12", ".staging-13-abc", "tmp", "3a"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "20").write_text("a file, not a version")
    assert list_versions(tmp_path, "deepfm") == [7, 12]


def test_interrupted_copy_leaves_no_version(export_dir, tmp_path, monkeypatch):
    base = tmp_path / "models"
    push(export_dir, base)

    def copy_then_die(src, dst, *args, **kwargs):
        Path(dst).mkdir()
        (Path(dst) / "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(push_module.shutil, "copytree", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        push(export_dir, base)
    assert list_versions(base, "deepfm") == [1]
    assert _visible(base / "deepfm") == ["1"]
    assert not any(p.name.startswith(".staging") for p in (base / "deepfm").iterdir())


def test_failed_rename_leaves_no_version_and_the_next_push_moves_on(export_dir, tmp_path, monkeypatch):
    base = tmp_path / "models"
    push(export_dir, base)

    def fail(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(push_module.os, "rename", fail)
    with pytest.raises(OSError, match="disk gone"):
        push(export_dir, base)
    monkeypatch.undo()
    assert list_versions(base, "deepfm") == [1]
    assert push(export_dir, base) == 3  # version 2 was handed out; it is never reused


def test_leftovers_of_a_killed_push_are_invisible_then_removed(export_dir, tmp_path):
    base = tmp_path / "models"
    push(export_dir, base)
    leftover = base / "deepfm" / ".staging-2-deadbeef"
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"half")
    assert list_versions(base, "deepfm") == [1]
    assert push(export_dir, base) == 2
    assert not leftover.exists()


def test_concurrent_pushes_get_distinct_versions(export_dir, tmp_path):
    base = tmp_path / "models"
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(push(export_dir, base, keep=10))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert list_versions(base, "deepfm") == [1, 2, 3, 4, 5, 6]


def test_push_rejects_bad_arguments(export_dir, tmp_path):
    with pytest.raises(ValueError, match="keep"):
        push(export_dir, tmp_path / "models", keep=0)
    with pytest.raises(ValueError, match="saved_model.pb"):
        push(tmp_path / "nothing", tmp_path / "models")
    assert not (tmp_path / "models").exists()
