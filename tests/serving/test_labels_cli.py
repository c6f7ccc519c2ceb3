"""`python -m serving.labels ensure|show|set|rollback`: the model config from a shell, as an operator uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.labels import read_version_config
from serving.push import push
from serving.server_process import ROOT
from tests.serving.helpers import MODEL_NAME


def labels(base: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "serving.labels", *args, "--base-path", str(base), "--model-name", MODEL_NAME]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_set_show_rollback_and_refusals_from_the_shell(tmp_path, exports):
    base = tmp_path / "models"
    for weight in (0.0, 1.0, 2.0):
        push(exports.good[weight], base)  # versions 1, 2, 3
    ensured = labels(base, "ensure")
    assert ensured.returncode == 0 and (base / "models.config").is_file(), ensured.stderr
    assert labels(base, "set", "stable", "3").returncode == 0
    assert labels(base, "set", "canary", "2").returncode == 0
    shown = labels(base, "show")
    assert shown.returncode == 0 and "'stable': 3" in shown.stdout and "'canary': 2" in shown.stdout, shown.stdout
    assert labels(base, "rollback", "stable").returncode == 0  # to the newest version below 3
    assert read_version_config(base, MODEL_NAME).labels == {"stable": 2, "canary": 2}

    before = (base / "models.config").read_text()
    unloaded = labels(base, "rollback", "stable", "1")  # the latest-2 policy does not load version 1
    assert unloaded.returncode == 1 and "latest-2 policy" in unloaded.stderr and "Traceback" not in unloaded.stderr
    missing = labels(base, "set", "stable", "9")
    assert missing.returncode == 1 and "Version 9" in missing.stderr and "Traceback" not in missing.stderr
    usage = labels(base, "set", "stable")
    assert usage.returncode == 2 and "set needs a LABEL and a VERSION" in usage.stderr
    assert (base / "models.config").read_text() == before  # a refused command changes nothing
