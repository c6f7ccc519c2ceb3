"""The model dashboard in the Airflow UI: a FastAPI app the project's plugin (`dags/plugins/deepfm_ui.py`) mounts at
`/deepfm` on the API server, behind the UI's own login.

| module | what it does |
| --- | --- |
| `app` | the routes: dashboard, a run's page and files, the JSON API; every one requires the UI's login |
| `dag_runs` | the nightly DAG's runs as Airflow's metadata database records them |
| `runs` | what a run directory says about its run (validation, drift, metrics, blessing, push, lineage) |
| `files` | a file of a run directory by relative path, never one outside it |
| `serving_status` | the serving tier's versions and labels, asked live over gRPC |
| `plot` | test AUC and logloss over runs as inline SVG |
"""
