"""The gates of a nightly run, stage by stage: bad data stops before training, a weak model is never pushed."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import re
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from dags.pipeline import stages as pipeline
from dags.pipeline.config import PipelineConfig
from dags.pipeline.features import ValidationFailed
from dags.pipeline.release import serving_version
from dags.pipeline.serving_tier import ReplicaFailed
from deepfm_model.layout import CONFIG_FILE, PREPROCESSING_FILE
from deepfm_model.spec.features import PICK_PRIOR
from tests.e2e.conftest import SYNTHETIC_DS, serving_tier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    """A run of synthetic data taken up to a built training snapshot."""
    from feature_repo.store import write_config

    home = tmp_path_factory.mktemp("gates")
    write_config(home / "feature_repo")
    config = PipelineConfig(home=home, source="synthetic", feature_repo=home / "feature_repo", epochs=1, batch_size=512,
                            pick_prior=True)  # fmt: skip
    pipeline.ingest(config, SYNTHETIC_DS)
    pipeline.update_feature_store(config, SYNTHETIC_DS)
    rows = pipeline.build_training_set(config, SYNTHETIC_DS)
    assert rows["train_rows"] > rows["valid_rows"] > 0
    return config


def test_bad_snapshot_stops_the_run_before_training(prepared: PipelineConfig) -> None:
    run_dir = prepared.run_dir(SYNTHETIC_DS).root
    train_path = run_dir / "snapshot" / "train.parquet"
    good = pd.read_parquet(train_path)
    bad = good.copy()
    bad.loc[:9, "user_id"] = None
    bad.loc[10:19, "age"] = 450.0
    bad.to_parquet(train_path, index=False)
    try:
        with pytest.raises(ValidationFailed) as failure:
            pipeline.validate(prepared, SYNTHETIC_DS)
        assert "user_id" in str(failure.value) and "age" in str(failure.value)
        assert json.loads((run_dir / "validation" / "result.json").read_text())["success"] is False
        with pytest.raises(ValidationFailed):
            pipeline.train(prepared, SYNTHETIC_DS)
        assert not (run_dir / "model").exists()
    finally:
        good.to_parquet(train_path, index=False)


def test_candidate_below_the_floor_is_not_pushed(prepared: PipelineConfig) -> None:
    assert pipeline.validate(prepared, SYNTHETIC_DS)["success"] is True
    pipeline.train(prepared, SYNTHETIC_DS)
    model_dir = prepared.run_dir(SYNTHETIC_DS).model_dir
    trained = json.loads((model_dir / CONFIG_FILE).read_text())
    train = trained["train"]
    assert (train["batch_size"], train["early_stopping_patience"], train["epochs"]) == (
        prepared.batch_size,
        prepared.early_stopping_patience,
        prepared.epochs,
    )  # the pipeline's training settings reach the training run
    assert trained["model"]["pick_prior"] is True  # and its model settings: the pick head starts from the prior
    assert json.loads((model_dir / PREPROCESSING_FILE).read_text())["prior"] == PICK_PRIOR
    strict = PipelineConfig(**{**prepared.__dict__, "auc_floor": 0.999})
    blessing = pipeline.bless(strict, SYNTHETIC_DS)
    assert blessing["blessed"] is False and "below the floor" in blessing["reason"]
    assert pipeline.push(strict, SYNTHETIC_DS)["model_version"] is None
    assert not Path(strict.model_base_path / "deepfm").exists()
    assert pipeline.verify_serving(strict, SYNTHETIC_DS)["verified"] is False


def _copy_run(config: PipelineConfig, ds: str) -> Path:
    """A run directory for `ds` holding a copy of the trained run's model, snapshot and validation (what `bless` reads)."""
    source, target = config.run_dir(SYNTHETIC_DS).root, config.run_dir(ds).root
    shutil.rmtree(target, ignore_errors=True)
    for folder in ("model", "snapshot", "validation"):
        shutil.copytree(source / folder, target / folder)
    return target


def _export_other_signature(export_dir: Path) -> None:
    """A tiny SavedModel whose `serving_default` takes one `user_token` string instead of the feature inputs."""
    import tensorflow as tf

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_token")])
        def serve(self, user_token):
            return {"probability": tf.fill(tf.shape(user_token), 0.5)}

    shutil.rmtree(export_dir)
    module = Other()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})


def test_changed_serving_signature_is_rejected(prepared: PipelineConfig) -> None:
    permissive = dataclasses.replace(prepared, auc_floor=0.0)
    first = pipeline.bless(permissive, SYNTHETIC_DS)
    assert first["blessed"] is True and first["serving_version"] is None, first
    version = pipeline.push(permissive, SYNTHETIC_DS)["model_version"]
    assert version == serving_version(permissive)

    same = pipeline.bless(permissive, SYNTHETIC_DS)  # the same export again: the signatures match
    assert same["blessed"] is True and same["signature_changed"] is None, same
    assert same["serving_version"] == version and math.isfinite(same["serving_auc"])

    other_ds = "1998-02-01"
    run_dir = _copy_run(permissive, other_ds)
    _export_other_signature(run_dir / "model" / "export")
    blessing = pipeline.bless(permissive, other_ds)
    assert blessing["blessed"] is False, blessing
    assert f"differs from serving version {version}" in blessing["reason"]
    assert "user_token" in blessing["reason"] and "user_id" in blessing["reason"]
    assert "user_token" in blessing["signature_changed"]["inputs"]["added"]
    assert "user_id" in blessing["signature_changed"]["inputs"]["removed"]
    assert json.loads((run_dir / "blessing.json").read_text())["signature_changed"] == blessing["signature_changed"]
    assert pipeline.push(permissive, other_ds)["model_version"] is None
    assert serving_version(permissive) == version

    # The switch as a deployment sets it: from the environment, the rest of the run's settings alike.
    env = {"DEEPFM_HOME": str(permissive.home), "DEEPFM_SOURCE": "synthetic", "DEEPFM_AUC_FLOOR": "0",
           "DEEPFM_FEATURE_REPO": str(permissive.feature_repo), "DEEPFM_EPOCHS": "1", "DEEPFM_BATCH_SIZE": "512",
           "DEEPFM_PICK_PRIOR": "1"}  # fmt: skip
    assert PipelineConfig.from_env(env) == permissive
    assert pipeline.bless(PipelineConfig.from_env({**env, "DEEPFM_ALLOW_SIGNATURE_CHANGE": "no"}),
                          other_ds)["blessed"] is False  # fmt: skip
    deliberate = PipelineConfig.from_env({**env, "DEEPFM_ALLOW_SIGNATURE_CHANGE": "1"})
    allowed = pipeline.bless(deliberate, other_ds)
    assert allowed["blessed"] is True and "not compared" in allowed["reason"], allowed
    assert allowed["signature_changed"] == blessing["signature_changed"] and allowed["serving_auc"] is None


def test_nan_training_loss_is_rejected(prepared: PipelineConfig) -> None:
    permissive = dataclasses.replace(prepared, auc_floor=0.0)
    run_dir = _copy_run(permissive, "1998-02-02")
    history_path = run_dir / "model" / "history.json"
    history = json.loads(history_path.read_text())
    history["loss"] = [*history["loss"], math.nan]
    history_path.write_text(json.dumps(history))
    blessing = pipeline.bless(permissive, "1998-02-02")
    assert blessing["blessed"] is False, blessing
    assert "training loss is not finite" in blessing["reason"] and "history.json" in blessing["reason"]
    assert pipeline.push(permissive, "1998-02-02")["model_version"] is None


def test_a_candidate_trailing_popularity_passes_only_within_the_tolerance_from_the_environment(
    prepared: PipelineConfig,
) -> None:
    ds = "1998-02-03"
    run = prepared.run_dir(ds)
    _copy_run(prepared, ds)
    metrics = json.loads(run.model_metrics.read_text())
    metrics["full_ranking"] = {"models": {
        "recommend": {"ndcg_at_10": 0.53, "vs_popularity": {"ci": [-0.12, -0.002]}},
        "popularity": {"ndcg_at_10": 0.59},
    }}  # fmt: skip
    run.model_metrics.write_text(json.dumps(metrics))
    env = {"DEEPFM_HOME": str(prepared.home), "DEEPFM_SOURCE": "synthetic", "DEEPFM_AUC_FLOOR": "0",
           "DEEPFM_FEATURE_REPO": str(prepared.feature_repo)}  # fmt: skip
    refused = pipeline.bless(PipelineConfig.from_env(env), ds)
    assert refused["blessed"] is False and "below popularity's 0.5900" in refused["reason"], refused
    tolerant = pipeline.bless(PipelineConfig.from_env({**env, "DEEPFM_POPULARITY_TOLERANCE": "0.1"}), ds)
    assert tolerant["blessed"] is True and "(within the tolerance 0.1000) popularity's 0.5900" in tolerant["reason"], (
        tolerant
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_verification_on_every_replica_moves_stable_and_a_failed_replica_retracts(
    prepared: PipelineConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.client import ServingClient
    from serving.push import list_versions
    from serving.server_process import server_process

    permissive = dataclasses.replace(prepared, auc_floor=0.0, allow_signature_change=True)
    with serving_tier(prepared.home, replicas=2) as servers:
        addresses = [server.address for server in servers]
        config = dataclasses.replace(permissive, serving_addresses=tuple(addresses))
        _copy_run(config, "1998-02-03")
        assert pipeline.bless(config, "1998-02-03")["blessed"] is True
        version = pipeline.push(config, "1998-02-03")["model_version"]
        result = pipeline.verify_serving(config, "1998-02-03", deadline_s=120)
        assert result["verified"] is True and result["verified_on"] == addresses, result
        for address in addresses:
            with ServingClient(address, version_label="stable") as client:
                assert client.metadata().version == version

        # One replica never answers: the task fails naming it, the version is retracted, `stable` stays.
        unreachable = f"127.0.0.1:{_closed_port()}"
        broken = dataclasses.replace(config, serving_addresses=(addresses[0], unreachable))
        _copy_run(broken, "1998-02-04")
        assert pipeline.bless(broken, "1998-02-04")["blessed"] is True
        retracted = pipeline.push(broken, "1998-02-04")["model_version"]
        with pytest.raises(ReplicaFailed, match=re.escape(unreachable)) as failure:
            pipeline.verify_serving(broken, "1998-02-04", deadline_s=5)
        assert addresses[0] not in failure.value.failures
        assert retracted not in list_versions(config.model_base_path, config.model_name)
        assert serving_version(config) == version
        with ServingClient(addresses[0], version_label="stable") as client:
            assert client.metadata().version == version
        # The task's next try fails at once: the version it was given is gone.
        with pytest.raises(RuntimeError, match="retracted by an earlier try"):
            pipeline.verify_serving(broken, "1998-02-04", deadline_s=120)

        # Re-run once the replica is back: push pushes the export again, as the next version, and verification
        # waits for a replica that comes up while it runs (as one restarted mid-verification does).
        again = pipeline.push(broken, "1998-02-04")["model_version"]
        assert again == retracted + 1, (retracted, again)
        flags = ["--model-config-file", str(config.model_config_file), "--poll-interval-s", "0.5",
                 "--port", unreachable.rpartition(":")[2]]  # fmt: skip
        with (
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            caplog.at_level(logging.DEBUG, logger="dags.pipeline.serving_tier"),
        ):
            verifying = pool.submit(pipeline.verify_serving, broken, "1998-02-04", deadline_s=120)
            _wait_for_record(caplog, f"{unreachable} not ready yet", verifying)  # it has asked the missing replica
            with server_process(config.model_base_path, flags=flags):
                result = verifying.result(timeout=150)
                assert result["verified_on"] == [addresses[0], unreachable], result
                with ServingClient(unreachable, version_label="stable") as client:
                    assert client.metadata().version == again


def _wait_for_record(caplog: pytest.LogCaptureFixture, text: str, running: concurrent.futures.Future) -> None:
    deadline = time.monotonic() + 60
    while not any(text in record.getMessage() for record in caplog.records):
        assert not running.done(), running.result()
        assert time.monotonic() < deadline, f"no log record {text!r} within 60 s"
        time.sleep(0.1)


def test_verification_fails_naming_the_replica_when_it_answers_differently_cannot_load_or_keeps_stable(
    prepared: PipelineConfig,
) -> None:
    """The three ways a healthy-looking replica fails verification: each retracts the version, `stable` stays, and
    the reason names the replica and what went wrong; a version that cannot load fails as soon as it is reported."""
    from deepfm_model.predict import load_trained
    from serving.labels import ensure_model_config
    from serving.push import list_versions
    from serving.server_process import server_process

    permissive = dataclasses.replace(prepared, auc_floor=0.0, allow_signature_change=True)
    with serving_tier(prepared.home, replicas=1) as servers:
        addresses = [server.address for server in servers]
        config = dataclasses.replace(permissive, serving_addresses=tuple(addresses))
        _copy_run(config, "1998-02-05")
        assert pipeline.bless(config, "1998-02-05")["blessed"] is True
        pipeline.push(config, "1998-02-05")
        stable = pipeline.verify_serving(config, "1998-02-05", deadline_s=120)["model_version"]

        def attempt(ds: str, spoil=None, deadline_s: float = 120.0, **replace) -> tuple[ReplicaFailed, float]:
            run = _copy_run(config, ds)
            attempt_config = dataclasses.replace(config, **replace)
            assert pipeline.bless(attempt_config, ds)["blessed"] is True
            if spoil is not None:
                spoil(run)
            version = pipeline.push(attempt_config, ds)["model_version"]
            began = time.monotonic()
            with pytest.raises(ReplicaFailed) as failure:
                pipeline.verify_serving(attempt_config, ds, deadline_s=deadline_s)
            assert version not in list_versions(config.model_base_path, config.model_name)  # retracted
            assert serving_version(config) == stable  # `stable` unchanged
            return failure.value, time.monotonic() - began

        # 1. The replica answers, but not what the in-process model computes.
        def shift_a_weight(run: Path) -> None:
            trained = load_trained(run / "model")
            bias = next(w for w in trained.model.weights if w.path == "pick_mix/bias")
            bias.assign(bias.numpy() + 1.0)
            trained.save(run / "model")

        differs, _ = attempt("1998-02-06", shift_a_weight)
        assert "away from the in-process model" in differs.failures[addresses[0]]

        # 2. The pushed version cannot load: the server reports it END with the error; no wait for the deadline.
        def corrupt(run: Path) -> None:
            (run / "model" / "export" / "saved_model.pb").write_bytes(b"not a SavedModel")

        unloadable, seconds = attempt("1998-02-07", corrupt, deadline_s=120)
        assert "failed to load" in unloadable.failures[addresses[0]] and seconds < 60, (unloadable, seconds)

        # 3. A replica that never re-reads the model config: `stable` does not move there in time.
        frozen_config = ensure_model_config(config.model_base_path, config.model_name, config.model_config_file)
        flags = ["--model-config-file", str(frozen_config), "--poll-interval-s", "0.5",
                 "--model-config-file-poll-wait-seconds", "0"]  # fmt: skip
        with server_process(config.model_base_path, flags=flags) as frozen:
            stuck, _ = attempt("1998-02-08", deadline_s=10, serving_addresses=(addresses[0], frozen.address))
        assert "label 'stable' not on version" in stuck.failures[frozen.address]
        assert re.search(re.escape(frozen.address), str(stuck))
