"""The Spark settings of the tests' applications on a cluster: a few thousand rows each, fresh JVMs, 2 cores."""

from __future__ import annotations

from feature_repo.spark_engine import DEFAULT_CONF

# The JIT's first tier alone (C1): the optimizing tier's compiler threads took the cores from a short application's
# work in fresh executors. The deploy test's second-night ingest, a fresh application on a standalone master and two
# workers, took 34.2 s with both tiers and 24.9 s with the first alone; the killed-worker test 51.1 s and 35.2 s
# (an idle 2-core machine). A `local[2]` session, one JVM through a whole test file, gained nothing.
_FIRST_TIER_ONLY = "-XX:TieredStopAtLevel=1"
JVM_CONF = {
    "spark.driver.extraJavaOptions": f"{DEFAULT_CONF['spark.driver.extraJavaOptions']} {_FIRST_TIER_ONLY}",
    "spark.executor.extraJavaOptions": _FIRST_TIER_ONLY,
}
