"""The `/deepfm` app on Airflow's API server: the model dashboard, each run's page and files, and a JSON API.

| route (under `/deepfm`) | what it serves |
| --- | --- |
| `/` | the dashboard: one row per nightly run, the serving tier, AUC and logloss and full-catalogue NDCG@10 over runs |
| `/runs/{ds}/` | a run's page: model report (full-catalogue top-N included), both suites' Data Docs, skew, blessing, lineage |
| `/runs/{ds}/{path}` | a file of the run directory (the report's images, the Data Docs, the JSON records) |
| `/dag-runs/{dag_id}/{run_id}` | the DAG run tab's entry: redirects to its run's page |
| `/api/runs`, `/api/runs/{ds}` | the runs as JSON: every summary; one run with its metrics, blessing, skew, lineage |
| `/api/serving` | the serving tier as JSON |

Every route, an unknown path included, depends on Airflow's own authorization of the UI's user: the auth
manager's JWT from the `Authorization: Bearer` header or the UI's `_token` cookie, allowed to read the nightly
DAG's runs (`requires_access_dag("GET", RUN)`). Without a token the answer is 401, with an invalid one 403; the
interactive API docs are off, as they would be served without that check. Relative links only, so the app works
under any `[api] base_url`.
"""

from __future__ import annotations

import functools
import logging
import math
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from markupsafe import Markup

from dags.pipeline.config import PipelineConfig
from dags.pipeline.ui import dag_runs as airflow_runs
from dags.pipeline.ui.dag_runs import NIGHTLY_DAG_ID, DagRunRecord
from dags.pipeline.ui.files import NotInRun, resolve_run_file
from dags.pipeline.ui.plot import full_ranking_svg, metrics_svg
from dags.pipeline.ui.runs import full_ranking_rows, list_runs, run_dates, run_detail
from dags.pipeline.ui.serving_status import LABELS, serving_status
from deepfm_model.layout import SPLITS
from deepfm_model.spec.dates import check_ds
from deepfm_model.topn_report import METRICS as TOPN_METRICS

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",  # the Airflow UI shows these pages in its own iframe
}
FILE_HEADERS = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}


def airflow_login() -> Callable:
    """Airflow's dependency that authenticates the UI's user and authorizes reading the nightly DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=NIGHTLY_DAG_ID)


@functools.cache
def get_config() -> PipelineConfig:
    """The deployment the API server's environment describes (read once, on the first request)."""
    return PipelineConfig.from_env()


def get_dag_runs() -> dict[str, DagRunRecord]:
    """The nightly DAG's runs from Airflow's metadata database, by `ds`."""
    return airflow_runs.nightly_runs()


def get_run_ds(dag_id: str, run_id: str) -> str | None:
    return airflow_runs.run_ds(dag_id, run_id)


ConfigDep = Annotated[PipelineConfig, Depends(get_config)]
DagRunsDep = Annotated[dict[str, DagRunRecord], Depends(get_dag_runs)]


def get_serving(config: ConfigDep) -> dict:
    return serving_status(config)


ServingDep = Annotated[dict, Depends(get_serving)]


@functools.cache
def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    environment.filters["duration"] = _duration
    environment.globals["css"] = Markup((TEMPLATES / "style.css").read_text())
    environment.globals["topn_columns"] = [key for key, _ in TOPN_METRICS]  # the full-catalogue tables' metrics
    return environment


def render(template: str, status_code: int = 200, **context) -> HTMLResponse:
    page = _environment().get_template(template).render(**context)
    return HTMLResponse(page, status_code=status_code, headers=PAGE_HEADERS)


def create_app(require_login: Callable | None = None) -> FastAPI:
    """The app the plugin mounts at `/deepfm`.

    Args:
        require_login: the dependency every route runs first; Airflow's (`airflow_login`) when `None`. Tests of
            the pages without an API server pass their own.
    """
    app = FastAPI(
        title="DeepFM model dashboard",
        dependencies=[Depends(require_login or airflow_login())],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", response_class=HTMLResponse)
    def dashboard(config: ConfigDep, dag_runs: DagRunsDep, serving: ServingDep) -> HTMLResponse:
        runs = list_runs(config, dag_runs)
        stable = _label(serving, "stable")
        latest_ranked = next((r for r in runs if full_ranking_rows(r["full_ranking"])), None)
        context = {
            "dag_id": NIGHTLY_DAG_ID,
            "runs": runs,
            "serving": serving,
            "labels": list(dict.fromkeys([*LABELS, *(serving["config_labels"] or {})])),
            "stable": stable,
            "canary": _label(serving, "canary"),
            "stable_run": next((r["ds"] for r in runs if stable is not None and r["model_version"] == stable), None),
            "latest": runs[0] if runs else None,
            "latest_trained": next((r for r in runs if r["test_auc"] is not None), None),
            "auc_floor": config.auc_floor,
            "plot": Markup(metrics_svg(runs, config.auc_floor, stable)),
            "topn_plot": Markup(full_ranking_svg(runs)),
            "latest_ranked": latest_ranked,
            "latest_ranked_rows": full_ranking_rows(latest_ranked["full_ranking"] if latest_ranked else None),
            "artifacts": str(config.artifacts),
        }
        return render("dashboard.html", **context)

    @app.get("/runs/{ds}")
    def run_without_slash(ds: str) -> RedirectResponse:
        return RedirectResponse(f"{_checked_ds(ds)}/", status_code=307)

    @app.get("/runs/{ds}/", response_class=HTMLResponse)
    def run_page(ds: str, config: ConfigDep, dag_runs: DagRunsDep):
        run = run_detail(config, _existing_run(config, ds, dag_runs), dag_runs.get(ds))
        topn_rows = full_ranking_rows(run["full_ranking"])
        return render("run.html", run=run, splits=SPLITS, topn_rows=topn_rows)

    @app.get("/runs/{ds}/{path:path}")
    def run_file(ds: str, path: str, config: ConfigDep) -> FileResponse:
        root = config.run_dir(_checked_ds(ds)).root
        try:
            target = resolve_run_file(root, path)
        except NotInRun as error:
            logger.info("Refused run file %s/%s: %s", ds, path, error)
            raise HTTPException(404, "No such file in the run directory") from None
        media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(target, media_type=media_type, headers=FILE_HEADERS)

    @app.get("/dag-runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def dag_run_tab(dag_id: str, run_id: str):
        ds = get_run_ds(dag_id, run_id) if dag_id == NIGHTLY_DAG_ID else None
        if ds is None:
            message = (
                f"The DeepFM reports belong to the runs of {NIGHTLY_DAG_ID}."
                if dag_id != NIGHTLY_DAG_ID
                else f"{dag_id} has no run {run_id} with a logical date."
            )
            return render("message.html", 404, heading="No DeepFM run here", message=message, home="../../")
        return RedirectResponse(f"../../runs/{ds}/", status_code=307)

    @app.get("/api/runs")
    def api_runs(config: ConfigDep, dag_runs: DagRunsDep) -> JSONResponse:
        runs = list_runs(config, dag_runs)
        return JSONResponse(_json_safe({"dag_id": NIGHTLY_DAG_ID, "runs": runs, "total_entries": len(runs)}))

    @app.get("/api/runs/{ds}")
    def api_run(ds: str, config: ConfigDep, dag_runs: DagRunsDep):
        return JSONResponse(_json_safe(run_detail(config, _existing_run(config, ds, dag_runs), dag_runs.get(ds))))

    @app.get("/api/serving")
    def api_serving(serving: ServingDep) -> JSONResponse:
        return JSONResponse(_json_safe(serving))

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def not_found(path: str) -> None:
        """Anything else: 404, after the login check every route runs (so nothing is told to a stranger)."""
        raise HTTPException(404, "Not found")

    return app


def _checked_ds(ds: str) -> str:
    try:
        return check_ds(ds)
    except ValueError:
        raise HTTPException(400, "`ds` must be a date as YYYY-MM-DD") from None


def _existing_run(config: PipelineConfig, ds: str, dag_runs: dict) -> str:
    """`ds` when it is a date with a DagRun or a run directory; 400 or 404 otherwise."""
    ds = _checked_ds(ds)
    if ds not in dag_runs and ds not in run_dates(config):
        raise HTTPException(404, f"No run of {NIGHTLY_DAG_ID} for {ds}")
    return ds


def _label(serving: dict, label: str) -> int | None:
    """The version `label` names: the model config's, else what the first replica that knows it says."""
    configured = (serving["config_labels"] or {}).get(label)
    if configured is not None:
        return configured
    return next((r["labels"][label] for r in serving["replicas"] if r["labels"].get(label) is not None), None)


def _json_safe(value):
    """`value` with every non-finite float as `None` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")
