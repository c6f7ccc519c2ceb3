"""The training benchmark's bookkeeping and its promise to run under JAX without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dags.ops.bench.train import format_table, profile_package, summarise, variants


def _run(name: str, examples_per_sec: float) -> dict:
    return {"implementation": name, "examples_per_sec": examples_per_sec, "ms_per_step": 4096e3 / examples_per_sec,
            "peak_rss_mb": 100.0, "peak_device_mb": None, "final_loss": 0.5, "parameters": 10, "backend": "tensorflow",
            "device": "CPU", "compute_dtype": "float32", "jit_compile": False, "steps_per_execution": 1,
            "embedding_update": "row-wise, kernel", "batch_size": 4096}  # fmt: skip


def test_variants_put_the_plain_model_first():
    assert variants("both") == [("plain", "float32"), ("deepfm_model", "float32"), ("deepfm_model", "mixed"),
                                ("mlp_floor", "float32"), ("mlp_floor", "mixed")]  # fmt: skip
    assert variants("mixed") == [("plain", "float32"), ("deepfm_model", "mixed"), ("mlp_floor", "mixed")]


def test_summary_gives_a_ratio_of_medians_per_package_variant():
    runs = [_run("plain", 100.0), _run("deepfm_model", 150.0), _run("deepfm_model+mixed", 250.0),
            _run("plain", 120.0), _run("deepfm_model", 170.0), _run("deepfm_model+mixed", 230.0),
            _run("plain", 500.0), _run("deepfm_model", 160.0), _run("deepfm_model+mixed", 240.0),
            _run("mlp_floor+mixed", 360.0)]  # fmt: skip
    summary = summarise(runs)
    assert summary["plain"]["examples_per_sec"] == 120.0
    assert summary["speedup"] == pytest.approx({"deepfm_model": 160 / 120, "deepfm_model+mixed": 240 / 120})
    assert summary["ceiling"] == pytest.approx({"mlp_floor+mixed": 360 / 120})
    table = format_table(summary, runs)
    assert "speed-up deepfm_model+mixed / plain: 2.00x" in table
    assert "ceiling mlp_floor+mixed / plain: 3.00x" in table
    assert "rounds=3" in table


@pytest.mark.slow
def test_package_training_path_runs_under_jax_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class BlockTensorFlow:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "tensorflow":
                        raise ModuleNotFoundError(f"No module named {name!r}")

            sys.meta_path.insert(0, BlockTensorFlow())
            """
        )
    )
    script = textwrap.dedent(
        """
        import keras
        from dags.ops.bench import train as bench_train
        from deepfm_model.config import ModelConfig, TrainConfig
        from deepfm_model.model import build_model
        from deepfm_model.train import compile_model, precision_policy

        assert keras.backend.backend() == "jax"
        categorical, numeric, labels = bench_train.make_criteo_like(64)
        config = bench_train.package_train_config(mixed_precision=True, jit_compile=None, steps_per_execution=2)
        with precision_policy(config.mixed_precision):
            model = build_model(ModelConfig(embedding_dim=4, mlp_units=(8,), pick_head=False), [100_000] * 26, [], 13)
            compile_model(model, config, metrics=False)
        assert keras.config.dtype_policy().name == "float32"
        assert model.get_layer("mlp").dtype_policy.compute_dtype == "bfloat16"
        history = model.fit({"categorical": categorical, "numeric": numeric}, labels, batch_size=16, verbose=0)
        assert history.history["loss"][-1] > 0
        assert bench_train._embedding_update(model) == "dense"
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_profile_attributes_the_step_to_layers_and_the_optimizer():
    settings = {"mixed_precision": False, "jit_compile": None, "steps_per_execution": 1}
    report = profile_package(settings, steps=2, warmup=1, seed=0, batch_size=512, top=5)
    parts = report.split("top 5 ops:")[0]
    for part in ("mlp", "sparse_adam", "field_embedding", "fm_interaction"):
        assert f"  {part}\n" in parts
    assert len(report.split("top 5 ops:")[1].strip().splitlines()) == 5
