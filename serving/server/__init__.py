"""A TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime.

No registry this project can reach ships `tensorflow_model_server`, so laptops and CI serve with this instead
(DESIGN.md, "TF Serving locally"). It speaks TF Serving's gRPC API with the official protos and follows its
documented behaviour for one model:

- Watches `<base_path>/<model_name>/` every `poll_interval_s`; integer-named folders are versions.
- Version policy: latest N (the newest `num_versions` versions on disk are loaded; the default) or specific
  (exactly the versions listed, as TF Serving's `specific { versions: ... }`).
- With `model_config_file`, the file is read again every `model_config_poll_wait_s` (TF Serving's
  `--model_config_file_poll_wait_seconds`; 0: never after start; unset: on every folder poll): a changed version
  policy or label map takes effect without a restart. New labels are applied only when every version they name is AVAILABLE once the pass is done (TF
  Serving refuses to label a version that is not); the new versions, the labels and the unloads take effect in
  one step, so a request pinned to a label never finds its version gone; a refused label map is logged and the
  old one kept.
- Load before unload: a new version is loaded and warmed up before older ones are dropped; a request that
  already holds a version finishes on it, so no request fails during a switch.
- A version that fails to load (or to warm up) is reported END with its error and never retried; the versions
  already serving stay AVAILABLE.
- Warm-up: records of `assets.extra/tf_serving_warmup_requests` (a TFRecord of `PredictionLog`, at most
  1000) are replayed before the version becomes AVAILABLE.
- Version labels from the configuration (`{"stable": 3}`).
- Status codes: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an unknown label, a missing or
  extra input, a wrong dtype or shape (the message names the input), a ragged or empty batch, too many rows
  (`max_batch_rows`), too many bytes (`max_request_bytes`) and an unknown `output_filter` entry,
  FAILED_PRECONDITION for an unknown signature; a message over the gRPC limit (`max_message_bytes`) is refused
  by gRPC itself with RESOURCE_EXHAUSTED.
- grpc.health.v1 health: SERVING while some version is available.
- REST on `rest_port` (TF Serving's `--rest_api_port`; 0 for none), same host: model status as TF Serving's
  `GET /v1/models/<name>[/versions/<v>|/labels/<label>]` answers it, and Prometheus metrics at the path a
  `--monitoring_config_file` enables.
- ModelService.HandleReloadConfigRequest takes a ModelServerConfig naming this server's model: its base path,
  version policy and labels take effect as on a poll (a new base path is loaded before the old one is let
  go; a version not on disk yet is awaited, the versions in force serving meanwhile; labels that would not
  name an AVAILABLE version refuse the reload with FAILED_PRECONDITION and change nothing; see
  `ModelManager.reload_config`); the outcome is the response's StatusProto. Other model names are UNIMPLEMENTED
  (one model per server), and a server following `model_config_file` refuses with FAILED_PRECONDITION.

Modules, from the edge inwards:
- `__main__`: `python -m serving.server` (the flags are `config.build_parser`'s).
- `config`: `ServerConfig`, and the command line that makes one.
- `lifecycle`: `ModelServer`, from `start()` to `stop()`: gRPC server, health, REST, the polling thread.
- `rest`: `RestServer`, TF Serving's REST model status and the Prometheus metrics path.
- `monitoring`: reading TF Serving's `--monitoring_config_file`.
- `services`: the PredictionService and ModelService handlers, and their Prometheus metrics.
- `versions`: `ModelManager`, the version state machine (load, warm up, serve, label, unload).
- `warmup`: replaying a version's warm-up requests.
- `codecs`: `run_predict`, TF Serving's request checks, and the TensorProto <-> tensor codecs.
- `signatures`: `load_version`, a loaded version and how its signatures are called.

    python -m serving.server --base-path models --model-name deepfm --port 8500
    python -m serving.server --model-config-file models/models.config   # policy and labels from the file
    python -m serving.server --port=8500 --rest_api_port=8501 --model_config_file=/models/models.config \
        --model_config_file_poll_wait_seconds=30 --monitoring_config_file=/config/monitoring.config  # TF Serving's
"""

from serving.server.codecs import DEFAULT_SIGNATURE, RequestError, run_predict
from serving.server.config import ServerConfig
from serving.server.lifecycle import ModelServer
from serving.server.signatures import InputSpec, LoadedVersion, ServingSignature, load_version
from serving.server.versions import ModelManager
from serving.server.warmup import MAX_WARMUP_RECORDS, WARMUP_FILE, run_warmup

__all__ = [
    "DEFAULT_SIGNATURE",
    "MAX_WARMUP_RECORDS",
    "WARMUP_FILE",
    "InputSpec",
    "LoadedVersion",
    "ModelManager",
    "ModelServer",
    "RequestError",
    "ServerConfig",
    "ServingSignature",
    "load_version",
    "run_predict",
    "run_warmup",
]
