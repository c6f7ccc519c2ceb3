"""Feast feature services: the versioned input contracts of the model.

`deepfm_v3` (`features.FEATURE_SERVICE`) is what training and serving read today; `deepfm_v1` (before
`user_genre_affinity`) and `deepfm_v2` (before the fresh per-user features) are the frozen contracts of older
models, kept registered so they can still be fed. A change of inputs means a new service, never an edit of a
published one.
"""

from __future__ import annotations

from feast import FeatureService

from deepfm_model.spec.features import FEATURE_SERVICE, USER_FRESH_VIEW, view_features
from feature_repo.feature_views import (
    genre_affinity_odfv,
    movie_profile_fv,
    movie_stats_fv,
    user_fresh_fv,
    user_profile_fv,
    user_stats_fv,
)

deepfm_v1 = FeatureService(
    name="deepfm_v1",
    features=[user_profile_fv, movie_profile_fv, user_stats_fv, movie_stats_fv],
    description="Inputs of DeepFM v1 models (profiles and daily stats); frozen.",
)

deepfm_v2 = FeatureService(
    name="deepfm_v2",
    features=[user_profile_fv, movie_profile_fv, user_stats_fv, movie_stats_fv, genre_affinity_odfv],
    description="Inputs of DeepFM v2 models: v1 plus the on-demand user x genre affinity; frozen.",
)

deepfm_v3 = FeatureService(
    name=FEATURE_SERVICE,
    features=[
        user_profile_fv,
        movie_profile_fv,
        user_stats_fv,
        movie_stats_fv,
        genre_affinity_odfv,
        user_fresh_fv[[f.name for f in view_features(USER_FRESH_VIEW)]],
    ],  # fmt: skip
    description="Every input of the feature spec: v2 plus the fresh per-user features of the event stream.",
)
