"""The bottom layer: the contracts every other part of the project derives from, importing nothing of it.

- `features`: the one feature spec (names, kinds, ranges, Feast view and service names of every model input).
- `raw_data`: the raw tables every data source produces (`RawData`).
- `dates`: what a logical date `ds` means and the window of data a run sees.
- `files`: atomic, fsynced file writes (every hand-off between stages goes through it).

The feature repository, the model package and serving import these modules and nothing of each other; the
nightly orchestration (`dags/pipeline/`) sits above all of them. `tests/test_import_contract.py` keeps it so.
"""
