"""Lineage of a trained model: what it was made from, recorded in the run directory and copied beside each pushed
version, so that a version served tonight can be traced back to its run.

`record_lineage` (in `bless`, so every trained candidate has one) writes `RunDir.lineage`:

```
{"ds": "1998-04-23", "recorded_at": "...",
 "feature_service": "deepfm_v3",
 "validation": {"sources":  {"success": true, "expectations": 33, "suites": ["source_events", ...]},
                "snapshot": {"success": true, "expectations": 68, "suites": ["training_snapshot"],
                             "reference": "1998-04-22"}},
 "snapshot": {"sha256": "...", "files": {"train.parquet": {"sha256": "...", "bytes": 123, "rows": 80000}, ...}},
 "code": {"commit": "d1d5abe...", "dirty": false},
 "packages": {"tensorflow": "2.21.0", "keras": "3.12.0", ...}, "python": "3.11.9"}
```

`push` writes the same record with `model_name` and `model_version` added to
`<model_base_path>/<model>/<version>/assets.extra/lineage.json` (`served_lineage`) before the version's folder
appears: TF Serving reads only its warm-up file from `assets.extra/`, so the file travels with the version
without being served, and `version_of_run` finds the version a run pushed even when the run's own record of it
was never written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dags.pipeline.config import PipelineConfig
from deepfm_model.layout import SPLITS
from deepfm_model.spec.features import FEATURE_SERVICE
from deepfm_model.spec.files import read_json, write_json

logger = logging.getLogger(__name__)

# The distributions whose versions decide what a model is: the trainer, the feature store, the validator and the
# orchestrator.
PACKAGES = ("tensorflow", "keras", "feast", "great-expectations", "apache-airflow")
SERVED_LINEAGE = Path("assets.extra") / "lineage.json"  # inside a pushed version's folder
GX_VALIDATIONS_DIR = "validations"  # Great Expectations' Data Docs: one folder per suite that ran
GIT_TIMEOUT_S = 10.0


def record_lineage(config: PipelineConfig, ds: str) -> dict:
    """Write the lineage of the run of `ds` to its run directory and return it.

    Reads what the earlier stages left (both validation results, the snapshot); never fails on a missing code
    commit (no `git`, no repository): `code.commit` is then `None`.
    """
    run = config.run_dir(ds)
    lineage = {
        "ds": ds,
        "recorded_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "feature_service": FEATURE_SERVICE,
        "validation": {
            "sources": _suite_summary(run.sources_result, run.sources_docs_dir),
            "snapshot": _suite_summary(run.validation_result, run.validation_dir),
        },
        "snapshot": snapshot_fingerprint(run.snapshot_dir),
        "code": code_version(config.home),
        "packages": package_versions(),
        "python": platform.python_version(),
    }
    write_json(run.lineage, lineage)
    logger.info("Lineage of %s: snapshot %s, code %s", ds, lineage["snapshot"]["sha256"][:12], lineage["code"])
    return lineage


def served_lineage(config: PipelineConfig, ds: str) -> Callable[[int], dict[str, bytes]]:
    """For `push`'s `extra_files`: given the new version, the run's lineage (with `model_name` and
    `model_version` added) as the version's `SERVED_LINEAGE`, written before the version appears.

    Raises:
        FileNotFoundError: the run has no lineage (`record_lineage` did not run).
    """
    run = config.run_dir(ds)
    lineage = read_json(run.lineage)
    if lineage is None:
        raise FileNotFoundError(f"No lineage for {ds} at {run.lineage}; `record_lineage` runs in bless")

    def files(version: int) -> dict[str, bytes]:
        record = {**lineage, "model_name": config.model_name, "model_version": version}
        return {str(SERVED_LINEAGE): json.dumps(record, indent=2).encode()}

    return files


def version_of_run(config: PipelineConfig, ds: str) -> int | None:
    """The served version pushed from this very lineage of `ds` (same `recorded_at`), if one is in the base path."""
    from serving.push import list_versions

    lineage = read_json(config.run_dir(ds).lineage)
    if lineage is None:
        return None
    for version in reversed(list_versions(config.model_base_path, config.model_name)):
        served = read_json(config.version_dir(version) / SERVED_LINEAGE) or {}
        if served.get("ds") == ds and served.get("recorded_at") == lineage["recorded_at"]:
            return version
    return None


def snapshot_fingerprint(snapshot_dir: Path) -> dict:
    """sha256, size and row count of each split file, and one sha256 over all of them (split names included)."""
    import pyarrow.parquet as pq

    combined = hashlib.sha256()
    files = {}
    for name in SPLITS:
        path = Path(snapshot_dir) / f"{name}.parquet"
        digest = file_sha256(path)
        files[path.name] = {
            "sha256": digest,
            "bytes": path.stat().st_size,
            "rows": pq.ParquetFile(path).metadata.num_rows,
        }
        combined.update(f"{path.name}\0{digest}\n".encode())
    return {"sha256": combined.hexdigest(), "files": files}


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def code_version(home: Path) -> dict:
    """`{"commit": <git HEAD>, "dirty": <uncommitted changes>}` of the project at `home`; `None`s without git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(home), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, check=False)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, `None` for one not installed."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _suite_summary(result_path: Path, docs_dir: Path) -> dict | None:
    """Outcome and expectation count of one validation stage, and the suites its Data Docs show; `None` if not run."""
    result = read_json(result_path)
    if result is None:
        return None
    validations = Path(docs_dir) / GX_VALIDATIONS_DIR
    suites = sorted(p.name for p in validations.iterdir() if p.is_dir()) if validations.is_dir() else []
    summary = {"success": result.get("success"), "expectations": result.get("evaluated"), "suites": suites}
    if result.get("reference"):
        # `<artifacts>/runs/<ds>/validation/reference.json`: the date of the accepted run it was compared with.
        summary["reference"] = Path(result["reference"]).parent.parent.name
    elif "reference" in result:
        summary["reference"] = None
    return summary
