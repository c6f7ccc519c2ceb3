"""Raw features -> DeepFM inputs, fitted on the train split and run in tf.data and in the exported graph.

Per feature kind (`features.Kind`):
- categorical: `StringLookup` over the train vocabulary with one out-of-vocabulary bucket at index 0
  (values seen fewer than `ModelConfig.vocab_min_count` times share it), or `Hashing` into
  `Feature.hash_bins` bins when that is positive;
- multi-valued: the string is split on `features.MULTI_VALUE_SEPARATOR`, looked up with a `StringLookup`
  whose index 0 is padding (the empty string) and 1 the OOV bucket, and padded or truncated to
  `ModelConfig.multi_value_max_len` slots;
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
from deepfm_model.model import CATEGORICAL_INPUT, MULTI_CATEGORICAL_INPUT, NUMERIC_INPUT
from deepfm_model.spec import features as spec
from deepfm_model.spec.files import write_json

PREPROCESSING_FILE = "preprocessing.json"


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


def _vocabulary(values: pd.Series, min_count: int) -> list[str]:
    counts = values[values != ""].value_counts()
    counts = counts[counts >= min_count]
    # Most frequent first, ties by value: the same data always gives the same indices.
    return sorted(counts.index.astype(str), key=lambda v: (-int(counts[v]), v))


def fit_preprocessing(train: pd.DataFrame, config: ModelConfig) -> PreprocessingState:
    """Fit vocabularies and numeric statistics on the train split only."""
    raw = frame_to_raw(train)
    categorical, hash_bins, multi, numeric = {}, {}, {}, {}
    for feature in spec.FEATURES:
        values = raw[feature.name]
        if feature.kind is spec.Kind.CATEGORICAL:
            hash_bins[feature.name] = feature.hash_bins
            categorical[feature.name] = (
                [] if feature.hash_bins > 0 else _vocabulary(pd.Series(values), config.vocab_min_count)
            )
        elif feature.kind is spec.Kind.MULTI_CATEGORICAL:
            singles = pd.Series(values).str.split(spec.MULTI_VALUE_SEPARATOR).explode()
            multi[feature.name] = _vocabulary(singles, config.vocab_min_count)
        else:
            x = values.astype(np.float64)
            x = x[np.isfinite(x)]
            if feature.log_scale:
                x = np.log1p(np.maximum(x, 0.0))
            mean = float(x.mean()) if x.size else 0.0
            std = float(x.std()) if x.size else 1.0
            numeric[feature.name] = NumericStats(mean=mean, std=std if std > 0 else 1.0, log_scale=feature.log_scale)
    return PreprocessingState(categorical, hash_bins, multi, numeric, config.multi_value_max_len)


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
    def num_numeric(self) -> int:
        return len(self.numeric_names)

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
    labels: bool = True,
    shuffle_buffer: int = 0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of preprocessed inputs (and float32 labels `(batch, 1)` when `labels`).

    Args:
        frame: rows with every feature column (and `label` when `labels`).
        preprocessor: fitted preprocessing.
        batch_size: rows per batch.
        labels: yield `(inputs, label)` pairs instead of inputs alone.
        shuffle_buffer: shuffle with this buffer when positive (reshuffled every epoch).
        seed: shuffle seed.
    """
    raw = frame_to_raw(frame)
    if labels:
        if spec.LABEL not in frame.columns:
            raise KeyError(f"Frame lacks the `{spec.LABEL}` column. Received columns: {list(frame.columns)}")
        target = frame[spec.LABEL].to_numpy(dtype=np.float32).reshape(-1, 1)
        dataset = tf.data.Dataset.from_tensor_slices((raw, target))
    else:
        dataset = tf.data.Dataset.from_tensor_slices(raw)
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if labels:
        dataset = dataset.map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_parquet_dataset(
    path: str | Path,
    preprocessor: FeaturePreprocessor,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    record_batch_rows: int = 65_536,
) -> tf.data.Dataset:
    """Like `make_dataset` with labels, but streamed: the parquet file is read in record batches.

    Memory holds one record batch plus the shuffle buffer, so a split larger than memory trains. Each epoch
    re-reads the file; the shuffle is within the buffer (a full shuffle when it holds every row).

    Args:
        path: parquet file with every feature column and `label`.
        preprocessor: fitted preprocessing.
        batch_size: rows per batch.
        shuffle_buffer: shuffle with this buffer when positive.
        seed: shuffle seed.
        record_batch_rows: rows per parquet record batch read.
    """
    import pyarrow.parquet as pq

    columns = [*spec.FEATURE_NAMES, spec.LABEL]
    missing = [c for c in columns if c not in pq.read_schema(path).names]
    if missing:
        raise KeyError(f"Parquet file {str(path)!r} lacks columns {missing}")

    def record_batches():
        for batch in pq.ParquetFile(path).iter_batches(batch_size=record_batch_rows, columns=columns):
            frame = batch.to_pandas()
            target = frame[spec.LABEL].to_numpy(dtype=np.float32).reshape(-1, 1)
            yield frame_to_raw(frame), target

    raw_spec = {
        f.name: tf.TensorSpec([None], tf.float32 if f.kind is spec.Kind.NUMERIC else tf.string) for f in spec.FEATURES
    }
    dataset = tf.data.Dataset.from_generator(
        record_batches, output_signature=(raw_spec, tf.TensorSpec([None, 1], tf.float32))
    ).unbatch()
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_split(path: str | Path) -> pd.DataFrame:
    """Read one parquet split and check it has every feature and the label."""
    frame = pd.read_parquet(path)
    check_frame(frame)
    if spec.LABEL not in frame.columns:
        raise KeyError(f"Split {str(path)!r} lacks the `{spec.LABEL}` column. Received: {list(frame.columns)}")
    return frame
