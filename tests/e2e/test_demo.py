"""`make demo` on a team's own tables (`DEEPFM_SOURCE=parquet`) when the run fails: the demo says why.

The demo that succeeds is `tests/e2e/test_nightly_dag.py`'s run: its list, then the DagRun's outputs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.features import RATING
from deepfm_model.synthetic import EVENTS_FILE
from tests.e2e.conftest import DEMO_TOP_K, SYNTHETIC_DS, generate_source, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_a_failed_demo_run_prints_the_whole_reason(tmp_path: Path) -> None:
    folder = generate_source(tmp_path)
    events = pd.read_parquet(folder / EVENTS_FILE)
    events.drop(columns=[RATING]).to_parquet(folder / EVENTS_FILE, index=False)
    result = run_demo(tmp_path, DEMO_TOP_K)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # The failure line as the task log keeps it, every line of the reason: the second names the missing column.
    reason = output[output.index(f"deepfm_nightly features.ingest failed for {SYNTHETIC_DS}: ") :]
    assert "The raw source failed 1 check(s); nothing was written:" in reason.splitlines()[0], reason[:2000]
    assert RATING in reason.splitlines()[1], reason[:2000]
    assert not (tmp_path / "models" / "deepfm" / "1").exists()
