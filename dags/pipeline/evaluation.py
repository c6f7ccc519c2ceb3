"""The `evaluate` task: the trained model at the job the stack serves, top-N over the whole catalogue, beside
simple rivals tuned as well, in the same run; and the retrieval index `recommend` serves with the model.

Protocol (DESIGN.md): the run's labelled events split by time as the snapshot is (80/10/10). The full-ranking
window runs from 00:00 UTC of the day the test split starts to the run's cutoff; its users are those with a
positive there (a seeded sample when more than `PipelineConfig.ranking_users` of the catalogue's size, recorded:
never a sample of candidates); each ranks every catalogue movie they had not rated before the window; relevant are
their positives in it. DeepFM scores every such pair with the features the night of the window's first day put
online (`feature_repo.as_of`), read through the same point-in-time path as training. The rivals
(`deepfm_model.topn`: popularity, item-kNN, EASE) are tuned on the validation window (from 00:00 of the day the
validation split starts to the test window) on the events before it, then refitted on the events before the test
window; one that cannot be fitted on the catalogue within the night (EASE above `topn.EASE_MAX_ITEMS` items) is
left out and named under `skipped`. `recommend` is what the served call returns: the retrieval index (built from
the events before the window, with the tuned item-kNN neighbours and the tuned popularity) proposes
`DEFAULT_CANDIDATES` movies, DeepFM ranks them, the rest never reach the list.

The index served with the model is built the same way from every event before the cutoff and written into the
export (`serving.retrieval.INDEX_FILE`), so it is pushed with the version it was measured with.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from dags.pipeline.config import PipelineConfig
from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, RATING, RECENT_MOVIES, USER_KEY
from deepfm_model.spec.files import staged_path, write_json
from deepfm_model.spec.serving import PROBABILITY

logger = logging.getLogger(__name__)

BASELINE_NAMES = ("popularity", "item_knn", "ease")
RELEVANT = "relevant"  # column of the ranking candidates: a positive of the user in the window
RETRIEVAL_SIMILARITY = "item_knn"  # whose tuned item-to-item weights the retrieval index keeps


def window_days(events: pd.DataFrame) -> tuple[str, str]:
    """(validation window's first day, test window's first day) of events sorted by time, as `YYYY-MM-DD`; only
    their `event_timestamp` column is read."""
    from feature_repo.store import split_sizes

    n_train, n_valid, _ = split_sizes(len(events))
    stamps = pd.to_datetime(events[EVENT_TIMESTAMP], utc=True)
    first = [
        stamps.iloc[min(position, len(events) - 1)].strftime("%Y-%m-%d") for position in (n_train, n_train + n_valid)
    ]
    return first[0], first[1]


def evaluate(config: PipelineConfig, ds: str) -> dict:
    """Full-catalogue top-N of the run's model and its rivals; `full_ranking` into the metrics, a section into the
    report, the retrieval index into the export. Returns each model's NDCG@10."""
    from dags.pipeline.training import update_metrics
    from deepfm_model import topn
    from deepfm_model.topn_report import write_full_ranking_report
    from feature_repo import raw_source
    from feature_repo.as_of import AsOfRepo
    from serving.retrieval import DEFAULT_CANDIDATES, INDEX_FILE

    run = config.run_dir(ds)
    valid_day, test_day = window_days(pd.read_parquet(run.events, columns=[EVENT_TIMESTAMP]))
    cutoff = data_cutoff(ds)
    as_of = AsOfRepo(config.feature_repo / "data" / "as_of")
    with raw_source.connect(config.load_raw()) as con:
        raw_source.check(con)
        catalogue = con.execute(f"SELECT {MOVIE_KEY} FROM movies ORDER BY {MOVIE_KEY}").df()[MOVIE_KEY].astype(str)
        as_of.update(con, test_day)  # before the history is loaded here: their peaks do not add up
    events = _events(run.events)
    max_users = config.ranking_users(len(catalogue))
    test = topn.ranking_task(events, catalogue, test_day, cutoff, max_users, config.sampling_seed)
    if not len(test.users):  # nothing to rank: recorded, and the blessing's top-N rules have nothing to read
        update_metrics(config, ds, full_ranking={"users": 0, "window_start": test.start.isoformat(), "models": {}})
        logger.warning("No user has a positive in the window from %s: no full-catalogue evaluation", test_day)
        return {}
    scores, recent = _deepfm_scores(run, test, as_of, test_day)
    models, tuning, baseline_scores, skipped = _baselines(events, catalogue, valid_day, test, max_users,
                                                          config.sampling_seed)  # fmt: skip
    models = {"deepfm": _summary(scores, test), **models}

    index = build_index(test, tuning)
    served = np.full(test.exclude.shape, -np.inf)
    column = {item: i for i, item in enumerate(test.items)}
    reached = []
    for row, user in enumerate(test.users):
        proposed = [column[m] for m in index.candidates(user, _movies(recent.get(user)), DEFAULT_CANDIDATES)]
        served[row, proposed] = scores[row, proposed]
        reached.append(test.relevant[row, proposed].sum() / max(test.relevant[row].sum(), 1))
    models = {"recommend": {**_summary(served, test), "retrieval_recall": float(np.mean(reached)),
                            "retrieval_cut": DEFAULT_CANDIDATES}, **models}  # fmt: skip
    models["recommend"]["vs_best_baseline"] = _versus(served, baseline_scores, test)
    models["recommend"]["vs_popularity"] = _versus(served, {"popularity": baseline_scores["popularity"]}, test)

    build_index(_history_task(events, catalogue, cutoff), tuning).save(run.export_dir / INDEX_FILE)

    full_ranking = {
        "users": int(len(test.users)),
        "sampled_from": int(test.sampled_from),
        "max_users": max_users,
        "candidates": "every catalogue movie the user had not rated before the window",
        "window_start": test.start.isoformat(),
        "window_end": test.end.isoformat(),
        "validation_start": pd.Timestamp(valid_day, tz="UTC").isoformat(),
        "models": models,
        **({"skipped": skipped} if skipped else {}),
    }
    write_json(run.ranking_tuning, tuning)
    update_metrics(config, ds, full_ranking=full_ranking)
    write_full_ranking_report(full_ranking, run.report.parent)
    summary = {name: round(model["ndcg_at_10"], 4) for name, model in models.items()}
    logger.info("Full-catalogue NDCG@10 over %d users: %s", len(test.users), summary)
    return summary


def _deepfm_scores(run, test, as_of, test_day: str) -> tuple[np.ndarray, pd.Series]:
    """The run's model over the ranking candidates, their features read from `as_of` at `test_day` (and written to
    `ranking_candidates`): `(n_users, n_items)` scores, -inf where not ranked, and each user's recent movie ids. The
    features are let go on return: at 10M events they are about 0.9 GB."""
    from deepfm_model.predict import load_trained, predict_outputs

    pairs = _candidate_pairs(test)
    rows, columns = pairs["row"].to_numpy(), pairs["column"].to_numpy()
    frame = as_of.frame(test_day, pairs)
    frame[RELEVANT] = test.relevant[rows, columns]
    with staged_path(run.ranking_candidates) as staged:
        frame.to_parquet(staged, index=False)
    scores = np.full(test.exclude.shape, -np.inf)
    scores[rows, columns] = predict_outputs(load_trained(run.model_dir), frame)[PROBABILITY]
    return scores, frame.groupby(USER_KEY, sort=False)[RECENT_MOVIES].first()


def _baselines(events, catalogue, valid_day: str, test, max_users: int, seed: int) -> tuple[dict, dict, dict, dict]:
    """Each rival tuned on the validation window (its task let go on return), then scored on `test`.

    Returns:
        (summaries, tuning, `(n_users, n_items)` scores, skipped), each by rival name.
    """
    from deepfm_model import topn

    valid = topn.ranking_task(events, catalogue, valid_day, test.start, max_users, seed) \
        if pd.Timestamp(valid_day, tz="UTC") < test.start else None  # fmt: skip
    models, tuning, baseline_scores, skipped = {}, {}, {}, {}
    for name in BASELINE_NAMES:
        try:
            params, best, trials = topn.tune(name, valid) if valid is not None and len(valid.users) else \
                (topn.GRIDS[name][0], None, [])  # fmt: skip
            baseline_scores[name] = topn.BASELINES[name](test, **params)
        except topn.CatalogueTooLarge as error:  # recorded beside the models, never a silent gap
            skipped[name] = str(error)
            logger.warning("Baseline %s skipped: %s", name, error)
            continue
        tuning[name] = {"params": params, "valid_ndcg_at_10": best, "trials": trials}
        models[name] = {**_summary(baseline_scores[name], test), "params": params}
    return models, tuning, baseline_scores, skipped


def _events(path) -> pd.DataFrame:
    """The run's labelled events: user and movie ids as str, timestamp and rating.

    Each distinct id is one str object that its rows share, not 20M strings of their own at 10M events: a 4x
    faster conversion.
    """
    events = pd.read_parquet(path, columns=[USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP, RATING])
    for column in (USER_KEY, MOVIE_KEY):
        codes, distinct = pd.factorize(events[column], use_na_sentinel=False)
        events[column] = distinct.astype(str).to_numpy(dtype=object)[codes]
    return events


def build_index(task, tuning: dict):
    """The retrieval index of a task's history: the tuned item-kNN neighbours and the tuned popularity."""
    from deepfm_model import topn
    from serving.retrieval import RetrievalIndex

    similarity = topn.item_similarity(task, RETRIEVAL_SIMILARITY, **tuning[RETRIEVAL_SIMILARITY]["params"])
    popularity = _popularity(task, tuning["popularity"]["params"])
    return RetrievalIndex.build(task.items, similarity, popularity, task.coded.items_by_user())


def _popularity(task, params: dict) -> np.ndarray:
    """The tuned popularity of each item over the task's history (one user's row of `popularity_scores`)."""
    from deepfm_model import topn

    one_row = np.zeros((1, len(task.items)), dtype=bool)
    probe = dataclasses.replace(task, users=np.array(["?"], dtype=object), exclude=one_row, relevant=one_row)
    return topn.popularity_scores(probe, **params)[0]


def _history_task(events: pd.DataFrame, catalogue: pd.Series, cutoff: pd.Timestamp):
    """A task with no users whose history is every event before `cutoff`: what the served index is fitted on."""
    from deepfm_model import topn

    items = catalogue.to_numpy()
    history = events[pd.to_datetime(events[EVENT_TIMESTAMP], utc=True) < cutoff]
    history = history[history[MOVIE_KEY].isin(set(items))].reset_index(drop=True)
    empty = np.zeros((0, len(items)), dtype=bool)
    return topn.RankingTask(np.array([], dtype=object), items, history, empty, empty, cutoff,
                            cutoff + pd.Timedelta(days=1), 0)  # fmt: skip


def _candidate_pairs(task) -> pd.DataFrame:
    rows, columns = np.nonzero(~task.exclude)
    return pd.DataFrame({USER_KEY: task.users[rows].astype(str), MOVIE_KEY: task.items[columns].astype(str),
                         "row": rows, "column": columns})  # fmt: skip


def _summary(scores: np.ndarray, task) -> dict:
    from deepfm_model import topn

    return topn.summarize(topn.per_user_metrics(np.where(np.isfinite(scores), scores, -1e30), task))


def _versus(served: np.ndarray, baseline_scores: dict[str, np.ndarray], task) -> dict:
    """Paired bootstrap of `recommend`'s NDCG@10 against the best of `baseline_scores`, on the same users."""
    from deepfm_model import topn

    def ndcg(scores):
        return topn.per_user_metrics(np.where(np.isfinite(scores), scores, -1e30), task)["ndcg_at_10"]

    per_baseline = {name: ndcg(scores) for name, scores in baseline_scores.items()}
    best = max(per_baseline, key=lambda name: per_baseline[name].mean())
    return {"baseline": best, **topn.paired_bootstrap(ndcg(served), per_baseline[best])}


def _movies(value) -> list[str]:
    from deepfm_model.spec.features import MULTI_VALUE_SEPARATOR

    return [m for m in str(value or "").split(MULTI_VALUE_SEPARATOR) if m]


def ranking_per_user(candidates: pd.DataFrame, scores: np.ndarray) -> dict[str, np.ndarray]:
    """`topn.per_user_metrics` of a run's ranking candidates (`RunDir.ranking_candidates`) scored `scores`: any
    model (the serving model, an ablation) on the run's users and candidates."""
    from deepfm_model import topn

    users, rows = np.unique(candidates[USER_KEY].to_numpy(dtype=str), return_inverse=True)
    items, columns = np.unique(candidates[MOVIE_KEY].to_numpy(dtype=str), return_inverse=True)
    exclude = np.ones((len(users), len(items)), dtype=bool)
    exclude[rows, columns] = False
    relevant = np.zeros_like(exclude)
    relevant[rows, columns] = candidates[RELEVANT].to_numpy(dtype=bool)
    matrix = np.full(exclude.shape, -1e30)
    matrix[rows, columns] = scores
    task = topn.RankingTask(users, items, candidates.iloc[:0], exclude, relevant, pd.Timestamp(0, tz="UTC"),
                            pd.Timestamp(1, tz="UTC"), len(users))  # fmt: skip
    return topn.per_user_metrics(matrix, task)


def ranking_summary(candidates: pd.DataFrame, scores: np.ndarray) -> dict:
    """`topn.summarize` of `ranking_per_user`: means and bootstrap intervals."""
    from deepfm_model import topn

    return topn.summarize(ranking_per_user(candidates, scores))
