"""`dags.ops.bench.report`, the benchmarks' one helper: percentiles, tables, the machine, timing, the JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from dags.ops.bench.report import Stopwatch, Timed, machine, measure_import, percentiles, table, write_result


def test_percentiles_interpolate_linearly_and_round_when_asked():
    assert percentiles(range(1, 101)) == pytest.approx({"p50_ms": 50.5, "p99_ms": 99.01})
    assert percentiles([3.0, 1.0, 2.0]) == {"p50_ms": 2.0, "p99_ms": pytest.approx(2.98)}
    assert percentiles([1.23456, 2.34567], digits=2) == {"p50_ms": 1.79, "p99_ms": 2.33}
    with pytest.raises(ValueError):
        percentiles([])


def test_table_pads_every_column_to_its_widest_cell():
    text = table(["store", "p50 ms"], [["sqlite", "1.25"], ["redis", "10.50"]])
    assert text.splitlines() == [
        "| store  | p50 ms |",
        "| :----- | -----: |",
        "| sqlite |   1.25 |",
        "| redis  |  10.50 |",
    ]
    assert len({len(line) for line in table(["n"], [[1], [1000]]).splitlines()}) == 1
    assert table(["us", "note"], [[81, "ours"]], align="rl").splitlines()[1:] == ["| --: | :--- |", "|  81 | ours |"]
    with pytest.raises(ValueError):
        table(["a", "b"], [["only one"]])


def test_machine_describes_this_machine_and_takes_a_benchs_own_keys():
    described = machine(feast="0.0", device="CPU")
    assert described["cpus"] == os.cpu_count()
    assert described["cpu"] and described["platform"] and described["python"]
    assert len(described["load_avg"]) == 3
    assert described["feast"] == "0.0" and described["device"] == "CPU"


def test_timed_remembers_its_last_call_in_milliseconds_even_when_it_raises():
    def nap(seconds):
        time.sleep(seconds)
        if seconds > 0.02:
            raise RuntimeError("long nap")
        return seconds

    timed = Timed(nap)
    assert timed(0.01) == 0.01 and 10 <= timed.last_ms < 1000
    with pytest.raises(RuntimeError):
        timed(0.03)
    assert 30 <= timed.last_ms < 1000
    watch = Stopwatch()
    time.sleep(0.01)
    assert watch.ms() >= 10 and watch.seconds() >= 0.01


def test_write_result_writes_json_and_says_where(tmp_path, capsys):
    path = write_result(tmp_path / "bench" / "x.json", {"p50_ms": 1.5, "machine": machine()})
    assert json.loads(path.read_text())["p50_ms"] == 1.5
    assert capsys.readouterr().out.strip() == f"written: {path}"


def test_measure_import_times_each_module_of_a_list_in_fresh_interpreters():
    # A module this process imported already still costs a fresh interpreter its import.
    figures = measure_import("json, deepfm_model.spec.features", runs=2)
    assert figures["runs"] == 2
    assert 0 < figures["min_seconds"] <= figures["seconds"] and figures["cpu_seconds"] > 0 and figures["rss_mib"] > 1
    with pytest.raises(subprocess.CalledProcessError):
        measure_import("no_such_module_here", runs=1)
