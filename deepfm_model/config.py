"""Typed, frozen configuration of the DeepFM model, of its training run, and of the training kernels.

The model and training configurations are passed explicitly into the factories (`build_model(config)`,
`run_training(..., model_config, train_config)`) and read neither flags nor the environment. The kernels'
settings say how this machine builds and loads them, and are read from the environment (`KernelSettings.from_env`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTI_VALUE_COMBINERS = ("mean", "sum")  # how the value embeddings of a multi-valued field may combine


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and preprocessing of DeepFM."""

    embedding_dim: int = 8  # size of the one embedding vector per feature value, shared by FM and MLP
    mlp_units: tuple[int, ...] = (256, 128)  # hidden layer widths of the deep part, input side first
    activation: str = "relu"  # activation of the hidden layers of the deep part
    dropout: float = 0.3  # dropout rate after each hidden layer of the deep part
    batch_norm: bool = False  # batch normalisation before each hidden activation of the deep part
    l2_embedding: float = 0.0  # L2 penalty on the whole embedding table; > 0 makes its updates dense (slow)
    l2_dense: float = 0.0  # L2 penalty on the kernels of the deep part
    embedding_init_stddev: float = 0.01  # stddev of the normal initialiser of the embedding table
    multi_value_max_len: int = 10  # values kept per multi-valued field (genres, recent movies); the rest dropped
    multi_value_combiner: str = "mean"  # how a multi-valued field's value embeddings combine: "mean" or "sum"
    use_fm: bool = True  # include the FM part (first order + pairwise term); False: the DNN-only ablation
    use_dnn: bool = True  # include the deep part; False: the FM-only ablation (a factorisation machine)
    vocab_min_count: int = 2  # values seen fewer times in the train split share the out-of-vocabulary row
    # Two heads over the shared embeddings and FM: `pick` (rated among all) and `like` (liked given rated),
    # served as `probability`, ranking by odds(pick) * like (`model.py`, `objectives.py`); False: one head.
    pick_head: bool = True
    # True: the pick head's logit starts from the log of the movie's recent share of positive ratings (a fixed
    # offset), so DeepFM learns how the user's picks depart from what is popular now. Off by default: under the
    # odds ranking it lowered the demo run's full-catalogue NDCG@10 (deepfm_model/README.md, the ablation).
    pick_prior: bool = False
    # With the two heads: the `like` output is a one-head DeepFM of its own (own embeddings), trained on the rated
    # rows alone with its own early stopping; `probability` stays the two heads' (`model.with_like_tower`).
    # False: the like head is the `like` output (the ablation). Ignored with one head.
    like_tower: bool = True

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ValueError(f"`embedding_dim` must be positive. Received: `embedding_dim={self.embedding_dim}`")
        if any(u <= 0 for u in self.mlp_units):
            raise ValueError(f"`mlp_units` must all be positive. Received: `mlp_units={self.mlp_units}`")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: `dropout={self.dropout}`")
        if self.multi_value_max_len <= 0:
            raise ValueError(
                f"`multi_value_max_len` must be positive. Received: `multi_value_max_len={self.multi_value_max_len}`"
            )
        if self.multi_value_combiner not in MULTI_VALUE_COMBINERS:
            raise ValueError(
                f"`multi_value_combiner` must be one of {MULTI_VALUE_COMBINERS}. "
                f"Received: `multi_value_combiner={self.multi_value_combiner!r}`"
            )
        if self.pick_head and not (self.use_fm and self.use_dnn):
            raise ValueError(
                "`pick_head` needs both the FM and the deep part. "
                f"Received: `use_fm={self.use_fm}, use_dnn={self.use_dnn}`"
            )
        if not (self.use_fm or self.use_dnn):
            raise ValueError(
                "At least one of `use_fm`, `use_dnn` must be True. Received: `use_fm=False, use_dnn=False`"
            )
        if self.vocab_min_count < 1:
            raise ValueError(f"`vocab_min_count` must be >= 1. Received: `vocab_min_count={self.vocab_min_count}`")
        object.__setattr__(self, "mlp_units", tuple(int(u) for u in self.mlp_units))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise."""
        return _from_dict(cls, values)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of one training run."""

    batch_size: int = 1024  # global batch size (split across replicas when several GPUs are used)
    epochs: int = 10  # upper bound on epochs; early stopping usually ends sooner
    learning_rate: float = 1e-3  # initial Adam learning rate (3e-4 stopped early on the sampled rows: README)
    seed: int = 42  # seeds Python, NumPy and the backend (keras.utils.set_random_seed) and the shuffling
    early_stopping_patience: int = 2  # epochs without a better validation AUC before stopping (best weights kept)
    reduce_lr_patience: int = 1  # epochs without a better validation AUC before the learning rate is cut
    reduce_lr_factor: float = 0.5  # factor applied to the learning rate on a plateau
    min_learning_rate: float = 1e-5  # floor of the learning rate schedule
    shuffle_buffer: int = 200_000  # rows in the tf.data shuffle buffer (>= train rows gives a full shuffle)
    predict_batch_size: int = 8192  # batch size for prediction and evaluation
    verbose: int = 1  # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    distribute: bool = True  # use a tf.distribute.MirroredStrategy over local GPUs when any are present
    warmup_rows: int = 5  # rows written as TF Serving warm-up requests next to the export
    sparse_embedding_updates: bool = True  # SparseAdam: Adam row-wise on the looked-up rows (TF backend, no XLA)
    jit_compile: bool | None = None  # XLA-compile the train step; None lets Keras decide (JAX: yes, TF on CPU: no)
    steps_per_execution: int = 8  # train steps per compiled call: fewer Python round trips (~2 ms a step on CPU)
    # The MLP computes in float16 (GPU) or bfloat16 (CPU); weights, embedding lookups, the FM and the output stay
    # float32 (`build_model`). On a CPU with avx512_bf16 the train step is ~1.5x faster; validation AUC ~0.001-0.002 lower
    # (MovieLens-shaped synthetic data): off by default, `make bench-train` measures both.
    mixed_precision: bool = False
    like_weight: float = 3.0  # weight of the like head's loss beside the pick head's (two-head models; README)
    stream_from_parquet: bool = False  # read the train split in record batches instead of loading it whole
    parquet_batch_rows: int = 65_536  # rows per parquet record batch when streaming
    # Streamed, the train split's metrics (AUC, logloss, report curves) are those of a seeded sample of about this
    # many rows (`train_metrics_sample` in metrics.json is its share); the validation and test splits are whole.
    train_metrics_rows: int = 2_000_000

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "predict_batch_size", "steps_per_execution", "parquet_batch_rows",
                     "train_metrics_rows"):  # fmt: skip
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be positive. Received: `{name}={value}`")
        if self.like_weight < 0:
            raise ValueError(f"`like_weight` must not be negative. Received: `like_weight={self.like_weight}`")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be positive. Received: `learning_rate={self.learning_rate}`")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise."""
        return _from_dict(cls, values)


@dataclass(frozen=True)
class KernelSettings:
    """How the compiled training kernels (`deepfm_model.kernels`) are built and whether they are used.

    Attributes:
        enabled: `False` (`DEEPFM_KERNELS=0`) runs the TensorFlow-op paths instead.
        directory: where the built libraries are kept (`DEEPFM_KERNEL_DIR`); `None`: `_build/` beside the sources.
        compiler: the C++ compiler (`CXX`).
    """

    enabled: bool = True
    directory: Path | None = None
    compiler: str = "c++"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KernelSettings:
        env = os.environ if env is None else env
        directory = env.get("DEEPFM_KERNEL_DIR")
        return cls(
            env.get("DEEPFM_KERNELS", "1") != "0", Path(directory) if directory else None, env.get("CXX") or "c++"
        )


def _to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} fields {unknown}. Known fields: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
