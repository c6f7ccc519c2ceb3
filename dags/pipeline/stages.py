"""The ten stages the nightly DAG's tasks call, in task order, each a function of `(config, ds)`.

| task group | stages (module) |
| --- | --- |
| features | `ingest`, `update_feature_store`, `check_skew`, `build_training_set` (`features`) |
| training | `validate`, `train` (`training`), `evaluate` (`evaluation`) |
| release | `bless`, `push`, `verify_serving` (`release`) |
"""

from dags.pipeline.evaluation import evaluate
from dags.pipeline.features import build_training_set, check_skew, ingest, update_feature_store
from dags.pipeline.release import bless, push, verify_serving
from dags.pipeline.training import train, validate

__all__ = [
    "ingest", "update_feature_store", "check_skew", "build_training_set",
    "validate", "train", "evaluate", "bless", "push", "verify_serving",
]  # fmt: skip
