"""Suite-wide settings: keep Airflow and TensorFlow quiet and out of the user's home."""

from __future__ import annotations

import os
import tempfile

# Set before any test imports Airflow, which reads its configuration at import time.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="deepfm-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported before Feast is: `feast.metrics`, imported first, sets PROMETHEUS_MULTIPROC_DIR and so switches
# prometheus_client to multiprocess value files, which pool the counters of every `serving.server` the tests run in
# this process (one server's /metrics would count another's requests).
import prometheus_client  # noqa: E402, F401


def pytest_collection_modifyitems(items: list) -> None:
    """Files that run the stack first, then files that train, each file's tests kept in their order.

    `make test` hands whole files to its workers in collection order (`--dist loadfile --no-loadscope-reorder`):
    with xdist's own order (most tests first) the five-minute stack files came last and ran alone while the other
    worker idled (`tests/test_make_test.py`).
    """

    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    rank: dict[str, tuple[bool, bool]] = {}
    for item in items:
        kind = (item.get_closest_marker("e2e") is None, item.get_closest_marker("slow") is None)
        rank[file_of(item)] = min(rank.get(file_of(item), kind), kind)
    items.sort(key=lambda item: rank[file_of(item)])
