"""Serving: push exports to the model base path, serve them over TF Serving's gRPC API, score through a thin client.

Modules:
- `push`: atomic, versioned copies of an export under `<base>/<model>/<version>/`; retraction.
- `model_config`: TF Serving's model config file: reading it, and its one writer.
- `labels`: version labels (`stable`, `canary`) and the version policy in the model config; promotion, rollback.
- `wire`: TF Serving's request and response messages, wire-compatible, built without TensorFlow.
- `inputs`: client inputs checked against the feature spec, converted to the signature's columns.
- `errors`: `ServingError` and `InputError`, the client side's exceptions.
- `client`: `ServingClient`, the thin gRPC client (imports neither TensorFlow nor `tensorflow_serving`).
- `server`: a TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime (a package).
- `server_process`: `python -m serving.server` as a child process, waited for until it serves.

Its benchmark (`make bench-serving`) and the small SavedModel the serving tests serve are tooling, in `dags.ops.bench`.

Importing this package imports nothing else.
"""
