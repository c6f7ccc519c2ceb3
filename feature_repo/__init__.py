"""The Feast feature repository of the DeepFM model, and the code that feeds and checks it.

Feast definitions, one module per object type, all derived from `deepfm_model.spec.features`:
`entities`, `sources`, `feature_views` (batch and on-demand), `feature_services`; `transformations` holds the
on-demand code; `definitions` gathers them for `feast apply`.

Pipeline stages (plain functions, called by the DAGs and the Makefile):
`ingest` (raw tables -> dated parquet sources), `store` (apply, materialize, training frame, online reads),
`validation` (Great Expectations suites over the raw sources and a training snapshot, reference stats and drift),
`skew` (online against offline feature values). Its benchmark, `make bench-features`, is `dags.ops.bench.features`.

Everything a run writes (sources, registry, online store) goes under `<repo_dir>/data/`, which is git-ignored;
`feature_store.yaml` resolves its relative paths against the repo directory, so a test can use a tmp dir.
"""
