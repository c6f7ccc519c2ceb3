"""Where a nightly run reads and writes, and the gates it applies: `PipelineConfig`, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dags.pipeline.run_dir import RunDir

SOURCES = ("movielens", "synthetic")


@dataclass(frozen=True)
class PipelineConfig:
    """Where a run reads and writes, and the gates it applies.

    Attributes:
        home: project root.
        source: `"movielens"` (MovieLens-100K, fetched at set-up) or `"synthetic"` (small generated data).
        feature_repo: the Feast repository folder.
        data_cache: folder of the verified MovieLens download.
        artifacts: folder holding `runs/<ds>/` and the `latest` link.
        model_base_path: TF Serving model base path; versions go to `<base>/<model_name>/<n>/`.
        model_name: served model name.
        auc_floor: a candidate below this test AUC is never pushed.
        auc_tolerance: a candidate may trail the serving model's AUC by at most this much.
        epochs: maximum training epochs (early stopping usually ends sooner).
        allow_signature_change: bless a candidate whose `serving_default` signature differs from the serving
            model's (a deliberate spec change); its AUC is then not compared with the serving model's.
    """

    home: Path
    source: str = "movielens"
    feature_repo: Path | None = None
    data_cache: Path | None = None
    artifacts: Path | None = None
    model_base_path: Path | None = None
    model_name: str = "deepfm"
    auc_floor: float = 0.6
    auc_tolerance: float = 0.01
    epochs: int = 10
    allow_signature_change: bool = False

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}. Received: `source={self.source!r}`")
        defaults = {
            "feature_repo": self.home / "feature_repo",
            "data_cache": self.home / "data" / "movielens",
            "artifacts": self.home / "artifacts",
            "model_base_path": self.home / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_env(cls, home: Path, env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Config from `DEEPFM_*` environment variables, for the DAG and command lines only."""
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            return Path(env[name]) if name in env else None

        return cls(
            home=home,
            source=env.get("DEEPFM_SOURCE", "movielens"),
            feature_repo=path("DEEPFM_FEATURE_REPO"),
            data_cache=path("DEEPFM_DATA_CACHE"),
            artifacts=path("DEEPFM_ARTIFACTS"),
            model_base_path=path("DEEPFM_MODEL_BASE_PATH"),
            auc_floor=float(env.get("DEEPFM_AUC_FLOOR", cls.auc_floor)),
            epochs=int(env.get("DEEPFM_EPOCHS", cls.epochs)),
            allow_signature_change=env.get("DEEPFM_ALLOW_SIGNATURE_CHANGE", "").lower() in ("1", "true", "yes"),
        )

    def run_dir(self, ds: str) -> RunDir:
        """The run directory of logical date `ds` (YYYY-MM-DD)."""
        return RunDir(self.artifacts, ds)

    def version_dir(self, version: int) -> Path:
        """Where pushed `version` of the served model lives under the model base path."""
        return Path(self.model_base_path) / self.model_name / str(version)

    def load_raw(self):
        """The raw tables (`RawData`) of the configured source."""
        if self.source == "synthetic":
            from deepfm_model import synthetic

            return synthetic.generate()
        from feature_repo import movielens

        return movielens.load(self.data_cache)
