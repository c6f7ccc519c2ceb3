"""Full-catalogue top-N evaluation of a recommender, and strong simple baselines tuned on a validation window.

Protocol: events sorted by time; a window [start, end). Every user with a positive (rating >= `POSITIVE_RATING`)
in the window that they had not rated before `start` is ranked over every catalogue item they had NOT rated
before `start`; the relevant items R(u) are those positives. As in RecBole, the user's history items are masked
to -inf before the cut, and every top-k metric comes from one (users x items) hit matrix sorted once.

Metrics per user u, with rel(u, r) = 1 when the item ranked r (1-based) is in R(u):
    DCG@k(u)    = sum_{r=1..k} rel(u, r) / log2(r + 1)
    NDCG@k(u)   = DCG@k(u) / sum_{r=1..min(|R(u)|, k)} 1 / log2(r + 1)
    Recall@k(u) = sum_{r=1..k} rel(u, r) / |R(u)|          (not min(|R(u)|, k): 60 relevant items cap Recall@50)
    MRR(u)      = 1 / min{r : rel(u, r) = 1}                 (over the whole ranking of u's candidates)
Means over users come with a percentile bootstrap 95% interval (users resampled with replacement).

Baselines (popularity, item-kNN, EASE) are fitted only on the events before `start`. Every baseline adds
the all-history positive count of each item times a tiny epsilon, so ties, and users with an empty history, fall
back to the popularity ranking instead of an arbitrary order.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, POSITIVE_RATING, RATING, USER_KEY
from deepfm_model.spec.raw_data import EVENT_COLUMNS

logger = logging.getLogger(__name__)

NDCG_AT = (10,)
RECALL_AT = (10, 50)
METRICS = ("ndcg_at_10", "recall_at_10", "recall_at_50", "mrr")
TIE_BREAK = 1e-9  # popularity weight added to every baseline score; scores are float64
# EASE inverts a dense (items x items) Gram matrix: O(items^2) memory, O(items^3) time, once per grid point.
EASE_MAX_ITEMS = 5_000
COSINE_BLOCK_ROWS = 1_000  # item-kNN's rows formed at a time: memory holds their co-rated pairs only


class CatalogueTooLarge(ValueError):
    """A baseline that cannot be fitted on this many items within the night's budget (EASE above `EASE_MAX_ITEMS`)."""


@dataclass(frozen=True, eq=False)
class RankingTask:
    """Who is ranked over which items, what is masked and what counts as a hit.

    Attributes:
        users: (n_users,) user ids (str), sorted; each has >= 1 relevant item.
        items: (n_items,) catalogue item ids (str), in the catalogue's given order.
        history: events strictly before `start` of every user (columns user_id, movie_id, event_timestamp,
            rating), catalogue items only, sorted by time; the only data a baseline may fit on.
        exclude: (n_users, n_items) bool: the user rated the item before `start`; never ranked.
        relevant: (n_users, n_items) bool: a positive of the user in [start, end), never an excluded item.
        start: window start (UTC).
        end: window end (UTC), exclusive.
        sampled_from: number of eligible users before sampling (`n_users` when not sampled).
        coded: `history` as integer arrays (`CodedEvents`); formed from `history` when not given.
    """

    users: np.ndarray
    items: np.ndarray
    history: pd.DataFrame
    exclude: np.ndarray
    relevant: np.ndarray
    start: pd.Timestamp
    end: pd.Timestamp
    sampled_from: int
    coded: CodedEvents | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """`coded`: the history as integers, formed once (10M string rows hashed once, not at every grid point)."""
        if self.coded is None:
            object.__setattr__(self, "coded", CodedEvents.of(self.history, self.items))


@dataclass(frozen=True)
class CodedEvents:
    """Events as integer arrays: `user` indexes `user_ids`, `item` indexes the catalogue (-1: not in it)."""

    user: np.ndarray
    user_ids: pd.Index
    item: np.ndarray
    positive: np.ndarray  # rating >= POSITIVE_RATING
    time_ns: np.ndarray  # event time, nanoseconds since the epoch (UTC)

    @classmethod
    def of(cls, events: pd.DataFrame, items: Sequence[str] | pd.Index) -> CodedEvents:
        user, user_ids = pd.factorize(events[USER_KEY])
        return cls(user, pd.Index(user_ids), pd.Index(items).get_indexer(events[MOVIE_KEY]),
                   events[RATING].to_numpy() >= POSITIVE_RATING, _nanoseconds(events[EVENT_TIMESTAMP]))  # fmt: skip

    def take(self, mask: np.ndarray) -> CodedEvents:
        """The events of `mask`, in order; `user_ids` unchanged."""
        return CodedEvents(self.user[mask], self.user_ids, self.item[mask], self.positive[mask], self.time_ns[mask])

    def items_by_user(self) -> dict[str, np.ndarray]:
        """User id -> positions in the catalogue of the user's items, in event order (catalogue items only)."""
        known = self.item >= 0
        order = np.argsort(self.user[known], kind="stable")
        user, item = self.user[known][order], self.item[known][order]
        if not len(user):
            return {}
        starts = np.flatnonzero(np.diff(user)) + 1
        return dict(zip(self.user_ids[user[np.r_[0, starts]]], np.split(item, starts), strict=True))

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        """(len(self.user),) the position in `users` of each event's user, -1 for other users."""
        position = self.user_ids.get_indexer(users)
        row = np.full(len(self.user_ids), -1, dtype=np.int64)
        row[position[position >= 0]] = np.flatnonzero(position >= 0)
        return row[self.user]

    def matrix(self, rows: np.ndarray, n_rows: int, n_items: int, mask: np.ndarray) -> np.ndarray:
        """(n_rows, n_items) bool: True where an event of `mask` has that row (from `rows_of`) and item."""
        keep = (rows >= 0) & (self.item >= 0) & mask
        matrix = np.zeros((n_rows, n_items), dtype=bool)
        matrix[rows[keep], self.item[keep]] = True
        return matrix


def _nanoseconds(stamps: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True)).as_unit("ns").asi8


def _utc(value: Any, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        raise ValueError(f"`{name}` must be a timestamp. Received: `{name}={value!r}`")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _catalogue(items: Sequence[str]) -> pd.Index:
    catalogue = pd.Index(np.asarray(items, dtype=object))
    if len(catalogue) == 0:
        raise ValueError("`items` must not be empty. Received: `items=[]`")
    if not catalogue.is_unique:
        duplicated = catalogue[catalogue.duplicated()].unique().tolist()[:5]
        raise ValueError(f"`items` must be unique. Received duplicates: `{duplicated}`")
    return catalogue


def ranking_task(
    events: pd.DataFrame,
    items: Sequence[str],
    start: Any,
    end: Any,
    max_users: int | None = None,
    seed: int = 0,
) -> RankingTask:
    """Build the ranking task of the window [start, end).

    Args:
        events: all events (any time), columns user_id, movie_id (str), event_timestamp (UTC), rating.
            Events of items not in `items` are ignored.
        items: the catalogue, unique ids; its order is the tie-break order of every ranking.
        start: window start, inclusive (naive timestamps are taken as UTC).
        end: window end, exclusive.
        max_users: when set and smaller than the eligible users, a uniform sample of that many users (seeded).
        seed: seed of the user sample.

    Returns:
        The task; users are those with >= 1 positive in the window on an item they had not rated before.

    Raises:
        ValueError: `start` not before `end`, a non-positive `max_users`, an empty or duplicated catalogue.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if not start < end:
        raise ValueError(f"`start` must be before `end`. Received: `start={start}`, `end={end}`")
    if max_users is not None and max_users <= 0:
        raise ValueError(f"`max_users` must be positive. Received: `max_users={max_users}`")
    catalogue = _catalogue(items)
    events = events.loc[:, list(EVENT_COLUMNS)].sort_values(EVENT_TIMESTAMP, kind="stable")
    coded = CodedEvents.of(events, catalogue)
    events, coded = events[coded.item >= 0], coded.take(coded.item >= 0)
    before = coded.time_ns < start.value
    new_positive = ~before & (coded.time_ns < end.value) & coded.positive
    pair = coded.user.astype(np.int64) * len(catalogue) + coded.item  # one integer per (user, item)
    new_positive[new_positive] = ~_sorted_contains(np.sort(pair[before]), pair[new_positive])
    users = np.sort(coded.user_ids[np.unique(coded.user[new_positive])].to_numpy(dtype=object))
    sampled_from = len(users)
    if max_users is not None and max_users < sampled_from:
        chosen = np.random.default_rng(seed).choice(sampled_from, size=max_users, replace=False)
        users = users[np.sort(chosen)]
    rows = coded.rows_of(users)
    exclude = coded.matrix(rows, len(users), len(catalogue), before)
    relevant = coded.matrix(rows, len(users), len(catalogue), new_positive)
    history = events[before].reset_index(drop=True)
    item_ids = catalogue.to_numpy()
    logger.info(
        "Ranking task [%s, %s): %d users (of %d), %d items", start, end, len(users), sampled_from, len(item_ids)
    )
    return RankingTask(users, item_ids, history, exclude, relevant, start, end, sampled_from, coded.take(before))


def _sorted_contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of `values` is in the sorted array `sorted_values`."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values


def _ranked_hits(scores: np.ndarray, task: RankingTask) -> np.ndarray:
    """(n_users, n_items) bool: column r is whether the user's item at rank r + 1 is relevant.

    Candidates come first by decreasing score, ties by column order (a stable sort); excluded items come last
    whatever their score and are never hits.
    """
    order = np.lexsort((-scores, task.exclude), axis=-1)
    return np.take_along_axis(task.relevant & ~task.exclude, order, axis=1)


def _ndcg(top_hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """NDCG of each row of a (users x k) 0/1 hit matrix; the ideal DCG has min(|R(u)|, k) hits."""
    discounts = 1.0 / np.log2(np.arange(2, top_hits.shape[1] + 2, dtype=np.float64))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, len(discounts)) - 1]
    return top_hits @ discounts / ideal


def per_user_metrics(scores: np.ndarray, task: RankingTask) -> dict[str, np.ndarray]:
    """NDCG@10, Recall@10, Recall@50 and MRR of each user of `task` (formulas in the module docstring).

    Args:
        scores: (n_users, n_items) float, higher is better. Excluded items are never ranked, whatever their
            score; ties are broken by item order (lower column index first).
        task: the ranking task.

    Returns:
        Per-user float64 arrays under "ndcg_at_10", "recall_at_10", "recall_at_50" and "mrr".

    Raises:
        ValueError: `scores` of the wrong shape or with NaN, or a user of `task` without a relevant item.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != task.exclude.shape:
        raise ValueError(f"`scores` must have shape {task.exclude.shape}. Received: `scores.shape={scores.shape}`")
    if np.isnan(scores).any():
        raise ValueError(f"`scores` must not be NaN. Received: {int(np.isnan(scores).sum())} NaN scores")
    n_relevant = (task.relevant & ~task.exclude).sum(axis=1)
    if (n_relevant == 0).any():
        raise ValueError(
            f"Every user of `task` needs a relevant item. Received: {int((n_relevant == 0).sum())} without"
        )
    hits = _ranked_hits(scores, task)
    top = hits[:, : max(*NDCG_AT, *RECALL_AT)].astype(np.float64)  # the (users x K) hit matrix of every top-k metric
    metrics = {f"ndcg_at_{k}": _ndcg(top[:, :k], n_relevant) for k in NDCG_AT}
    metrics |= {f"recall_at_{k}": top[:, :k].sum(axis=1) / n_relevant for k in RECALL_AT}
    metrics["mrr"] = 1.0 / (hits.argmax(axis=1) + 1.0)  # every user has a hit among the candidates
    return {name: metrics[name] for name in METRICS}


def _check_bootstrap(n_bootstrap: int, n: int) -> None:
    if n_bootstrap <= 0:
        raise ValueError(f"`n_bootstrap` must be positive. Received: `n_bootstrap={n_bootstrap}`")
    if n == 0:
        raise ValueError("Bootstrap needs at least one user. Received: 0 users")


def _bootstrap_means(values: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, ...) means over users resampled with replacement; `values` has users on axis 0."""
    index = np.random.default_rng(seed).integers(0, len(values), size=(n_bootstrap, len(values)))
    return values[index].mean(axis=1)


def summarize(per_user: dict[str, np.ndarray], n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Mean of each per-user metric with a percentile bootstrap 95% interval over users.

    All metrics share the same resamples of users. Returns plain floats: {"ndcg_at_10": mean,
    "ndcg_at_10_ci": [lo, hi], ..., "users": n_users}.
    """
    names = list(per_user)
    values = np.column_stack([np.asarray(per_user[name], dtype=np.float64) for name in names])
    _check_bootstrap(n_bootstrap, len(values))
    bounds = np.percentile(_bootstrap_means(values, n_bootstrap, seed), [2.5, 97.5], axis=0)
    summary: dict[str, Any] = {}
    for column, name in enumerate(names):
        summary[name] = float(values[:, column].mean())
        summary[f"{name}_ci"] = [float(bounds[0, column]), float(bounds[1, column])]
    summary["users"] = len(values)
    return summary


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of mean(a - b) over users for two rankers' per-user metrics on the same users.

    Returns:
        {"difference": mean(a - b), "ci": [lo, hi] (percentile 95%), "p_a_not_better": share of resamples with
        mean(a - b) <= 0}.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"`a` and `b` must be 1-D of one shape. Received: `a.shape={a.shape}`, `b.shape={b.shape}`")
    _check_bootstrap(n_bootstrap, len(a))
    means = _bootstrap_means(a - b, n_bootstrap, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "difference": float((a - b).mean()),
        "ci": [float(low), float(high)],
        "p_a_not_better": float(np.mean(means <= 0)),
    }


# Baselines. Each returns float64 scores (n_users, n_items) for task.users x task.items from task.history only.


def _mask(task: RankingTask, positives_only: bool) -> np.ndarray:
    """History events of catalogue items, positives only or any rating."""
    coded = task.coded
    return (coded.item >= 0) & (coded.positive if positives_only else True)


def _item_counts(task: RankingTask, mask: np.ndarray) -> np.ndarray:
    return np.bincount(task.coded.item[mask], minlength=len(task.items)).astype(np.float64)


def _tie_break(task: RankingTask) -> np.ndarray:
    """(n_items,) all-history positive counts scaled into [0, TIE_BREAK)."""
    counts = _item_counts(task, _mask(task, True))
    return TIE_BREAK * counts / (counts.max() + 1.0)


def _user_matrix(task: RankingTask, positives_only: bool) -> np.ndarray:
    """X of the task's users: (n_users, n_items) binary over their history (positives or any rating)."""
    coded = task.coded
    rows = coded.rows_of(task.users)
    return coded.matrix(rows, len(task.users), len(task.items), _mask(task, positives_only)).astype(np.float64)


def _fit_matrix(task: RankingTask, positives_only: bool) -> sparse.csr_array:
    """X of every user of the history: (n_history_users, n_items) binary, sparse, the data the item models fit."""
    coded, mask = task.coded, _mask(task, positives_only)
    shape = (len(coded.user_ids), len(task.items))
    matrix = sparse.csr_array((np.ones(int(mask.sum())), (coded.user[mask], coded.item[mask])), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a user who rated an item twice counts once
    return matrix


def popularity_scores(task: RankingTask, days: float | None = None, positives_only: bool = True) -> np.ndarray:
    """Count of positive (or any) ratings per item over the last `days` days before `task.start`.

    Args:
        task: the ranking task.
        days: length of the counting window; None counts all history.
        positives_only: count only ratings >= `POSITIVE_RATING`.

    Returns:
        (n_users, n_items): the same row for every user.
    """
    mask = _mask(task, positives_only)
    if days is not None:
        if days <= 0:
            raise ValueError(f"`days` must be positive. Received: `days={days}`")
        mask &= task.coded.time_ns >= (task.start - pd.Timedelta(days=days)).value
    row = _item_counts(task, mask) + _tie_break(task)
    return np.broadcast_to(row, task.exclude.shape).copy()


def _keep_top(ranked: sparse.csr_array, neighbours: int) -> sparse.csr_array:
    """Each row's `neighbours` first entries of a matrix whose rows are sorted best first (`_ranked_cosine`)."""
    rows = np.repeat(np.arange(ranked.shape[0]), np.diff(ranked.indptr))
    rank_in_row = np.arange(ranked.nnz) - ranked.indptr[rows]
    kept = rank_in_row < neighbours
    return sparse.csr_array((ranked.data[kept], (rows[kept], ranked.indices[kept])), shape=ranked.shape)


@functools.lru_cache(maxsize=1)  # the grid varies `neighbours` fastest: one cosine per (rows, shrink)
def _ranked_cosine(task: RankingTask, positives_only: bool, shrink: float, depth: int) -> sparse.csr_array:
    """Cosine item-item similarity sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink) of the co-rated pairs,
    self and non-positive weights excluded, each row sorted best first (ties by column) and cut to `depth`.

    Only the rows a score can read are formed: those of the items a user of the task rated before the window
    (all rows when the task has no users: the served index). They are formed `COSINE_BLOCK_ROWS` at a time, so
    memory holds one block of co-rated pairs, never the whole (items x items) product.
    """
    if shrink < 0:
        raise ValueError(f"`shrink` must be non-negative. Received: `shrink={shrink}`")
    x = _fit_matrix(task, positives_only)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())  # |U_i|: x is binary
    by_item = x.T.tocsr()  # (items x users)
    rows = np.flatnonzero(task.exclude.any(axis=0)) if len(task.users) else np.arange(x.shape[1])
    parts = [_ranked_block(by_item[block] @ x, block, norms, shrink, depth)
             for block in np.array_split(rows, max(1, -(-len(rows) // COSINE_BLOCK_ROWS)))]  # fmt: skip
    row = np.concatenate([part[0] for part in parts])
    col, cosine = np.concatenate([part[1] for part in parts]), np.concatenate([part[2] for part in parts])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=x.shape[1]))])
    return sparse.csr_array((cosine, col, indptr), shape=(x.shape[1], x.shape[1]))


def _ranked_block(gram: sparse.csr_array, rows: np.ndarray, norms: np.ndarray, shrink: float, depth: int):
    """(row, column, cosine) of one block of `_ranked_cosine`: `gram` holds |U_i & U_j| of the items `rows`."""
    gram = gram.tocoo()
    row, col = rows[gram.row], gram.col
    keep = row != col
    row, col = row[keep], col[keep]
    cosine = gram.data[keep] / (norms[row] * norms[col] + shrink)
    keep = cosine > 0
    row, col, cosine = row[keep], col[keep], cosine[keep]
    order = np.lexsort((col, -cosine, row))
    row, col, cosine = row[order], col[order], cosine[order]
    first = np.searchsorted(row, row, side="left")  # row is sorted: its first entry is where the row starts
    kept = np.arange(len(row)) - first < depth
    return row[kept], col[kept], cosine[kept]


def _item_knn_weights(task: RankingTask, positives_only: bool, neighbours: int, shrink: float = 0.0):
    """Item-kNN weights: each item i keeps its `neighbours` most similar items j (`_ranked_cosine`). Sparse:
    only co-rated pairs are formed, and the cosine is computed once for all `neighbours` of a grid."""
    if neighbours <= 0:
        raise ValueError(f"`neighbours` must be positive. Received: `neighbours={neighbours}`")
    depth = max(neighbours, KNN_DEPTH)
    return _keep_top(_ranked_cosine(task, positives_only, float(shrink), depth), neighbours)


def _ease_weights(x: np.ndarray, l2: float) -> np.ndarray:
    """EASE (Steck, WWW 2019): argmin_B ||X - X B||^2 + l2 ||B||^2 subject to diag(B) = 0.

    Closed form: G = X^T X + l2 I, P = G^-1, B_ij = -P_ij / P_jj for i != j, B_jj = 0.
    """
    if l2 <= 0:
        raise ValueError(f"`l2` must be positive. Received: `l2={l2}`")
    active = np.flatnonzero(
        np.asarray(x.sum(axis=0)).ravel()
    )  # an unrated item is its own block of G: B's row and column are 0
    if len(active) > EASE_MAX_ITEMS:
        raise CatalogueTooLarge(f"EASE needs a dense Gram matrix of the rated items: {len(active):,} items is over "
                                f"EASE_MAX_ITEMS={EASE_MAX_ITEMS:,} ({len(active) ** 2 * 8 / 2**30:.1f} GiB, inverted "
                                "once per grid point)")  # fmt: skip
    gram = (x[:, active].T @ x[:, active]).toarray()
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    block = -precision / np.diag(precision)
    np.fill_diagonal(block, 0.0)
    weights = np.zeros((x.shape[1], x.shape[1]))
    weights[np.ix_(active, active)] = block
    return weights


SIMILARITIES: dict[str, Callable[..., np.ndarray]] = {
    "item_knn": _item_knn_weights,
    "ease": lambda task, positives_only, **params: _ease_weights(_fit_matrix(task, positives_only), **params),
}


def item_similarity(task: RankingTask, method: str, **params: Any) -> np.ndarray | sparse.csr_array:
    """(n_items, n_items) item-to-item weights W of a model fitted on `task.history`; scores are X @ W.

    Item-kNN's W is sparse (`neighbours` per row), EASE's dense.

    Row i holds the weights item i gives its neighbours: the nightly retrieval index takes the user's recent
    items' rows. Item-kNN forms only the rows of the items the task's users rated before the window (the others
    are empty), or every row for a task without users (the served index).

    Args:
        task: the task whose history and catalogue the model is fitted on.
        method: "item_knn" (neighbours, shrink) or "ease" (l2).
        **params: the method's parameters, and `positives_only` (default True): fit on ratings >= 4 only.
    """
    if method not in SIMILARITIES:
        raise ValueError(f"`method` must be one of {sorted(SIMILARITIES)}. Received: `method={method!r}`")
    positives_only = params.pop("positives_only", True)
    return SIMILARITIES[method](task, positives_only, **params)


def _similarity_scores(task: RankingTask, method: str, positives_only: bool, **params: Any) -> np.ndarray:
    weights = item_similarity(task, method, positives_only=positives_only, **params)
    x = _user_matrix(task, positives_only)
    scores = (weights.T @ x.T).T if sparse.issparse(weights) else x @ weights
    return np.asarray(scores) + _tie_break(task)


def item_knn_scores(task: RankingTask, neighbours: int, positives_only: bool = True, shrink: float = 0.0) -> np.ndarray:
    """Item-kNN: score(u, j) = sum over the user's history items i of sim(i, j) (see `_item_knn_weights`)."""
    return _similarity_scores(task, "item_knn", positives_only, neighbours=neighbours, shrink=shrink)


def ease_scores(task: RankingTask, l2: float, positives_only: bool = True) -> np.ndarray:
    """EASE: scores = X B with B the closed-form solution of `_ease_weights`."""
    return _similarity_scores(task, "ease", positives_only, l2=l2)


def _grid(**axes: list) -> list[dict]:
    return [dict(zip(axes, values, strict=True)) for values in product(*axes.values())]


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "popularity": popularity_scores,
    "item_knn": item_knn_scores,
    "ease": ease_scores,
}
GRIDS: dict[str, list[dict]] = {
    "popularity": _grid(days=[None, 7, 14, 30, 60, 120], positives_only=[True, False]),
    "item_knn": _grid(positives_only=[True, False], shrink=[0.0, 10.0], neighbours=[10, 20, 50, 100, 200, 400]),
    "ease": _grid(l2=[10, 50, 100, 200, 500, 1000, 2000], positives_only=[True, False]),
}
KNN_DEPTH = max(point["neighbours"] for point in GRIDS["item_knn"])  # the cached cosine's rows serve every point


def tune(name: str, valid: RankingTask, grid: list[dict] | None = None) -> tuple[dict, float, list[dict]]:
    """Grid search of a baseline by mean NDCG@10 on the validation task.

    Args:
        name: a key of `BASELINES`.
        valid: the validation task (window = validation events, history = events before it).
        grid: parameter dicts to try; default `GRIDS[name]`.

    Returns:
        (best params, their mean NDCG@10, [{"params": ..., "ndcg_at_10": ...} for each grid point]); ties go
        to the first in grid order.
    """
    if name not in BASELINES:
        raise ValueError(f"`name` must be one of {sorted(BASELINES)}. Received: `name={name!r}`")
    grid = GRIDS[name] if grid is None else grid
    if not grid:
        raise ValueError("`grid` must not be empty. Received: `grid=[]`")
    began = time.perf_counter()
    trials = []
    for params in grid:
        ndcg = float(per_user_metrics(BASELINES[name](valid, **params), valid)["ndcg_at_10"].mean())
        trials.append({"params": dict(params), "ndcg_at_10": ndcg})
    best = max(range(len(trials)), key=lambda i: (trials[i]["ndcg_at_10"], -i))
    logger.info("Tuned %s over %d points in %.1f s: %s", name, len(grid), time.perf_counter() - began, trials[best])
    return dict(grid[best]), trials[best]["ndcg_at_10"], trials
