"""Planted truth: DeepFM beats its FM-only and DNN-only ablations on data with first-order, pairwise and
higher-order effects; the Bayes-optimal AUC (from the planted probabilities) is printed beside them.

The data is built so that each ablation misses one planted part that DeepFM has a component for:

- pairwise: strong, rank-4 and spread over all 45 pairs of ten 100-valued fields (4,500 value pairs per
  field pair). The FM term represents it exactly; an MLP on concatenated embeddings has to approximate the
  products from data and learns it poorly (DNN-only stays far below FM's ceiling on this part).
- higher order: a parity (XOR-like product) of three binary fields. It has no first- or second-order part
  at all (every lower-order projection is zero), so an FM cannot represent any of it; an MLP picks it up
  within a few epochs.

All three variants get the same data, seed, architecture (embeddings, MLP, dropout), optimiser, learning
rate, epoch budget and callbacks (early stopping on validation AUC restoring the best weights, learning
rate cut on plateau, as `train.train_model`), and are trained by the package's own path
(`build_model` + `compile_model` + `fit`).

Robustness across data and training seeds (the test itself uses `SEED`):

    PYTHONPATH=. .venv/bin/python tests/model/test_planted_truth.py 1 2 3
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.evaluate import roc_auc
from deepfm_model.model import CATEGORICAL_INPUT, build_model
from deepfm_model.train import compile_model

pytestmark = pytest.mark.slow

SEED = 0
PAIR_FIELDS, PAIR_VALUES, RANK = 10, 100, 4  # fields carrying first-order and pairwise effects
PARITY_FIELDS = 3  # binary fields carrying first-order effects and the three-way parity
CARDINALITIES = [PAIR_VALUES] * PAIR_FIELDS + [2] * PARITY_FIELDS
BIAS, FIRST_ORDER_STD, FACTOR_STD, PARITY_WEIGHT = -0.5, 0.3, 0.38, 1.5
TRAIN_ROWS, VALID_ROWS, TEST_ROWS = 100_000, 20_000, 40_000
MARGIN = 0.02  # DeepFM's AUC must exceed each ablation's by this much (observed: about 0.1 each)

MODEL_CONFIG = ModelConfig(embedding_dim=8, mlp_units=(64, 32), dropout=0.3, embedding_init_stddev=0.1, pick_head=False)
VARIANTS = {
    "deepfm": MODEL_CONFIG,
    "fm_only": dataclasses.replace(MODEL_CONFIG, use_dnn=False),
    "dnn_only": dataclasses.replace(MODEL_CONFIG, use_fm=False),
}


@dataclass(frozen=True)
class PlantedData:
    """Splits of categorical rows `x` (int32, one column per field) and labels `y` (float32, `(rows, 1)`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    probability_test: np.ndarray  # the planted probability of each test row
    logit_without_parity_test: np.ndarray  # the planted logit less the parity term (the best an FM can know)


def planted_data(seed: int) -> PlantedData:
    """Categorical rows, independent and uniform per field, and labels drawn from a known logit:

    logit = BIAS + sum_i w_i[x_i]                                   (first order, all 13 fields)
            + sum_{i<j<10} <u_i[x_i], u_j[x_j]>                      (pairwise, rank 4)
            + PARITY_WEIGHT * s_10 s_11 s_12,  s_i = +1 if x_i == 0 else -1   (three-way parity)
    """
    rng = np.random.default_rng(seed)
    rows = TRAIN_ROWS + VALID_ROWS + TEST_ROWS
    x = np.stack([rng.integers(0, size, rows) for size in CARDINALITIES], axis=1).astype("int32")  # (rows, fields)
    first = sum(rng.normal(0.0, FIRST_ORDER_STD, size)[x[:, i]] for i, size in enumerate(CARDINALITIES))
    v = np.stack(
        [rng.normal(0.0, FACTOR_STD, (PAIR_VALUES, RANK))[x[:, i]] for i in range(PAIR_FIELDS)], axis=1
    )  # (rows, PAIR_FIELDS, RANK)
    pairwise = 0.5 * (np.square(v.sum(axis=1)) - np.square(v).sum(axis=1)).sum(axis=-1)  # sum_{i<j} <v_i, v_j>
    signs = np.where(x[:, PAIR_FIELDS:] == 0, 1.0, -1.0)  # (rows, PARITY_FIELDS)
    parity = PARITY_WEIGHT * signs.prod(axis=1)  # zero mean given any one or two of the fields: no FM part
    logit = BIAS + first + pairwise + parity
    probability = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(rows) < probability).astype("float32").reshape(-1, 1)
    a, b = TRAIN_ROWS, TRAIN_ROWS + VALID_ROWS
    return PlantedData(
        x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], probability[b:], (logit - parity)[b:]
    )  # fmt: skip


def train_and_score(model_config: ModelConfig, data: PlantedData, seed: int) -> tuple[float, int]:
    """Train one variant as `train.train_model` does (same callbacks) and return its test AUC and epochs run."""
    train_config = TrainConfig(
        batch_size=512, epochs=30, learning_rate=3e-3, seed=seed, early_stopping_patience=3, reduce_lr_patience=2
    )
    keras.utils.set_random_seed(train_config.seed)
    model = build_model(model_config, CARDINALITIES, [], 0)
    compile_model(model, train_config)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=train_config.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_auc", mode="max", factor=train_config.reduce_lr_factor,
            patience=train_config.reduce_lr_patience, min_lr=train_config.min_learning_rate,
        ),
    ]  # fmt: skip
    history = model.fit(
        {CATEGORICAL_INPUT: data.x_train},
        data.y_train,
        batch_size=train_config.batch_size,
        epochs=train_config.epochs,
        validation_data=({CATEGORICAL_INPUT: data.x_valid}, data.y_valid),
        callbacks=callbacks,
        verbose=0,
    )
    scores = model.predict({CATEGORICAL_INPUT: data.x_test}, batch_size=train_config.predict_batch_size, verbose=0)
    return roc_auc(data.y_test, scores), len(history.history["val_auc"])


def compare(seed: int) -> tuple[dict[str, float], float, float]:
    """Test AUC of each variant, the Bayes-optimal AUC and the AUC of the planted logit less the parity."""
    data = planted_data(seed)
    aucs = {}
    for name, config in VARIANTS.items():
        start = time.perf_counter()
        aucs[name], epochs = train_and_score(config, data, seed)
        print(f"  seed {seed} {name}: auc={aucs[name]:.4f} ({epochs} epochs, {time.perf_counter() - start:.0f}s)")
    bayes = roc_auc(data.y_test, data.probability_test)
    without_parity = roc_auc(data.y_test, data.logit_without_parity_test)
    print(
        f"planted-truth AUC (seed {seed}): "
        + ", ".join(f"{k}={v:.4f}" for k, v in aucs.items())
        + f", bayes_optimal={bayes:.4f} (planted logit without the parity: {without_parity:.4f}); "
        + f"margins: over fm_only {aucs['deepfm'] - aucs['fm_only']:+.4f}, "
        + f"over dnn_only {aucs['deepfm'] - aucs['dnn_only']:+.4f}"
    )
    return aucs, bayes, without_parity


def test_deepfm_beats_its_fm_only_and_dnn_only_ablations():
    aucs, bayes, _ = compare(SEED)
    assert aucs["deepfm"] > aucs["fm_only"] + MARGIN, aucs
    assert aucs["deepfm"] > aucs["dnn_only"] + MARGIN, aucs
    assert aucs["deepfm"] <= bayes + 0.005, (aucs, bayes)  # nothing beats the truth beyond sampling noise


if __name__ == "__main__":
    for seed in [int(s) for s in sys.argv[1:]] or [SEED]:
        compare(seed)
