"""MirroredStrategy on CPU: the CPU split into two logical devices stands in for two GPUs.

What this shows without a GPU: `train_model(..., devices=[...])` builds and trains the package's DeepFM under a
two-replica `MirroredStrategy` (variables mirrored, each global batch split across the replicas, gradients
all-reduced, SparseAdam's row-wise updates applied through the strategy) and reaches the same test metrics as
the default single-device run. What it cannot show: NCCL all-reduce, GPU placement or any speed-up.

Logical devices must be configured before TensorFlow initialises its runtime, which the test process has long
done (conftest and other tests import it), so both runs happen in a fresh Python subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepfm_model.config import TrainConfig

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]

# Dropout off: each replica draws its own dropout masks, so with dropout the two runs would differ by RNG
# streams as well as by the strategy. Without it, a mirrored step (two halves of the 256-row global batch,
# gradients averaged across replicas) equals the single-device step up to float summation order.
SCRIPT = textwrap.dedent(
    """
    import json, sys

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np

    from deepfm_model.spec import features as spec
    from deepfm_model.config import ModelConfig, TrainConfig
    from deepfm_model.evaluate import compute_metrics
    from deepfm_model.predict import predict_frame
    from deepfm_model.preprocessing import load_split
    from deepfm_model.train import train_model

    train_path, valid_path, test_path = sys.argv[1:4]
    train, valid, test = (load_split(p) for p in (train_path, valid_path, test_path))
    model_config = ModelConfig(embedding_dim=4, mlp_units=(16,), dropout=0.0, pick_head=False)
    results = {"logical_cpus": [d.name for d in tf.config.list_logical_devices("CPU")]}
    probabilities = {}
    for name, devices, distribute in (("mirrored", ["/cpu:0", "/cpu:1"], True), ("default", None, False)):
        train_config = TrainConfig(batch_size=256, epochs=2, seed=7, verbose=0, distribute=distribute)
        trained, history = train_model(train, valid, model_config, train_config, devices=devices)
        strategy = trained.model.distribute_strategy
        embedding = max(trained.model.trainable_weights, key=lambda w: int(np.prod(w.shape)))
        probabilities[name] = predict_frame(trained, test)
        metrics = compute_metrics(test[spec.LABEL].to_numpy(), probabilities[name])
        results[name] = {
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "variable_copies": len(strategy.experimental_local_results(embedding.value)),
            "epochs": len(history["loss"]),
            "steps_per_execution": int(trained.model.steps_per_execution),
            "test_auc": metrics["auc"],
            "test_logloss": metrics["logloss"],
        }
    results["max_abs_probability_diff"] = float(np.abs(probabilities["mirrored"] - probabilities["default"]).max())
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def runs(split_paths) -> dict:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # CPU only, also on a machine with GPUs
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, split_paths)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))
    print(json.dumps(results, indent=1))
    return results


def test_mirrored_run_has_two_replicas(runs):
    assert len(runs["logical_cpus"]) == 2
    mirrored, default = runs["mirrored"], runs["default"]
    assert mirrored["strategy"] == "MirroredStrategy"
    assert mirrored["replicas"] == 2
    assert mirrored["variable_copies"] == 2  # the embedding table is mirrored on both logical CPUs
    assert default["replicas"] == 1 and default["variable_copies"] == 1
    assert mirrored["epochs"] == default["epochs"] == 2
    # Keras 3 cannot run several steps per execution under tf.distribute (keras-team/keras#19246).
    assert mirrored["steps_per_execution"] == 1 and default["steps_per_execution"] == TrainConfig().steps_per_execution


def test_mirrored_and_default_runs_agree(runs):
    # Tolerances: the two runs differ only by float summation order (amplified a little by Adam's
    # normalisation); measured here |d AUC| ~5e-4, |d logloss| ~2e-5, max |d probability| ~3e-3. The bug
    # class worth catching, replica gradients summed instead of averaged, equals doubling the learning rate,
    # which on this data moves test AUC by ~0.02 and logloss by ~0.05 after two epochs: 0.01 sits well above
    # the noise and below that.
    mirrored, default = runs["mirrored"], runs["default"]
    assert mirrored["test_auc"] > 0.6 and default["test_auc"] > 0.6  # both learned the planted structure
    assert mirrored["test_auc"] == pytest.approx(default["test_auc"], abs=0.01)
    assert mirrored["test_logloss"] == pytest.approx(default["test_logloss"], abs=0.01)
    assert runs["max_abs_probability_diff"] < 0.02
