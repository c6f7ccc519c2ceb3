"""Lineage: recorded in the run directory from what the stages left, copied beside a pushed version."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dags.pipeline import lineage
from deepfm_model.spec.features import FEATURE_SERVICE
from deepfm_model.spec.files import read_json
from tests.pipeline import ui_runs

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path):
    config = ui_runs.config_for(tmp_path)
    ui_runs.build_runs(config)
    return config


def test_record_lineage_writes_what_the_model_was_made_from(config) -> None:
    ds = ui_runs.STABLE_DS
    run = config.run_dir(ds)
    recorded = lineage.record_lineage(config, ds)
    assert json.loads(run.lineage.read_text()) == recorded
    assert recorded["ds"] == ds and recorded["feature_service"] == FEATURE_SERVICE
    assert recorded["validation"]["sources"] == {"success": True, "expectations": 33, "suites": ["source_events"]}
    assert recorded["validation"]["snapshot"] == {
        "success": True, "expectations": 68, "suites": ["training_snapshot"], "reference": ui_runs.DATES[0],
    }  # fmt: skip
    files = recorded["snapshot"]["files"]
    assert list(files) == ["train.parquet", "valid.parquet", "test.parquet"]
    assert files["train.parquet"]["sha256"] == hashlib.sha256(run.split("train").read_bytes()).hexdigest()
    assert [f["rows"] for f in files.values()] == [134, 133, 133]
    assert len(recorded["snapshot"]["sha256"]) == 64
    assert set(recorded["packages"]) == set(lineage.PACKAGES)
    assert recorded["packages"]["apache-airflow"] == importlib.metadata.version("apache-airflow")


def test_the_snapshot_hash_changes_with_any_split(config) -> None:
    run = config.run_dir(ui_runs.STABLE_DS)
    before = lineage.snapshot_fingerprint(run.snapshot_dir)["sha256"]
    pd.read_parquet(run.split("test")).iloc[1:].to_parquet(run.split("test"), index=False)
    assert lineage.snapshot_fingerprint(run.snapshot_dir)["sha256"] != before


def test_code_version_is_the_checkout_commit_or_none_without_git(tmp_path: Path) -> None:
    head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert lineage.code_version(PROJECT_ROOT)["commit"] == head.stdout.strip()
    assert lineage.code_version(tmp_path) == {"commit": None, "dirty": None}  # not a repository: no failure
    assert lineage.package_versions(("no-such-distribution-xyz",)) == {"no-such-distribution-xyz": None}


def test_push_puts_the_lineage_in_the_version_and_a_lost_push_record_pushes_nothing_twice(config) -> None:
    from dags.ops.bench.sample_model import save_sample_model
    from dags.pipeline import release
    from serving.push import list_versions

    ds = ui_runs.STABLE_DS
    run = config.run_dir(ds)
    save_sample_model(run.export_dir)
    with pytest.raises(FileNotFoundError, match="record_lineage"):
        release.push(config, ds)
    assert list_versions(config.model_base_path) == []  # no version without its lineage
    recorded = lineage.record_lineage(config, ds)
    first = release.push(config, ds)["model_version"]
    served = config.version_dir(first) / lineage.SERVED_LINEAGE
    assert read_json(served) == {**recorded, "model_name": "deepfm", "model_version": first}

    run.push.unlink()  # a try stopped after the version's rename, before the run's record of it
    assert release.push(config, ds)["model_version"] == first
    assert list_versions(config.model_base_path) == [first]
    assert read_json(run.push)["model_version"] == first

    lineage.record_lineage(config, ds)  # blessed again: another candidate, pushed as the next version
    run.push.unlink()
    assert release.push(config, ds)["model_version"] == first + 1
