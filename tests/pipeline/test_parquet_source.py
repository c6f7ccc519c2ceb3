"""The nightly run on a team's own tables: `DEEPFM_SOURCE=parquet` reads a folder made by the generator command,
and a bad table stops the run at ingest with nothing written downstream."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dags.pipeline import stages
from dags.pipeline.config import ConfigurationError, PipelineConfig
from dags.pipeline.features import ValidationFailed
from deepfm_model.synthetic import main as generate_folder
from feature_repo import store
from tests.features.test_raw_source import BAD_TABLES, generated_tables, write_tables

DS = "1998-01-06"  # the day after the generated five days


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source")
    generate_folder(["--events", "3000", "--users", "120", "--movies", "60", "--start", "1998-01-01", "--days", "5",
                     "--out", str(folder), "--seed", "1"])  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def small_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return generated_tables(tmp_path_factory.mktemp("small"))


def parquet_config(home: Path, source: Path, **env: str) -> PipelineConfig:
    store.write_config(home / "feature_repo")
    return PipelineConfig.from_env({
        "DEEPFM_SOURCE": "parquet", "DEEPFM_SOURCE_DIR": str(source), "DEEPFM_FEATURE_REPO": str(home / "feature_repo"),
        "DEEPFM_ARTIFACTS": str(home / "artifacts"), "DEEPFM_MODEL_BASE_PATH": str(home / "models"), **env,
    })  # fmt: skip


def test_the_feature_stages_run_on_a_generated_folder(source, tmp_path):
    config = parquet_config(tmp_path, source)
    assert stages.ingest(config, DS) == {
        "events": 3000,
        "users": 120,
        "movies": 60,
        "sampled": 3000 * config.negatives_per_event,
    }
    stages.update_feature_store(config, DS)
    assert stages.check_skew(config, DS)["ok"]
    rows = stages.build_training_set(config, DS)
    per_event = 1 + config.negatives_per_event  # each event and its sampled rows
    assert rows == {"train_rows": 2400 * per_event, "valid_rows": 300 * per_event, "test_rows": 300 * per_event}
    assert stages.validate(config, DS)["success"]
    snapshot = pd.read_parquet(config.run_dir(DS).split("test"))
    assert snapshot["event_timestamp"].max() < pd.Timestamp(DS, tz="UTC")


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_table_stops_ingest_and_nothing_is_written_downstream(small_tables, tmp_path, case):
    corrupt, patterns = BAD_TABLES[case]
    config = parquet_config(tmp_path, write_tables(tmp_path / "bad", corrupt(small_tables)))
    with pytest.raises(ValidationFailed) as failure:
        stages.ingest(config, DS)
    assert re.search(patterns[0], str(failure.value)), str(failure.value)
    run = config.run_dir(DS)
    assert not store.data_dir(config.feature_repo).exists()
    assert not run.events.exists()
    assert sorted(p.name for p in run.root.rglob("*") if p.is_file()) == ["sources.json"]


def test_the_parquet_source_needs_its_folder(tmp_path):
    config = parquet_config(tmp_path, tmp_path)
    with pytest.raises(ConfigurationError, match="needs `DEEPFM_SOURCE_DIR`"):
        PipelineConfig.from_env({"DEEPFM_SOURCE": "parquet"}).load_raw()
    with pytest.raises(FileNotFoundError, match="no table `events`"):
        stages.ingest(config, DS)
    assert not (tmp_path / "artifacts").exists()


def test_training_settings_come_from_the_environment(tmp_path):
    config = parquet_config(tmp_path, tmp_path, DEEPFM_BATCH_SIZE="8192", DEEPFM_EPOCHS="2",
                            DEEPFM_EARLY_STOPPING_PATIENCE="1")  # fmt: skip
    assert (config.source, config.source_dir) == ("parquet", tmp_path)
    assert (config.batch_size, config.epochs, config.early_stopping_patience) == (8192, 2, 1)
    defaults = PipelineConfig(home=tmp_path)
    assert (defaults.batch_size, defaults.early_stopping_patience) == (1024, 2)  # TrainConfig's: MovieLens unchanged


def test_negatives_and_their_seed_reach_the_sampling(source, tmp_path):
    sampled = {}
    for name, env in {"two": {"DEEPFM_NEGATIVES": "2"}, "two-again": {"DEEPFM_NEGATIVES": "2"},
                      "other-seed": {"DEEPFM_NEGATIVES": "2", "DEEPFM_SAMPLING_SEED": "7"},
                      "none": {"DEEPFM_NEGATIVES": "0"},
                      "capped": {"DEEPFM_NEGATIVES": "2", "DEEPFM_MAX_SAMPLED_ROWS": "1500"}}.items():  # fmt: skip
        config = parquet_config(tmp_path / name, source, **env)
        expected = min(3000 * int(env["DEEPFM_NEGATIVES"]), int(env.get("DEEPFM_MAX_SAMPLED_ROWS", 10**9)))
        assert stages.ingest(config, DS)["sampled"] == expected
        run = config.run_dir(DS)
        recorded = json.loads(run.sampling.read_text())
        assert (recorded["per_event"], recorded["seed"]) == (int(env["DEEPFM_NEGATIVES"]), config.sampling_seed)
        assert recorded["rate"] == expected / 3000
        sampled[name] = pd.read_parquet(run.sampled)
    pd.testing.assert_frame_equal(sampled["two"], sampled["two-again"])
    assert not sampled["two"]["movie_id"].equals(sampled["other-seed"]["movie_id"])
    assert sampled["none"].empty


def test_top_n_settings_are_read_from_the_environment():
    config = PipelineConfig.from_env({"DEEPFM_NDCG_TOLERANCE": "0.05", "DEEPFM_RANKING_MAX_USERS": "all"})
    assert (config.ndcg_tolerance, config.ranking_max_users) == (0.05, None)
    assert PipelineConfig.from_env({"DEEPFM_RANKING_MAX_USERS": "300"}).ranking_max_users == 300
    # Users ranked: the cap, and within the pair budget on large catalogues (every user ranks every movie).
    capped = PipelineConfig.from_env({"DEEPFM_RANKING_MAX_USERS": "300", "DEEPFM_RANKING_MAX_PAIRS": "1000000"})
    assert (capped.ranking_users(1_682), capped.ranking_users(10_000), capped.ranking_users(100_000)) == (300, 100, 10)
    assert config.ranking_users(100_000) == PipelineConfig.ranking_max_pairs // 100_000  # `all` users: pairs bound
    with pytest.raises(ValueError, match="ranking_max_pairs"):
        PipelineConfig.from_env({"DEEPFM_RANKING_MAX_PAIRS": "0"})
    with pytest.raises(ValueError, match="negatives_per_event"):
        PipelineConfig.from_env({"DEEPFM_NEGATIVES": "-1"})
