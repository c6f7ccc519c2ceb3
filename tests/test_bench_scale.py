"""`make bench-scale`'s engine settings reach each stage's configuration, and its growth exponents stay per engine."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from dags.ops.bench.scale import STAGES, engine_runs, growth, stage_env
from dags.pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]


def test_engine_and_spark_workers_reach_the_benchmark_command() -> None:
    shown = subprocess.run(["make", "-n", "-s", "bench-scale", "ENGINE=duckdb,spark", "SPARK_WORKERS=1,2"], cwd=ROOT,
                           capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    command = next(line for line in shown.stdout.splitlines() if "dags.ops.bench.scale" in line)
    assert "--engines duckdb,spark --spark-workers 1,2" in command


def test_each_spark_worker_count_is_a_run_of_its_own_and_unknown_engines_are_refused() -> None:
    assert engine_runs(["duckdb", "spark"], [1, 2]) == [("duckdb", None), ("spark", "local[1]"), ("spark", "local[2]")]
    assert engine_runs(["duckdb"], [1, 2]) == [("duckdb", None)]
    assert engine_runs(["spark", "duckdb"], [2]) == [("spark", "local[2]"), ("duckdb", None)]  # the order given
    with pytest.raises(ValueError, match="Unknown feature engines \\['dask'\\]"):
        engine_runs(["duckdb", "dask"], [2])
    with pytest.raises(ValueError, match="positive"):
        engine_runs(["spark"], [0])


@pytest.mark.parametrize(("engine", "master"), [("duckdb", None), ("spark", "local[1]")])
def test_the_stage_environment_configures_the_engine(tmp_path, engine, master) -> None:
    env = stage_env({"DEEPFM_HOME": str(ROOT)}, tmp_path / "home", tmp_path / "source", tmp_path / "m.config",
                    engine, master)  # fmt: skip
    config = PipelineConfig.from_env(env)
    assert config.feature_engine == engine
    assert config.spark_master == (master or PipelineConfig.spark_master)
    assert config.source_dir == tmp_path / "source"


def _run(events: int, seconds: float, engine: str = "duckdb", master: str | None = None) -> dict:
    return {"events": events, "night": 1, "engine": engine, "spark_master": master,
            "stages": dict.fromkeys(STAGES, seconds / len(STAGES)), "total_seconds": seconds}  # fmt: skip


def test_growth_compares_sizes_within_one_engine() -> None:
    runs = [_run(10**6, 100.0), _run(10**6, 400.0, "spark", "local[2]"), _run(10**7, 1000.0),
            _run(10**7, 2000.0, "spark", "local[2]")]  # fmt: skip
    slopes = growth(runs)["total"]
    assert slopes["1000000->10000000"] == pytest.approx(1.0)
    assert slopes["1000000->10000000 spark local[2]"] == pytest.approx(round(math.log10(2000 / 400), 2))
    assert len(slopes) == 2
