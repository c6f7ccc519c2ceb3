"""Scale benchmark, `make bench-scale`: the whole nightly run, stage by stage, on generated sources of growing size.

For each size a source folder is generated (`python -m deepfm_model.synthetic`: 30 days, users = events / 20,
movies = max(2,000, events / 100)) and the ten stages run in DAG order, each in its own process as on a worker
(`python -m dags.ops.bench.scale --stage NAME`), against a fresh home: Feast repo, artifacts, model base path
and a serving tier (a `serving.server` process, started before the run as `docker/` starts TF Serving). Stages are
configured by the environment only, through `PipelineConfig.from_env`, so the training settings are the DAG's own
variables (`DEEPFM_BATCH_SIZE`, `DEEPFM_EPOCHS`, `DEEPFM_EARLY_STOPPING_PATIENCE`); unset, the benchmark's
defaults below apply. Results go to `artifacts/bench/scale.json`:

    {"runs": [{"events": N, "stages": {stage: seconds}, "total_seconds": s, "peak_rss_mb": m, ...}, ...],
     "growth": {stage: {"100000->1000000": exponent, ...}}, "training": {...}, "machine": {...}}

`peak_rss_mb` is the largest peak resident set of any stage process; `growth` is the log-log slope of each
stage's seconds between consecutive sizes (1 is linear), per engine. With `--nights 2` the second night runs on
the same home with one more day of events (generated at the same daily rate), which measures the incremental
feature work.

`--engines duckdb,spark` runs each size once per feature engine (`DEEPFM_FEATURE_ENGINE`) on the same generated
source, side by side; each Spark run once per `--spark-workers` count, as a local master of that many cores
(`DEEPFM_SPARK_MASTER=local[n]`). Each run records `engine` and `spark_master` (null for DuckDB).

    python -m dags.ops.bench.scale [--sizes 100k,1M,10M] [--nights 1] [--engines duckdb] [--spark-workers 2]
        [--work-dir DIR] [--keep]

10^8 events (`--sizes 100M`: 5M users, 1M movies) is the target for a bigger machine: DuckDB's stages stay within
their memory limit (they spill to disk) and training streams, but Feast's SQLite online store takes ~4.5 KB of
disk per user (a row per feature value: 234 MB at 1M events, 50k users; ~23 GB at 5M users) and materialization
and training time grow linearly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dags.ops.bench.report import Stopwatch, machine, table, write_result
from dags.pipeline.config import PROJECT_ROOT, PipelineConfig
from deepfm_model.spec.files import write_json

logger = logging.getLogger(__name__)

STAGES = ("ingest", "update_feature_store", "check_skew", "build_training_set", "validate", "train", "evaluate",
          "bless", "push", "verify_serving")  # fmt: skip
START, DAYS = "1998-01-01", 30
# Training settings of large data, used where the environment does not set the DAG's variables. One epoch: at 1M
# events the second one's validation AUC was no better (heads 0.8113 then 0.8111, like tower 0.8292 then 0.8266;
# early stopping kept the first), as deep CTR models over-fit from their second epoch on (Zhang et al., "Towards
# Understanding the Overfitting Phenomenon of Deep Click-Through Rate Prediction Models", CIKM 2022).
DEFAULT_TRAINING = {"DEEPFM_BATCH_SIZE": "8192", "DEEPFM_EPOCHS": "1", "DEEPFM_EARLY_STOPPING_PATIENCE": "1"}
OUT = PROJECT_ROOT / "artifacts" / "bench" / "scale.json"


def entity_counts(events: int) -> tuple[int, int]:
    """(users, movies) generated for `events` events."""
    return max(100, events // 20), max(2_000, events // 100)


def run_stage(stage: str, ds: str, env: dict[str, str], log_path: Path) -> tuple[float, float, dict]:
    """Run one stage in a child process; its (seconds, peak RSS in MB, result). The child's output goes to `log_path`.

    Raises:
        RuntimeError: the stage failed; the message ends with its log.
    """
    result_path = log_path.with_suffix(".json")
    command = [sys.executable, "-m", "dags.ops.bench.scale", "--stage", stage, "--ds", ds,
               "--result", str(result_path)]  # fmt: skip
    watch = Stopwatch()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = watch.seconds()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"Stage {stage} failed (exit {child.returncode}); log {log_path}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024, json.loads(result_path.read_text())


def engine_runs(engines: list[str], spark_workers: list[int]) -> list[tuple[str, str | None]]:
    """(engine, Spark master or None) of each run of a size, in the order of `engines`: DuckDB once, Spark once per
    worker count."""
    from dags.pipeline.config import FEATURE_ENGINES

    unknown = sorted(set(engines) - set(FEATURE_ENGINES))
    if unknown:
        raise ValueError(f"Unknown feature engines {unknown}; choose from {list(FEATURE_ENGINES)}")
    if any(n < 1 for n in spark_workers):
        raise ValueError(f"Spark worker counts must be positive. Received: {spark_workers}")
    runs: list[tuple[str, str | None]] = []
    for engine in dict.fromkeys(engines):
        runs += [(engine, f"local[{n}]") for n in spark_workers] if engine == "spark" else [(engine, None)]
    return runs


def stage_env(
    base_env: dict[str, str], home: Path, source: Path, config_file: Path, engine: str, spark_master: str | None
) -> dict[str, str]:
    """The environment every stage of a run gets: `home`'s folders, the generated `source`, the feature engine."""
    return {
        **base_env,
        "DEEPFM_SOURCE": "parquet",
        "DEEPFM_SOURCE_DIR": str(source),
        "DEEPFM_FEATURE_REPO": str(home / "feature_repo"),
        "DEEPFM_ARTIFACTS": str(home / "artifacts"),
        "DEEPFM_MODEL_BASE_PATH": str(home / "models"),
        "DEEPFM_MODEL_CONFIG_FILE": str(config_file),
        "DEEPFM_FEATURE_ENGINE": engine,
        **({"DEEPFM_SPARK_MASTER": spark_master} if spark_master else {}),
    }


def bench_size(
    events: int, nights: int, work_dir: Path, base_env: dict[str, str], engine: str = "duckdb",
    spark_master: str | None = None,
) -> list[dict]:  # fmt: skip
    """Generate a source of `events` events and run `nights` nightly runs on it with the feature `engine` (and
    `spark_master`); one record per night."""
    from feature_repo.store import write_config
    from serving.labels import ensure_model_config
    from serving.server_process import server_process

    users, movies = entity_counts(events)
    days = DAYS + nights - 1
    generated = events * days // DAYS  # each later night adds one more day at the same rate
    # No brackets in the folder's name: Spark reads a path's `[1]` as a glob class.
    master = re.sub(r"\W+", "-", spark_master).strip("-") if spark_master else ""
    home = work_dir / f"events-{events}-{engine}{'-' + master if master else ''}"
    shutil.rmtree(home, ignore_errors=True)
    source = work_dir / f"source-{events}-{nights}"  # one generated source for every engine of a size
    watch = Stopwatch()
    if not (source / "events.parquet").is_file():
        logger.info("[%s events] generating %d events of %d users and %d movies over %d days into %s",
                    f"{events:,}", generated, users, movies, days, source)  # fmt: skip
        subprocess.run([sys.executable, "-m", "deepfm_model.synthetic", "--events", str(generated), "--users",
                        str(users), "--movies", str(movies), "--start", START, "--days", str(days), "--out",
                        str(source)], check=True, env=base_env, cwd=PROJECT_ROOT)  # fmt: skip
    generate_seconds = watch.seconds()
    write_config(home / "feature_repo")
    config_file = ensure_model_config(home / "models", "deepfm")
    env = stage_env(base_env, home, source, config_file, engine, spark_master)
    records = []
    flags = ["--model-config-file", str(config_file), "--poll-interval-s", "0.5"]
    with server_process(home / "models", flags=flags) as server:
        env["DEEPFM_SERVING_ADDRESSES"] = server.address
        for night in range(nights):
            ds = (dt.date.fromisoformat(START) + dt.timedelta(days=DAYS + night)).isoformat()
            stages, rss, results = {}, {}, {}
            for stage in STAGES:
                logger.info("[%s events, %s] %s ...", f"{events:,}", ds, stage)
                seconds, peak, result = run_stage(stage, ds, env, home / f"{ds}-{stage}.log")
                stages[stage], rss[stage], results[stage] = round(seconds, 1), round(peak), result
                logger.info("[%s events, %s] %s: %.1f s, peak RSS %.0f MB", f"{events:,}", ds, stage, seconds, peak)
            records.append({
                "events": events, "users": users, "movies": movies, "ds": ds, "night": night + 1, "engine": engine,
                "spark_master": spark_master,
                "stages": stages, "total_seconds": round(sum(stages.values()), 1), "peak_rss_mb": max(rss.values()),
                "stage_peak_rss_mb": rss, "generate_seconds": round(generate_seconds, 1),
                "rows": results["build_training_set"], "ingested_events": results["ingest"]["events"],
                "test_auc": results["train"].get("test_auc"), "blessed": results["bless"].get("blessed"),
                "disk_mb": round(_disk_bytes(home) / 2**20),
            })  # fmt: skip
            logger.info("[%s events, %s, %s] whole run %.1f s, peak RSS %.0f MB", f"{events:,}", ds,
                        _engine_label(records[-1]), records[-1]["total_seconds"], records[-1]["peak_rss_mb"])  # fmt: skip
    return records


def growth(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per stage (and `total`), the log-log slope of seconds against events between consecutive sizes of one
    engine; the keys of other engines than DuckDB end with the engine's label (`"1000000->10000000 spark local[2]"`)."""
    slopes: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(_engine_label(r) for r in runs):
        first = sorted((r for r in runs if r["night"] == 1 and _engine_label(r) == label), key=lambda r: r["events"])
        suffix = "" if label == "duckdb" else f" {label}"
        for name in (*STAGES, "total"):
            for a, b in zip(first, first[1:], strict=False):
                ta = a["total_seconds"] if name == "total" else a["stages"][name]
                tb = b["total_seconds"] if name == "total" else b["stages"][name]
                slope = math.log(max(tb, 0.1) / max(ta, 0.1)) / math.log(b["events"] / a["events"])
                slopes.setdefault(name, {})[f"{a['events']}->{b['events']}{suffix}"] = round(slope, 2)
    return slopes


def _engine_label(run: dict) -> str:
    engine = run.get("engine", "duckdb")
    return engine if not run.get("spark_master") else f"{engine} {run['spark_master']}"


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict | None:
    from deepfm_model.synthetic import parse_count

    parser = argparse.ArgumentParser(prog="python -m dags.ops.bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M,10M", help="comma-separated event counts (100k, 1M, 1e7)")
    parser.add_argument("--nights", type=int, default=1, help="consecutive nightly runs per size")
    parser.add_argument("--engines", default="duckdb", help="comma-separated feature engines: duckdb, spark")
    parser.add_argument("--spark-workers", default="2", help="comma-separated local Spark worker counts")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the homes go (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated homes")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in a child process
    parser.add_argument("--ds", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.stage:
        from dags.pipeline import stages

        result = getattr(stages, args.stage)(PipelineConfig.from_env(), args.ds)
        write_json(args.result, result if isinstance(result, dict) else {"result": result})
        return None
    sizes = [parse_count(size) for size in args.sizes.split(",")]
    runs_of_size = engine_runs(args.engines.split(","), [int(n) for n in args.spark_workers.split(",")])
    base_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DEEPFM_HOME": str(PROJECT_ROOT),
                "TF_CPP_MIN_LOG_LEVEL": "2", **{k: os.environ.get(k, v) for k, v in DEFAULT_TRAINING.items()}}  # fmt: skip
    config = PipelineConfig.from_env(base_env)
    training = {"batch_size": config.batch_size, "epochs": config.epochs,
                "early_stopping_patience": config.early_stopping_patience}  # fmt: skip
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        runs = []
        for events in sizes:
            for engine, spark_master in runs_of_size:
                runs += bench_size(events, args.nights, work_dir, base_env, engine, spark_master)
            if not args.keep:
                for home in work_dir.glob(f"*-{events}-*"):
                    shutil.rmtree(home, ignore_errors=True)
    from dags.pipeline.training import STREAM_ROWS

    report = {
        "runs": runs,
        "growth": growth(runs),
        "training": {**training, "stream_from_parquet_above_rows": STREAM_ROWS},
        "machine": machine(memory_gb=round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_result(args.out, report)
    _print_table(report)
    return report


def _print_table(report: dict) -> None:
    rows = [[f"{run['events']:,}", _engine_label(run), run["night"], *(f"{run['stages'][s]:.1f}" for s in STAGES),
             f"{run['total_seconds']:.1f}", run["peak_rss_mb"]] for run in report["runs"]]  # fmt: skip
    print("\n" + table(["events", "engine", "night", *STAGES, "total", "peak RSS MB"], rows))
    print(f"\ngrowth exponents (log-log slope of seconds): {json.dumps(report['growth'])}")
    print(f"training: {json.dumps(report['training'])}")


if __name__ == "__main__":
    main()
