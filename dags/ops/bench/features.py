"""Feature store benchmark, `make bench-features`: historical retrieval throughput and online read latency.

- Historical retrieval: `store.training_frame` over the full MovieLens-100K training window (every event before
  the last day's cutoff), on the Dask `file` and the `duckdb` offline stores; rows per second.
- Online reads: 1 user x 100 candidate movies through the feature service (the client's `rank` path, on-demand
  affinity included), on the SQLite and the Redis online stores; p50/p99 latency in milliseconds.
- Importing Feast in a fresh interpreter, as every task of a night that reads the store does: plainly (typeguard
  instruments Feast's classes) and through `feature_repo` (which turns that off; see its docstring); wall and CPU
  seconds, and the ratio.

Results go to `artifacts/bench/features.json` and a table on stdout. Each store gets its own temporary repo;
the Redis one uses its own project (key suffix) and is torn down afterwards.

    python -m dags.ops.bench.features [--data-dir data/movielens] [--out artifacts/bench/features.json]
                                      [--requests 200] [--import-runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dags.ops.bench.report import Stopwatch, machine, measure_import, percentiles, table, write_result
from deepfm_model.spec import dates
from deepfm_model.spec.features import FEATURE_SERVICE, MOVIE_KEY, USER_KEY
from feature_repo import ingest, store

logger = logging.getLogger(__name__)

OFFLINE_STORES = ("file", "duckdb")
CANDIDATES = 100
FEAST_IMPORTS = {"plain": "feast", "through feature_repo": "feature_repo, feast"}


def bench_historical(raw, ds: str, work_dir: Path, sources_dir: Path, offline_store: str) -> dict:
    """Seconds and rows/sec of one `training_frame` over every event before `ds`."""
    repo = work_dir / f"offline_{offline_store}"
    store.write_config(repo, offline_store={"type": offline_store})
    shutil.copytree(sources_dir, store.data_dir(repo), dirs_exist_ok=True)
    feature_store = store.open_store(repo)
    store.apply(feature_store)
    events = ingest.labelled_events(raw, end=dates.data_cutoff(ds))
    watch = Stopwatch()
    frame = store.training_frame(feature_store, events)
    seconds = watch.seconds()
    return {"rows": len(frame), "seconds": round(seconds, 3), "rows_per_sec": round(len(frame) / seconds)}


def bench_online(raw, ds: str, work_dir: Path, sources_dir: Path, name: str, online_store: dict | None,
                 requests: int, project: str | None = None) -> dict:  # fmt: skip
    """p50/p99 milliseconds of `requests` online reads of 1 user x `CANDIDATES` movies."""
    repo = work_dir / f"online_{name}"
    store.write_config(repo, project=project, online_store=online_store)
    shutil.copytree(sources_dir, store.data_dir(repo), dirs_exist_ok=True)
    feature_store = store.open_store(repo)
    store.apply(feature_store)
    try:
        store.materialize(feature_store, dates.last_data_day(ds), dates.data_cutoff(ds))
        service = feature_store.get_feature_service(FEATURE_SERVICE)
        rng = np.random.default_rng(0)
        users = raw.users[USER_KEY].astype(str).to_numpy()
        movies = raw.movies[MOVIE_KEY].astype(str).to_numpy()
        latencies = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
            for i in range(requests + 10):  # the first 10 warm caches and connections
                user = rng.choice(users)
                rows = [{USER_KEY: user, MOVIE_KEY: m} for m in rng.choice(movies, CANDIDATES, replace=False)]
                watch = Stopwatch()
                feature_store.get_online_features(features=service, entity_rows=rows).to_dict()
                if i >= 10:
                    latencies.append(watch.ms())
    finally:
        if online_store is not None:
            feature_store.teardown()
    return {"requests": requests, "candidates": CANDIDATES, **percentiles(latencies, digits=2)}


def bench_imports(runs: int) -> dict:
    """`import feast` in fresh interpreters, plainly and through `feature_repo`; the CPU seconds' ratio."""
    imports = {name: measure_import(modules, runs) for name, modules in FEAST_IMPORTS.items()}
    ratio = imports["plain"]["cpu_seconds"] / imports["through feature_repo"]["cpu_seconds"]
    return {**imports, "cpu_ratio": round(ratio, 2)}


def run(data_dir: Path, out: Path, requests: int, redis_address: str, import_runs: int) -> dict:
    """Run every measurement, write `out`, return the results."""
    import feast

    from feature_repo import movielens

    raw = movielens.load(data_dir)
    # The day after the last event: the whole dataset is the window.
    ds = str((raw.events["event_timestamp"].max() + pd.Timedelta(days=1)).date())
    results: dict = {
        "dataset": "ml-100k",
        "ds": ds,
        "events": len(raw.events),
        "machine": machine(feast=feast.__version__),
        "import": bench_imports(import_runs),
        "historical": {},
        "online": {},
    }
    logger.info("import feast: %s", results["import"])
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        work_dir = Path(tmp)
        sources_dir = work_dir / "sources"
        ingest.write_sources(raw, ds, sources_dir)
        for offline_store in OFFLINE_STORES:
            results["historical"][offline_store] = bench_historical(raw, ds, work_dir, sources_dir, offline_store)
            logger.info("historical %s: %s", offline_store, results["historical"][offline_store])
        results["online"]["sqlite"] = bench_online(raw, ds, work_dir, sources_dir, "sqlite", None, requests)
        try:
            import redis

            host, port = redis_address.rsplit(":", 1)
            redis.Redis(host=host, port=int(port), socket_connect_timeout=2).ping()
        except Exception as error:  # noqa: BLE001 - any failure to reach Redis means "not measured"
            results["online"]["redis"] = {"skipped": f"no Redis at {redis_address}: {error}"}
        else:
            online_store = {"type": "redis", "connection_string": redis_address, "key_ttl_seconds": 3600}
            project = f"deepfm_bench_{uuid.uuid4().hex[:8]}"
            results["online"]["redis"] = bench_online(
                raw, ds, work_dir, sources_dir, "redis", online_store, requests, project
            )
    write_result(out, results)
    return results


def format_table(results: dict) -> str:
    """The results as two tables: historical retrieval, online reads."""
    historical = [
        [name, r["rows"], f"{r['seconds']:.2f}", r["rows_per_sec"]] for name, r in results["historical"].items()
    ]
    online = [
        [name, "skipped", "-", "-"]
        if "skipped" in r
        else [name, r["requests"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        for name, r in results["online"].items()
    ]
    lines = [
        f"Feature store benchmark, {results['dataset']} ({results['events']} events, ds={results['ds']})",
        "",
        table(["historical retrieval", "rows", "seconds", "rows/sec"], historical),
        "",
        table([f"online, 1 user x {CANDIDATES}", "requests", "p50 ms", "p99 ms"], online),
    ]
    lines += [f"{name}: skipped: {r['skipped']}" for name, r in results["online"].items() if "skipped" in r]
    imports = [[name, f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}"]
               for name, r in results["import"].items() if name in FEAST_IMPORTS]  # fmt: skip
    lines += ["", table(["import feast (fresh interpreter, median)", "seconds", "CPU seconds"], imports),
              f"CPU ratio, plain / through feature_repo: {results['import']['cpu_ratio']:.2f}x"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dags.ops.bench.features", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/movielens"), help="verified MovieLens cache")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/features.json"))
    parser.add_argument("--requests", type=int, default=200, help="online reads per store (after 10 warm-up)")
    parser.add_argument("--import-runs", type=int, default=3, help="fresh interpreters per way of importing Feast")
    default_redis = f"{os.environ.get('REDIS_HOST', '127.0.0.1')}:{os.environ.get('REDIS_PORT', '6379')}"
    parser.add_argument("--redis", default=default_redis, help="host:port of the Redis server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("feast", "great_expectations", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    results = run(args.data_dir, args.out, args.requests, args.redis, args.import_runs)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
