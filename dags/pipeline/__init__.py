"""The top layer: the orchestration of a nightly run and the tools that run Airflow around it.

The DAG files beside this package only wire tasks to these functions. Below it sit the feature repository
(`feature_repo`), the model package (`deepfm_model`) and serving (`serving`), which import nothing of it.
"""
