"""The core DeepFM model: shapes, the DeepFM sum, save/load, backend independence."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from deepfm_model.config import ModelConfig
from deepfm_model.model import build_model

CONFIG = ModelConfig(embedding_dim=4, mlp_units=(8,), multi_value_max_len=3, pick_head=False)


def _inputs(rng, batch=6):
    return {
        "categorical": rng.integers(0, 5, (batch, 2)).astype("int32"),
        "multi_categorical": rng.integers(0, 6, (batch, 1, 3)).astype("int32"),
        "numeric": rng.normal(size=(batch, 3)).astype("float32"),
    }


def test_output_is_sigmoid_of_the_deepfm_sum(rng):
    model = build_model(CONFIG, [5, 5], [6], 3)
    data = _inputs(rng)
    probability = model.predict(data, verbose=0)
    assert probability.shape == (6, 1)
    embeddings, weights = model.get_layer("field_embedding")(data)
    logit = (
        model.get_layer("first_order")(weights)
        + model.get_layer("fm_interaction")(embeddings)
        + model.get_layer("mlp")(keras.ops.reshape(embeddings, (6, -1)), training=False)
    )
    expected = 1 / (1 + np.exp(-keras.ops.convert_to_numpy(logit)))
    np.testing.assert_allclose(probability, expected, rtol=1e-5, atol=1e-6)


def test_mixed_precision_trains_with_float32_weights_and_output(rng):
    from deepfm_model.config import TrainConfig
    from deepfm_model.train import compile_model, precision_policy

    config = TrainConfig(mixed_precision=True, learning_rate=1e-2)
    with precision_policy(config.mixed_precision):
        model = build_model(CONFIG, [5, 5], [6], 3)
        compile_model(model, config, metrics=False)
    assert keras.config.dtype_policy().name == "float32"  # restored after the block
    assert model.get_layer("mlp").dtype_policy.compute_dtype in ("bfloat16", "float16")
    assert {w.dtype for w in model.weights} == {"float32"}
    data = _inputs(rng, batch=64)
    labels = (data["numeric"][:, :1] > 0).astype("float32")
    history = model.fit(data, labels, batch_size=16, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert keras.backend.standardize_dtype(model(data).dtype) == "float32"


def test_one_shared_embedding_table(rng):
    model = build_model(CONFIG, [5, 5], [6], 3)
    tables = [w for w in model.weights if w.path.endswith("table")]
    assert len(tables) == 1
    assert tuple(tables[0].shape) == (5 + 5 + 6 + 3, CONFIG.embedding_dim + 1)


def test_save_load_round_trip(tmp_path, rng):
    model = build_model(CONFIG, [5, 5], [6], 3)
    data = _inputs(rng)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_core_model_runs_and_trains_under_jax():
    pytest.importorskip("jax")
    script = textwrap.dedent(
        """
        import numpy as np, keras
        from deepfm_model.config import ModelConfig
        from deepfm_model.model import build_model
        assert keras.backend.backend() == "jax"
        model = build_model(ModelConfig(embedding_dim=4, mlp_units=(8,), multi_value_max_len=3, pick_head=False), [5, 5], [6], 3)
        rng = np.random.default_rng(0)
        x = {"categorical": rng.integers(0, 5, (32, 2)).astype("int32"),
             "multi_categorical": rng.integers(0, 6, (32, 1, 3)).astype("int32"),
             "numeric": rng.normal(size=(32, 3)).astype("float32")}
        model.compile("adam", "binary_crossentropy")
        model.fit(x, rng.integers(0, 2, (32, 1)).astype("float32"), epochs=1, verbose=0)
        assert model.predict(x, verbose=0).shape == (32, 1)
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


# No dropout: a training-mode call is then deterministic, and runs the package's compiled kernels under TensorFlow.
PARITY_CONFIG = {"embedding_dim": 4, "mlp_units": (8,), "multi_value_max_len": 3, "dropout": 0.0}
PARITY_SIZES = ([5, 5], [6], 3)


@pytest.mark.slow
def test_jax_predicts_as_tensorflow_with_the_same_weights(tmp_path):
    """The model built under JAX, with the weights of a TensorFlow model (its `.keras` file, or `load_weights` into
    a model built from the same config), answers as the TensorFlow model does, in inference and training mode."""
    pytest.importorskip("jax")
    assert keras.backend.backend() == "tensorflow"
    rng = np.random.default_rng(7)
    model = build_model(ModelConfig(**PARITY_CONFIG), *PARITY_SIZES, prior=True)  # all three heads, the prior
    for weight in model.weights:  # away from the initial values (zero biases): every weight shows in the outputs
        weight.assign(rng.normal(scale=0.5, size=weight.shape).astype("float32"))
    data = {**_inputs(rng, batch=64), "prior": rng.normal(size=(64, 1)).astype("float32")}
    np.savez(tmp_path / "inputs.npz", **data)
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    tensorflow = {
        "inference": keras.ops.convert_to_numpy(model(data, training=False)),
        "training": keras.ops.convert_to_numpy(model(data, training=True)),
    }
    assert tensorflow["inference"].shape == (64, 3) and np.ptp(tensorflow["inference"][:, 0]) > 0.1

    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np, keras
        from deepfm_model.config import ModelConfig
        from deepfm_model.model import build_model

        assert keras.backend.backend() == "jax"
        folder = Path(sys.argv[1])
        data = dict(np.load(folder / "inputs.npz"))
        loaded = keras.saving.load_model(folder / "model.keras")
        built = build_model(ModelConfig(**{PARITY_CONFIG!r}), *{PARITY_SIZES!r}, prior=True)
        built.load_weights(folder / "model.weights.h5")
        outputs = {{}}
        for name, model in (("loaded", loaded), ("built", built)):
            for mode in ("inference", "training"):
                outputs[f"{{name}}_{{mode}}"] = keras.ops.convert_to_numpy(model(data, training=mode == "training"))
        np.savez(folder / "jax.npz", **outputs)
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], check=False, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jax = dict(np.load(tmp_path / "jax.npz"))
    assert set(jax) == {f"{name}_{mode}" for name in ("loaded", "built") for mode in tensorflow}
    for key, values in jax.items():
        np.testing.assert_allclose(values, tensorflow[key.split("_")[1]], rtol=0, atol=1e-5, err_msg=key)
