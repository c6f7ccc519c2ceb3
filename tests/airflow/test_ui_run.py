"""The nightly DAG on a running Airflow (LocalExecutor, SQLite): backfilled by `make backfill`, checked over the
REST API, seen in the UI.

Starts the API server, scheduler and DAG processor for an isolated home, runs `make backfill` over the synthetic
data's last two dates (two DagRuns, one after the other, the second pushing the next version), waits for every
task to succeed, then logs in to the UI in headless Chromium and saves a screenshot of the second run's grid
(`artifacts/test-output/airflow-grid.png`).

The same stack then serves the DeepFM model dashboard's checks (`tests/airflow/dashboard.py`): a third run, stopped
by bad data; the login and path rules of every `/deepfm` route; the JSON API; the dashboard and both runs' tabs in
the browser (`artifacts/test-output/deepfm-*.png`); last, with the serving tier stopped, the dashboard's hint on
how to start it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from dags.ops.airflow_stack import AirflowStack, StackConfig
from dags.pipeline.run_dir import RunDir
from serving.server_process import RunningServer
from tests.airflow import dashboard
from tests.airflow.conftest import (
    DAG_ID,
    RUN_TIMEOUT_S,
    TASKS,
    TEST_OUTPUT,
    assert_runnable_on_synthetic_data,
)
from tests.e2e.conftest import PROJECT_ROOT, SYNTHETIC_DS, airflow_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(2 * RUN_TIMEOUT_S + 600)]

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium's background services keep dialling out of a closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = TEST_OUTPUT / "airflow-grid.png"
BACKFILL_FROM = "1998-01-30"  # `make backfill FROM=... TO=SYNTHETIC_DS`: two nights


def backfill(stack: AirflowStack, first: str, last: str) -> list[dict]:
    """`make backfill FROM=first TO=last` against the stack's home; waits for its runs. Returns them, oldest first."""
    command = ["make", "-s", "backfill", f"FROM={first}", f"TO={last}", f"AIRFLOW_HOME={stack.config.airflow_home}"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=stack.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    runs = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"order_by": "logical_date"}).json()
    runs = [run for run in runs["dag_runs"] if run["run_type"] == "backfill"]
    assert [run["logical_date"][:10] for run in runs] == [first, last], runs
    return [stack.wait_for_run(DAG_ID, run["dag_run_id"], timeout=RUN_TIMEOUT_S) for run in runs]


def screenshot_grid(stack: AirflowStack, run_id: str, path: Path) -> None:
    """Log in through the UI's form and save a screenshot of the run's grid view."""
    from playwright.sync_api import expect

    with dashboard.chromium_browser(CHROMIUM, CHROMIUM_ARGS) as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        dashboard.log_in(page, stack)

        page.goto(f"{stack.url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}", wait_until="networkidle")
        page.get_by_role("button", name="Expand all task groups").click()
        for task_id in sorted(TASKS):  # the grid's row labels link to each task
            expect(page.locator(f"a[href='/dags/{DAG_ID}/tasks/{task_id}']")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Success").first).to_be_visible()
        page.screenshot(path=str(path), full_page=True)


def test_nightly_run_through_rest_api_and_ui(
    project_home: Path, serving: list[RunningServer], output_dir: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is not installed, so the UI and dashboard browser tests cannot run: `make test` installs "
            "Debian's chromium when run as root; otherwise run `apt-get install chromium` as root first"
        )
    config = StackConfig(airflow_home=project_home / "airflow", log_dir=output_dir / "logs")
    with AirflowStack(config, airflow_env(project_home)) as stack:
        stack.start(dag_ids=(DAG_ID,))
        assert_runnable_on_synthetic_data(stack)
        earlier, finished = backfill(stack, BACKFILL_FROM, SYNTHETIC_DS)
        run_id = finished["dag_run_id"]
        assert finished["logical_date"].startswith(SYNTHETIC_DS)
        assert earlier["end_date"] <= finished["start_date"], (earlier, finished)  # one at a time, in date order
        for run in (earlier, finished):
            instances = stack.task_instances(DAG_ID, run["dag_run_id"])
            (output_dir / f"task_instances_{run['logical_date'][:10]}.json").write_text(json.dumps(instances, indent=2))
            states = {ti["task_id"]: ti["state"] for ti in instances}
            assert run["state"] == "success", f"{run['dag_run_id']}: {states}; logs in {config.log_dir}"
            assert set(states) == TASKS
            assert set(states.values()) == {"success"}, states
            pools = {ti["task_id"]: ti["pool"] for ti in instances}
            assert pools["training.train"] == "training", pools  # the pool exists, or the task would never run
        pushed = [json.loads(RunDir(project_home / "artifacts", ds).push.read_text())["model_version"]
                  for ds in (BACKFILL_FROM, SYNTHETIC_DS)]  # fmt: skip
        assert pushed == [1, 2], pushed

        screenshot_grid(stack, run_id, output_dir / "airflow-grid.png")

        bad_run = dashboard.run_stopped_by_bad_data(stack)
        cases = dashboard.check_access(stack, project_home, SYNTHETIC_DS)
        dashboard.check_api(stack, project_home, SYNTHETIC_DS, run_id, bad_run["dag_run_id"], earlier=BACKFILL_FROM)
        shown = dashboard.browse(stack, project_home, SYNTHETIC_DS, run_id, bad_run["dag_run_id"], output_dir,
                                 chromium=CHROMIUM, chromium_args=CHROMIUM_ARGS)  # fmt: skip
        shown["serving_down_hint"] = dashboard.serving_down(stack, serving, output_dir, chromium=CHROMIUM,
                                                            chromium_args=CHROMIUM_ARGS)  # fmt: skip
        (output_dir / "dashboard-checks.json").write_text(json.dumps({"cases": cases, "shown": shown}, indent=2))
    shutil.copyfile(output_dir / "airflow-grid.png", SCREENSHOT)
    for name in dashboard.SCREENSHOTS:
        shutil.copyfile(output_dir / name, TEST_OUTPUT / name)
    print(f"\nGrid screenshot: {SCREENSHOT}\nComponent and task logs: {config.log_dir}")
    print("Dashboard screenshots: " + ", ".join(str(TEST_OUTPUT / name) for name in dashboard.SCREENSHOTS))

    verify = json.loads(RunDir(project_home / "artifacts", SYNTHETIC_DS).verify.read_text())
    assert verify["verified"] is True
