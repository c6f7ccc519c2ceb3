"""The gates of a nightly run, stage by stage: bad data stops before training, a weak model is never pushed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model import pipeline
from tests.e2e.conftest import SYNTHETIC_DS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> pipeline.PipelineConfig:
    """A run of synthetic data taken up to a built training snapshot."""
    from feature_repo.store import write_config

    home = tmp_path_factory.mktemp("gates")
    write_config(home / "feature_repo")
    config = pipeline.PipelineConfig(home=home, source="synthetic", feature_repo=home / "feature_repo", epochs=1)
    pipeline.ingest(config, SYNTHETIC_DS)
    pipeline.update_feature_store(config, SYNTHETIC_DS)
    rows = pipeline.build_training_set(config, SYNTHETIC_DS)
    assert rows["train_rows"] > rows["valid_rows"] > 0
    return config


def test_bad_snapshot_stops_the_run_before_training(prepared: pipeline.PipelineConfig) -> None:
    run_dir = prepared.run_dir(SYNTHETIC_DS)
    train_path = run_dir / "snapshot" / "train.parquet"
    good = pd.read_parquet(train_path)
    bad = good.copy()
    bad.loc[:9, "user_id"] = None
    bad.loc[10:19, "age"] = 450.0
    bad.to_parquet(train_path, index=False)
    try:
        with pytest.raises(pipeline.ValidationFailed) as failure:
            pipeline.validate(prepared, SYNTHETIC_DS)
        assert "user_id" in str(failure.value) and "age" in str(failure.value)
        assert json.loads((run_dir / "validation" / "result.json").read_text())["success"] is False
        with pytest.raises(pipeline.ValidationFailed):
            pipeline.train(prepared, SYNTHETIC_DS)
        assert not (run_dir / "model").exists()
    finally:
        good.to_parquet(train_path, index=False)


def test_candidate_below_the_floor_is_not_pushed(prepared: pipeline.PipelineConfig) -> None:
    assert pipeline.validate(prepared, SYNTHETIC_DS)["success"] is True
    pipeline.train(prepared, SYNTHETIC_DS)
    strict = pipeline.PipelineConfig(**{**prepared.__dict__, "auc_floor": 0.999})
    blessing = pipeline.bless(strict, SYNTHETIC_DS)
    assert blessing["blessed"] is False and "below the floor" in blessing["reason"]
    assert pipeline.push(strict, SYNTHETIC_DS)["model_version"] is None
    assert not Path(strict.model_base_path / "deepfm").exists()
    assert pipeline.verify_serving(strict, SYNTHETIC_DS)["verified"] is False
