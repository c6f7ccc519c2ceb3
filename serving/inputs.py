"""Client inputs checked against the feature spec and converted to the serving signature's columns.

`to_feature_columns` is what `ServingClient.predict` runs before anything is sent: every feature of
`deepfm_model.spec.features.FEATURES` present, nothing else, one value per row, values of the serving dtype
(`serving_dtype`). Integer ids are accepted for categorical features and sent as their decimal strings; lists for
multi-valued features are joined with `MULTI_VALUE_SEPARATOR`. Imports numpy and the feature spec only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepfm_model.spec import features as fs
from serving.errors import InputError


def to_feature_columns(
    inputs: Mapping[str, Sequence[Any] | np.ndarray] | Sequence[Mapping[str, Any]],
) -> dict[str, np.ndarray]:
    """Check inputs against the feature spec and convert them to the serving signature's columns.

    Args:
        inputs: columns (`{"age": [24, 53], ...}`) or rows (`[{"age": 24, ...}, ...]`) of every feature in
            `FEATURES` and nothing else.

    Returns:
        One 1-D array per feature in spec order: `float32` for numeric features, `object` arrays of `str`
        otherwise.

    Raises:
        InputError: a feature is missing, unknown, has the wrong number of values, or a value of the wrong type;
            the message names the feature.
    """
    columns = _as_columns(inputs)
    missing = [name for name in fs.FEATURE_NAMES if name not in columns]
    if missing:
        raise InputError(f"Missing features {missing}; the model takes {list(fs.FEATURE_NAMES)}")
    unknown = sorted(set(columns) - set(fs.FEATURE_NAMES))
    if unknown:
        raise InputError(f"Unknown features {unknown}; the model takes {list(fs.FEATURE_NAMES)}")
    rows = None
    converted = {}
    for feature in fs.FEATURES:
        values = columns[feature.name]
        if isinstance(values, np.ndarray) and values.ndim == 1:
            pass
        elif isinstance(values, (str, bytes, Mapping, np.ndarray)) or not hasattr(values, "__len__"):
            raise InputError(f"Feature `{feature.name}` must be a 1-D sequence, one value per row")
        else:
            values = list(values)
        if rows is None:
            rows = len(values)
        elif len(values) != rows:
            raise InputError(f"Feature `{feature.name}` has {len(values)} values; other features have {rows}")
        converted[feature.name] = _convert_column(feature, values)
    if not rows:
        raise InputError("No rows to score")
    return converted


def _as_columns(inputs) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise InputError(
            f"Inputs must be columns (a mapping) or rows (a sequence of mappings). Received: {type(inputs)}"
        )
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(inputs):
        if not isinstance(row, Mapping):
            raise InputError(f"Row {i} must be a mapping of feature name to value. Received: {type(row)}")
        if i and row.keys() != columns.keys():
            missing = sorted(set(columns) - set(row))
            extra = sorted(set(row) - set(columns))
            raise InputError(f"Row {i} has other features than row 0: missing {missing}, extra {extra}")
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    return columns


def _convert_column(feature: fs.Feature, values) -> np.ndarray:
    if fs.serving_dtype(feature) == "float32":
        array = np.asarray(values)
        if array.dtype.kind in "iuf":
            return array.astype(np.float32)
        for i, value in enumerate(values):
            if value is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise InputError(f"Feature `{feature.name}` is numeric (float32); row {i} holds {value!r}")
        return np.asarray(values, dtype=np.float32)
    converted = np.empty(len(values), dtype=object)
    try:
        "".join(values)  # succeeds only when every value is a `str` already (the common case), checked in C
    except TypeError:
        pass
    else:
        converted[:] = values
        return converted
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif feature.kind is fs.Kind.MULTI_CATEGORICAL and isinstance(value, (list, tuple, np.ndarray)):
            value = fs.MULTI_VALUE_SEPARATOR.join(str(v) for v in value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            value = str(int(value))
        if not isinstance(value, str):
            raise InputError(f"Feature `{feature.name}` is a string feature; row {i} holds {value!r}")
        converted[i] = value
    return converted
