"""Raw features -> DeepFM inputs, fitted on the train split and run in tf.data and in the exported graph.

Per feature kind (`features.Kind`):
- categorical: `StringLookup` over the train vocabulary with one out-of-vocabulary bucket at index 0
  (values seen fewer than `ModelConfig.vocab_min_count` times share it), or `Hashing` into
  `Feature.hash_bins` bins when that is positive;
- multi-valued: the string is split on `features.MULTI_VALUE_SEPARATOR`, looked up with a `StringLookup`
  whose index 0 is padding (the empty string) and 1 the OOV bucket, and padded or truncated to
  `ModelConfig.multi_value_max_len` slots; a feature with `Feature.vocabulary_of` takes that categorical
  feature's vocabulary (so index k + 1 here is index k there, and the model shares their embedding rows);
- the pick head's prior (two-head models): `log((share + PRIOR_SMOOTHING) / 1000)` of the raw
  `features.PICK_PRIOR`, the log of the movie's recent share of positive ratings;
- numeric: `log1p` for `Feature.log_scale` features, then `(x - mean) / std` with the train split's
  statistics; a missing value (NaN) becomes 0, the train mean.

The fitted state is plain JSON (`preprocessing.json` next to `model.keras`). The transform uses TensorFlow ops
and Keras preprocessing layers, which run inside tf.data under every Keras backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from deepfm_model.config import ModelConfig
from deepfm_model.model import CATEGORICAL_INPUT, MULTI_CATEGORICAL_INPUT, NUMERIC_INPUT, PRIOR_INPUT
from deepfm_model.objectives import rated_rows, training_target
from deepfm_model.spec import features as spec
from deepfm_model.spec.files import write_json

PRIOR_SMOOTHING = 0.01  # per 1000 added to the prior's share: a movie nobody rated lately is unlikely, not impossible


@dataclass(frozen=True)
class NumericStats:
    """Normalisation of one numeric feature: `(f(x) - mean) / std` with `f = log1p` when `log_scale`."""

    mean: float  # mean of f(x) over the train split
    std: float  # standard deviation of f(x) over the train split (1.0 when it is 0)
    log_scale: bool  # apply log1p (to max(x, 0)) before normalising


@dataclass(frozen=True)
class PreprocessingState:
    """Everything fitted on the train split; JSON-serialisable."""

    categorical: dict[str, list[str]]  # categorical feature -> vocabulary (empty when hashed)
    hash_bins: dict[str, int]  # categorical feature -> hash bins (0 when a vocabulary is used)
    multi_categorical: dict[str, list[str]]  # multi-valued feature -> vocabulary of single values
    numeric: dict[str, NumericStats]  # numeric feature -> statistics
    multi_value_max_len: int  # slots per multi-valued field
    prior: str | None = None  # numeric feature whose log is the pick head's prior (`PRIOR_INPUT`); None: no prior
    feature_names: list[str] = field(default_factory=lambda: list(spec.FEATURE_NAMES))  # inputs, spec order


def check_frame(frame: pd.DataFrame, feature_names: tuple[str, ...] | list[str] = spec.FEATURE_NAMES) -> None:
    """Raise if `frame` lacks a feature column or holds one with the wrong dtype; the error names the feature.

    Categorical and multi-valued features must be strings (object or string dtype, missing allowed);
    numeric features must have a numeric (non-boolean) dtype, NaN allowed.
    """
    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise KeyError(f"Frame lacks feature columns {missing}. Received columns: {list(frame.columns)}")
    for name in feature_names:
        feature = spec.FEATURES_BY_NAME[name]
        column = frame[name]
        if feature.kind is spec.Kind.NUMERIC:
            if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                raise TypeError(f"Feature `{name}` must be numeric (float32). Received dtype: `{column.dtype}`")
        elif not (
            pd.api.types.is_string_dtype(column) or (column.dtype == object and column.dropna().map(type).eq(str).all())
        ):
            raise TypeError(f"Feature `{name}` must hold strings. Received dtype: `{column.dtype}`")


def frame_to_raw(frame: pd.DataFrame, feature_names: tuple[str, ...] | list[str] = spec.FEATURE_NAMES) -> dict:
    """Feature columns as NumPy arrays in the serving form: str (missing -> "") or float32 (missing -> NaN)."""
    check_frame(frame, feature_names)
    raw = {}
    for name in feature_names:
        if spec.FEATURES_BY_NAME[name].kind is spec.Kind.NUMERIC:
            raw[name] = frame[name].to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            raw[name] = frame[name].fillna("").astype(str).to_numpy(dtype=object)
    return raw


def _vocabulary(counts: pd.Series, min_count: int) -> list[str]:
    """Values (index of `counts`, value -> occurrences) seen at least `min_count` times; "" (no value) left out."""
    counts = counts[(counts.index != "") & (counts >= min_count)]
    # Most frequent first, ties by value: the same data always gives the same indices.
    return sorted(counts.index.astype(str), key=lambda v: (-int(counts[v]), v))


class PreprocessingFit:
    """Fits a `PreprocessingState` on frames added one at a time, exactly as on their concatenation.

    Vocabularies come from value counts summed over the frames; numeric statistics from per-frame means and sums
    of squared deviations, combined pairwise (Chan et al.). One `add` of the whole train split is what
    `fit_preprocessing` does; `fit_preprocessing_parquet` adds a split record batch by record batch, so memory
    holds one batch and the counts (which grow with distinct values, not rows).

    Args:
        config: `vocab_min_count` and `multi_value_max_len` are used.
    """

    COMPACT_EVERY = 16  # per-frame value counts kept before they are summed into one

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._counts: dict[str, list[pd.Series]] = {
            f.name: []
            for f in spec.FEATURES
            if f.kind is not spec.Kind.NUMERIC and f.hash_bins <= 0 and f.vocabulary_of is None
        }
        self._moments: dict[str, tuple[int, float, float]] = {}  # name -> (n, mean, sum of squared deviations)

    def add(self, frame: pd.DataFrame) -> None:
        """Count and summarise the feature columns of `frame` (checked by `frame_to_raw`)."""
        raw = frame_to_raw(frame)
        for name, parts in self._counts.items():
            parts.append(pd.Series(raw[name]).value_counts())
            if len(parts) >= self.COMPACT_EVERY:
                parts[:] = [_summed(parts)]
        for feature in spec.FEATURES:
            if feature.kind is not spec.Kind.NUMERIC:
                continue
            x = raw[feature.name].astype(np.float64)
            x = x[np.isfinite(x)]
            if feature.log_scale:
                x = np.log1p(np.maximum(x, 0.0))
            if x.size:
                self._moments[feature.name] = _combined(self._moments.get(feature.name), x)

    def state(self) -> PreprocessingState:
        """The fitted state of everything added so far."""
        categorical, hash_bins, multi, numeric = {}, {}, {}, {}
        min_count = self.config.vocab_min_count
        for feature in spec.FEATURES:
            name = feature.name
            if feature.kind is spec.Kind.CATEGORICAL:
                hash_bins[name] = feature.hash_bins
                categorical[name] = [] if feature.hash_bins > 0 else _vocabulary(_summed(self._counts[name]), min_count)
            elif feature.kind is spec.Kind.MULTI_CATEGORICAL and feature.vocabulary_of is not None:
                continue  # after the loop: the vocabulary of the feature it names
            elif feature.kind is spec.Kind.MULTI_CATEGORICAL:
                strings = _summed(self._counts[name])
                tokens = pd.DataFrame(
                    {"token": strings.index.str.split(spec.MULTI_VALUE_SEPARATOR), "n": strings.values}
                )
                singles = tokens.explode("token").groupby("token", sort=False)["n"].sum()
                multi[name] = _vocabulary(singles, min_count)
            else:
                n, mean, squares = self._moments.get(name, (0, 0.0, 0.0))
                std = float(np.sqrt(squares / n)) if n else 1.0
                numeric[name] = NumericStats(mean=float(mean), std=std if std > 0 else 1.0, log_scale=feature.log_scale)
        for feature in spec.FEATURES:
            if feature.vocabulary_of is not None:
                if hash_bins.get(feature.vocabulary_of, 0) > 0:
                    raise ValueError(
                        f"`{feature.name}` takes the vocabulary of `{feature.vocabulary_of}`, which is hashed"
                    )
                multi[feature.name] = categorical[feature.vocabulary_of]
        prior = spec.PICK_PRIOR if self.config.pick_head and self.config.pick_prior else None
        return PreprocessingState(categorical, hash_bins, multi, numeric, self.config.multi_value_max_len, prior)


def _summed(parts: list[pd.Series]) -> pd.Series:
    if not parts:
        return pd.Series(dtype="int64")
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts).groupby(level=0, sort=False).sum()


def _combined(moments: tuple[int, float, float] | None, x: np.ndarray) -> tuple[int, float, float]:
    """(n, mean, sum of squared deviations) of the values behind `moments` and `x` together."""
    mean = x.mean()
    squares = np.sum((x - mean) * (x - mean))
    if moments is None:
        return x.size, mean, squares
    n_a, mean_a, squares_a = moments
    n = n_a + x.size
    delta = mean - mean_a
    return n, mean_a + delta * x.size / n, squares_a + squares + delta * delta * n_a * x.size / n


def fit_preprocessing(train: pd.DataFrame, config: ModelConfig) -> PreprocessingState:
    """Fit vocabularies and numeric statistics on the train split only."""
    fit = PreprocessingFit(config)
    fit.add(train)
    return fit.state()


def fit_preprocessing_parquet(
    path: str | Path, config: ModelConfig, record_batch_rows: int = 65_536
) -> PreprocessingState:
    """`fit_preprocessing` of a parquet split read in record batches: memory holds one batch and the counts."""
    import pyarrow.parquet as pq

    fit = PreprocessingFit(config)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=record_batch_rows, columns=list(spec.FEATURE_NAMES)):
        fit.add(batch.to_pandas())
    return fit.state()


class FeaturePreprocessor:
    """Applies a `PreprocessingState` to raw feature tensors (TensorFlow ops; tf.data and serving graph).

    Args:
        state: the fitted state.
    """

    def __init__(self, state: PreprocessingState) -> None:
        self.state = state
        self.categorical_names = [f.name for f in spec.FEATURES if f.kind is spec.Kind.CATEGORICAL]
        self.multi_names = [f.name for f in spec.FEATURES if f.kind is spec.Kind.MULTI_CATEGORICAL]
        self.numeric_names = [f.name for f in spec.FEATURES if f.kind is spec.Kind.NUMERIC]
        self.lookups: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        for name in self.categorical_names:
            bins = state.hash_bins.get(name, 0)
            if bins > 0:
                self.lookups[name] = keras.layers.Hashing(num_bins=bins, name=f"{name}_hashing")
                self._sizes[name] = bins
            else:
                # A placeholder keeps an empty vocabulary valid; index 0 (OOV) is then the only one used.
                vocabulary = state.categorical[name] or ["<none>"]
                self.lookups[name] = keras.layers.StringLookup(
                    vocabulary=vocabulary, num_oov_indices=1, mask_token=None, name=f"{name}_lookup"
                )
                self._sizes[name] = len(vocabulary) + 1  # OOV at 0
        for name in self.multi_names:
            vocabulary = state.multi_categorical[name] or ["<none>"]
            self.lookups[name] = keras.layers.StringLookup(
                vocabulary=vocabulary, num_oov_indices=1, mask_token="", name=f"{name}_lookup"
            )
            self._sizes[name] = len(vocabulary) + 2  # padding "" at 0, OOV at 1

    @property
    def categorical_sizes(self) -> list[int]:
        """Rows of the embedding table per categorical field (OOV included)."""
        return [self._sizes[n] for n in self.categorical_names]

    @property
    def multi_categorical_sizes(self) -> list[int]:
        """Rows of the embedding table per multi-valued field (padding and OOV included)."""
        return [self._sizes[n] for n in self.multi_names]

    @property
    def multi_shared_with(self) -> list[int]:
        """Per multi-valued field, the categorical field (index) whose vocabulary and embedding rows it shares, or -1."""
        vocabulary_of = [spec.FEATURES_BY_NAME[n].vocabulary_of for n in self.multi_names]
        return [self.categorical_names.index(v) if v is not None else -1 for v in vocabulary_of]

    @property
    def num_numeric(self) -> int:
        return len(self.numeric_names)

    def output_signature(self) -> dict[str, tf.TensorSpec]:
        """The `TensorSpec` of each core model input that `__call__` returns, batch dimension `None`."""
        signature = {}
        if self.categorical_names:
            signature[CATEGORICAL_INPUT] = tf.TensorSpec([None, len(self.categorical_names)], tf.int32)
        if self.multi_names:
            width = self.state.multi_value_max_len
            signature[MULTI_CATEGORICAL_INPUT] = tf.TensorSpec([None, len(self.multi_names), width], tf.int32)
        if self.numeric_names:
            signature[NUMERIC_INPUT] = tf.TensorSpec([None, len(self.numeric_names)], tf.float32)
        if self.state.prior:
            signature[PRIOR_INPUT] = tf.TensorSpec([None, 1], tf.float32)
        return signature

    def __call__(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Transform raw `(batch,)` tensors keyed by feature name into the core model's inputs."""
        out: dict[str, tf.Tensor] = {}
        if self.categorical_names:
            columns = [tf.cast(self.lookups[n](tf.convert_to_tensor(raw[n], tf.string)), tf.int32)
                       for n in self.categorical_names]  # fmt: skip
            out[CATEGORICAL_INPUT] = tf.stack(columns, axis=1)  # (batch, n_cat)
        if self.multi_names:
            width = self.state.multi_value_max_len
            columns = []
            for n in self.multi_names:
                tokens = tf.strings.split(tf.convert_to_tensor(raw[n], tf.string), spec.MULTI_VALUE_SEPARATOR)
                ids = tf.cast(tokens.with_flat_values(self.lookups[n](tokens.flat_values)), tf.int32)
                columns.append(ids.to_tensor(default_value=0, shape=[None, width]))  # (batch, width)
            out[MULTI_CATEGORICAL_INPUT] = tf.stack(columns, axis=1)  # (batch, n_multi, width)
        if self.numeric_names:
            columns = []
            for n in self.numeric_names:
                stats = self.state.numeric[n]
                x = tf.cast(raw[n], tf.float32)  # (batch,)
                if stats.log_scale:
                    x = tf.math.log1p(tf.maximum(x, 0.0))
                x = (x - stats.mean) / stats.std
                columns.append(tf.where(tf.math.is_finite(x), x, tf.zeros_like(x)))
            out[NUMERIC_INPUT] = tf.stack(columns, axis=1)  # (batch, n_numeric)
        if self.state.prior:
            share = tf.cast(raw[self.state.prior], tf.float32)  # per 1000, raw
            share = tf.where(tf.math.is_finite(share), tf.maximum(share, 0.0), tf.zeros_like(share))
            out[PRIOR_INPUT] = tf.math.log((share + PRIOR_SMOOTHING) / 1000.0)[:, None]  # (batch, 1)
        return out

    def tracked_layers(self) -> list:
        """Lookup layers whose tables an exported graph must track (built by one call on an empty row)."""
        if not all(layer.built for layer in self.lookups.values()):
            self({f.name: tf.constant([""] if f.kind is not spec.Kind.NUMERIC else [0.0]) for f in spec.FEATURES})
        return list(self.lookups.values())

    def save(self, path: str | Path) -> None:
        """Write the state as JSON."""
        write_json(path, asdict(self.state))

    @classmethod
    def load(cls, path: str | Path) -> FeaturePreprocessor:
        """Read a state written by `save`."""
        values = json.loads(Path(path).read_text())
        values["numeric"] = {k: NumericStats(**v) for k, v in values["numeric"].items()}
        return cls(PreprocessingState(**values))


def make_dataset(
    frame: pd.DataFrame,
    preprocessor: FeaturePreprocessor,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of `(preprocessed inputs, float32 targets (batch, 1))`.

    The target is `objectives.training_target`: the label on rated rows, -1 on sampled ones.

    Args:
        frame: rows with every feature column and `label` (and `picked` when it holds sampled rows).
        preprocessor: fitted preprocessing.
        batch_size: rows per batch.
        shuffle_buffer: shuffle with this buffer when positive (reshuffled every epoch).
        seed: shuffle seed.
    """
    raw = frame_to_raw(frame)
    if spec.LABEL not in frame.columns:
        raise KeyError(f"Frame lacks the `{spec.LABEL}` column. Received columns: {list(frame.columns)}")
    target = training_target(frame).reshape(-1, 1)
    dataset = tf.data.Dataset.from_tensor_slices((raw, target))
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_parquet_dataset(
    path: str | Path,
    preprocessor: FeaturePreprocessor,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    record_batch_rows: int = 65_536,
    rated_only: bool = False,
) -> tf.data.Dataset:
    """Like `make_dataset`, but streamed: the parquet file is read in record batches.

    Memory holds one record batch plus the shuffle buffer, so a split larger than memory trains. Each epoch
    re-reads the file. Each record batch read is preprocessed whole (one call of `preprocessor` on it), so the
    buffer holds the model's integer and float inputs, not strings. The shuffle runs in NumPy over a buffer
    that slides along the file: each record batch read joins the rows held back, a random permutation of them
    is emitted in whole batches and `shuffle_buffer` rows stay for the next round (every row once an epoch; a
    new order each epoch; a full shuffle when the buffer holds every row). A per-row tf.data shuffle (`unbatch`,
    `shuffle`, `batch`) held training on 2 cores to the ~40k rows/s it could deliver; preprocessing each
    emitted batch of strings (rather than each record batch) to ~125k rows/s.

    Args:
        path: parquet file with every feature column and `label` (and `picked` when it holds sampled rows).
        preprocessor: fitted preprocessing.
        batch_size: rows per batch.
        shuffle_buffer: shuffle with this buffer when positive; file order when 0.
        seed: shuffle seed (with the epoch number, it seeds each epoch's order).
        record_batch_rows: rows per parquet record batch read.
        rated_only: only the rated rows (`objectives.rated_rows`), for the like tower.
    """
    import itertools

    import pyarrow.parquet as pq

    columns = [*spec.FEATURE_NAMES, spec.LABEL]
    names = pq.read_schema(path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise KeyError(f"Parquet file {str(path)!r} lacks columns {missing}")
    columns += [spec.PICKED] if spec.PICKED in names else []
    epochs = itertools.count()

    def batches():
        rng = np.random.default_rng(None if seed is None else [seed, next(epochs)])
        held: dict[str, np.ndarray] | None = None
        for record in pq.ParquetFile(path).iter_batches(batch_size=record_batch_rows, columns=columns):
            frame = record.to_pandas()
            if rated_only:
                frame = rated_rows(frame)
                if frame.empty:
                    continue
            inputs = {name: tensor.numpy() for name, tensor in preprocessor(frame_to_raw(frame)).items()}
            rows = {**inputs, spec.LABEL: training_target(frame)}
            held = rows if held is None else {k: np.concatenate([held[k], rows[k]]) for k in rows}
            size = len(held[spec.LABEL])
            order = rng.permutation(size) if shuffle_buffer > 0 else np.arange(size)
            ready = (max(size - shuffle_buffer, 0) // batch_size) * batch_size
            yield from _slices(held, order[:ready], batch_size)
            held = {k: v[order[ready:]] for k, v in held.items()}
        if held is not None:
            yield from _slices(held, rng.permutation(len(held[spec.LABEL])) if shuffle_buffer > 0 else
                               np.arange(len(held[spec.LABEL])), batch_size)  # fmt: skip

    signature = (preprocessor.output_signature(), tf.TensorSpec([None, 1], tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def _slices(rows: dict[str, np.ndarray], order: np.ndarray, batch_size: int):
    """`(features, target (batch, 1))` batches of `rows` taken in `order`."""
    for start in range(0, len(order), batch_size):
        take = order[start : start + batch_size]
        features = {name: values[take] for name, values in rows.items() if name != spec.LABEL}
        yield features, rows[spec.LABEL][take].reshape(-1, 1)


def load_split(path: str | Path) -> pd.DataFrame:
    """Read one parquet split and check it has every feature and the label."""
    frame = pd.read_parquet(path)
    check_frame(frame)
    if spec.LABEL not in frame.columns:
        raise KeyError(f"Split {str(path)!r} lacks the `{spec.LABEL}` column. Received: {list(frame.columns)}")
    return frame
