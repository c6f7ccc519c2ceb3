"""Retrieval: a few hundred candidate movies for a user, from an index the nightly run builds with the model.

`recommend(user, k)` ranks what retrieval proposes, not the whole catalogue: a back end asks for a top-k list
without candidates, and scoring every movie over gRPC on every request would not scale with the catalogue. The
index (`RetrievalIndex`) is built by the nightly run from the events before its cutoff and saved into the model's
export (`INDEX_FILE`), so it is versioned, pushed and served with the model it was evaluated with:

- `neighbours`, `weights`: each movie's most similar movies (item-to-item, from the users' positives);
- `popular`: the movies most often liked recently, best first (the same tuned window as the popularity rival);
- `users`, `seen_start`, `seen`: what each user had rated before the cutoff (CSR).

`candidates(user, recent, n)`: the movies most similar to the user's recent movies (summed weights), then the
popular ones, never a movie the user has rated (the index's and the recent ones); an unknown user gets the
popular movies. The full-catalogue evaluation measures how many test positives reach the ranker this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfm_model.spec.files import staged_path

INDEX_FILE = Path("assets.extra") / "retrieval.npz"  # inside a SavedModel export; pushed with it
DEFAULT_CANDIDATES = 300  # the retrieval cut: movies proposed to the ranker per request


@dataclass(frozen=True, eq=False)
class RetrievalIndex:
    """Arrays of a retrieval index (see the module docstring); item references are positions in `items`."""

    items: np.ndarray  # (n_items,) movie ids, str
    neighbours: np.ndarray  # (n_items, K) int32, -1 pads
    weights: np.ndarray  # (n_items, K) float32
    popular: np.ndarray  # (P,) int32, most popular first
    users: np.ndarray  # (n_users,) user ids, str, sorted
    seen_start: np.ndarray  # (n_users + 1,) int64: user i rated seen[seen_start[i]:seen_start[i + 1]]
    seen: np.ndarray  # int32

    def __post_init__(self) -> None:
        object.__setattr__(self, "_position", {item: i for i, item in enumerate(self.items.tolist())})

    @classmethod
    def build(cls, items: Sequence[str], similarity: np.ndarray, popularity: np.ndarray, seen: dict[str, np.ndarray],
              neighbours: int = 100, popular: int = 1000) -> RetrievalIndex:  # fmt: skip
        """An index from an (items x items) similarity, a popularity score per item and each user's rated items.

        Args:
            items: the catalogue's movie ids.
            similarity: `similarity[i, j]`: how much liking i says about j (a dense array or a scipy sparse one);
                each row keeps its `neighbours` largest positive entries.
            popularity: a score per item; the `popular` best are kept.
            seen: user id -> positions (in `items`) of the movies the user rated.
        """
        items = np.asarray(items).astype(str)
        if similarity.shape != (len(items), len(items)) or popularity.shape != (len(items),):
            raise ValueError(f"`similarity` must be {(len(items),) * 2} and `popularity` ({len(items)},). "
                             f"Received: {similarity.shape}, {popularity.shape}")  # fmt: skip
        k = min(neighbours, len(items))
        top, top_weights = _top_neighbours(similarity, k)
        order = np.argsort(-np.asarray(popularity, dtype=np.float64), kind="stable")[:popular].astype(np.int32)
        users = np.array(sorted(seen), dtype=str)
        lists = [np.unique(np.asarray(seen[u], dtype=np.int32)) for u in users]
        start = np.zeros(len(users) + 1, dtype=np.int64)
        start[1:] = np.cumsum([len(x) for x in lists])
        flat = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int32)
        return cls(items, top, top_weights, order, users, start, flat.astype(np.int32))

    def seen_by(self, user_id: str) -> np.ndarray:
        """Positions of the movies `user_id` had rated before the index's cutoff (none for an unknown user)."""
        at = np.searchsorted(self.users, str(user_id))
        if at >= len(self.users) or self.users[at] != str(user_id):
            return np.zeros(0, dtype=np.int32)
        return self.seen[self.seen_start[at] : self.seen_start[at + 1]]

    def candidates(self, user_id: str, recent: Sequence[str], n: int = DEFAULT_CANDIDATES) -> list[str]:
        """Up to `n` movie ids for `user_id`: neighbours of `recent` (their summed weights), then popular movies;
        none the user rated (before the cutoff, or among `recent`)."""
        if n < 1:
            raise ValueError(f"`n` must be positive. Received: `n={n}`")
        recent_at = np.array([self._position[m] for m in recent if m in self._position], dtype=np.int64)
        blocked = np.zeros(len(self.items), dtype=bool)
        blocked[self.seen_by(user_id)] = True
        blocked[recent_at] = True
        chosen: list[int] = []
        if len(recent_at):
            score = np.zeros(len(self.items), dtype=np.float64)
            rows, weights = self.neighbours[recent_at].ravel(), self.weights[recent_at].ravel()
            np.add.at(score, rows[rows >= 0], weights[rows >= 0])
            score[blocked] = 0.0
            ranked = np.argsort(-score, kind="stable")
            chosen = ranked[score[ranked] > 0][:n].tolist()
            blocked[chosen] = True
        if len(chosen) < n:
            fill = self.popular[~blocked[self.popular]]
            chosen += fill[: n - len(chosen)].tolist()
        return self.items[chosen].tolist()

    def save(self, path: Path) -> Path:
        """Write the arrays to `path` (npz, staged and renamed), creating its folder."""
        with staged_path(path) as staged, staged.open("wb") as out:
            np.savez_compressed(out, items=self.items, neighbours=self.neighbours, weights=self.weights,
                                popular=self.popular, users=self.users, seen_start=self.seen_start,
                                seen=self.seen)  # fmt: skip
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> RetrievalIndex:
        """Read what `save` wrote."""
        with np.load(Path(path), allow_pickle=False) as arrays:
            return cls(**{name: arrays[name] for name in arrays.files})


def _top_neighbours(similarity, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, k) int32 positions of each row's `k` largest positive entries, best first (-1 pads; the diagonal
    and non-finite entries never count), and their float32 weights (0 pads)."""
    n = similarity.shape[0]
    if hasattr(similarity, "tocsr"):  # scipy sparse: rows one at a time, never densified
        matrix = similarity.tocsr()
        top, top_weights = np.full((n, k), -1, dtype=np.int32), np.zeros((n, k), dtype=np.float32)
        for i in range(n):
            columns = matrix.indices[matrix.indptr[i] : matrix.indptr[i + 1]]
            values = matrix.data[matrix.indptr[i] : matrix.indptr[i + 1]]
            keep = (columns != i) & np.isfinite(values) & (values > 0)
            columns, values = columns[keep], values[keep]
            order = np.lexsort((columns, -values))[:k]  # ties by position, as the dense path's stable sort
            top[i, : len(order)], top_weights[i, : len(order)] = columns[order], values[order]
        return top, top_weights
    weights = np.where(np.isfinite(similarity), similarity, 0.0).astype(np.float32)
    np.fill_diagonal(weights, 0.0)
    top = np.argsort(-weights, axis=1, kind="stable")[:, :k]
    top_weights = np.take_along_axis(weights, top, axis=1)
    top = np.where(top_weights > 0, top, -1).astype(np.int32)
    return top, np.where(top >= 0, top_weights, 0.0).astype(np.float32)
