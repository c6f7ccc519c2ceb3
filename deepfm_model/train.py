"""Train DeepFM from parquet splits and write a run's artefacts; `run_training` is the one entry point.

Output directory layout:
    model.keras            core Keras model (integer indices + normalised floats in, probability out)
    preprocessing.json     vocabularies and numeric statistics fitted on the train split
    config.json            the ModelConfig and TrainConfig used
    history.json           per-epoch Keras logs (loss, auc, logloss, val_*, learning_rate)
    metrics.json           {train,valid,test}_{auc,logloss,mean_prediction,positive_rate,rows} and run facts
    report/index.html      ROC, calibration and learning-curve plots (PNG) and the metrics
    export/                SavedModel with the raw-feature `serving_default` signature and warm-up requests
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.evaluate import (
    compute_metrics,
    flatten_metrics,
    popularity_scores,
    ranking_metrics,
    roc_auc,
    write_report,
)
from deepfm_model.layout import CONFIG_FILE, EXPORT_DIR, HISTORY_FILE, LIKE_TOWER, METRICS_FILE, SPLITS
from deepfm_model.model import OUTPUT_NAME, PICK_OUTPUT, build_like_tower, build_model, with_like_tower
from deepfm_model.objectives import (
    PickLikeLoss,
    has_pick_head,
    like_signal,
    liked,
    rated_rows,
    tracked_metrics,
    training_target,
)
from deepfm_model.sparse_adam import SparseAdam
from deepfm_model.spec import features as spec
from deepfm_model.spec.files import write_json

if TYPE_CHECKING:
    from deepfm_model.predict import TrainedModel

# TensorFlow and the modules built on it (preprocessing, prediction, export) are imported inside the functions
# that use them: `compile_model` and `precision_policy` also serve the training benchmark, which must run
# under `KERAS_BACKEND=jax` on a machine without TensorFlow.

logger = logging.getLogger(__name__)


def tf_config_workers(tf_config: str | None) -> int:
    """Number of workers (chief included) named by a `TF_CONFIG` JSON string; 0 when unset or empty."""
    if not tf_config:
        return 0
    cluster = json.loads(tf_config).get("cluster", {})
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def distribution_strategy(train_config: TrainConfig, tf_config: str | None = None, devices: list[str] | None = None):
    """The `tf.distribute` strategy to train under (TensorFlow backend), or `None` for the default one.

    - `TF_CONFIG` naming several workers: `MultiWorkerMirroredStrategy` (each worker runs the same command;
      TensorFlow reads `TF_CONFIG` itself for the worker's role; `multi_worker` makes Keras 3's `fit` run under
      it; the caller creates it before any TensorFlow op runs, as `train_model` does);
    - else several local GPUs, or explicit `devices`: `MirroredStrategy` over them;
    - else `None`.

    Args:
        train_config: `distribute` switches all of it off.
        tf_config: the `TF_CONFIG` JSON (the caller reads the environment).
        devices: explicit devices for `MirroredStrategy` (tests use logical CPUs).
    """
    if not train_config.distribute or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if tf_config_workers(tf_config) > 1:
        from deepfm_model import multi_worker

        logger.info("Training on %d workers with MultiWorkerMirroredStrategy", tf_config_workers(tf_config))
        multi_worker.install()  # Keras 3's fit cannot run under it as released (see the module)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] if gpus else None
    if devices:
        logger.info("Training on %s with MirroredStrategy", devices)
        return tf.distribute.MirroredStrategy(devices)
    return None


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Mixed precision inside the block when `mixed` (float16 on GPU, bfloat16 elsewhere), then restored."""
    previous = keras.config.dtype_policy()
    if mixed:
        gpu = False
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.config.set_dtype_policy("mixed_float16" if gpu else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compile_model(model: keras.Model, train_config: TrainConfig, metrics: bool = True) -> keras.Model:
    """Compile `model` for training: the loss and metrics of `objectives` (one head or two), (Sparse)Adam, XLA and
    steps per execution as configured.

    Args:
        model: the DeepFM model (from `build_model`).
        train_config: `learning_rate`, `sparse_embedding_updates` (ignored, with a warning, when `jit_compile`
            is on under TensorFlow), `jit_compile`, `steps_per_execution` (1, with a warning, under a
            distribution strategy).
        metrics: track AUC and logloss (the benchmark leaves them out, as its plain baseline does).

    Returns:
        `model`, compiled.
    """
    sparse = train_config.sparse_embedding_updates
    if sparse and train_config.jit_compile and keras.backend.backend() == "tensorflow":
        logger.warning(
            "jit_compile=True: the embedding table gets dense Adam updates, because XLA cannot compile the row-wise "
            "update (`tf.unique` has a data-dependent shape). Without XLA, the row-wise update is usually faster."
        )
        sparse = False
    optimizer_class = SparseAdam if sparse else keras.optimizers.Adam
    steps_per_execution = train_config.steps_per_execution
    if steps_per_execution > 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            # Keras 3's multi-step execution fails under tf.distribute ("You must feed a value for placeholder
            # tensor ... while/cond"): https://github.com/keras-team/keras/issues/19246
            logger.warning(
                "steps_per_execution=%d under %s: one step per execution instead (keras-team/keras#19246)",
                steps_per_execution, type(tf.distribute.get_strategy()).__name__,
            )  # fmt: skip
            steps_per_execution = 1
    pick_head = has_pick_head(model)
    model.compile(
        optimizer=optimizer_class(learning_rate=train_config.learning_rate),
        loss=PickLikeLoss(pick_head=pick_head, like_weight=train_config.like_weight),
        metrics=tracked_metrics(pick_head) if metrics else None,
        jit_compile="auto" if train_config.jit_compile is None else train_config.jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def train_model(
    train: pd.DataFrame | None,
    valid: pd.DataFrame | None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    train_path: str | Path | None = None,
    tf_config: str | None = None,
    devices: list[str] | None = None,
    valid_path: str | Path | None = None,
) -> tuple[TrainedModel, dict[str, list[float]]]:
    """Fit preprocessing on the train split, build and train DeepFM with early stopping on validation AUC.

    Args:
        train: the train split (preprocessing is fitted on it; it is the training input unless streamed);
            `None` when streamed.
        valid: the validation split; `None` when `valid_path` is streamed.
        model_config: architecture.
        train_config: optimisation; with `stream_from_parquet` and `train_path`, preprocessing is fitted and
            training reads `train_path` in record batches (`fit_preprocessing_parquet`, `make_parquet_dataset`),
            never holding the split in memory; `valid_path`, when given, is read the same way.
        train_path: parquet file of the train split, for streaming.
        tf_config: the `TF_CONFIG` JSON; several workers select `MultiWorkerMirroredStrategy`.
        devices: explicit devices for `MirroredStrategy`.
        valid_path: parquet file of the validation split, for streaming.

    Returns:
        The trained model (best validation-AUC weights restored) and its per-epoch history. With the two heads
        and `model_config.like_tower`, the like tower is trained next on the rated rows and served as the `like`
        output (`model.with_like_tower`); its history's keys are prefixed `like_tower_`.
    """
    from deepfm_model.predict import TrainedModel
    from deepfm_model.preprocessing import FeaturePreprocessor, fit_preprocessing, fit_preprocessing_parquet

    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    # Before any TensorFlow op runs: MultiWorkerMirroredStrategy configures the collective ops at start-up.
    strategy = distribution_strategy(train_config, tf_config, devices)
    keras.utils.set_random_seed(train_config.seed)
    streamed = train_config.stream_from_parquet and train_path is not None
    if streamed:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(train_path).metadata.num_rows
        state = fit_preprocessing_parquet(train_path, model_config, train_config.parquet_batch_rows)
    else:
        rows, state = len(train), fit_preprocessing(train, model_config)
    preprocessor = FeaturePreprocessor(state)
    data = _Data(train, valid, train_path if streamed else None, valid_path if streamed else None, rows)

    def scope():  # a strategy's scope is entered anew each time
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    sizes = (preprocessor.categorical_sizes, preprocessor.multi_categorical_sizes, preprocessor.num_numeric,
             preprocessor.multi_shared_with)  # fmt: skip
    with scope(), precision_policy(train_config.mixed_precision):
        model = build_model(model_config, *sizes, prior=preprocessor.state.prior is not None)
        compile_model(model, train_config)
    history = _fit(model, *data.datasets(preprocessor, train_config, rated_only=False), train_config)
    if model_config.pick_head and model_config.like_tower:
        logger.info("Training the like tower on the rated rows")
        keras.utils.set_random_seed(train_config.seed)  # its start does not depend on how long the heads trained
        with scope(), precision_policy(train_config.mixed_precision):
            tower = build_like_tower(model_config, *sizes)
            compile_model(tower, train_config)
        tower_data = data.datasets(preprocessor, train_config, rated_only=True, inputs=list(tower.input))
        tower_history = _fit(tower, *tower_data, train_config)
        history.update({f"{LIKE_TOWER}_{name}": values for name, values in tower_history.items()})
        with scope():
            model = with_like_tower(model, tower)
    return TrainedModel(model, preprocessor), history


@dataclasses.dataclass(frozen=True)
class _Data:
    """A run's train and validation rows, in memory (frames) or streamed (parquet paths)."""

    train: pd.DataFrame | None
    valid: pd.DataFrame | None
    train_path: str | Path | None  # streamed when set
    valid_path: str | Path | None
    train_rows: int

    def datasets(self, preprocessor, train_config: TrainConfig, rated_only: bool, inputs: list[str] | None = None):
        """`(train, valid)` tf.data pipelines of every row, or of the rated rows alone (the like tower's), with
        every model input or the `inputs` named (the tower takes no prior)."""
        from deepfm_model.preprocessing import make_dataset, make_parquet_dataset

        shuffle_buffer = min(train_config.shuffle_buffer, self.train_rows)
        if self.train_path is not None:
            train_data = make_parquet_dataset(
                self.train_path, preprocessor, train_config.batch_size, shuffle_buffer=shuffle_buffer,
                seed=train_config.seed, record_batch_rows=train_config.parquet_batch_rows, rated_only=rated_only,
            )  # fmt: skip
        else:
            train = rated_rows(self.train) if rated_only else self.train
            shuffle_buffer = min(shuffle_buffer, len(train))
            train_data = make_dataset(
                train, preprocessor, train_config.batch_size, shuffle_buffer=shuffle_buffer, seed=train_config.seed
            )
        if self.valid_path is not None:
            valid_data = make_parquet_dataset(
                self.valid_path, preprocessor, train_config.predict_batch_size,
                record_batch_rows=train_config.parquet_batch_rows, rated_only=rated_only,
            )  # fmt: skip
        else:
            valid = rated_rows(self.valid) if rated_only else self.valid
            valid_data = make_dataset(valid, preprocessor, train_config.predict_batch_size)
        if inputs is None:
            return train_data, valid_data
        return tuple(
            data.map(lambda x, y: ({name: x[name] for name in inputs}, y)) for data in (train_data, valid_data)
        )


def _fit(model: keras.Model, train_data, valid_data, train_config: TrainConfig) -> dict[str, list[float]]:
    """`model.fit` with early stopping on validation AUC (best weights restored) and the learning-rate schedule."""
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=train_config.early_stopping_patience,
            restore_best_weights=True, verbose=1,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_auc", mode="max", factor=train_config.reduce_lr_factor,
            patience=train_config.reduce_lr_patience, min_lr=train_config.min_learning_rate, verbose=1,
        ),
    ]  # fmt: skip
    fit = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=train_config.epochs,
        callbacks=callbacks,
        verbose=train_config.verbose,
        shuffle=False,  # tf.data already shuffles, seeded
    )
    return {name: [float(v) for v in values] for name, values in fit.history.items()}


def run_training(
    train_path: str | Path,
    valid_path: str | Path,
    test_path: str | Path,
    out_dir: str | Path,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    tf_config: str | None = None,
) -> dict:
    """Train, evaluate, report and export one run; the pipeline and the CLI call this.

    Args:
        train_path: parquet of the train split (features, `event_timestamp`, `rating`, `label`).
        valid_path: parquet of the validation split (early stopping, learning-rate schedule).
        test_path: parquet of the test split (reported only).
        out_dir: run output directory (created); see the module docstring for its layout.
        model_config: architecture; `ModelConfig()` when `None`.
        train_config: optimisation; `TrainConfig()` when `None`.
        tf_config: the `TF_CONFIG` JSON of a multi-worker run (the CLI passes the environment's), else `None`.

    Returns:
        The metrics written to `metrics.json` (`test_auc`, `test_logloss`, `valid_auc`, `*_mean_prediction`,
        `*_positive_rate`, `*_rows`, ...). `<split>_auc` and `<split>_logloss` are "liked" among the split's rated
        rows, scored by the output `auc_signal` names (`like` with the pick head, else `probability`);
        `<split>_pick_auc` is the pick head's rated-vs-sampled AUC where the split has sampled rows.
    """
    from deepfm_model.predict import predict_outputs, predict_parquet
    from deepfm_model.preprocessing import load_split

    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(SPLITS, (train_path, valid_path, test_path), strict=True))
    # Streamed, no split is held whole: predictions are made record batch by record batch, and only the id
    # columns the ranking metrics need are read.
    streamed = train_config.stream_from_parquet
    frames = {} if streamed else {name: load_split(path) for name, path in paths.items()}
    logger.info("Rows: %s", {name: _rows(paths[name], frames.get(name)) for name in SPLITS})

    started = time.monotonic()
    trained, history = train_model(
        frames.get("train"), frames.get("valid"), model_config, train_config, train_path=train_path,
        tf_config=tf_config, valid_path=valid_path if streamed else None,
    )  # fmt: skip
    training_seconds = time.monotonic() - started

    train_share = min(1.0, train_config.train_metrics_rows / _rows(paths["train"], None)) if streamed else 1.0
    if streamed:
        predicted = {
            name: predict_parquet(trained, path, train_config.predict_batch_size,
                                  share=train_share if name == "train" else 1.0, seed=train_config.seed)
            for name, path in paths.items()
        }  # fmt: skip
        targets = {name: target for name, (target, _) in predicted.items()}
        outputs = {name: values for name, (_, values) in predicted.items()}
    else:
        targets = {name: training_target(f) for name, f in frames.items()}
        outputs = {name: predict_outputs(trained, f, train_config.predict_batch_size) for name, f in frames.items()}
    rated = {name: targets[name] >= 0 for name in SPLITS}
    signals = {name: like_signal(targets[name], outputs[name]) for name in SPLITS}
    labels = {name: label for name, (label, _, _) in signals.items()}
    probabilities = {name: scores for name, (_, scores, _) in signals.items()}
    signal = signals["test"][2]
    per_split = {name: compute_metrics(labels[name], probabilities[name]) for name in SPLITS}
    for name in SPLITS:
        if PICK_OUTPUT in outputs[name] and not rated[name].all():
            per_split[name]["pick_auc"] = roc_auc(rated[name], outputs[name][PICK_OUTPUT])
            per_split[name]["sampled_rows"] = int((~rated[name]).sum())
    val_auc = history.get("val_auc", [])
    test_users, test_movies = _columns(paths["test"], frames.get("test"), spec.USER_KEY, spec.MOVIE_KEY)
    test_users, test_movies = test_users[rated["test"]], test_movies[rated["test"]]
    per_split["test"].update(ranking_metrics(test_users, labels["test"], outputs["test"][OUTPUT_NAME][rated["test"]]))
    train_movies, train_liked = _rated_movies(paths["train"], frames.get("train"))  # every train row, not a sample
    popularity = popularity_scores(train_movies, train_liked, test_movies)
    baseline = ranking_metrics(test_users, labels["test"], popularity)
    metrics = {
        **flatten_metrics(per_split),
        **{f"popularity_test_{name}": value for name, value in baseline.items() if name != "ranking_users"},
        "epochs_trained": len(history.get("loss", [])),
        "best_epoch": int(np.nanargmax(val_auc)) + 1 if val_auc else 0,
        **_tower_epochs(history),
        "train_metrics_sample": round(train_share, 6),
        "training_seconds": round(training_seconds, 2),
        "backend": keras.backend.backend(),
        "auc_signal": signal,
    }

    trained.save(out_dir)
    write_json(out_dir / CONFIG_FILE, {"model": model_config.to_dict(), "train": train_config.to_dict()})
    write_json(out_dir / HISTORY_FILE, history)
    write_json(out_dir / METRICS_FILE, _json_safe(metrics))
    write_report(out_dir, labels, probabilities, history, metrics, title=f"DeepFM run {out_dir.name}")
    if keras.backend.backend() == "tensorflow":
        from deepfm_model.export import export_saved_model

        warmup = frames["test"] if not streamed else next(_head(paths["test"], train_config.warmup_rows))
        export_saved_model(trained, out_dir / EXPORT_DIR, warmup.head(train_config.warmup_rows))
    else:
        logger.warning("Backend %s: SavedModel export skipped (needs TensorFlow)", keras.backend.backend())
    logger.info("test_auc=%.4f test_logloss=%.4f", metrics["test_auc"], metrics["test_logloss"])
    return metrics


def _tower_epochs(history: dict[str, list[float]]) -> dict[str, int]:
    """`like_tower_epochs_trained` and `like_tower_best_epoch` when the run trained a like tower, else nothing."""
    val_auc = history.get(f"{LIKE_TOWER}_val_auc")
    if not val_auc:
        return {}
    return {f"{LIKE_TOWER}_epochs_trained": len(val_auc), f"{LIKE_TOWER}_best_epoch": int(np.nanargmax(val_auc)) + 1}


def _rows(path: str | Path, frame: pd.DataFrame | None) -> int:
    import pyarrow.parquet as pq

    return len(frame) if frame is not None else pq.ParquetFile(path).metadata.num_rows


def _columns(path: str | Path, frame: pd.DataFrame | None, *names: str) -> tuple[np.ndarray, ...]:
    """Columns of a split as arrays: from its frame when loaded, else read alone from its parquet file."""
    if frame is None:
        frame = pd.read_parquet(path, columns=list(names))
    return tuple(frame[name].to_numpy() for name in names)


def _rated_movies(path: str | Path, frame: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """The movie and the liked flag (`objectives.liked`) of each rated row of a split."""
    import pyarrow.parquet as pq

    if frame is None:
        names = pq.read_schema(path).names
        frame = pd.read_parquet(path, columns=[c for c in (spec.MOVIE_KEY, spec.LABEL, spec.PICKED) if c in names])
    target = training_target(frame)
    rated = target >= 0
    return frame[spec.MOVIE_KEY].to_numpy()[rated], liked(target[rated])


def _head(path: str | Path, rows: int):
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=max(rows, 1)):
        yield batch.to_pandas()


def _json_safe(values: dict) -> dict:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
