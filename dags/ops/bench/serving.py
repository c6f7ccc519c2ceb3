"""Serving benchmark: client import cost, tensor encoding, end-to-end latency and throughput.

    python -m dags.ops.bench.serving             # writes artifacts/bench/serving.json and prints a table

Measures, on this machine:
- import time and peak resident memory of `import serving.client` against
  `import tensorflow_serving.apis.prediction_service_pb2_grpc`, each in a fresh interpreter (median of runs);
- encode time of a 100-row request, from numpy columns to the request bytes: `encode_predict_request` (what
  `ServingClient.predict` sends) against `tf.make_tensor_proto` into an official `PredictRequest`
  (see `measure_encoding`);
- the server's signature call, in process: one Predict through `run_predict` (checks, decoding, the call,
  encoding) and the signature call alone, with TensorFlow's private flat call (`_call_flat`, what the server
  uses) against the public call of the same concrete function, on the same loaded model and requests, timed in
  alternation (see `measure_signature_call`); the private call stays only while this shows its gain;
- end-to-end latency (p50, p99) and requests per second of `ServingClient.predict` for 1-row and 100-row
  requests at concurrency 1 and 8, against the local server (`python -m serving.server`) in its own process.
  The model is the real DeepFM export at `artifacts/latest/model/export` when there is one, with rows of its
  test snapshot; otherwise the sample model of `dags.ops.bench.sample_model` with sample rows. The output says which.

Targets (the issue's): client import < 0.5 s; encoding >= 10x faster than `tf.make_tensor_proto`;
p99 < 10 ms for 100 rows at concurrency 1.
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import threading
import timeit
from pathlib import Path
from typing import Any

import numpy as np

from dags.ops.bench.report import Stopwatch, machine, measure_import, percentiles, table, write_result
from deepfm_model.spec.serving import SIGNATURE_KEY
from serving.server_process import server_process

log = logging.getLogger(__name__)

REAL_EXPORT = Path("artifacts/latest/model/export")
REAL_ROWS = Path("artifacts/latest/snapshot/test.parquet")
MODEL_NAME = "deepfm"
IMPORT_TARGET_S = 0.5
ENCODE_TARGET_SPEEDUP = 10.0
P99_TARGET_MS = 10.0


def site_packages_bytecode() -> bool:
    """Whether the installed packages have compiled bytecode (`.pyc`) to load.

    Without it (`uv sync` without `--compile-bytecode`, and PYTHONDONTWRITEBYTECODE set so that none is written
    later) every fresh interpreter compiles numpy, grpc and protobuf from source: most of the client's import time.
    """
    import importlib.util

    return Path(importlib.util.cache_from_source(np.__file__)).is_file()


def measure_encoding(columns: dict[str, np.ndarray], number: int) -> dict[str, float]:
    """Microseconds to encode one Predict request of `columns`, ours against `tf.make_tensor_proto`.

    Both start from the same checked, converted numpy columns (`to_feature_columns`, which either client would
    need) and end in the bytes gRPC sends. Ours is `encode_predict_request`, as `ServingClient.predict` calls
    it. Theirs is what a client of the official API does: `tf.make_tensor_proto` of every column copied into a
    `tensorflow_serving` `PredictRequest`, serialized. The speed-up compares these two. Beside them: ours and
    theirs for the tensors alone (`serialize_tensor`; `tf.make_tensor_proto`, unserialized), and the whole of
    what `predict` runs for one chunk (checks and conversion included).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving import wire
    from serving.client import PROBABILITY_OUTPUT, encode_predict_request, serialize_tensor, to_feature_columns

    spec = wire.ModelSpec(name=MODEL_NAME, signature_name=SIGNATURE_KEY)
    converted = to_feature_columns(columns)

    def ours():
        return encode_predict_request(spec, converted, [PROBABILITY_OUTPUT])

    def predict_build():
        return encode_predict_request(spec, to_feature_columns(columns), [PROBABILITY_OUTPUT])

    def tensors_only():
        return [serialize_tensor(values) for values in converted.values()]

    def their_tensors():
        return [tf.make_tensor_proto(values) for values in converted.values()]

    def theirs():
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = MODEL_NAME, SIGNATURE_KEY
        for name, values in converted.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        request.output_filter.append(PROBABILITY_OUTPUT)
        return request.SerializeToString()

    def best_us(function, runs: int) -> float:
        return min(timeit.repeat(function, number=runs, repeat=5)) / runs * 1e6

    ours(), predict_build(), tensors_only(), their_tensors(), theirs()
    ours_us = best_us(ours, number)
    predict_us = best_us(predict_build, number)
    tensors_us = best_us(tensors_only, number)
    their_tensors_us = best_us(their_tensors, max(1, number // 10))
    theirs_us = best_us(theirs, max(1, number // 10))
    return {"ours_us": ours_us, "make_tensor_proto_request_us": theirs_us, "speedup": theirs_us / ours_us,
            "serialize_tensor_us": tensors_us, "make_tensor_proto_us": their_tensors_us,
            "tensors_speedup": their_tensors_us / tensors_us, "predict_build_us": predict_us}  # fmt: skip


def measure_signature_call(export: Path, columns_by_case: dict[str, dict[str, np.ndarray]], number: int) -> dict:
    """Microseconds of one Predict inside the server, private flat call against public call, by case.

    One version of `export` is loaded once (`load_version`); its signatures are wrapped twice, as the server
    wraps them (`ServingSignature`, flat call) and with `flat_call=False` (the public `ConcreteFunction`
    call, which binds keyword arguments against the structured signature on every call). Both run the same
    `PredictRequest`s: whole (`run_predict`: checks, decoding, the call, encoding the response) and the
    signature call alone on the same decoded tensors. The two paths are timed in alternation, best of
    7 rounds of `number` calls each, so that a slower moment of the machine falls on both. Their outputs
    must agree.
    """
    import dataclasses

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving import wire
    from serving.client import PROBABILITY_OUTPUT, encode_predict_request
    from serving.server import DEFAULT_SIGNATURE, ServingSignature, load_version, run_predict

    flat = load_version(export, 1)
    public = dataclasses.replace(flat, signatures={
        key: ServingSignature(signature.function, flat.signature_def_map.signature_def[key], flat_call=False)
        for key, signature in flat.signatures.items()
    })  # fmt: skip
    flat_signature, public_signature = flat.signatures[DEFAULT_SIGNATURE], public.signatures[DEFAULT_SIGNATURE]
    spec = wire.ModelSpec(name=MODEL_NAME, signature_name=DEFAULT_SIGNATURE)
    rounds = 7
    cases: dict[str, dict[str, float]] = {}
    for case, columns in columns_by_case.items():
        request = predict_pb2.PredictRequest.FromString(encode_predict_request(spec, columns, [PROBABILITY_OUTPUT]))
        tensors = {name: tf.constant(values) for name, values in columns.items()}
        flat_out = tf.make_ndarray(run_predict(flat, MODEL_NAME, request).outputs[PROBABILITY_OUTPUT])
        public_out = tf.make_ndarray(run_predict(public, MODEL_NAME, request).outputs[PROBABILITY_OUTPUT])
        np.testing.assert_allclose(flat_out, public_out, rtol=1e-6)
        timed = {
            "predict_flat_us": functools.partial(run_predict, flat, MODEL_NAME, request),
            "predict_public_us": functools.partial(run_predict, public, MODEL_NAME, request),
            "call_flat_us": functools.partial(flat_signature, tensors),
            "call_public_us": functools.partial(public_signature, tensors),
        }
        best = dict.fromkeys(timed, float("inf"))
        for _ in range(rounds):
            for name, function in timed.items():
                best[name] = min(best[name], timeit.timeit(function, number=number) / number * 1e6)
        cases[case] = {
            **best,
            "predict_public_over_flat": best["predict_public_us"] / best["predict_flat_us"],
            "call_public_over_flat": best["call_public_us"] / best["call_flat_us"],
        }
    return {"flat_call_in_use": flat_signature.uses_flat_call, "calls_per_round": number, "rounds": rounds,
            "cases": cases}  # fmt: skip


def measure_latency(address: str, columns: dict[str, np.ndarray], concurrency: int, requests: int) -> dict:
    """p50/p99 latency (ms) and requests/s of `predict` on one shared client, `requests` per thread."""
    from serving.client import ServingClient

    latencies: list[float] = []
    lock = threading.Lock()
    with ServingClient(address, MODEL_NAME) as client:
        for _ in range(20):
            client.predict(columns)

        def worker():
            mine = []
            for _ in range(requests):
                watch = Stopwatch()
                client.predict(columns)
                mine.append(watch.ms())
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        wall = Stopwatch()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = wall.seconds()
    return {**percentiles(latencies), "requests_per_s": len(latencies) / seconds, "requests": len(latencies)}


def bench_rows(rows: int, use_real: bool) -> dict[str, np.ndarray]:
    """`rows` rows of serving columns: from the real test snapshot, or sample rows."""
    from serving.inputs import to_feature_columns

    if use_real:
        import pandas as pd

        from deepfm_model.spec.features import FEATURE_NAMES

        frame = pd.read_parquet(REAL_ROWS, columns=list(FEATURE_NAMES)).head(rows)
        return to_feature_columns({name: frame[name].to_numpy() for name in FEATURE_NAMES})
    from dags.ops.bench.sample_model import sample_columns

    return to_feature_columns(sample_columns(rows))


def real_export_problem() -> str | None:
    """Why the real export cannot be benchmarked (missing, or its signature or snapshot is not the feature spec's),
    or None when it can."""
    if not REAL_EXPORT.joinpath("saved_model.pb").is_file() or not REAL_ROWS.is_file():
        return f"no real export at {REAL_EXPORT} (with rows at {REAL_ROWS})"
    import pyarrow.parquet as pq
    from tensorflow.python.saved_model import loader_impl

    from deepfm_model.spec.features import FEATURE_NAMES

    signature = loader_impl.parse_saved_model(str(REAL_EXPORT)).meta_graphs[0].signature_def[SIGNATURE_KEY]
    if set(signature.inputs) != set(FEATURE_NAMES):
        return (f"{REAL_EXPORT} predates the feature spec (its signature lacks "
                f"{sorted(set(FEATURE_NAMES) - set(signature.inputs))}, has extra "
                f"{sorted(set(signature.inputs) - set(FEATURE_NAMES))})")  # fmt: skip
    missing = sorted(set(FEATURE_NAMES) - set(pq.read_schema(REAL_ROWS).names))
    if missing:
        return f"{REAL_ROWS} lacks features {missing}"
    return None


def run(out: Path, import_runs: int, requests: int, export: Path | None) -> dict[str, Any]:
    from serving.push import push

    problem = None if export is not None else real_export_problem()
    use_real = export is None and problem is None
    results: dict[str, Any] = {"machine": machine(site_packages_bytecode=site_packages_bytecode())}
    log.info("Measuring imports (%d fresh interpreters each)", import_runs)
    results["import"] = {
        "serving.client": measure_import("serving.client", import_runs),
        "numpy (inside serving.client)": measure_import("numpy", import_runs),
        "tensorflow_serving.apis": measure_import(
            "tensorflow_serving.apis.prediction_service_pb2_grpc", max(1, import_runs // 3)
        ),
    }
    log.info("Measuring encoding")
    results["encode_100_rows"] = measure_encoding(bench_rows(100, use_real), number=2000)

    with tempfile.TemporaryDirectory() as tmp:
        if export is not None or use_real:
            served = export or REAL_EXPORT
            model_source = str(served)
        else:
            from dags.ops.bench.sample_model import sample_columns, save_sample_model

            served = save_sample_model(Path(tmp) / "export", 0.0, sample_columns(3, seed=99), MODEL_NAME)
            model_source = f"sample model (dags/ops/bench/sample_model.py): {problem}"
        results["model"] = model_source
        results["rows_from"] = str(REAL_ROWS) if use_real else "dags.ops.bench.sample_model.sample_columns"
        columns_by_rows = {rows: bench_rows(rows, use_real) for rows in (1, 100)}
        log.info("Measuring the signature call: private flat call against the public call")
        results["signature_call"] = measure_signature_call(
            served, {f"rows={rows}": columns for rows, columns in columns_by_rows.items()}, number=200
        )
        push(served, Path(tmp) / "models", MODEL_NAME)
        results["latency"] = {}
        with server_process(Path(tmp) / "models", MODEL_NAME) as (_, address):
            for rows, columns in columns_by_rows.items():
                for concurrency in (1, 8):
                    per_thread = requests if concurrency == 1 else max(1, requests // 4)
                    log.info("Measuring %d-row requests at concurrency %d", rows, concurrency)
                    results["latency"][f"rows={rows},concurrency={concurrency}"] = measure_latency(
                        address, columns, concurrency, per_thread
                    )

    ours = results["import"]["serving.client"]["seconds"]
    p99 = results["latency"]["rows=100,concurrency=1"]["p99_ms"]
    results["targets"] = {
        f"client import < {IMPORT_TARGET_S} s": ours < IMPORT_TARGET_S,
        f"encoding >= {ENCODE_TARGET_SPEEDUP:g}x faster": results["encode_100_rows"]["speedup"]
        >= ENCODE_TARGET_SPEEDUP,
        f"p99 < {P99_TARGET_MS:g} ms, 100 rows, concurrency 1": p99 < P99_TARGET_MS,
    }
    write_result(out, results)
    return results


def format_table(results: dict[str, Any]) -> str:
    imports = [[module, f"{f['seconds']:.3f}", f"{f['rss_mib']:.0f}"] for module, f in results["import"].items()]
    enc = results["encode_100_rows"]
    encoding = [
        ["serving.client.encode_predict_request", f"{enc['ours_us']:.0f}", ""],
        ["tf.make_tensor_proto + PredictRequest", f"{enc['make_tensor_proto_request_us']:.0f}",
         f"{enc['speedup']:.1f}x slower"],
        ["tensors alone: serialize_tensor (bytes)", f"{enc['serialize_tensor_us']:.0f}", ""],
        ["tensors alone: tf.make_tensor_proto", f"{enc['make_tensor_proto_us']:.0f}",
         f"{enc['tensors_speedup']:.1f}x slower, unserialized"],
        ["predict, checks and conversion included", f"{enc['predict_build_us']:.0f}",
         "to_feature_columns + encode_predict_request"],
    ]  # fmt: skip
    calls = [[case, f"{f['predict_flat_us']:.0f}", f"{f['predict_public_us']:.0f}",
              f"{f['predict_public_over_flat']:.2f}x", f"{f['call_flat_us']:.0f}", f"{f['call_public_us']:.0f}",
              f"{f['call_public_over_flat']:.2f}x"]
             for case, f in results["signature_call"]["cases"].items()]  # fmt: skip
    latency = [[case, f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", f"{f['requests_per_s']:.0f}", f["requests"]]
               for case, f in results["latency"].items()]  # fmt: skip
    lines = [f"model: {results['model']}", f"rows:  {results['rows_from']}", ""]
    lines.append(table(["import (fresh interpreter, median)", "seconds", "peak RSS MiB"], imports))
    if not results["machine"]["site_packages_bytecode"]:
        lines.append("(no .pyc in site-packages: each fresh interpreter compiled the packages from source)")
    lines += [
        "",
        "encode one 100-row Predict request (all features, from the checked numpy columns to request bytes)",
        table(["encoder", "us", "note"], encoding, align="lrl"),
        "",
        "the server's signature call, in process (same model, same requests): private _call_flat against the public call",
        table(["case", "run_predict flat us", "public us", "ratio", "call alone flat us", "public us", "ratio"], calls),
    ]
    if not results["signature_call"]["flat_call_in_use"]:
        lines.append("(this TensorFlow's signatures expose no flat call: both columns are the public call)")
    lines += [
        "",
        table(["end to end (ServingClient.predict)", "p50 ms", "p99 ms", "req/s", "requests"], latency),
        "",
        "targets",
    ]
    lines += [f"  {'met   ' if met else 'MISSED'} {target}" for target, met in results["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dags.ops.bench.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/serving.json"))
    parser.add_argument("--import-runs", type=int, default=5, help="fresh interpreters per import measured")
    parser.add_argument("--requests", type=int, default=400, help="requests per case at concurrency 1")
    parser.add_argument("--export", type=Path, help="SavedModel to serve instead of the real or fixture one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(args.out, args.import_runs, args.requests, args.export)
    print(format_table(results))


if __name__ == "__main__":
    main()
