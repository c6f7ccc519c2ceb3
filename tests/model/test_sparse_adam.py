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
    model = build_model(ModelConfig(embedding_dim=4, mlp_units=(8,), pick_head=False), [50, 30], [], 2)
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


def _lazy_adam_by_hand(table, m, v, steps, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """NumPy float32 lazy Adam: duplicates summed in batch order, only the named rows updated."""
    table, m, v = table.copy(), m.copy(), v.copy()
    for step, (indices, values) in enumerate(steps, start=1):
        # The step size in float32, as Keras forms it (1 - 0.999**t rounds differently from float64).
        one, t = np.float32(1), np.float32(step)
        decay_1, decay_2 = one - np.float32(beta_1) ** t, one - np.float32(beta_2) ** t
        alpha = np.float32(learning_rate) * np.sqrt(decay_2) / decay_1
        summed = {}
        for row, value in zip(indices, values, strict=True):
            summed[row] = summed[row] + value if row in summed else value.copy()
        for row, g in summed.items():
            m[row] = np.float32(beta_1) * m[row] + np.float32(1 - beta_1) * g
            v[row] = np.float32(beta_2) * v[row] + np.float32(1 - beta_2) * g * g
            table[row] = table[row] - alpha * m[row] / (np.sqrt(v[row]) + np.float32(epsilon))
    return table


def _steps(rng, rows, width, count=4, entries=300):
    heavy = rng.zipf(1.3, (count, entries)) % rows  # many duplicates, a few rows in every step
    return [(idx.astype("int32"), rng.normal(size=(entries, width)).astype("float32")) for idx in heavy]


@pytest.mark.parametrize("fused", [True, False])
def test_row_wise_update_equals_lazy_adam_by_hand(fused, rng):
    from deepfm_model import kernels

    if fused and kernels.load("lazy_adam") is None:
        pytest.fail("the lazy_adam kernel did not build (`make install` builds it; a C++ compiler is needed)")
    start = rng.normal(size=(50, 5)).astype("float32")
    steps = _steps(rng, 50, 5)
    table = keras.Variable(start)
    optimizer = SparseAdam(learning_rate=0.05, fused=fused)
    for indices, values in steps:
        optimizer.apply([tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([50, 5]))], [table])
    zeros = np.zeros_like(start)
    expected = _lazy_adam_by_hand(start, zeros, zeros, steps, 0.05)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(table), expected, rtol=2e-6, atol=2e-7)
    untouched = sorted(set(range(50)) - {int(i) for indices, _ in steps for i in indices})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(table)[untouched], start[untouched])


def _compiled_apply(optimizer, table):
    @tf.function
    def apply(indices, values):
        optimizer.apply([tf.IndexedSlices(values, indices, tf.shape(table.value, out_type=tf.int64))], [table])

    return apply


def test_kernel_and_tensorflow_ops_agree_inside_a_compiled_train_step(rng):
    from deepfm_model import kernels

    assert kernels.load("lazy_adam") is not None
    start = rng.normal(size=(400, 9)).astype("float32")
    steps = _steps(rng, 400, 9, count=6, entries=5000)
    results = []
    for fused in (True, False):
        table = keras.Variable(start)
        optimizer = SparseAdam(learning_rate=1e-2, fused=fused)
        optimizer.build([table])

        apply = _compiled_apply(optimizer, table)
        for indices, values in steps:
            apply(tf.constant(indices), tf.constant(values))
        results.append(keras.ops.convert_to_numpy(table))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_kernel_rejects_an_index_out_of_range_naming_it_and_changes_nothing():
    from deepfm_model import kernels

    kernel = kernels.load("lazy_adam")
    variables = [tf.Variable(np.ones((6, 2), "float32")) for _ in range(3)]
    betas = [tf.constant(x, tf.float64) for x in (0.9, 0.999, 1e-7)]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[2\] = 6 is not in \[0, 6\)"):
        kernel.deepfm_lazy_adam(*[x.handle for x in variables], 0.1, *betas, tf.ones((3, 2)), tf.constant([0, 5, 6]))
    for variable in variables:
        np.testing.assert_array_equal(variable.numpy(), np.ones((6, 2), "float32"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`grad` must be \(len\(indices\), 2\)"):
        kernel.deepfm_lazy_adam(*[x.handle for x in variables], 0.1, *betas, tf.ones((3, 3)), tf.constant([0, 1, 2]))
    float64 = [tf.Variable(np.ones((6, 2))) for _ in range(3)]
    held = [x.read_value() for x in float64]  # second references: the variables' copy-on-write path
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be float32"):
        kernel.deepfm_lazy_adam(*[x.handle for x in float64], 0.1, *betas, tf.ones((1, 2)), tf.constant([0]))
    del held


def test_without_a_compiler_training_falls_back_to_tensorflow_ops(tmp_path, monkeypatch, caplog):
    from deepfm_model import kernels

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("DEEPFM_KERNEL_DIR", str(tmp_path / "kernels"))
    kernels.load.cache_clear()
    try:
        assert kernels.load("lazy_adam") is None
        assert "not available; TensorFlow ops run instead" in caplog.text
        assert "no-such-compiler" in caplog.text
        np.testing.assert_allclose(
            _run(SparseAdam(learning_rate=0.1), [1, 3]), _run(SparseAdam(learning_rate=0.1, fused=False), [1, 3])
        )
    finally:
        kernels.load.cache_clear()


def test_deepfm_kernels_0_turns_the_kernels_off(monkeypatch):
    from deepfm_model import kernels

    kernels.load.cache_clear()
    try:
        assert kernels.load("lazy_adam") is not None  # built by `make install`, or here
        monkeypatch.setenv("DEEPFM_KERNELS", "0")
        kernels.load.cache_clear()
        assert kernels.load("lazy_adam") is None
    finally:
        kernels.load.cache_clear()
