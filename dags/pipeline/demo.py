"""`make demo`'s last step: serve the pushed model locally and print one user's top 10 movies over gRPC.

Starts the TF Serving-compatible server on the model base path, waits until the newest version is AVAILABLE,
ranks every movie the user has not rated through `serving.ranking.Ranker` (Feast online features + gRPC Predict),
prints the top 10 by title with scores, and stops the server.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import subprocess
import sys
import time

from dags.pipeline.config import PipelineConfig
from dags.pipeline.release import serving_version
from dags.pipeline.serving_tier import wait_available
from deepfm_model.spec.files import read_json

logger = logging.getLogger(__name__)


def start_server(config: PipelineConfig, port: int) -> subprocess.Popen:
    """Start `serving.server` on 127.0.0.1:`port` with the model config the pushes maintain, as a child process."""
    from serving.labels import model_config_path

    command = [
        sys.executable, "-m", "serving.server",
        "--model-config-file", str(model_config_path(config.model_base_path)), "--port", str(port),
    ]  # fmt: skip
    return subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(config.home)})


def wait_for_port(port: int, server: subprocess.Popen, deadline_s: float) -> None:
    """Wait until the server process accepts TCP connections on `port` (it imports TensorFlow first)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serving.server exited with code {server.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"serving.server did not listen on port {port} within {deadline_s:.0f} s")


def recommend(config: PipelineConfig, ds: str, user_id: str, port: int, top_k: int) -> list[tuple[str, float]]:
    """Rank the movies `user_id` has not rated before `ds` through the served model; return the top `top_k`."""
    from feature_repo import store as feature_store
    from serving.client import ServingClient
    from serving.ranking import Ranker

    raw = config.load_raw()
    seen = set(raw.events.loc[raw.events["user_id"] == user_id, "movie_id"])
    candidates = [m for m in raw.movies["movie_id"] if m not in seen]
    titles = dict(zip(raw.movies["movie_id"], raw.movies["title"], strict=False))
    years = dict(zip(raw.movies["movie_id"], raw.movies["release_year"], strict=False))
    server = start_server(config, port)
    try:
        wait_for_port(port, server, deadline_s=180)
        with ServingClient(f"127.0.0.1:{port}", model_name=config.model_name, version_label="stable") as client:
            version = wait_available(client, serving_version(config), deadline_s=180)
            store = config.feature_store()
            ranked = Ranker(client, functools.partial(feature_store.online_features, store)).rank(user_id, candidates)
            ranked = ranked[:top_k]
    finally:
        server.terminate()
        server.wait(timeout=30)
    metrics = read_json(config.run_dir(ds).metrics)
    print(
        f"\nRun {ds}: test AUC {metrics['test_auc']:.4f}, logloss {metrics['test_logloss']:.4f} "
        f"({config.run_dir(ds).metrics})"
    )
    print(f"Top {top_k} movies for user {user_id} (model {config.model_name!r} version {version}, gRPC):")
    for rank, (movie_id, score) in enumerate(ranked, start=1):
        year = f" ({int(years[movie_id])})" if years.get(movie_id) == years.get(movie_id) else ""
        print(f"{rank:>3}. {score:.3f}  {titles[movie_id]}{year}")
    return ranked


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, help="logical date of the run that pushed the model")
    parser.add_argument("--user", default="1", help="user id to recommend for")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recommend(PipelineConfig.from_env(), args.ds, args.user, args.port, args.top_k)
