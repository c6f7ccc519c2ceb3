"""A short training run end to end: artefacts, metrics, SavedModel parity, warm-up records, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deepfm_model.cli import main
from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.export import WARMUP_FILE
from deepfm_model.model import HEADS
from deepfm_model.predict import load_trained, predict_frame, predict_outputs, predict_saved_model
from deepfm_model.preprocessing import frame_to_raw
from deepfm_model.spec import features as spec
from deepfm_model.train import run_training

pytestmark = pytest.mark.slow

SMALL_MODEL = ModelConfig(embedding_dim=8, mlp_units=(32, 16))
SHORT_TRAINING = TrainConfig(batch_size=256, epochs=3, verbose=0, warmup_rows=3)


@pytest.fixture(scope="module")
def run_dir(split_paths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_training(*split_paths, out, model_config=SMALL_MODEL, train_config=SHORT_TRAINING)
    return out


def test_run_writes_artefacts_and_metrics(run_dir, splits):
    for name in (
        "model.keras",
        "preprocessing.json",
        "config.json",
        "history.json",
        "report/index.html",
        "report/roc.png",
        "report/calibration.png",
        "report/learning_curves.png",
        "export/saved_model.pb",
    ):
        assert (run_dir / name).is_file(), name  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_auc", "test_logloss", "valid_auc", "test_mean_prediction", "test_positive_rate"):
        assert isinstance(metrics[key], float), key
    assert [metrics[f"{s}_rows"] for s in ("train", "valid", "test")] == [len(s) for s in splits]
    # The planted structure is learnt: this seeded run reaches a test AUC of 0.866 (0.5 is chance).
    assert metrics["test_auc"] > 0.84, metrics["test_auc"]
    for key in ("test_ndcg_at_10", "test_recall_at_10", "popularity_test_ndcg_at_10", "popularity_test_recall_at_10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test_ranking_users"] > 0
    history = json.loads((run_dir / "history.json").read_text())
    assert {"loss", "auc", "val_auc"} <= set(history)
    assert len(history["loss"]) == metrics["epochs_trained"]


def test_saved_model_matches_in_process_predictions(run_dir, splits):
    test = splits[2]
    in_process = predict_frame(load_trained(run_dir), test)
    served = predict_saved_model(run_dir / "export", test)
    assert served.shape == (len(test),) and served.dtype == np.float32
    np.testing.assert_allclose(served, in_process, atol=1e-5)


def test_saved_model_holds_only_stock_tensorflow_ops(run_dir):
    # Training ran the package's compiled kernels; TF Serving has none of them, so the export must not use them.
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((run_dir / "export" / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    op_types = {node.op for node in graph.node}
    op_types.update(node.op for function in graph.library.function for node in function.node_def)
    assert "StatefulPartitionedCall" in op_types
    assert not sorted(t for t in op_types if t.startswith("Deepfm"))


def test_signature_takes_raw_features_by_name(run_dir):
    signature = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert set(inputs) == set(spec.FEATURE_NAMES)
    for feature in spec.FEATURES:
        assert inputs[feature.name].dtype == tf.as_dtype(spec.serving_dtype(feature)), feature.name
        assert inputs[feature.name].shape.as_list() == [None]
    assert set(signature.structured_outputs) == {"probability", "pick", "like"}


def test_served_outputs_equal_in_process_ones_and_probability_is_the_heads_odds_product(run_dir, splits):
    test = splits[2].head(200)
    in_process = predict_outputs(load_trained(run_dir), test)
    served = {name: predict_saved_model(run_dir / "export", test, output=name) for name in in_process}
    for name, values in served.items():
        np.testing.assert_allclose(values, in_process[name], atol=1e-5)
    trained = load_trained(run_dir)  # with the like tower, `like` is the tower's, `probability` the heads' alone
    heads = trained.model.get_layer(HEADS).predict(trained.preprocessor(frame_to_raw(test)), verbose=0)
    pick, like = heads[:, 1].astype("float64"), heads[:, 2].astype("float64")
    np.testing.assert_allclose(served["probability"], pick * like / (1 - pick + pick * like), rtol=1e-4)
    np.testing.assert_allclose(served["pick"], heads[:, 1], rtol=1e-5)


def test_unknown_categories_score_without_error(run_dir, splits):
    rows = splits[2].head(3).copy()
    rows["user_id"] = "never-seen-user"
    rows["movie_id"] = "never-seen-movie"
    rows["zip_prefix"] = "zzz"
    rows["genres"] = ["NotAGenre", "", "Action|NotAGenre"]
    rows["release_year"] = np.nan
    served = predict_saved_model(run_dir / "export", rows)
    in_process = predict_frame(load_trained(run_dir), rows)
    assert np.isfinite(served).all() and ((served > 0) & (served < 1)).all()
    np.testing.assert_allclose(served, in_process, atol=1e-5)


def test_in_process_predict_names_missing_or_mistyped_feature(run_dir, splits):
    trained = load_trained(run_dir)
    with pytest.raises(KeyError, match="occupation"):
        predict_frame(trained, splits[2].drop(columns=["occupation"]))
    rows = splits[2].head(2).copy()
    rows["movie_id"] = [1, 2]
    with pytest.raises(TypeError, match="movie_id"):
        predict_frame(trained, rows)


def test_saved_model_rejects_wrong_dtype(run_dir, splits):
    signature = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    inputs = {f.name: tf.constant(["1"]) if spec.serving_dtype(f) == "string" else tf.constant([1.0])
              for f in spec.FEATURES}  # fmt: skip
    signature(**inputs)
    # The raw signature rejects it too, though TensorFlow names the input by position, not by name.
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        signature(**{**inputs, "age": tf.constant(["thirty"])})


def test_warmup_requests_are_prediction_logs(run_dir):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(run_dir / "export" / WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == SHORT_TRAINING.warmup_rows
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.name == "deepfm"
    assert request.model_spec.signature_name == "serving_default"
    assert set(request.inputs) == set(spec.FEATURE_NAMES)
    signature = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    tensors = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert signature(**{k: tf.constant(v) for k, v in tensors.items()})["probability"].shape == (1,)


def test_cli_evaluate(run_dir, split_paths, tmp_path, capsys):
    assert main(["evaluate", "--model-dir", str(run_dir), "--data", str(split_paths[2]), "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert printed == written
    expected = json.loads((run_dir / "metrics.json").read_text())["test_auc"]
    assert written["test_auc"] == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "report" / "index.html").is_file()


def test_cli_export(run_dir, split_paths, tmp_path, splits):
    target = tmp_path / "export"
    assert main(["export", "--model-dir", str(run_dir), "--export-dir", str(target),
                 "--warmup-data", str(split_paths[2]), "--warmup-rows", "2"]) == 0  # fmt: skip
    assert (target / WARMUP_FILE).is_file()
    np.testing.assert_allclose(
        predict_saved_model(target, splits[2]), predict_saved_model(run_dir / "export", splits[2]), atol=1e-6
    )


def test_training_is_seeded(split_paths, splits, run_dir, tmp_path):
    metrics = run_training(*split_paths, tmp_path, model_config=SMALL_MODEL, train_config=SHORT_TRAINING)
    first = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_auc"] == pytest.approx(first["test_auc"], abs=1e-6)
    # Both runs read the same data: training only reads its split files, which still hold, row for row and column
    # for column, the splits the fixture wrote.
    for path, split in zip(split_paths, splits, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(path), split.reset_index(drop=True), check_exact=True)


def test_a_fresh_process_loads_the_trained_model(run_dir, splits):
    # Celery workers load a model trained in another process: nothing registered by training may be needed.
    code = (
        "import sys, pandas as pd\n"
        "from deepfm_model.predict import load_trained, predict_frame\n"
        "p = predict_frame(load_trained(sys.argv[1]), pd.read_parquet(sys.argv[2]))\n"
        "print(len(p))\n"
    )
    test_path = run_dir / "fresh_process_test.parquet"
    splits[2].to_parquet(test_path, index=False)
    result = subprocess.run(
        [sys.executable, "-c", code, str(run_dir), str(test_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(len(splits[2]))


def test_export_is_renamed_into_place_whole_and_never_replaces_other_files(run_dir, splits, tmp_path):
    """A retried training takes an existing export as finished, so an export appears only whole: written beside
    the target and renamed over it (a stale file inside goes with the old one); a folder of other files stays."""
    from deepfm_model.export import export_saved_model

    trained = load_trained(run_dir)
    target = tmp_path / "export"
    export_saved_model(trained, target)
    first = predict_saved_model(target, splits[2])
    (target / "stale").write_text("from an earlier export")
    export_saved_model(trained, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no partial folder left beside it
    assert not (target / "stale").exists()
    np.testing.assert_allclose(predict_saved_model(target, splits[2]), first, atol=1e-6)

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="no SavedModel"):
        export_saved_model(trained, notes)
    assert (notes / "mine.txt").read_text() == "keep"
