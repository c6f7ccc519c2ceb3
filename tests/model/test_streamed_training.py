"""Training streamed from parquet: the preprocessing fitted batch by batch equals the one fitted whole, streamed
predictions equal in-memory ones, and a streamed run writes the same artefacts and metrics."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.predict import load_trained, predict_outputs, predict_parquet
from deepfm_model.preprocessing import fit_preprocessing, fit_preprocessing_parquet, make_parquet_dataset
from deepfm_model.train import run_training

pytestmark = pytest.mark.slow

SMALL_MODEL = ModelConfig(embedding_dim=8, mlp_units=(32, 16))
STREAMED = TrainConfig(batch_size=256, epochs=2, verbose=0, warmup_rows=3, stream_from_parquet=True,
                       parquet_batch_rows=700)  # fmt: skip


def test_preprocessing_fitted_batch_by_batch_equals_the_whole_fit(splits, split_paths):
    whole = dataclasses.asdict(fit_preprocessing(splits[0], SMALL_MODEL))
    batches = dataclasses.asdict(fit_preprocessing_parquet(split_paths[0], SMALL_MODEL, record_batch_rows=333))
    assert batches["categorical"] == whole["categorical"]
    assert batches["multi_categorical"] == whole["multi_categorical"]
    for name, stats in whole["numeric"].items():
        assert batches["numeric"][name]["mean"] == pytest.approx(stats["mean"], rel=1e-12), name
        assert batches["numeric"][name]["std"] == pytest.approx(stats["std"], rel=1e-12), name


@pytest.fixture(scope="module")
def streamed_run(split_paths, tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed")
    return out, run_training(*split_paths, out, model_config=SMALL_MODEL, train_config=STREAMED)


def test_a_streamed_run_writes_the_artefacts_and_metrics(streamed_run, splits):
    out, metrics = streamed_run
    assert (out / "export" / "saved_model.pb").is_file() and (out / "report" / "index.html").is_file()
    assert [metrics[f"{s}_rows"] for s in ("train", "valid", "test")] == [len(s) for s in splits]
    assert metrics["test_auc"] > 0.84, metrics["test_auc"]  # this seeded run reaches 0.863 (0.5 is chance)
    assert 0.0 <= metrics["popularity_test_ndcg_at_10"] <= 1.0
    assert json.loads((out / "config.json").read_text())["train"]["stream_from_parquet"] is True
    assert metrics["train_metrics_sample"] == 1.0  # fewer train rows than `train_metrics_rows`: all of them


def test_train_metrics_rows_samples_the_train_split_and_popularity_still_counts_every_row(
    streamed_run, splits, split_paths, tmp_path
):
    _, whole = streamed_run
    half = dataclasses.replace(STREAMED, train_metrics_rows=len(splits[0]) // 2)
    metrics = run_training(*split_paths, tmp_path, model_config=SMALL_MODEL, train_config=half)
    assert metrics["train_metrics_sample"] == pytest.approx(0.5, abs=1e-3)
    assert 0.4 * len(splits[0]) < metrics["train_rows"] < 0.6 * len(splits[0])
    assert [metrics["valid_rows"], metrics["test_rows"]] == [len(splits[1]), len(splits[2])]  # always whole
    assert metrics["popularity_test_ndcg_at_10"] == whole["popularity_test_ndcg_at_10"]


def test_a_sampled_prediction_is_a_seeded_subset_of_the_rows_in_file_order(streamed_run, splits, split_paths):
    trained = load_trained(streamed_run[0])
    targets, outputs = predict_parquet(trained, split_paths[2], record_batch_rows=250, share=0.3, seed=7)
    again, _ = predict_parquet(trained, split_paths[2], record_batch_rows=250, share=0.3, seed=7)
    whole = predict_outputs(trained, splits[2])
    rng = np.random.default_rng(7)  # the documented draw: one uniform per row, record batch after record batch
    kept = np.concatenate(
        [rng.random(min(250, len(splits[2]) - start)) < 0.3 for start in range(0, len(splits[2]), 250)]
    )
    assert 0.2 * len(splits[2]) < kept.sum() < 0.4 * len(splits[2])
    np.testing.assert_array_equal(targets, again)
    np.testing.assert_array_equal(targets, splits[2]["label"].to_numpy(dtype=np.float32)[kept])
    for name, values in outputs.items():
        np.testing.assert_allclose(values, whole[name][kept], rtol=1e-5)


def test_streamed_predictions_equal_in_memory_ones(streamed_run, splits, split_paths):
    trained = load_trained(streamed_run[0])
    targets, outputs = predict_parquet(trained, split_paths[2], record_batch_rows=250)
    np.testing.assert_array_equal(targets, splits[2]["label"].to_numpy(dtype=np.float32))  # rated rows: the label
    in_memory = predict_outputs(trained, splits[2])
    assert set(outputs) == set(in_memory) == {"probability", "pick", "like"}
    for name, values in outputs.items():  # float32 over batches of other shapes: a few ulps; a misplaced row, far more
        np.testing.assert_allclose(values, in_memory[name], rtol=1e-5)


def _rows_of(dataset) -> list[np.ndarray]:
    return [y.numpy().ravel() for _, y in dataset]


def test_the_streamed_dataset_gives_every_row_once_an_epoch_in_a_new_order(split_paths, streamed_run):
    import pandas as pd

    trained = load_trained(streamed_run[0])
    train = pd.read_parquet(split_paths[0])
    marked = train.assign(label=np.arange(len(train), dtype=np.float32))  # the label carries the row number
    path = split_paths[0].with_name("marked.parquet")
    marked.to_parquet(path, index=False)
    dataset = make_parquet_dataset(path, trained.preprocessor, 256, shuffle_buffer=1000, seed=1, record_batch_rows=300)
    first, second = _rows_of(dataset), _rows_of(dataset)
    for epoch in (first, second):
        assert [len(b) for b in epoch[:-1]] == [256] * (len(epoch) - 1)  # whole batches but the last
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(len(train)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    assert np.abs(np.concatenate(first) - np.arange(len(train))).mean() > 100  # rows moved across record batches
    in_order = make_parquet_dataset(path, trained.preprocessor, 256, record_batch_rows=300)
    np.testing.assert_array_equal(np.concatenate(_rows_of(in_order)), np.arange(len(train)))
