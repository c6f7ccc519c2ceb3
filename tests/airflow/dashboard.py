"""Checks of the DeepFM model dashboard (the project's plugin, `/deepfm`) on a running Airflow stack.

`tests/airflow/test_ui_run.py` calls them on the stack whose DAG run it has just taken to success, so that the
expensive run serves both: it first adds a run stopped by bad data, then checks the login and path rules over
plain HTTP, the JSON API against the run directories, and the pages in headless Chromium, with screenshots in
`artifacts/test-output/`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

from dags.ops.airflow_stack import ADMIN_USERNAME, AirflowStack
from dags.pipeline.run_dir import RunDir
from serving.server_process import RunningServer
from tests.airflow.conftest import DAG_ID, RUN_TIMEOUT_S

# The synthetic events end on 1998-01-30, so the run of 1998-02-02 finds its last day of data (02-01) empty:
# the source suite fails at ingest, as it does when a feed stops (an outage looks like an empty day).
BAD_DATA_DS = "1998-02-02"
SECRET = "deepfm-dashboard-secret-outside-the-run-dir"
SCREENSHOTS = ("deepfm-dashboard.png", "deepfm-dashboard-dark.png", "deepfm-run-tab.png", "deepfm-run-page.png",
               "deepfm-bad-run-tab.png", "deepfm-serving-down.png")  # fmt: skip


@contextlib.contextmanager
def chromium_browser(chromium: Path, chromium_args: list[str]) -> Iterator:
    """Debian's Chromium, headless, through Playwright; closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=chromium_args)
        try:
            yield browser
        finally:
            browser.close()


def run_stopped_by_bad_data(stack: AirflowStack) -> dict:
    """Trigger the nightly DAG for `BAD_DATA_DS`; it must fail at ingest. Returns the DagRun."""
    run = stack.trigger(DAG_ID, f"{BAD_DATA_DS}T00:00:00Z", run_id=f"ui_test_bad_data__{BAD_DATA_DS}")
    finished = stack.wait_for_run(DAG_ID, run["dag_run_id"], timeout=RUN_TIMEOUT_S)
    states = {ti["task_id"]: ti["state"] for ti in stack.task_instances(DAG_ID, run["dag_run_id"])}
    assert finished["state"] == "failed" and states["features.ingest"] == "failed", states
    return finished


def raw_get(stack: AirflowStack, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET `path` exactly as written (no client normalises `..` or re-encodes it)."""
    parsed = urllib.parse.urlsplit(stack.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def check_access(stack: AirflowStack, home: Path, ds: str) -> dict[str, list[str]]:
    """Every `/deepfm` route needs the UI's login; nothing outside a run directory is served. Returns the cases."""
    token = stack.token()
    routes = [
        "/deepfm/", "/deepfm/api/runs", f"/deepfm/api/runs/{ds}", "/deepfm/api/serving", f"/deepfm/runs/{ds}/",
        f"/deepfm/runs/{ds}/metrics.json", f"/deepfm/runs/{ds}/model/report/roc.png",
        f"/deepfm/dag-runs/{DAG_ID}/x", "/deepfm/no/such/page", "/deepfm/docs", "/deepfm/openapi.json",
    ]  # fmt: skip
    expired, forged = _expired_and_forged(stack, token)
    for route in routes:
        assert raw_get(stack, route)[0] == 401, route
        assert raw_get(stack, route, {"Authorization": "Bearer not-a-jwt"})[0] == 403, route
        assert raw_get(stack, route, {"Authorization": f"Bearer {expired}"})[0] == 401, route
        assert raw_get(stack, route, {"Authorization": f"Bearer {forged}"})[0] == 403, route
        assert raw_get(stack, route, {"Cookie": "_token=not-a-jwt"})[0] in (401, 403), route
        status = raw_get(stack, route, {"Authorization": f"Bearer {token}"})[0]
        expected = 404 if route.endswith(("/x", "/no/such/page", "/docs", "/openapi.json")) else 200  # no such page
        assert status == expected, (route, status)
        if status == 200:
            assert raw_get(stack, route, {"Cookie": f"_token={token}"})[0] == 200, route

    # A file outside the run directory, and links to it planted inside.
    run_root = RunDir(home / "artifacts", ds).root
    secret = home / "secret.txt"
    secret.write_text(SECRET)
    os.symlink(secret, run_root / "linked-secret.txt")
    os.symlink(home, run_root / "linked-home")
    traversals = [
        f"/deepfm/runs/{ds}/../../../secret.txt",
        f"/deepfm/runs/{ds}/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"/deepfm/runs/{ds}/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        f"/deepfm/runs/{ds}/..%2f..%2f..%2fsecret.txt",
        f"/deepfm/runs/{ds}/model/..%2f..%2f..%2f..%2fsecret.txt",
        f"/deepfm/runs/{ds}/..%5c..%5c..%5csecret.txt",
        f"/deepfm/runs/{ds}/%252e%252e/%252e%252e/%252e%252e/secret.txt",
        f"/deepfm/runs/{ds}/%2fetc%2fpasswd",
        f"/deepfm/runs/{ds}/linked-secret.txt",
        f"/deepfm/runs/{ds}/linked-home/secret.txt",
        f"/deepfm/runs/{ds}/linked-home/",
        "/deepfm/runs/..%2f..%2f..%2fsecret.txt/x",
        "/deepfm/runs/%2e%2e/%2e%2e/secret.txt",
    ]
    bad_dates = ["/deepfm/api/runs/1998-02-30", "/deepfm/api/runs/latest", "/deepfm/runs/1998-1-31/",
                 "/deepfm/runs/19980131/metrics.json", "/deepfm/api/runs/1998-01-31T00:00:00"]  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    try:
        for path in traversals:
            status, body = raw_get(stack, path, auth)
            assert 400 <= status < 500 and SECRET not in body and "root:" not in body, (path, status, body[:200])
        for path in bad_dates:
            status, body = raw_get(stack, path, auth)
            assert status == 400, (path, status, body[:200])
    finally:
        (run_root / "linked-secret.txt").unlink()
        (run_root / "linked-home").unlink()
    return {"routes": routes, "traversals": traversals, "bad_dates": bad_dates}


def _expired_and_forged(stack: AirflowStack, token: str) -> tuple[str, str]:
    """The admin's token re-signed with the stack's key but expired, and signed with another key."""
    import jwt

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = {**claims, "iat": claims["iat"] - 7200, "nbf": claims.get("nbf", claims["iat"]) - 7200,
               "exp": claims["iat"] - 3600}  # fmt: skip
    secret = stack.env["AIRFLOW__API_AUTH__JWT_SECRET"]
    kid = {"kid": header["kid"]} if "kid" in header else None
    with warnings.catch_warnings():  # the test stack's random key is shorter than SHA-512 would like
        warnings.simplefilter("ignore")
        return (
            jwt.encode(expired, secret, algorithm=header["alg"], headers=kid),
            jwt.encode(claims, secret + "-not-the-key", algorithm=header["alg"], headers=kid),
        )


def check_api(stack: AirflowStack, home: Path, ds: str, run_id: str, bad_run_id: str, earlier: str) -> dict:
    """`/deepfm/api/runs` says what the run directories and the DagRuns say (the good run `ds`, the bad run, and
    a good run of the `earlier` date). Returns the good run's summary."""
    runs = stack.request("GET", "/deepfm/api/runs").json()["runs"]
    assert [r["ds"] for r in runs] == [BAD_DATA_DS, ds, earlier]  # newest first
    bad, good, _ = runs
    run_dir = RunDir(home / "artifacts", ds)
    metrics = json.loads(run_dir.metrics.read_text())
    pushed = json.loads(run_dir.push.read_text())
    blessing = json.loads(run_dir.blessing.read_text())
    assert good["run_id"] == run_id and good["state"] == "success" and good["validation_success"] is True
    assert good["test_auc"] == metrics["test_auc"] and good["test_logloss"] == metrics["test_logloss"]
    assert good["blessed"] is True and good["model_version"] == pushed["model_version"]
    assert good["reason"] == f"Blessed: {blessing['reason']}" and good["verified"] is True
    assert set(good["rows"]) == {"train", "valid", "test"} and good["duration_s"] > 0
    assert bad["run_id"] == bad_run_id and bad["state"] == "failed" and bad["validation_success"] is False
    assert bad["reason"].startswith("Stopped by bad data: source validation failed"), bad["reason"]
    assert bad["failed_tasks"] == ["features.ingest"] and any("on_run_day" in f for f in bad["failures"])
    assert bad["test_auc"] is None and bad["model_version"] is None

    detail = stack.request("GET", f"/deepfm/api/runs/{ds}").json()
    assert detail["metrics"] == metrics and detail["report_images"]
    for run in (good, bad):
        root = RunDir(home / "artifacts", run["ds"]).root
        for path in run["files"].values():  # reports, Data Docs sites, records: each served as it is on disk
            assert stack.request("GET", f"/deepfm/runs/{run['ds']}/{path}").content == (root / path).read_bytes()
        for stage in run["validation"].values():
            if stage is not None and stage["data_docs"]:  # this validation's own Data Docs page
                assert "<html" in stack.request("GET", f"/deepfm/runs/{run['ds']}/{stage['data_docs']}").text.lower()
    # Lineage: recorded in the run directory by bless, copied beside the version by push, shown as recorded.
    lineage = json.loads(run_dir.lineage.read_text())
    assert detail["lineage"] == lineage and lineage["snapshot"]["sha256"]
    served = home / "models" / "deepfm" / str(pushed["model_version"]) / "assets.extra" / "lineage.json"
    assert json.loads(served.read_text()) == {
        **lineage,
        "model_name": "deepfm",
        "model_version": pushed["model_version"],
    }
    serving = stack.request("GET", "/deepfm/api/serving").json()
    (replica,) = serving["replicas"]
    assert replica["reachable"] and replica["labels"]["stable"] == pushed["model_version"]
    assert {"version": pushed["model_version"], "state": "AVAILABLE", "error": None} in replica["versions"]
    return good


def log_in(page, stack: AirflowStack) -> None:
    """Log in through the UI's form as the admin."""
    page.goto(f"{stack.url}/", wait_until="networkidle")
    page.fill("input[name='username']", ADMIN_USERNAME)
    page.fill("input[name='password']", stack.password)
    page.click("button[type='submit']")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)


def _plugin_frame(page, path_part: str):
    """The UI's iframe once it shows a `/deepfm` page whose URL contains `path_part`."""
    page.wait_for_function(
        "part => [...document.querySelectorAll('iframe')].some(f => f.contentWindow && "
        "f.contentWindow.location.pathname.includes(part) && f.contentDocument.readyState === 'complete')",
        arg=path_part,
        timeout=60_000,
    )
    return next(f for f in page.main_frame.child_frames if path_part in f.url)


def _images_loaded(frame) -> list[dict]:
    """Every report image of the page, once loaded: its `src` and `naturalWidth`."""
    return frame.evaluate(
        """async () => {
            const images = [...document.querySelectorAll("img[data-testid=report-image]")];
            await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
            return images.map(i => ({src: i.src, naturalWidth: i.naturalWidth}));
        }"""
    )


def browse(stack: AirflowStack, home: Path, ds: str, run_id: str, bad_run_id: str, output_dir: Path, *,
           chromium: Path, chromium_args: list[str]) -> dict:  # fmt: skip
    """Log in, open the dashboard and the runs' tabs inside the UI; assert what they show; save screenshots."""
    from playwright.sync_api import expect

    metrics = json.loads(RunDir(home / "artifacts", ds).metrics.read_text())
    shown = {}
    with chromium_browser(chromium, chromium_args) as browser:
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1600, "height": 1300}, color_scheme=scheme)
            log_in(page, stack)
            page.goto(f"{stack.url}/plugin/deepfm", wait_until="networkidle")
            expect(page.get_by_text("DeepFM", exact=True).first).to_be_visible()  # the navigation entry
            frame = _plugin_frame(page, "/deepfm/")
            good = frame.locator(f"tr[data-ds='{ds}']")
            auc = good.locator("[data-testid=test-auc]")
            expect(auc).to_have_text(f"{metrics['test_auc']:.4f}")
            assert float(auc.get_attribute("data-value")) == metrics["test_auc"]
            bad = frame.locator(f"tr[data-ds='{BAD_DATA_DS}']")
            expect(bad.locator("[data-testid=state]")).to_have_text("failed")
            expect(bad.locator("[data-testid=reason]")).to_contain_text("Stopped by bad data")
            expect(bad.locator("[data-testid=failures]")).to_contain_text("on_run_day")
            expect(frame.locator("[data-testid=serving-tier]")).to_contain_text("AVAILABLE")
            theme = frame.evaluate("getComputedStyle(document.body).backgroundColor")
            shown[f"dashboard_background_{scheme}"] = theme
            name = "deepfm-dashboard.png" if scheme == "light" else "deepfm-dashboard-dark.png"
            page.screenshot(path=str(output_dir / name), full_page=True)
            if scheme == "dark":
                page.close()
                continue

            # The run's tab on its DAG run page: the report, with every image loaded.
            page.goto(f"{stack.url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}/plugin/deepfm-run",
                      wait_until="networkidle")  # fmt: skip
            frame = _plugin_frame(page, f"/deepfm/runs/{ds}/")
            auc = frame.locator(".card [data-testid=test-auc]")
            expect(auc).to_have_text(f"{metrics['test_auc']:.4f}")
            assert float(auc.get_attribute("data-value")) == metrics["test_auc"]
            images = _images_loaded(frame)
            assert len(images) >= 3 and all(i["naturalWidth"] > 0 for i in images), images
            lineage = json.loads(RunDir(home / "artifacts", ds).lineage.read_text())
            expect(frame.locator("[data-testid=lineage]")).to_contain_text(lineage["snapshot"]["sha256"])
            shown["run_tab_auc"] = auc.inner_text()
            shown["report_images"] = images
            page.screenshot(path=str(output_dir / "deepfm-run-tab.png"))

            page.goto(f"{stack.url}/deepfm/runs/{ds}/", wait_until="networkidle")
            page.screenshot(path=str(output_dir / "deepfm-run-page.png"), full_page=True)

            page.goto(f"{stack.url}/dags/{DAG_ID}/runs/{urllib.parse.quote(bad_run_id)}/plugin/deepfm-run",
                      wait_until="networkidle")  # fmt: skip
            frame = _plugin_frame(page, f"/deepfm/runs/{BAD_DATA_DS}/")
            expect(frame.locator("[data-testid=state]").first).to_have_text("failed")
            expect(frame.locator("p[data-testid=reason]")).to_contain_text("Stopped by bad data")
            expect(frame.locator("[data-testid=suite-sources]")).to_contain_text("on_run_day")
            page.screenshot(path=str(output_dir / "deepfm-bad-run-tab.png"))
            page.close()
    assert shown["dashboard_background_light"] != shown["dashboard_background_dark"], shown
    return shown


def serving_down(stack: AirflowStack, servers: list[RunningServer], output_dir: Path, *, chromium: Path,
                 chromium_args: list[str]) -> str:  # fmt: skip
    """Stop every replica; the dashboard must then show the tier unreachable and say how to start it. Returns
    the hint's text; saves `deepfm-serving-down.png`."""
    from playwright.sync_api import expect

    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=60)
    with chromium_browser(chromium, chromium_args) as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        log_in(page, stack)
        page.goto(f"{stack.url}/plugin/deepfm", wait_until="networkidle")
        frame = _plugin_frame(page, "/deepfm/")
        expect(frame.locator("[data-testid=serving-tier]")).to_contain_text("unreachable")
        hint = frame.locator("[data-testid=start-serving]")
        expect(hint).to_contain_text("make serve")
        hint.scroll_into_view_if_needed()
        page.screenshot(path=str(output_dir / "deepfm-serving-down.png"), full_page=True)
        return hint.inner_text()
