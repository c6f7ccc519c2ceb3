"""The run directory of one logical date: every file a stage leaves for the next, named once.

Stages ask a `RunDir` for paths and never build one from strings; the model package names the files inside
`model/` (its writer), so they are taken from there. Every JSON file here is written with
`deepfm_model.spec.files` (atomic, fsynced).

```
artifacts/runs/<ds>/
  events.parquet              labelled events of the run (ingest)
  sampled.parquet             sampled "not picked" entity rows, sampling.json how they were drawn (ingest)
  validation/sources.json     raw-source suite result; validation/sources/ its Data Docs (ingest)
  skew.json                   online vs offline features (check_skew)
  snapshot/{train,valid,test}.parquet   point-in-time training set (build_training_set)
  validation/result.json      snapshot suite result; validation/reference.json its stats for the next run;
                              validation/ the Data Docs (validate)
  model/                      Keras model, history, metrics.json, report/, export/ (train)
  ranking/candidates.parquet  features of every (user, movie) the full-catalogue evaluation ranks; ranking/
                              tuning.json the baselines' tuning (evaluate); the retrieval index goes into the
                              export (`serving.retrieval.INDEX_FILE`)
  metrics.json                the model's metrics and the pushed version (train, push)
  blessing.json               the blessing decision and its evidence (bless)
  push.json                   the pushed version (push)
  verify.json                 the serving check (verify_serving)
  lineage.json                what the model was made from: FeatureService, suites, snapshot hash, code, packages
                              (bless; copied beside the pushed version by push)
artifacts/latest -> runs/<ds> of the newest trained run
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepfm_model.layout import EXPORT_DIR, HISTORY_FILE, METRICS_FILE, REPORT_DIR, REPORT_INDEX, SPLITS
from deepfm_model.spec.dates import check_ds
from deepfm_model.spec.files import fsync_dir

RUNS_DIR = "runs"
LATEST_LINK = "latest"


@dataclass(frozen=True)
class RunDir:
    """Paths of the run of logical date `ds` under `artifacts`.

    Attributes:
        artifacts: the folder holding `runs/` and the `latest` link.
        ds: the logical date, `YYYY-MM-DD`.
    """

    artifacts: Path
    ds: str

    def __post_init__(self) -> None:
        check_ds(self.ds)

    @property
    def root(self) -> Path:
        return Path(self.artifacts) / RUNS_DIR / self.ds

    @property
    def events(self) -> Path:
        return self.root / "events.parquet"

    @property
    def sampled(self) -> Path:
        """Sampled "not picked" entity rows (`feature_repo.negatives`)."""
        return self.root / "sampled.parquet"

    @property
    def sampling(self) -> Path:
        """How `sampled` was drawn: per event, seed, rows, dropped draws."""
        return self.root / "sampling.json"

    @property
    def ranking_dir(self) -> Path:
        """The full-catalogue evaluation's files."""
        return self.root / "ranking"

    @property
    def ranking_candidates(self) -> Path:
        """Features of every (user, movie) pair the full-catalogue evaluation ranks, as of the window's start."""
        return self.ranking_dir / "candidates.parquet"

    @property
    def ranking_tuning(self) -> Path:
        """The baselines' validation-window tuning: every grid point and its NDCG@10."""
        return self.ranking_dir / "tuning.json"

    @property
    def validation_dir(self) -> Path:
        """Data Docs of the snapshot suite and its results."""
        return self.root / "validation"

    @property
    def sources_docs_dir(self) -> Path:
        return self.validation_dir / "sources"

    @property
    def sources_result(self) -> Path:
        return self.validation_dir / "sources.json"

    @property
    def validation_result(self) -> Path:
        return self.validation_dir / "result.json"

    @property
    def reference(self) -> Path:
        """Stats of an accepted snapshot, the reference of the next run's drift checks."""
        return self.validation_dir / "reference.json"

    @property
    def skew(self) -> Path:
        return self.root / "skew.json"

    @property
    def snapshot_dir(self) -> Path:
        return self.root / "snapshot"

    def split(self, name: str) -> Path:
        """The parquet file of split `name` (one of `SPLITS`)."""
        if name not in SPLITS:
            raise ValueError(f"`name` must be one of {SPLITS}. Received: `name={name!r}`")
        return self.snapshot_dir / f"{name}.parquet"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def model_metrics(self) -> Path:
        return self.model_dir / METRICS_FILE

    @property
    def history(self) -> Path:
        return self.model_dir / HISTORY_FILE

    @property
    def export_dir(self) -> Path:
        return self.model_dir / EXPORT_DIR

    @property
    def report(self) -> Path:
        return self.model_dir / REPORT_DIR / REPORT_INDEX

    @property
    def metrics(self) -> Path:
        """The model's metrics with the pushed version, at the top of the run directory."""
        return self.root / METRICS_FILE

    @property
    def blessing(self) -> Path:
        return self.root / "blessing.json"

    @property
    def push(self) -> Path:
        return self.root / "push.json"

    @property
    def verify(self) -> Path:
        return self.root / "verify.json"

    @property
    def lineage(self) -> Path:
        return self.root / "lineage.json"

    def earlier_references(self) -> list[Path]:
        """Reference stats of the accepted snapshots of earlier dates, oldest first."""
        runs = Path(self.artifacts) / RUNS_DIR
        return sorted(p for p in runs.glob(f"*/validation/{self.reference.name}") if p.parent.parent.name < self.ds)

    def link_latest(self) -> None:
        """Point `artifacts/latest` at this run directory (a symlink replaced atomically)."""
        latest = Path(self.artifacts) / LATEST_LINK
        staged = Path(self.artifacts) / f".{LATEST_LINK}.partial"
        staged.unlink(missing_ok=True)
        staged.symlink_to(Path(RUNS_DIR) / self.ds, target_is_directory=True)
        staged.replace(latest)
        fsync_dir(self.artifacts)
