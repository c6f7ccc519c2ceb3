"""Serving: push exports to the model base path, serve them over TF Serving's gRPC API, score through a thin client.

Modules:
- `push`: atomic, versioned copies of an export under `<base>/<model>/<version>/`; TF Serving model config files.
- `wire`: TF Serving's request and response messages, wire-compatible, built without TensorFlow.
- `client`: `ServingClient`, the thin gRPC client (imports neither TensorFlow nor `tensorflow_serving`).
- `server`: a TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime.

Importing this package imports nothing else.
"""
