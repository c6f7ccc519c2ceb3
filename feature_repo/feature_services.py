"""Feast feature services: the versioned input contract of the model."""

from __future__ import annotations

from feast import FeatureService

from deepfm_model.features import FEATURE_SERVICE
from feature_repo.feature_views import (
    movie_profile_fv,
    movie_stats_fv,
    user_profile_fv,
    user_stats_fv,
)

deepfm_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[user_profile_fv, movie_profile_fv, user_stats_fv, movie_stats_fv],
    description="Every input of DeepFM v1; changing it means a new service (`deepfm_v2`), not an edit.",
)
