"""The one feature spec: names, kinds, value ranges and Feast views of every model input.

The Feast repository, the model's preprocessing, the Great Expectations suite and the serving client all
derive their feature lists from `FEATURES`; `tests/features/test_definitions.py` keeps them in agreement.

Serving form of each kind (the `serving_default` signature of the exported model):
- categorical: a string per row (`"196"`, `"M"`); unknown values go to an out-of-vocabulary bucket.
- multi-valued categorical: one string per row, values joined by `MULTI_VALUE_SEPARATOR`
  (`"Action|Comedy"`); an empty string means no value.
- numeric: a float32 per row, raw (normalisation happens inside the graph).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(str, enum.Enum):
    """How a feature enters the model."""

    CATEGORICAL = "categorical"
    MULTI_CATEGORICAL = "multi_categorical"
    NUMERIC = "numeric"


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: column name everywhere (Feast field, parquet column, signature input).
        kind: categorical, multi-valued categorical or numeric.
        view: Feast feature view that serves it; `None` for entity join keys.
        description: shown in the Feast registry and the Data Docs.
        min_value: smallest valid value (numeric features), checked by validation.
        max_value: largest valid value (numeric features), checked by validation.
        allowed: closed set of valid values (categoricals with a fixed domain), checked by validation.
        log_scale: numeric feature is heavy-tailed; the model takes `log1p` before normalising.
        hash_bins: when positive, the model hashes the value into this many bins instead of a vocabulary.
        vocabulary_of: a multi-valued feature whose values are another (categorical) feature's values: the model
            gives them that feature's vocabulary and embedding rows (the user's recent movie ids and `movie_id`).
    """

    name: str
    kind: Kind
    view: str | None
    description: str
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None
    log_scale: bool = False
    hash_bins: int = 0
    vocabulary_of: str | None = None


MULTI_VALUE_SEPARATOR = "|"

# Columns of a labelled event (the Feast entity frame) besides the features.
USER_KEY = "user_id"
MOVIE_KEY = "movie_id"
EVENT_TIMESTAMP = "event_timestamp"
RATING = "rating"
LABEL = "label"  # liked: rating >= POSITIVE_RATING (0 on sampled rows, where no rating exists)
POSITIVE_RATING = 4  # label = rating >= POSITIVE_RATING (DESIGN.md, evaluation protocol)
PICKED = "picked"  # 1: the user rated the movie (an event); 0: a sampled movie the user had not rated before

# Feast objects named here so that every consumer spells them the same way.
USER_PROFILE_VIEW = "user_profile"
MOVIE_PROFILE_VIEW = "movie_profile"
USER_STATS_VIEW = "user_stats"
MOVIE_STATS_VIEW = "movie_stats"
# Per-user per-genre counts: not model inputs themselves, the inputs of the on-demand view below.
USER_GENRE_STATS_VIEW = "user_genre_stats"
# On-demand view: combines the user's per-genre counts with the candidate movie's genres at request time.
GENRE_AFFINITY_VIEW = "genre_affinity"
# Per-user features as of each event, written by the event stream (`feature_repo.stream`) through a push source.
USER_FRESH_VIEW = "user_fresh"
USER_EVENTS_PUSH = "user_events_push"
FEATURE_SERVICE = "deepfm_v3"  # v3 adds the fresh per-user features; deepfm_v1 and v2 stay registered
RECENT_EVENTS = 10  # the user's last rated movies that the `user_recent_*` features look at
RECENT_MOVIES = "user_recent_movie_ids"  # a model input and the fold's state: the last `RECENT_EVENTS` movies
RECENT_DAYS = 30  # the window of the `movie_recent_*` shares: what is popular now
# The pick head's prior: its logit starts from the log of this share (`deepfm_model.model`), popularity now.
PICK_PRIOR = "movie_recent_positive_share"
RECENT_GENRES = 6  # genres kept in `user_recent_genres`, most frequent first

GENDERS = ("F", "M")
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

FEATURES: tuple[Feature, ...] = (
    Feature(USER_KEY, Kind.CATEGORICAL, None, "User id (entity key)."),
    Feature(MOVIE_KEY, Kind.CATEGORICAL, None, "Movie id (entity key)."),
    Feature("gender", Kind.CATEGORICAL, USER_PROFILE_VIEW, "User's gender, F or M.", allowed=GENDERS),
    Feature("age", Kind.NUMERIC, USER_PROFILE_VIEW, "User's age in years.", min_value=1, max_value=120),
    Feature("occupation", Kind.CATEGORICAL, USER_PROFILE_VIEW, "User's occupation.", allowed=OCCUPATIONS),
    Feature("zip_prefix", Kind.CATEGORICAL, USER_PROFILE_VIEW, "First three characters of the zip code."),
    Feature(
        "genres",
        Kind.MULTI_CATEGORICAL,
        MOVIE_PROFILE_VIEW,
        f"Movie genres joined by '{MULTI_VALUE_SEPARATOR}'.",
        allowed=GENRES,
    ),  # fmt: skip
    Feature(
        "release_year",
        Kind.NUMERIC,
        MOVIE_PROFILE_VIEW,
        "Year of the movie's release.",
        min_value=1900,
        max_value=2030,
    ),  # fmt: skip
    Feature(
        "user_rating_count",
        Kind.NUMERIC,
        USER_STATS_VIEW,
        "Ratings the user gave before the day.",
        min_value=0,
        log_scale=True,
    ),  # fmt: skip
    Feature(
        "user_pos_rate",
        Kind.NUMERIC,
        USER_STATS_VIEW,
        "Smoothed share of the user's earlier ratings that were positive.",
        min_value=0,
        max_value=1,
    ),  # fmt: skip
    Feature(
        "user_mean_rating",
        Kind.NUMERIC,
        USER_STATS_VIEW,
        "Smoothed mean of the user's earlier ratings.",
        min_value=1,
        max_value=5,
    ),  # fmt: skip
    Feature(
        "movie_rating_count",
        Kind.NUMERIC,
        MOVIE_STATS_VIEW,
        "Ratings the movie received before the day.",
        min_value=0,
        log_scale=True,
    ),  # fmt: skip
    Feature(
        "movie_pos_rate",
        Kind.NUMERIC,
        MOVIE_STATS_VIEW,
        "Smoothed share of the movie's earlier ratings that were positive.",
        min_value=0,
        max_value=1,
    ),  # fmt: skip
    Feature(
        "movie_mean_rating",
        Kind.NUMERIC,
        MOVIE_STATS_VIEW,
        "Smoothed mean of the movie's earlier ratings.",
        min_value=1,
        max_value=5,
    ),  # fmt: skip
    Feature(
        "movie_recent_share",
        Kind.NUMERIC,
        MOVIE_STATS_VIEW,
        f"The movie's ratings per 1000 ratings of all movies in the {RECENT_DAYS} days before the day.",
        min_value=0,
        max_value=1000,
        log_scale=True,
    ),  # fmt: skip
    Feature(
        "movie_recent_positive_share",
        Kind.NUMERIC,
        MOVIE_STATS_VIEW,
        f"The movie's positive ratings per 1000 positive ratings of all movies in the {RECENT_DAYS} days before "
        "the day.",
        min_value=0,
        max_value=1000,
        log_scale=True,
    ),  # fmt: skip
    Feature(
        "user_genre_affinity",
        Kind.NUMERIC,
        GENRE_AFFINITY_VIEW,
        "Smoothed share of positive ratings the user gave, before the day, to movies sharing a genre with this "
        "one (an earlier movie counts once per shared genre; shrunk towards user_pos_rate).",
        min_value=0,
        max_value=1,
    ),  # fmt: skip
    Feature(
        "user_fresh_count",
        Kind.NUMERIC,
        USER_FRESH_VIEW,
        "Ratings the user gave strictly before this instant, earlier today included.",
        min_value=0,
        log_scale=True,
    ),  # fmt: skip
    Feature(
        "user_fresh_pos_rate",
        Kind.NUMERIC,
        USER_FRESH_VIEW,
        "Smoothed share of positive ratings among the user's ratings strictly before this instant.",
        min_value=0,
        max_value=1,
    ),  # fmt: skip
    Feature(
        "user_fresh_mean_rating",
        Kind.NUMERIC,
        USER_FRESH_VIEW,
        "Smoothed mean of the user's ratings strictly before this instant.",
        min_value=1,
        max_value=5,
    ),  # fmt: skip
    Feature(
        "user_recent_mean_rating",
        Kind.NUMERIC,
        USER_FRESH_VIEW,
        f"Smoothed mean of the user's last {RECENT_EVENTS} ratings before this instant.",
        min_value=1,
        max_value=5,
    ),  # fmt: skip
    Feature(
        "user_recent_genres",
        Kind.MULTI_CATEGORICAL,
        USER_FRESH_VIEW,
        f"Genres of the user's last {RECENT_EVENTS} rated movies before this instant, most frequent first (at "
        f"most {RECENT_GENRES}), joined by '{MULTI_VALUE_SEPARATOR}'.",
        allowed=GENRES,
    ),  # fmt: skip
    Feature(
        RECENT_MOVIES,
        Kind.MULTI_CATEGORICAL,
        USER_FRESH_VIEW,
        f"The user's last {RECENT_EVENTS} rated movies before this instant, oldest first, joined by "
        f"'{MULTI_VALUE_SEPARATOR}'; they share the embeddings of `movie_id`.",
        vocabulary_of=MOVIE_KEY,
    ),  # fmt: skip
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
# Batch feature views that serve model inputs, then the on-demand views computed from them at request time.
VIEWS: tuple[str, ...] = (
    USER_PROFILE_VIEW, MOVIE_PROFILE_VIEW, USER_STATS_VIEW, MOVIE_STATS_VIEW, USER_FRESH_VIEW,
)  # fmt: skip
ON_DEMAND_VIEWS: tuple[str, ...] = (GENRE_AFFINITY_VIEW,)


def view_features(view: str) -> tuple[Feature, ...]:
    """Model features served by one Feast feature view (batch or on-demand), in spec order."""
    if view not in VIEWS + ON_DEMAND_VIEWS:
        raise ValueError(f"`view` must be one of {VIEWS + ON_DEMAND_VIEWS}. Received: `view={view!r}`")
    return tuple(f for f in FEATURES if f.view == view)


def genre_slug(genre: str) -> str:
    """A genre as a column-name fragment: `"Sci-Fi"` -> `"sci_fi"`, `"Children's"` -> `"children_s"`."""
    return "".join(c if c.isalnum() else "_" for c in genre.lower())


def genre_stat_columns(genre: str) -> tuple[str, str]:
    """The per-genre sums under `USER_GENRE_STATS_VIEW` for one genre: (earlier ratings, earlier positive ratings)."""
    if genre not in GENRES:
        raise ValueError(f"`genre` must be one of {GENRES}. Received: `genre={genre!r}`")
    slug = genre_slug(genre)
    return f"user_genre_count_{slug}", f"user_genre_pos_{slug}"


# The columns of `USER_GENRE_STATS_VIEW`: per user, one list each, a value per genre of `GENRES` in its order
# (two online values per user rather than two per genre: materialization writes a row per value).
USER_GENRE_COUNTS = "user_genre_counts"  # earlier ratings of movies of the genre
USER_GENRE_POSITIVES = "user_genre_positives"  # earlier positive ratings of movies of the genre
USER_GENRE_STAT_COLUMNS: tuple[str, ...] = (USER_GENRE_COUNTS, USER_GENRE_POSITIVES)


# Columns of `USER_FRESH_VIEW` that are not model inputs: the state the stream folds the next events onto.
USER_FRESH_STATE_COLUMNS: tuple[str, ...] = (
    "user_fresh_positives",  # positive ratings so far
    "user_fresh_rating_sum",  # sum of the ratings so far
    "user_fresh_last_event_us",  # the user's last event, microseconds since the epoch
    "user_fresh_stamp_us",  # the row's own stamp, microseconds since the epoch (online stores keep seconds)
    "user_recent_ratings",  # ... and their ratings
)


def serving_dtype(feature: Feature) -> str:
    """Dtype of the feature in the serving signature: `"string"` or `"float32"`."""
    return "float32" if feature.kind is Kind.NUMERIC else "string"
