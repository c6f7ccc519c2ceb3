"""Operations: the runners of the project's processes, apart from the nightly stages (`dags.pipeline`).

- `demo`: `make demo`, one nightly DagRun through Airflow's scheduler, then `recommend` over gRPC;
- `airflow_stack`, `airflow_client`: `make airflow`, Airflow's components as local processes and its REST API;
- `processes`: supervised processes that stop under any sequence of signals;
- `hostname`: the host name Airflow's components report;
- `task_preload`, `celery_config`: Airflow's workers import the stages' libraries once, before they fork each task;
- `deploy_init`: the deployment's own set-up (`docker/airflow-init.sh`, the deploy test);
- `bench`: the benchmarks (`make bench-*`, `make ablation`), over one shared helper, `bench.report`, and the
  small SavedModel of `bench.sample_model` that the serving tests serve too.

They may import the stages and everything below; nothing of the product imports them.
"""
