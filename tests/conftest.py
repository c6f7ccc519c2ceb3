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
