"""`recommend(user, k)`: a top-k list without candidates from the caller: retrieval, then DeepFM over gRPC.

    index = RetrievalIndex.load(version_dir / INDEX_FILE)       # pushed with the model version
    recommender = Recommender(Ranker(client, reader), index)
    recommender.recommend("196", 10)   # [("302", 0.31), ...]

The user's recent movies come from the same online read as ranking (the `user_recent_movie_ids` feature the
event stream keeps fresh), so a rating pushed a second ago moves the candidates. The index proposes
`DEFAULT_CANDIDATES` movies the user has not rated (`serving.retrieval`); `Ranker.rank` scores them through the
client's version or label (`stable`). An unknown user has no recent movies: they get the popular movies, ranked
by the model, never an error.
"""

from __future__ import annotations

from deepfm_model.spec.features import MULTI_VALUE_SEPARATOR, RECENT_MOVIES
from serving.ranking import Ranker
from serving.retrieval import DEFAULT_CANDIDATES, RetrievalIndex


class Recommender:
    """Top-k movies for a user: `index` proposes candidates, `ranker` orders them.

    Args:
        ranker: a `Ranker` over the serving client and the online feature reader.
        index: the retrieval index of the model version the client serves.
        candidates: movies proposed to the ranker per call (the retrieval cut).
    """

    def __init__(self, ranker: Ranker, index: RetrievalIndex, candidates: int = DEFAULT_CANDIDATES) -> None:
        if candidates < 1:
            raise ValueError(f"`candidates` must be positive. Received: `candidates={candidates}`")
        self.ranker = ranker
        self.index = index
        self.candidates = candidates

    def recent_movies(self, user_id: str) -> list[str]:
        """The user's recent movies as the online store holds them (none for an unknown user)."""
        probe = [str(self.index.items[self.index.popular[0]])] if len(self.index.popular) else ["?"]
        value = self.ranker.read_features(str(user_id), probe)[RECENT_MOVIES][0]
        if value is None or value != value:  # None, or NaN
            return []
        return [m for m in str(value).split(MULTI_VALUE_SEPARATOR) if m]

    def recommend(self, user_id: str | int, k: int = 10) -> list[tuple[str, float]]:
        """The `k` best movies for `user_id` among the retrieved candidates, `(movie_id, probability)` best first."""
        if k < 1:
            raise ValueError(f"`k` must be positive. Received: `k={k}`")
        proposed = self.index.candidates(str(user_id), self.recent_movies(str(user_id)), max(self.candidates, k))
        return self.ranker.rank(str(user_id), proposed)[:k]
