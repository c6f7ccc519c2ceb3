"""Every Feast object of the repository, in one list: what `feast apply` and `store.apply` register.

The Feast CLI imports each non-ignored module of the repo as a top-level module (`entities`, not
`feature_repo.entities`), so a module imported both ways would yield two copies of each object. `.feastignore`
therefore hides every module but this one, which imports the objects once, through the package.
Run the CLI from the project root with the project on the path: `PYTHONPATH=. feast -c feature_repo apply`.
"""

from __future__ import annotations

from feature_repo.entities import movie, user
from feature_repo.feature_services import deepfm_v1, deepfm_v2, deepfm_v3
from feature_repo.feature_views import (
    genre_affinity_odfv,
    movie_profile_fv,
    movie_stats_fv,
    user_fresh_fv,
    user_genre_stats_fv,
    user_profile_fv,
    user_stats_fv,
)
from feature_repo.sources import (
    movie_profile_source,
    movie_stats_source,
    user_events_push,
    user_genre_stats_source,
    user_profile_source,
    user_stats_source,
)

OBJECTS = (
    user,
    movie,
    user_profile_source,
    movie_profile_source,
    user_stats_source,
    movie_stats_source,
    user_genre_stats_source,
    user_events_push,
    user_profile_fv,
    movie_profile_fv,
    user_stats_fv,
    movie_stats_fv,
    user_genre_stats_fv,
    user_fresh_fv,
    genre_affinity_odfv,
    deepfm_v1,
    deepfm_v2,
    deepfm_v3,
)
