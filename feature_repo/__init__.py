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

Importing this package turns typeguard's `@typechecked` into a pass-through, as `python -O` does, before any of its
modules imports Feast. Feast is typeguard's only user here: it decorates its classes, and typeguard 4 instruments
each method at import by parsing its source and compiling it again (agronholm/typeguard#468), about three quarters
of `import feast` (`make bench-features` prints both). Every task of a night that reads the store imports Feast
afresh. Feast's own command line (`feast apply`) imports Feast first and keeps the checks.
"""

try:
    import typeguard
except ImportError:  # a Feast without typeguard: nothing to turn off
    typeguard = None


def _pass_through(target=None, **_options):
    """`typeguard.typechecked` under `python -O`: `@typechecked` and `@typechecked(...)` leave the target as it is."""
    return _pass_through if target is None else target


if typeguard is not None:
    typeguard.typechecked = _pass_through
