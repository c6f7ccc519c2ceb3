"""The serving tests' SavedModels: versions of `dags.ops.bench.sample_model`, and two that must fail to serve.

TensorFlow is imported inside `build_exports`, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dags.ops.bench.sample_model import input_specs, sample_columns, save_sample_model
from tests.serving.helpers import MODEL_NAME


@dataclass(frozen=True)
class Exports:
    """Exported fixture SavedModels, and a way to call one directly."""

    good: dict[float, Path]  # bias -> export folder (with two warm-up records)
    bad_warmup: Path  # a valid SavedModel whose warm-up request sends `age` as a string
    corrupt: Path  # `saved_model.pb` holds garbage
    reference: Callable[[Path, dict[str, np.ndarray]], np.ndarray]


def build_exports(root: Path) -> Exports:
    """Save the fixture SavedModels under `root`: three good versions, a bad warm-up, a corrupt one."""
    import tensorflow as tf

    warmup = sample_columns(3, seed=99)
    good = {bias: save_sample_model(root / f"bias_{bias}", bias, warmup, MODEL_NAME) for bias in (0.0, 1.0, 2.0)}
    bad_warmup = save_sample_model(
        root / "bad_warmup", 3.0, {**warmup, "age": np.array(["x", "y", "z"], dtype=object)}, MODEL_NAME
    )
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00 this is not a SavedModel \xff" * 10)
    (corrupt / "variables").mkdir()

    specs = input_specs()
    loaded: dict[Path, object] = {}

    def reference(export_dir: Path, columns: dict[str, np.ndarray]) -> np.ndarray:
        if export_dir not in loaded:
            loaded[export_dir] = tf.saved_model.load(str(export_dir))
        function = loaded[export_dir].signatures["serving_default"]
        tensors = {name: tf.constant(values, dtype=specs[name].dtype) for name, values in columns.items()}
        return function(**tensors)["probability"].numpy()

    return Exports(good, bad_warmup, corrupt, reference)
