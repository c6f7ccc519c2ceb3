"""The Feast objects agree with the feature spec, and the CLI sees each object exactly once."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from feast.repo_operations import parse_repo
from feast.types import Float64, String

from deepfm_model.spec import features
from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.features import FEATURES, Kind
from feature_repo import definitions, ingest, store
from feature_repo.feature_services import deepfm_v1, deepfm_v2, deepfm_v3
from feature_repo.feature_views import FEATURE_VIEWS, genre_affinity_odfv


def test_views_serve_exactly_the_spec_features():
    assert [fv.name for fv in FEATURE_VIEWS] == list(features.VIEWS)
    for fv in FEATURE_VIEWS:
        spec = features.view_features(fv.name)
        state = features.USER_FRESH_STATE_COLUMNS if fv.name == features.USER_FRESH_VIEW else ()
        assert [f.name for f in fv.features] == [*(f.name for f in spec), *state]
        for field, feature in zip(fv.features, spec, strict=False):  # the spec's features come first
            assert field.dtype == (Float64 if feature.kind is Kind.NUMERIC else String)
            assert field.description == feature.description


def _feature_refs() -> list[str]:
    """Feast feature references (`view:feature`) of every non-key feature of the spec."""
    return [f"{f.view}:{f.name}" for f in features.FEATURES if f.view is not None]


def test_feature_service_is_the_spec_contract():
    refs = [f"{p.name}:{f.name}" for p in deepfm_v3.feature_view_projections for f in p.features]
    assert deepfm_v3.name == features.FEATURE_SERVICE
    assert sorted(refs) == sorted(_feature_refs())  # the fresh state columns are not model inputs


def test_older_services_stay_frozen():
    """deepfm_v2 is v3 without the fresh features; v1 is v2 without the affinity."""
    v2 = {f"{p.name}:{f.name}" for p in deepfm_v2.feature_view_projections for f in p.features}
    v1 = {f"{p.name}:{f.name}" for p in deepfm_v1.feature_view_projections for f in p.features}
    fresh = {f"{features.USER_FRESH_VIEW}:{f.name}" for f in features.view_features(features.USER_FRESH_VIEW)}
    assert v2 == set(_feature_refs()) - fresh
    assert v1 == v2 - {f"{features.GENRE_AFFINITY_VIEW}:user_genre_affinity"}


def test_on_demand_view_serves_the_spec_features():
    assert genre_affinity_odfv.name == features.GENRE_AFFINITY_VIEW
    spec = features.view_features(features.GENRE_AFFINITY_VIEW)
    assert [f.name for f in genre_affinity_odfv.features] == [f.name for f in spec]
    assert all(field.dtype == Float64 for field in genre_affinity_odfv.features)


def test_cli_parses_each_object_once(monkeypatch):
    monkeypatch.chdir(store.REPO_DIR)
    monkeypatch.setattr(sys, "path", [*sys.path, str(store.REPO_DIR)])  # as `feast apply` does
    contents = parse_repo(store.REPO_DIR)
    sys.modules.pop("definitions", None)
    assert sorted(fv.name for fv in contents.feature_views) == sorted([*features.VIEWS, features.USER_GENRE_STATS_VIEW])
    assert [v.name for v in contents.on_demand_feature_views] == list(features.ON_DEMAND_VIEWS)
    assert sorted(e.name for e in contents.entities if e.name != "__dummy") == ["movie", "user"]
    assert sorted(s.name for s in contents.feature_services) == ["deepfm_v1", "deepfm_v2", features.FEATURE_SERVICE]
    assert len(contents.data_sources) == 7  # five batch sources, the push source and its batch source
    assert len(definitions.OBJECTS) == 18


def test_write_config_refuses_the_committed_repo():
    with pytest.raises(ValueError, match="committed repo"):
        store.write_config(store.REPO_DIR)


def test_profiles_take_zip_prefix_and_fill_unknown_years(raw):
    movies = raw.movies.copy()
    movies.loc[0, "release_year"] = float("nan")
    profiles = ingest.movie_profiles(movies)
    assert profiles.loc[0, "release_year"] == raw.movies["release_year"].iloc[1:].median()
    assert profiles["event_timestamp"].eq(ingest.PROFILE_TIMESTAMP).all()
    users = ingest.user_profiles(raw.users)
    assert (users["zip_prefix"] == raw.users["zip_code"].str[:3]).all()


def test_labelled_events_window_and_label(raw):
    start, end = pd.Timestamp("1998-01-05", tz="UTC"), data_cutoff("1998-01-11")
    frame = ingest.labelled_events(raw, start=start, end=end)
    assert list(frame.columns) == ["user_id", "movie_id", "event_timestamp", "rating", "label"]
    assert frame["event_timestamp"].between(start, end, inclusive="left").all()
    assert len(frame) == raw.events["event_timestamp"].between(start, end, inclusive="left").sum()
    assert (frame["label"] == (frame["rating"] >= features.POSITIVE_RATING).astype(int)).all()


def test_split_by_time_follows_the_protocol(training):
    train, valid, test = store.split_by_time(training.sample(frac=1, random_state=0))
    n = len(training)
    assert (len(train), len(valid), len(test)) == (n - 2 * round(n * 0.1), round(n * 0.1), round(n * 0.1))
    assert train["event_timestamp"].max() <= valid["event_timestamp"].min()
    assert valid["event_timestamp"].max() <= test["event_timestamp"].min()
    with pytest.raises(ValueError, match="valid_frac"):
        store.split_by_time(training, valid_frac=0.5, test_frac=0.5)


def test_every_spec_feature_has_a_view():
    served = {f.name for fv in (*FEATURE_VIEWS, genre_affinity_odfv) for f in fv.features}
    assert {f.name for f in FEATURES if f.view is not None} == served - set(features.USER_FRESH_STATE_COLUMNS)


def test_feast_apply_parses_the_definitions_alone():
    """`.feastignore` lists every module but `definitions.py`: `feast apply` must not import the pipeline's code."""
    from pathlib import Path

    repo = Path(definitions.__file__).parent
    ignored = {line.strip() for line in (repo / ".feastignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}  # fmt: skip
    modules = {path.name for path in repo.glob("*.py")} - {"definitions.py", "__init__.py"}
    assert modules <= ignored, f"not in feature_repo/.feastignore: {sorted(modules - ignored)}"
