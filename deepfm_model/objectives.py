"""What DeepFM learns from: the training target, the loss and the tracked metrics of its one or two heads.

A training row is a rated event (the user picked the movie, and liked it or not) or a sampled movie the user had
not rated (`feature_repo.negatives`). Its target is one number (`training_target`):

    target = label   (1 liked, 0 disliked)   on a rated row
    target = -1                              on a sampled row (not picked; liking undefined)

- **One head** (`ModelConfig.pick_head=False`): `probability` learns "picked and liked": binary cross-entropy
  against `target == 1` (sampled rows count as 0). Without sampled rows this is the plain rated-events model.
- **Two heads** (the default): `pick` learns "rated, among everything" (`target >= 0`) on every row; `like`
  learns `target == 1` on rated rows only (sampled rows are masked out of its loss); the served `probability` ranks
  by `odds(pick) * like`, proportional to the chance that the user picks the movie and likes it (`model.py`). The
  loss is
  `BCE(pick) + like_weight * masked BCE(like)`, each averaged over the rows it covers.
- **The like tower** (with two heads, `ModelConfig.like_tower`): a one-head model trained afterwards on the
  rated rows alone (`rated_rows`), its target the label; its output is served as `like` in place of the head's
  (`probability` stays the heads').

Metrics, identical for both: `auc` and `logloss` of `probability` against `target == 1` on every row (on rated
events alone, the plain AUC of "liked"); with two heads also `like_auc` (the like head on rated rows) and
`pick_auc` (the pick head on every row).
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from keras import ops

from deepfm_model.spec import features as spec
from deepfm_model.spec.serving import LIKE, PICK, PROBABILITY

NOT_PICKED = -1.0  # the target of a sampled row
# Columns of the model's output: `probability` alone (one head), or `probability, pick, like` (two heads).
OUTPUT_COLUMNS = {False: (PROBABILITY,), True: (PROBABILITY, PICK, LIKE)}


def training_target(frame: pd.DataFrame) -> np.ndarray:
    """`(rows,)` float32 targets of a split: the label on rated rows, `NOT_PICKED` on sampled ones.

    A frame without a `picked` column holds rated events only.
    """
    label = frame[spec.LABEL].to_numpy(dtype=np.float32)
    if spec.PICKED not in frame.columns:
        return label
    return np.where(frame[spec.PICKED].to_numpy() > 0, label, np.float32(NOT_PICKED)).astype(np.float32)


def rated_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rated rows of a split (all of them when it has no `picked` column): what the like tower learns from."""
    if spec.PICKED not in frame.columns:
        return frame
    return frame[frame[spec.PICKED].to_numpy() > 0]


def liked(target: np.ndarray) -> np.ndarray:
    """1.0 where a target is a liked rated event, else 0.0."""
    return (np.asarray(target) == 1).astype(np.float32)


def like_signal(target: np.ndarray, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """What `<split>_auc` measures: "liked" among the rated rows, scored by the like head (or the one head).

    Returns:
        (0/1 labels of the rated rows, their scores, the output's name).
    """
    signal = "like" if "like" in outputs else OUTPUT_COLUMNS[False][0]
    rated = np.asarray(target) >= 0
    return liked(np.asarray(target)[rated]), np.asarray(outputs[signal])[rated], signal


@keras.saving.register_keras_serializable(package="deepfm")
class PickLikeLoss(keras.losses.Loss):
    """Binary cross-entropy of the heads against a `training_target` (see the module docstring).

    Args:
        pick_head: the model has the two heads (`y_pred` is `(batch, 3)`), else one (`(batch, 1)`).
        like_weight: weight of the like head's loss beside the pick head's.
    """

    def __init__(self, pick_head: bool = True, like_weight: float = 1.0, name: str = "pick_like_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if like_weight < 0:
            raise ValueError(f"`like_weight` must not be negative. Received: `like_weight={like_weight}`")
        self.pick_head = pick_head
        self.like_weight = like_weight

    def call(self, y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "float32")  # (batch,)
        y_pred = ops.cast(y_pred, "float32")
        target_liked = ops.cast(ops.equal(y_true, 1.0), "float32")
        if not self.pick_head:
            return _bce(target_liked, y_pred[:, 0])  # (batch,)
        picked = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
        pick_loss = _bce(picked, y_pred[:, 1])
        like_loss = _bce(target_liked, y_pred[:, 2]) * picked
        # Each head's loss is a mean over the rows it covers: scale the masked like loss by rows / rated rows.
        rated_share = ops.maximum(ops.mean(picked), 1.0 / ops.cast(ops.shape(picked)[0], "float32"))
        return pick_loss + self.like_weight * like_loss / rated_share  # (batch,)

    def get_config(self) -> dict:
        return {**super().get_config(), "pick_head": self.pick_head, "like_weight": self.like_weight}


def _bce(target, probability):
    p = ops.clip(probability, 1e-7, 1.0 - 1e-7)
    return -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))


@keras.saving.register_keras_serializable(package="deepfm")
class HeadAUC(keras.metrics.AUC):
    """AUC of one output column against a `training_target`.

    Args:
        column: 0 `probability` (target liked, every row), 1 `pick` (target rated, every row), 2 `like` (target
            liked, rated rows only).
    """

    def __init__(self, column: int = 0, name: str = "auc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.column = column

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "float32")
        score = ops.cast(y_pred[:, self.column], "float32")
        weight = ops.ones_like(y_true)
        if self.column == 1:
            target = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
        else:
            target = ops.cast(ops.equal(y_true, 1.0), "float32")
            if self.column == 2:
                weight = ops.cast(ops.greater_equal(y_true, 0.0), "float32")
        return super().update_state(target, score, sample_weight=weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "column": self.column}


@keras.saving.register_keras_serializable(package="deepfm")
class LikedLogLoss(keras.metrics.Mean):
    """Binary cross-entropy of `probability` against `target == 1`, every row."""

    def __init__(self, name: str = "logloss", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        target = ops.cast(ops.equal(ops.reshape(y_true, (-1,)), 1.0), "float32")
        return super().update_state(_bce(target, ops.cast(y_pred[:, 0], "float32")))


def has_pick_head(model: keras.Model) -> bool:
    """Whether a built DeepFM has the two heads (its output holds `OUTPUT_COLUMNS[True]`)."""
    return model.outputs[0].shape[-1] == len(OUTPUT_COLUMNS[True])


def tracked_metrics(pick_head: bool) -> list[keras.metrics.Metric]:
    """The metrics `compile_model` tracks (see the module docstring)."""
    metrics = [HeadAUC(0, name="auc"), LikedLogLoss(name="logloss")]
    if pick_head:
        metrics += [HeadAUC(1, name="pick_auc"), HeadAUC(2, name="like_auc")]
    return metrics
