"""SparseAdam: plain Adam when every row is touched, untouched rows left alone, options checked."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepfm_model.sparse_adam import SparseAdam
from deepfm_model.train import tf_config_workers

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="sparse gradients need TensorFlow")


def _run(optimizer, indices, steps=3, dense=False):
    table = keras.Variable(np.arange(12, dtype="float32").reshape(6, 2) / 10.0)
    for step in range(steps):
        values = tf.constant(np.full((len(indices), 2), 0.5 + step, "float32"))
        gradient = tf.IndexedSlices(values, tf.constant(indices), tf.constant([6, 2]))
        optimizer.apply([tf.convert_to_tensor(gradient) if dense else gradient], [table])
    return keras.ops.convert_to_numpy(table)


def test_equals_adam_when_every_row_is_touched():
    every_row_twice = [0, 1, 2, 3, 4, 5, 5, 0]
    np.testing.assert_allclose(
        _run(SparseAdam(learning_rate=0.1), every_row_twice),
        _run(keras.optimizers.Adam(learning_rate=0.1), every_row_twice, dense=True),  # duplicates summed
        rtol=1e-6,
    )


def test_untouched_rows_keep_their_weights():
    before = np.arange(12, dtype="float32").reshape(6, 2) / 10.0
    after = _run(SparseAdam(learning_rate=0.1), [1, 3])
    np.testing.assert_array_equal(after[[0, 2, 4, 5]], before[[0, 2, 4, 5]])
    assert not np.allclose(after[[1, 3]], before[[1, 3]])


def test_amsgrad_is_rejected_and_config_round_trips():
    with pytest.raises(ValueError, match="`amsgrad=True`"):
        SparseAdam(amsgrad=True)
    optimizer = SparseAdam(learning_rate=0.01, beta_1=0.8)
    assert SparseAdam.from_config(optimizer.get_config()).get_config() == optimizer.get_config()


@pytest.mark.parametrize(
    ("tf_config", "workers"),
    [
        (None, 0),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', 1),
        ('{"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', 3),
    ],
)
def test_tf_config_workers(tf_config, workers):
    assert tf_config_workers(tf_config) == workers


@pytest.mark.parametrize("jit_compile", [False, True])
def test_xla_train_step_trains_with_dense_updates(jit_compile, caplog):
    # XLA cannot compile the row-wise update (`tf.unique`): with `jit_compile` on, the table takes dense Adam.
    from deepfm_model.config import ModelConfig, TrainConfig
    from deepfm_model.model import build_model
    from deepfm_model.train import compile_model

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(embedding_dim=4, mlp_units=(8,)), [50, 30], [], 2)
    compile_model(model, TrainConfig(learning_rate=1e-2, jit_compile=jit_compile), metrics=False)
    assert type(model.optimizer) is (keras.optimizers.Adam if jit_compile else SparseAdam)
    assert ("XLA cannot compile the row-wise update" in caplog.text) is jit_compile
    rng = np.random.default_rng(0)
    inputs = {"categorical": rng.integers(0, 30, (256, 2)).astype("int32"), "numeric": rng.normal(size=(256, 2))}
    labels = (inputs["categorical"][:, :1] % 2).astype("float32")
    before = model.get_layer("field_embedding").table.numpy()
    history = model.fit(inputs, labels, batch_size=64, epochs=3, verbose=0)
    assert model.jit_compile is jit_compile
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(model.get_layer("field_embedding").table.numpy(), before)
