"""Training-throughput benchmark: this package's DeepFM against a plain Keras DeepFM, side by side.

    python -m dags.ops.bench.train [--steps 24] [--warmup 8] [--rounds 3] [--precision both] [--batch-size 4096]
        [--jit-compile auto] [--steps-per-execution 8] [--out artifacts/bench/train.json]

Data: Criteo-shaped synthetic rows, 13 numeric and 26 categorical fields of 100,000 values each, drawn with
a Zipf-like frequency (`p(rank) ~ rank^-1.1`); embedding 16, MLP 400-400-400, batch 4096 (`--batch-size`), Adam 1e-3.

Implementations (all `model.fit` on the same in-memory NumPy arrays, the same backend, the same process
settings; each runs in its own child process so that its peak memory is its own):
- `plain`: DeepFM written the obvious way: one `keras.layers.Embedding` per field for the vectors and one for
  the first-order weights, one `Dense` per numeric field for its vector, `keras.optimizers.Adam`;
- `deepfm_model`: this package's core model (`build_model`: one table for every field) trained with
  `SparseAdam` (row-wise Adam on the table, in the compiled kernel where it is built; the table prints which,
  and whether the field embedding and the FM ran in their compiled training kernels, `kernels/`),
  built and compiled as `train.train_model` does with the `TrainConfig` of the flags; `--precision both` (the
  default) measures it twice, with the default float32 compute (`deepfm_model`) and with
  `TrainConfig.mixed_precision` (`deepfm_model+mixed`: bfloat16 matmuls on CPU, float32 weights, embeddings
  and FM; it trades a little AUC for speed, see `TrainConfig.mixed_precision`). The plain model always computes
  in float32 with Keras' defaults; the table prints each implementation's compute dtype and compile options;
- `mlp_floor`: not a DeepFM but the bound the package cannot beat: the package's MLP alone (same units, batch,
  precision and optimizer), trained on the flattened field embeddings as a dense input with a trainable scale
  per input, so that the gradient with respect to the embeddings is computed as in DeepFM. No lookup, no FM,
  no embedding update. Its time per step is what the dense part costs on this machine in that precision;
  `plain`'s time over it (`summary.ceiling`) is the most the package could gain were its lookups, FM and
  embedding updates free.

`--profile --precision mixed` (or `float32`) prints where the package's training step spends its time instead:
the op time per step, by layer and by op, from the TensorFlow profiler.

Throughput is measured in steady state: from the end of the warm-up steps (tracing, compilation, caches) to
the end of the last step. Rounds alternate the implementations so that load from other processes on the
machine falls on both alike; the figure per implementation is the median over rounds and the ratio is
the ratio of medians. The input path is NumPy only, so the script runs with `KERAS_BACKEND=jax` on a
machine without TensorFlow.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dags.ops.bench.report import Stopwatch, machine, table, write_result

NUM_NUMERIC = 13
NUM_CATEGORICAL = 26
VOCABULARY = 100_000
EMBEDDING_DIM = 16
MLP_UNITS = (400, 400, 400)
FLAT_FIELDS = (NUM_CATEGORICAL + NUM_NUMERIC) * EMBEDDING_DIM  # the MLP's input width
BATCH_SIZE = 4096
LEARNING_RATE = 1e-3
ZIPF_EXPONENT = 1.1
IMPLEMENTATIONS = ("plain", "deepfm_model", "mlp_floor")
PRECISIONS = ("float32", "mixed")
MIXED_SUFFIX = "+mixed"
JIT_COMPILE = {"auto": None, "on": True, "off": False}
DEFAULT_OUT = Path("artifacts") / "bench" / "train.json"


def make_criteo_like(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic Criteo-shaped rows with a planted signal (so the loss can fall).

    Returns:
        `categorical` `(rows, 26)` int32 in `[0, 100000)`, Zipf-like per field (each field ranks its values
        in its own random order); `numeric` `(rows, 13)` float32, standard normal; `labels` `(rows, 1)`
        float32 with about 25% positives.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, VOCABULARY + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(weights) / weights.sum()
    ranks = np.searchsorted(cdf, rng.random((rows, NUM_CATEGORICAL))).clip(max=VOCABULARY - 1)
    permutations = np.stack([rng.permutation(VOCABULARY) for _ in range(NUM_CATEGORICAL)], axis=1)
    categorical = np.take_along_axis(permutations, ranks, axis=0).astype(np.int32)
    numeric = rng.standard_normal((rows, NUM_NUMERIC), dtype=np.float32)
    value_effect = rng.normal(0.0, 0.5, (VOCABULARY, 2))
    logit = (-1.3 + 0.4 * numeric[:, 0] - 0.3 * numeric[:, 1] + value_effect[categorical[:, 0], 0]
             + value_effect[categorical[:, 1], 1] + 0.3 * numeric[:, 2] * (ranks[:, 2] < 10))  # fmt: skip
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32).reshape(-1, 1)
    return categorical, numeric, labels


def build_plain_deepfm():
    """DeepFM the obvious way: a Keras Embedding per field, ops on the functional graph, plain Adam."""
    import keras
    from keras import ops

    categorical = [keras.Input((1,), dtype="int32", name=f"C{i + 1}") for i in range(NUM_CATEGORICAL)]
    numeric = keras.Input((NUM_NUMERIC,), dtype="float32", name="I")
    vectors = [keras.layers.Embedding(VOCABULARY, EMBEDDING_DIM)(x) for x in categorical]  # (batch, 1, d) each
    linear = [keras.layers.Embedding(VOCABULARY, 1)(x) for x in categorical]  # (batch, 1, 1) each
    for i in range(NUM_NUMERIC):
        value = numeric[:, i : i + 1]  # (batch, 1)
        vectors.append(
            keras.layers.Reshape((1, EMBEDDING_DIM))(keras.layers.Dense(EMBEDDING_DIM, use_bias=False)(value))
        )
    fields = keras.layers.Concatenate(axis=1)(vectors)  # (batch, 39, d)
    first_order = ops.sum(keras.layers.Concatenate(axis=1)(linear), axis=1) + keras.layers.Dense(1)(numeric)
    second_order = 0.5 * ops.sum(
        ops.square(ops.sum(fields, axis=1)) - ops.sum(ops.square(fields), axis=1), axis=1, keepdims=True
    )  # (batch, 1)
    hidden = keras.layers.Flatten()(fields)
    for width in MLP_UNITS:
        hidden = keras.layers.Dense(width, activation="relu")(hidden)
    logit = first_order + second_order + keras.layers.Dense(1)(hidden)
    model = keras.Model([*categorical, numeric], keras.layers.Activation("sigmoid")(logit))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="binary_crossentropy")
    return model


def package_train_config(mixed_precision: bool, jit_compile: bool | None, steps_per_execution: int):
    """The `TrainConfig` the package's model is compiled with (the other fields play no part here)."""
    from deepfm_model.config import TrainConfig

    return TrainConfig(
        learning_rate=LEARNING_RATE,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def build_package_deepfm(train_config):
    """This package's core model, built and compiled as `train.train_model` does for training."""
    from deepfm_model.config import ModelConfig
    from deepfm_model.model import build_model
    from deepfm_model.train import compile_model, precision_policy

    # One head: the benchmark compares the CTR-shaped DeepFM with a plain Keras one, like for like.
    config = ModelConfig(
        embedding_dim=EMBEDDING_DIM, mlp_units=MLP_UNITS, dropout=0.0, l2_embedding=0.0, pick_head=False
    )
    with precision_policy(train_config.mixed_precision):
        model = build_model(config, [VOCABULARY] * NUM_CATEGORICAL, [], NUM_NUMERIC)
        compile_model(model, train_config, metrics=False)
    return model


def build_mlp_floor(train_config):
    """The package's MLP alone, on a dense `(batch, fields * dim)` input scaled by a trainable vector.

    The scale makes Keras compute the gradient with respect to the MLP's input (DeepFM needs it for the
    embeddings); its own cost is one elementwise product.
    """
    import keras

    from deepfm_model.layers import MLP
    from deepfm_model.train import compile_model, precision_policy

    class InputScale(keras.layers.Layer):
        """`x * s` with a trainable `s` per input column (initialised to one)."""

        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    with precision_policy(train_config.mixed_precision):
        inputs = keras.Input((FLAT_FIELDS,), dtype="float32", name="fields")
        scaled = InputScale(name="input_scale")(inputs)
        logit = MLP(units=MLP_UNITS, name="mlp")(scaled)
        model = keras.Model(inputs, keras.layers.Activation("sigmoid", dtype="float32")(logit), name="mlp_floor")
        compile_model(model, train_config, metrics=False)
    return model


def profile_package(settings: dict, steps: int, warmup: int, seed: int, batch_size: int, top: int = 25) -> str:
    """Op-level profile of the package's training step (TensorFlow backend): time per step by layer and by op.

    Traces `steps` steps after `warmup` with the TensorFlow profiler and sums, per op of the compiled step, the
    time it ran on TensorFlow's compute threads. Ops on different inter-op threads run at the same time, so the
    sum exceeds the wall time of a step; the shares show where the work is.
    """
    import tempfile

    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("--profile needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    keras.utils.set_random_seed(seed)
    categorical, numeric, labels = make_criteo_like((warmup + steps) * batch_size, seed)
    model = build_package_deepfm(package_train_config(**settings))
    split = warmup * batch_size
    fit = functools.partial(model.fit, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    fit({"categorical": categorical[:split], "numeric": numeric[:split]}, labels[:split])
    with tempfile.TemporaryDirectory() as logdir:
        with tf.profiler.experimental.Profile(logdir):
            watch = Stopwatch()
            fit({"categorical": categorical[split:], "numeric": numeric[split:]}, labels[split:])
            wall_ms = watch.ms() / steps
        traces = sorted(Path(logdir).rglob("*.xplane.pb"))
        if not traces:
            raise RuntimeError(f"The TensorFlow profiler wrote no trace under {logdir}")
        space = xplane_pb2.XSpace.FromString(traces[0].read_bytes())
    by_op: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if "StatefulPartitionedCall/" in name:
                        by_op[name.split("StatefulPartitionedCall/", 1)[1]] += event.duration_ps / 1e9 / steps
    by_part: collections.Counter = collections.Counter()
    for op, ms in by_op.items():
        path = op.removeprefix("gradient_tape/").split("/")
        part = path[1] if path[0].startswith("deepfm") and len(path) > 2 else path[0].split(":")[0]
        part = part.removesuffix("_gradient")
        by_part[part.rsplit("_", 1)[0] if part[-1].isdigit() else part] += ms
    lines = [
        f"{steps} steps traced: {wall_ms:.1f} ms per step (wall, profiler on); op time per step in ms, summed over "
        f"the compute threads ({sum(by_op.values()):.1f} in all), by part:"
    ]
    lines += [f"  {ms:8.2f}  {part}" for part, ms in by_part.most_common() if ms >= 0.05]
    lines.append(f"top {top} ops:")
    lines += [f"  {ms:8.2f}  {op}" for op, ms in by_op.most_common(top)]
    return "\n".join(lines)


def _peak_device_bytes() -> int | None:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        return int((device.memory_stats() or {}).get("peak_bytes_in_use", 0)) or None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    return None


def _device_name() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU"))
    cpu = machine()
    return f"CPU ({cpu['cpus']} cores, {cpu['arch']})"


def run_worker(
    implementation: str, steps: int, warmup: int, settings: dict, seed: int, batch_size: int = BATCH_SIZE
) -> dict:
    """Train one implementation for `warmup + steps` batches and measure it (runs in a child process).

    Args:
        settings: for `deepfm_model` and `mlp_floor`, the arguments of `package_train_config`; `plain` takes none.
    """
    import keras

    keras.utils.set_random_seed(seed)
    total = warmup + steps
    categorical, numeric, labels = make_criteo_like(total * batch_size, seed)
    if implementation == "plain":
        model = build_plain_deepfm()
        inputs = {f"C{i + 1}": categorical[:, i : i + 1] for i in range(NUM_CATEGORICAL)} | {"I": numeric}
    elif implementation == "mlp_floor":
        model = build_mlp_floor(package_train_config(**settings))
        inputs = np.random.default_rng(seed).standard_normal((len(labels), FLAT_FIELDS), dtype=np.float32)
    else:
        model = build_package_deepfm(package_train_config(**settings))
        inputs = {"categorical": categorical, "numeric": numeric}

    ends: dict[int, float] = {}

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends[batch + 1] = time.perf_counter()  # steps finished so far (one call per execution)

    history = model.fit(
        inputs, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[StepClock()]
    )
    done = sorted(ends)
    start = min((s for s in done if s >= warmup), default=done[0])
    measured_steps = done[-1] - start
    if measured_steps <= 0:
        raise ValueError(
            f"No step ended after the {warmup} warm-up steps: with {model.steps_per_execution} steps per execution, "
            f"give --steps and --warmup that leave at least one whole execution to measure. Received: steps={steps}"
        )
    seconds = ends[done[-1]] - ends[start]
    device_bytes = _peak_device_bytes()
    mixed = implementation != "plain" and settings["mixed_precision"]
    return {
        "implementation": implementation + (MIXED_SUFFIX if mixed else ""),
        "examples_per_sec": measured_steps * batch_size / seconds,
        "batch_size": batch_size,
        "ms_per_step": 1000.0 * seconds / measured_steps,
        "measured_steps": measured_steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "peak_device_mb": None if device_bytes is None else device_bytes / 2**20,
        "final_loss": float(history.history["loss"][-1]),
        "parameters": int(model.count_params()),
        "backend": keras.backend.backend(),
        "device": _device_name(),
        "compute_dtype": model.dtype_policy.compute_dtype if implementation == "plain" else _mlp_dtype(model),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution),
        "embedding_update": "none (no table)" if implementation == "mlp_floor" else _embedding_update(model),
        "layer_kernels": implementation == "deepfm_model" and _layer_kernels(model),
        "huge_pages_mb": _huge_pages_mb(),
    }


def _embedding_update(model) -> str:
    """How the optimizer updates embedding tables: dense, row-wise in TensorFlow ops or in the compiled kernel."""
    import keras

    from deepfm_model.sparse_adam import SparseAdam

    # Row-wise updates need TensorFlow's sparse gradients (and no XLA); under JAX every update is dense.
    if keras.backend.backend() != "tensorflow" or not isinstance(model.optimizer, SparseAdam) or model.jit_compile:
        return "dense"
    from deepfm_model import kernels

    return "row-wise, kernel" if model.optimizer.fused and kernels.load("lazy_adam") else "row-wise, TensorFlow ops"


def _layer_kernels(model) -> bool:
    """Whether training steps run `FieldEmbedding` and `FMInteraction` in their compiled kernels."""
    import keras

    if keras.backend.backend() != "tensorflow" or model.jit_compile:
        return False
    from deepfm_model.kernels import layer_ops

    return all(layer_ops.training_kernel(name, training=True) for name in ("field_embedding", "fm_interaction"))


def _huge_pages_mb() -> float | None:
    """This process's memory on transparent huge pages (Linux), in MB; the package's tables are advised onto them."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    kilobytes = next((line.split()[1] for line in text.splitlines() if line.startswith("AnonHugePages:")), None)
    return None if kilobytes is None else int(kilobytes) / 1024.0


def _mlp_dtype(model) -> str:
    return model.get_layer("mlp").dtype_policy.compute_dtype


def variants(precision: str) -> list[tuple[str, str]]:
    """`(implementation, precision)` pairs to run, the plain model first; `both` runs each of the others twice."""
    precisions = PRECISIONS if precision == "both" else (precision,)
    return [("plain", "float32")] + [(name, p) for name in IMPLEMENTATIONS[1:] for p in precisions]


def _run_child(implementation: str, precision: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "dags.ops.bench.train", "--worker", implementation,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
               "--batch-size", str(args.batch_size),
               "--precision", precision, "--jit-compile", args.jit_compile,
               "--steps-per-execution", str(args.steps_per_execution)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"Benchmark worker `{implementation}` failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(runs: Sequence[dict]) -> dict:
    """Median figures per implementation; the speed-up of each package variant and the ceiling over `plain`."""
    summary: dict = {}
    names = list(dict.fromkeys(r["implementation"] for r in runs))
    for name in names:
        mine = [r for r in runs if r["implementation"] == name]
        summary[name] = {
            "examples_per_sec": statistics.median(r["examples_per_sec"] for r in mine),
            "ms_per_step": statistics.median(r["ms_per_step"] for r in mine),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
            "peak_device_mb": max((r["peak_device_mb"] for r in mine if r["peak_device_mb"]), default=None),
            "final_loss": statistics.median(r["final_loss"] for r in mine),
            "parameters": mine[0]["parameters"],
        }
    plain = summary["plain"]["examples_per_sec"]
    summary["speedup"] = {n: summary[n]["examples_per_sec"] / plain for n in names if n.startswith("deepfm_model")}
    summary["ceiling"] = {n: summary[n]["examples_per_sec"] / plain for n in names if n.startswith("mlp_floor")}
    return summary


def format_table(summary: dict, runs: Sequence[dict]) -> str:
    """The printed table: one row per implementation, each one's settings, then the ratios."""
    names = list(dict.fromkeys(r["implementation"] for r in runs))
    rows, settings = [], []
    for name in names:
        s = summary[name]
        run = next(r for r in runs if r["implementation"] == name)
        device = f"{s['peak_device_mb']:.0f}" if s["peak_device_mb"] else "-"
        rounds = ", ".join(f"{r['examples_per_sec']:.0f}" for r in runs if r["implementation"] == name)
        rows.append([name, f"{s['examples_per_sec']:.0f}", f"{s['ms_per_step']:.1f}", f"{s['peak_rss_mb']:.0f}",
                     device, f"{s['final_loss']:.4f}", f"{s['parameters']:,}", rounds])  # fmt: skip
        settings.append(
            f"{name}: compute dtype {run['compute_dtype']}, jit_compile={run['jit_compile']}, "
            f"steps_per_execution={run['steps_per_execution']}, embedding update {run['embedding_update']}, "
            f"layer kernels {'on' if run.get('layer_kernels') else 'off'}, huge pages {run.get('huge_pages_mb') or 0:.0f} MB"
        )
    header = ["implementation", "examples/s", "ms/step", "peak RSS MB", "peak dev MB", "loss", "params",
              "per-round examples/s"]  # fmt: skip
    lines = [
        f"backend={runs[0]['backend']} device={runs[0]['device']} batch={runs[0]['batch_size']} "
        f"rounds={sum(r['implementation'] == 'plain' for r in runs)}",
        "",
        table(header, rows),
        "",
        *settings,
    ]
    lines.extend(f"speed-up {name} / plain: {ratio:.2f}x" for name, ratio in summary["speedup"].items())
    lines.extend(
        f"ceiling {name} / plain: {ratio:.2f}x (the MLP alone: lookups, FM and embedding updates would be free)"
        for name, ratio in summary["ceiling"].items()
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dags.ops.bench.train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=24,
        help="measured steps per run, after warm-up (best a multiple of steps per execution)",
    )
    parser.add_argument("--warmup", type=int, default=8, help="steps before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every implementation, in alternating order")
    parser.add_argument(
        "--precision", choices=(*PRECISIONS, "both"), default="both",
        help="the package's `TrainConfig.mixed_precision`: `float32` (off, the default), `mixed` (bfloat16 "
        "compute on CPU) or `both` (the package and the MLP floor run once in each per round); the plain model "
        "always computes in float32",
    )  # fmt: skip
    parser.add_argument(
        "--jit-compile", choices=tuple(JIT_COMPILE), default="auto", help="the package's `TrainConfig.jit_compile`"
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=None,
        help="the package's `TrainConfig.steps_per_execution` (default: TrainConfig's); the plain model takes Keras' 1",
    )
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="examples per step (the figures in the README: 4096)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help="run one implementation (profiling)")
    parser.add_argument(
        "--profile", action="store_true",
        help="print an op-level profile of the package's training step (TensorFlow; `--precision` float32 or mixed)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.rounds) <= 0 or args.warmup < 0:
        parser.error("--batch-size, --steps and --rounds must be positive, --warmup non-negative")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.steps_per_execution is None:
        from deepfm_model.config import TrainConfig

        args.steps_per_execution = TrainConfig().steps_per_execution
    settings = {
        "mixed_precision": args.precision == "mixed",  # per worker; the parent runs each of `variants`
        "jit_compile": JIT_COMPILE[args.jit_compile],
        "steps_per_execution": args.steps_per_execution,
    }
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.steps, args.warmup, settings, args.seed, args.batch_size)))
        return 0
    if args.profile:
        if args.precision == "both":
            parser.error("--profile profiles one precision: give --precision float32 or --precision mixed")
        print(profile_package(settings, args.steps, args.warmup, args.seed, args.batch_size))
        return 0
    settings.pop("mixed_precision")
    print(f"deepfm_model TrainConfig: {settings}, precision {args.precision}; plain: Keras defaults", flush=True)
    chosen = [v for v in variants(args.precision) if args.only in (None, v[0])]
    runs = []
    for round_index in range(args.rounds):
        for name, precision in chosen if round_index % 2 == 0 else chosen[::-1]:
            runs.append(_run_child(name, precision, args))
            print(
                f"round {round_index + 1} {runs[-1]['implementation']}: {runs[-1]['examples_per_sec']:.0f} examples/s",
                flush=True,
            )
    if args.only:
        return 0
    summary = summarise(runs)
    print(format_table(summary, runs))
    config = {"batch_size": args.batch_size, "embedding_dim": EMBEDDING_DIM, "mlp_units": list(MLP_UNITS),
              "categorical_fields": NUM_CATEGORICAL, "numeric_fields": NUM_NUMERIC, "vocabulary": VOCABULARY,
              "zipf_exponent": ZIPF_EXPONENT, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
              "deepfm_model_train_config": settings, "precision": args.precision}  # fmt: skip
    write_result(args.out, {"config": config, "summary": summary, "runs": runs,
                            "machine": machine(device=runs[0]["device"], backend=runs[0]["backend"])})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
