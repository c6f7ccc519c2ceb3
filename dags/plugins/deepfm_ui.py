"""The project's Airflow plugin: the DeepFM model dashboard in the Airflow UI.

Airflow loads this file from `[core] plugins_folder` (`AIRFLOW__CORE__PLUGINS_FOLDER`: `make airflow`, the tests
and the docker image all point it at `dags/plugins/`; the DAG processor skips the folder, see
`dags/.airflowignore`). It adds to the API server:

- a FastAPI app at `/deepfm` (`dags.pipeline.ui.app`), behind the UI's own login;
- a "DeepFM" entry in the navigation: the dashboard, inside the UI;
- a "DeepFM" tab on every DAG run page: that run's reports (the app redirects it to the run's page).

`href`s are relative (no leading slash): the UI resolves them against its `[api] base_url`.

Every Airflow process loads plugins (the scheduler, the DAG processor, each task's runner for its macros), but
only the API server serves them: the app is built on its first request, so the others import nothing of it.
"""

from __future__ import annotations

import threading

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/deepfm"
# A line chart in a frame, in the UI's navigation icon style (stroked, currentColor-like grey).
ICON = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' "
    "stroke='%23718096' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>"
    "<path d='M3 3v18h18'/><path d='M7 15l4-4 3 3 5-6'/></svg>"
)
ICON_DARK = ICON.replace("%23718096", "%23CBD5E0")


class DashboardApp:
    """ASGI app that builds `dags.pipeline.ui.app.create_app()` on its first request and hands every request to it."""

    def __init__(self) -> None:
        self._app = None
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from dags.pipeline.ui.app import create_app

                    self._app = create_app()
        await self._app(scope, receive, send)


class DeepFMPlugin(AirflowPlugin):
    name = "deepfm"
    fastapi_apps = [{"app": DashboardApp(), "url_prefix": URL_PREFIX, "name": "DeepFM model dashboard"}]
    external_views = [
        {
            "name": "DeepFM",
            "href": "deepfm/",
            "destination": "nav",
            "url_route": "deepfm",
            "icon": ICON,
            "icon_dark_mode": ICON_DARK,
            "nav_top_level": True,
        },
        {
            "name": "DeepFM",
            "href": "deepfm/dag-runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "deepfm-run",
            "icon": ICON,
            "icon_dark_mode": ICON_DARK,
        },
    ]
