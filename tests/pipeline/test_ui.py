"""The dashboard app without an API server: pages, JSON API, run files, the login hook, the plot, the plugin.

The login is Airflow's in production (`tests/airflow/test_ui_run.py` proves it on a running API server); here
the app gets a stand-in, so that what each route serves can be checked in milliseconds.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from dags.pipeline.ui import app as ui
from dags.pipeline.ui.dag_runs import NIGHTLY_DAG_ID, ds_of
from dags.pipeline.ui.files import NotInRun, resolve_run_file
from dags.pipeline.ui.plot import full_ranking_svg, metrics_svg
from dags.pipeline.ui.runs import full_ranking_headline
from tests.pipeline import ui_runs

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):
    config = ui_runs.config_for(tmp_path_factory.mktemp("ui"))
    ui_runs.build_runs(config)
    return config


@pytest.fixture(scope="module")
def client(config) -> TestClient:
    app = ui.create_app(require_login=lambda: None)
    app.dependency_overrides[ui.get_config] = lambda: config
    app.dependency_overrides[ui.get_dag_runs] = ui_runs.dag_runs
    app.dependency_overrides[ui.get_serving] = ui_runs.serving
    app.dependency_overrides[ui.get_run_ds] = lambda: None
    return TestClient(app)


def rows(page: str) -> dict[str, str]:
    """Each dashboard row's HTML by its `data-ds`."""
    return dict(re.findall(r'<tr data-ds="([\d-]+)"[^>]*>(.*?)</tr>', page, flags=re.S))


def test_dashboard_lists_every_run_newest_first_with_its_outcome(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    by_ds = rows(page.text)
    assert list(by_ds) == sorted(ui_runs.DATES, reverse=True)
    bad = by_ds[ui_runs.BAD_DATA_DS]
    assert 'data-testid="state">failed<' in bad and "features.ingest" in bad
    assert "Stopped by bad data: source validation failed 2 of 33 expectations" in bad
    for failure in ui_runs.SOURCE_FAILURES:
        assert failure in bad
    for ds, auc in ui_runs.AUC.items():
        assert f'data-value="{auc}">{auc:.4f}<' in by_ds[ds]
    assert "rejected" in by_ds[ui_runs.DATES[1]] and "below the floor" in by_ds[ui_runs.DATES[1]]
    assert re.search(r"v2 <span class=\"badge ok\">stable</span>", by_ds[ui_runs.STABLE_DS])
    assert "age" in by_ds[ui_runs.STABLE_DS]  # the drifted feature
    # The serving tier: both replicas, the unreachable one said so; the plot marks the serving version.
    assert "10.0.0.9:8500" in page.text and "unreachable" in page.text
    assert "serving v2" in page.text and "blessing floor 0.60" in page.text


def test_api_runs_has_the_documented_fields(client: TestClient, config) -> None:
    body = client.get("/api/runs").json()
    assert body["dag_id"] == NIGHTLY_DAG_ID and body["total_entries"] == len(ui_runs.DATES)
    runs = {r["ds"]: r for r in body["runs"]}
    for run in runs.values():
        assert {"ds", "state", "validation_success", "test_auc", "test_logloss", "blessed", "reason",
                "model_version"} <= set(run)  # fmt: skip
    bad = runs[ui_runs.BAD_DATA_DS]
    assert bad["state"] == "failed" and bad["validation_success"] is False and bad["test_auc"] is None
    assert bad["failures"] == [f"Source suite: {f}" for f in ui_runs.SOURCE_FAILURES]
    assert bad["validation"]["sources"]["data_docs"].endswith("source-events.html")  # recorded elsewhere, found here
    stable = runs[ui_runs.STABLE_DS]
    assert stable["state"] == "success" and stable["blessed"] is True and stable["model_version"] == 2
    assert stable["test_auc"] == ui_runs.AUC[ui_runs.STABLE_DS]
    assert stable["rows"] == {"train": 134, "valid": 133, "test": 133}
    assert stable["drift"]["feature"] == "age" and stable["drift"]["psi"] > 0.25
    assert stable["drift"]["reference"] == ui_runs.DATES[0]
    assert runs[ui_runs.DATES[1]]["blessed"] is False and runs[ui_runs.DATES[1]]["model_version"] is None


def test_drift_recorded_by_the_validation_is_taken_as_is(config, monkeypatch: pytest.MonkeyPatch) -> None:
    from dags.pipeline.ui import runs

    run = config.run_dir(ui_runs.STABLE_DS)
    recorded = {"success": True, "evaluated": 68, "failures": [], "reference_ds": ui_runs.DATES[0]}
    assert runs.largest_drift(run, {**recorded, "psi": {"age": 0.02, "gender": 0.3, "occupation": float("nan")}}) == {
        "feature": "gender", "psi": 0.3, "reference": ui_runs.DATES[0],
    }  # fmt: skip
    runs._drift_cache.clear()
    monkeypatch.setattr(runs, "DRIFT_RECOMPUTE_MAX_ROWS", 100)  # too large to read in the API server: not shown
    assert runs.largest_drift(run, recorded) is None
    assert runs.largest_drift(run, {**recorded, "reference_ds": None}) is None
    runs._drift_cache.clear()


def test_api_run_and_run_page(client: TestClient) -> None:
    detail = client.get(f"/api/runs/{ui_runs.STABLE_DS}").json()
    assert detail["metrics"]["test_auc"] == ui_runs.AUC[ui_runs.STABLE_DS]
    assert detail["blessing"]["blessed"] is True and detail["push"]["model_version"] == 2
    assert detail["other_metrics"] == {"test_ndcg_at_10": 0.3125, "epochs_trained": 3}  # beside the split table
    assert [i["path"] for i in detail["report_images"]] == [
        "model/report/roc.png", "model/report/learning_curves.png", "model/report/full_ranking.png",
    ]  # fmt: skip
    assert [i["wide"] for i in detail["report_images"]] == [False, True, True]
    assert [i["title"] for i in detail["report_images"]] == ["ROC curve", "Learning curves", "Full-catalogue top-N"]

    page = client.get(f"/runs/{ui_runs.STABLE_DS}/").text
    assert f'data-testid="test-auc" data-value="{ui_runs.AUC[ui_runs.STABLE_DS]}"' in page
    assert "test ndcg at 10 <b>0.3125</b>" in page
    for image in detail["report_images"]:
        assert f'src="{image["path"]}"' in page and client.get(f"/runs/{ui_runs.STABLE_DS}/{image['path']}").content
    bad = client.get(f"/runs/{ui_runs.BAD_DATA_DS}/").text
    assert "Stopped by bad data" in bad and ui_runs.SOURCE_FAILURES[0] in bad

    assert client.get(f"/runs/{ui_runs.STABLE_DS}", follow_redirects=False).headers["location"] == (
        f"{ui_runs.STABLE_DS}/"
    )


def test_dashboard_rows_show_the_models_full_catalogue_ndcg_beside_the_best_baseline(client: TestClient) -> None:
    by_ds = rows(client.get("/").text)
    ahead = re.search(r'data-testid="topn">(.*?)</td>', by_ds[ui_runs.STABLE_DS], flags=re.S).group(1)
    assert "recommend" in ahead and 'title="ahead of the best baseline"' in ahead and "badge ok" in ahead
    assert 'data-testid="topn-ndcg" data-value="0.2625">0.2625<' in ahead
    assert re.search(r'best baseline ease <span data-testid="topn-baseline-ndcg" data-value="0.2225">0.2225<', ahead)
    behind = re.search(r'data-testid="topn">(.*?)</td>', by_ds[ui_runs.DATES[1]], flags=re.S).group(1)
    assert "badge bad" in behind and 'title="behind the best baseline"' in behind
    assert 'data-value="0.1875">0.1875<' in behind and 'data-value="0.2125">0.2125<' in behind
    for ds in (ui_runs.DATES[0], ui_runs.BAD_DATA_DS):  # a run from before the evaluation, a run that trained nothing
        assert re.search(r'data-testid="topn"><span class="muted">–</span></td>', by_ds[ds])


def test_dashboard_plots_full_catalogue_ndcg_over_runs_and_lists_the_latest_evaluation(client: TestClient) -> None:
    page = client.get("/").text
    plot = re.search(r'data-testid="topn-plot">(.*?)</section>', page, flags=re.S).group(1)
    assert re.findall(r'<g class="plot-model [^"]*" data-model="(\w+)"', plot) == list(
        ui_runs.FULL_NDCG[ui_runs.STABLE_DS]
    )
    latest = re.search(r'data-testid="topn-latest">(.*?)</section>', page, flags=re.S).group(1)
    assert f'run <a href="runs/{ui_runs.STABLE_DS}/">' in latest
    assert re.findall(r'<tr data-model="(\w+)"', latest) == list(ui_runs.FULL_NDCG[ui_runs.STABLE_DS])
    assert 'data-testid="topn-ndcg_at_10" data-value="0.2625">0.2625</span><span class="ci" data-testid="ci">' in latest


def test_api_has_the_full_ranking_as_recorded_and_null_without_one(client: TestClient) -> None:
    runs = {r["ds"]: r for r in client.get("/api/runs").json()["runs"]}
    for ds in ui_runs.DATES:
        assert runs[ds]["full_ranking"] == ui_runs.full_ranking(ds), ds
    assert runs[ui_runs.DATES[0]]["full_ranking"] is None and runs[ui_runs.DATES[0]]["full_ranking_ndcg"] is None
    headline = runs[ui_runs.STABLE_DS]["full_ranking_ndcg"]
    assert headline["model"] == "recommend" and headline["value"] == 0.2625 and headline["beats"] is True
    assert headline["baseline"] == "ease" and headline["baseline_value"] == 0.2225
    assert headline["ci"] == [0.2625 - 0.03125, 0.2625 + 0.03125]
    detail = client.get(f"/api/runs/{ui_runs.STABLE_DS}").json()
    assert detail["full_ranking"] == detail["metrics"]["full_ranking"] == ui_runs.full_ranking(ui_runs.STABLE_DS)
    assert "full_ranking" not in detail["other_metrics"]  # it has its own table, not a chip
    assert client.get(f"/api/runs/{ui_runs.DATES[0]}").json()["full_ranking"] is None


def test_run_page_tables_every_model_with_its_intervals_and_params(client: TestClient) -> None:
    page = client.get(f"/runs/{ui_runs.STABLE_DS}/").text
    table = re.search(r'<table data-testid="full-ranking">(.*?)</table>', page, flags=re.S).group(1)
    by_model = dict(re.findall(r'<tr data-model="(\w+)"[^>]*>(.*?)</tr>', table, flags=re.S))
    assert list(by_model) == list(ui_runs.FULL_NDCG[ui_runs.STABLE_DS])
    recommend = by_model["recommend"]
    ndcg = 'data-testid="topn-ndcg_at_10" data-value="0.2625">0.2625</span><span class="ci" data-testid="ci">'
    assert ndcg + "[0.2313, 0.2938]</span>" in recommend  # the value and its 95% interval
    assert 'data-testid="topn-mrr" data-value="0.328125">0.3281<' in recommend
    assert "retrieval cut <b>300</b>" in recommend  # the served model's retrieval facts
    assert recommend.count('data-testid="ci"') == 4 and '<tr data-model="recommend" class="served">' in table
    assert "l2 <b>200</b>" in by_model["ease"] and "days <b>30</b>" in by_model["popularity"]
    assert '<tr data-model="ease" class="baseline">' in table and "153 users" in page
    assert 'href="#full-ranking"' in page and 'alt="Full-catalogue top-N"' in page
    report = client.get(f"/runs/{ui_runs.STABLE_DS}/model/report/index.html").text  # as the evaluation wrote it
    assert report.count("Full-catalogue top-N</h2>") == 1 and 'src="full_ranking.png"' in report

    older = client.get(f"/runs/{ui_runs.DATES[0]}/")  # a run from before the evaluation
    assert older.status_code == 200 and 'data-testid="test-auc"' in older.text
    assert "full-ranking" not in older.text and "Full-catalogue" not in older.text


@pytest.mark.parametrize("ds", ["1998-02-30", "19980130", "latest", "1998-1-30", "1998-01-30x"])
@pytest.mark.parametrize("route", ["/api/runs/{ds}", "/runs/{ds}/", "/runs/{ds}/metrics.json"])
def test_a_ds_that_is_not_a_date_is_refused(client: TestClient, route: str, ds: str) -> None:
    response = client.get(route.format(ds=urllib.parse.quote(ds, safe="")))
    assert response.status_code == 400, response.text


def test_a_date_without_a_run_is_not_found(client: TestClient) -> None:
    assert client.get("/api/runs/1998-03-01").status_code == 404
    assert client.get("/runs/1998-03-01/").status_code == 404
    assert client.get("/runs/1998-03-01/metrics.json").status_code == 404


def test_run_files_stay_inside_the_run_directory(config, tmp_path: Path) -> None:
    root = config.run_dir(ui_runs.STABLE_DS).root
    assert resolve_run_file(root, "metrics.json") == (root / "metrics.json").resolve()
    assert resolve_run_file(root, "model/report/") == root.resolve() / "model" / "report" / "index.html"
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "out-file")
    os.symlink(tmp_path, root / "out-dir")
    os.symlink(root / "metrics.json", root / "in-file")
    try:
        assert resolve_run_file(root, "in-file").name == "metrics.json"  # a link that stays inside is fine
        for bad in ("../../../../etc/passwd", "..", "model/../../x", "/etc/passwd", "model//report", "./metrics.json",
                    "model\\..\\..\\x", "metrics.json\x00", "out-file", "out-dir/secret.txt", "out-dir/", "",
                    "model", "snapshot", "missing.json"):  # fmt: skip
            with pytest.raises(NotInRun):
                resolve_run_file(root, bad)
    finally:
        for name in ("out-file", "out-dir", "in-file"):
            (root / name).unlink()


@pytest.mark.parametrize(
    "path",
    ["..%2f..%2f..%2fREADME.md", "%2e%2e/%2e%2e/%2e%2e/README.md", "model%2f..%2f..%2f..%2fREADME.md",
     "%2e%2e%5c%2e%2e%5cREADME.md", "%252e%252e/README.md", "%2Fetc%2Fpasswd"],
)  # fmt: skip
def test_encoded_traversal_is_refused_by_the_app(client: TestClient, path: str) -> None:
    # httpx would normalise a literal `..`; encoded, it reaches the app, which sees it decoded.
    response = client.get(f"/runs/{ui_runs.STABLE_DS}/{path}")
    assert response.status_code == 404 and "README" not in response.text


def test_the_login_hook_guards_every_route(config) -> None:
    def refuse() -> None:
        raise HTTPException(401, "Not authenticated")

    app = ui.create_app(require_login=refuse)
    app.dependency_overrides[ui.get_config] = lambda: config
    client = TestClient(app)
    for path in ("/", f"/runs/{ui_runs.STABLE_DS}/", f"/runs/{ui_runs.STABLE_DS}/metrics.json", "/api/runs",
                 f"/api/runs/{ui_runs.STABLE_DS}", "/api/serving", "/dag-runs/deepfm_nightly/x", "/no/such/page",
                 "/docs", "/openapi.json"):  # fmt: skip
        assert client.get(path).status_code == 401, path
    assert client.post("/api/runs").status_code == 401


def test_dag_run_tab_of_another_dag_says_so(client: TestClient) -> None:
    response = client.get("/dag-runs/some_other_dag/manual__1")
    assert response.status_code == 404 and NIGHTLY_DAG_ID in response.text


def test_plot_marks_floor_serving_version_rejections_and_stopped_runs(client: TestClient) -> None:
    runs = client.get("/api/runs").json()["runs"]
    svg = metrics_svg(runs, auc_floor=0.6, serving_version=2)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="plot-blessed"') == 2 * 2 + 1  # two blessed runs in two panels, and the legend
    assert svg.count('class="plot-rejected"') == 2 + 1
    assert "serving v2" in svg and "blessing floor 0.60" in svg
    assert f"{ui_runs.BAD_DATA_DS}: Stopped by bad data" in svg
    assert "No trained runs yet" in metrics_svg([runs[0]], auc_floor=0.6, serving_version=None)


def test_full_catalogue_plot_draws_a_line_per_model(client: TestClient) -> None:
    runs = client.get("/api/runs").json()["runs"]
    svg = full_ranking_svg(runs)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    pattern = r'<g class="plot-model ([^"]*)" data-model="(\w+)">(.*?)</g>'
    groups = {m.group(2): (m.group(1), m.group(3)) for m in re.finditer(pattern, svg, flags=re.S)}
    assert list(groups) == ["recommend", "deepfm", "popularity", "item_knn", "ease", "slim"]
    assert "plot-served" in groups["recommend"][0] and "plot-served" in groups["deepfm"][0]
    assert all("plot-baseline" in kind for name, (kind, _) in groups.items() if name not in ("recommend", "deepfm"))
    assert len({kind.split()[0] for kind, _ in groups.values()}) == 6  # a colour each
    for name, (_, body) in groups.items():  # two runs evaluated each model but `slim`: a line through both points
        assert body.count("<circle") == len([ds for ds, models in ui_runs.FULL_NDCG.items() if name in models])
        assert body.count('class="plot-model-line"') == (name != "slim")
    assert "1998-01-30: recommend 0.2625 [0.2313, 0.2938]" in svg and "1998-01-29: ease 0.2125" in svg
    assert svg.count("slim</text>") == 1  # in the legend
    older = [r for r in runs if r["ds"] in (ui_runs.DATES[0], ui_runs.BAD_DATA_DS)]
    assert "No run has a full-catalogue top-N evaluation yet" in full_ranking_svg(older)


def test_full_ranking_headline_takes_recommend_else_deepfm_and_the_best_finite_baseline() -> None:
    def ranking(**ndcg) -> dict:
        return {"models": {name: {"ndcg_at_10": value} for name, value in ndcg.items()}}

    assert full_ranking_headline(None) is None and full_ranking_headline({"users": 3}) is None
    assert full_ranking_headline(ranking()) is None
    only_deepfm = full_ranking_headline(ranking(deepfm=0.3, pop=0.2, knn=float("nan"), ease=0.25))
    assert only_deepfm["model"] == "deepfm" and only_deepfm["baseline"] == "ease" and only_deepfm["beats"] is True
    assert only_deepfm["ci"] is None
    no_baseline = full_ranking_headline(ranking(recommend=0.3, deepfm=0.4))
    assert no_baseline["model"] == "recommend" and no_baseline["baseline"] is None and no_baseline["beats"] is None
    no_model = full_ranking_headline(ranking(recommend=None, pop=0.2))
    assert no_model["model"] is None and no_model["baseline"] == "pop" and no_model["beats"] is None


def test_ds_of_a_logical_date_is_its_utc_day() -> None:
    import datetime as dt

    assert ds_of(dt.datetime(1998, 1, 31, tzinfo=dt.UTC)) == "1998-01-31"
    assert ds_of(dt.datetime(1998, 1, 31, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))) == "1998-01-30"


def test_the_dag_id_is_the_dag_files() -> None:
    assert f'dag_id="{NIGHTLY_DAG_ID}"' in (PROJECT_ROOT / "dags" / "deepfm_nightly.py").read_text()


def test_plugin_registers_the_app_and_both_views() -> None:
    """The plugin file as Airflow loads it: a valid plugin, a non-reserved prefix, views the UI's schema accepts."""
    import importlib.util

    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from airflow.plugins_manager import is_valid_plugin

    path = PROJECT_ROOT / "dags" / "plugins" / "deepfm_ui.py"
    spec = importlib.util.spec_from_file_location("deepfm_ui", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.DeepFMPlugin
    assert is_valid_plugin(plugin)
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/deepfm" and not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    views = {view["destination"]: ExternalViewResponse(**view) for view in plugin.external_views}
    assert set(views) == {"nav", "dag_run"}
    assert views["dag_run"].href == "deepfm/dag-runs/{DAG_ID}/{RUN_ID}" and not views["nav"].href.startswith("/")
    ignored = (PROJECT_ROOT / "dags" / ".airflowignore").read_text().split()
    assert "plugins/" in ignored  # the DAG processor must not parse the plugin as a DAG file


def test_every_make_target_and_the_tests_use_the_plugins_folder() -> None:
    from tests.e2e.conftest import airflow_env

    folder = PROJECT_ROOT / "dags" / "plugins"
    assert airflow_env(Path("/tmp/x"))["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(folder)
    assert "export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/dags/plugins" in (PROJECT_ROOT / "Makefile").read_text()
    assert (
        "AIRFLOW__CORE__PLUGINS_FOLDER: /opt/deepfm/dags/plugins"
        in (PROJECT_ROOT / "docker" / "compose.yaml").read_text()
    )


def test_the_dashboard_says_how_to_start_a_serving_tier_when_no_replica_answers(config, client) -> None:
    def nothing_serves() -> dict:
        status = ui_runs.serving()
        status["replicas"] = [replica for replica in status["replicas"] if not replica["reachable"]]
        return status

    app = ui.create_app(require_login=lambda: None)
    app.dependency_overrides |= {ui.get_config: lambda: config, ui.get_dag_runs: ui_runs.dag_runs,
                                 ui.get_serving: nothing_serves, ui.get_run_ds: lambda: None}  # fmt: skip
    page = TestClient(app).get("/").text
    assert 'data-testid="start-serving"' in page and "make serve" in page
    assert 'data-testid="start-serving"' not in client.get("/").text  # one replica answers: no hint
