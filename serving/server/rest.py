"""The REST API on `--rest_api_port`: TF Serving's model status and its Prometheus metrics path.

As TF Serving answers them:

- `GET /v1/models/<name>`, `/v1/models/<name>/versions/<version>`, `/v1/models/<name>/labels/<label>`: the
  GetModelStatusResponse in protobuf's JSON mapping, `{"model_version_status": [{"version": "3",
  "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}`.
- An error is `{"error": "<message>"}` with the HTTP status TF Serving maps its code to (NOT_FOUND 404 for an
  unknown model or version, INVALID_ARGUMENT 400 for an unknown label, a malformed `/v1/` path 400).
- `GET <prometheus path>` (from `--monitoring_config_file`): the server's metrics in Prometheus' text format.

Predict, classify, regress and metadata over REST are not served (501); clients use gRPC. Standard library HTTP
in threads: status and metrics are small, and the model's work stays on the gRPC side.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.server.codecs import RequestError
from serving.server.services import ServerMetrics
from serving.server.versions import ModelManager

log = logging.getLogger(__name__)

# TF Serving's `ToHTTPStatusCode` (model_servers/http_server.cc); codes not listed are 500.
_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
}
# TF Serving's model path: a name, then a version or a label, then an optional method or `/metadata`.
_MODEL_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata|:[a-z]+)?")
_HANDLER_TIMEOUT_S = 10.0  # a client that sends nothing for this long is dropped (so `stop` never hangs on it)


class RestServer:
    """The REST API of one `ModelServer`, served by a thread from `start()` to `stop()`."""

    def __init__(self, manager: ModelManager, metrics: ServerMetrics, host: str, port: int,
                 prometheus_path: str | None = None):  # fmt: skip
        self.manager = manager
        self.metrics = metrics
        self.host = host
        self.port = port
        self.prometheus_path = prometheus_path
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port.

        Raises:
            OSError: the port cannot be bound.
        """
        self._http = _HTTPServer((self.host, self.port), _Handler)
        self._http.rest = self
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="rest-api", daemon=True)  # fmt: skip
        self._thread.start()
        self.port = self._http.server_address[1]
        return self.port

    def stop(self) -> None:
        """Stop accepting, and wait for the requests in flight. Calling it again does nothing."""
        if self._http is None:
            return
        self._http.shutdown()
        self._thread.join()
        self._http.server_close()  # joins the handler threads
        self._http = None

    def answer(self, method: str, target: str) -> tuple[int, str, bytes]:
        """The HTTP status, content type and body of a request for `target` (its path and query)."""
        path = urlsplit(target).path
        if method == "GET" and self.prometheus_path is not None and path == self.prometheus_path:
            from prometheus_client import exposition

            # Text format 0.0.4, which TF Serving serves and every Prometheus reads (the names here are plain ASCII).
            body = exposition.generate_latest(self.metrics.registry)
            return HTTPStatus.OK, exposition.CONTENT_TYPE_PLAIN_0_0_4, body
        try:
            status, body = HTTPStatus.OK, self._model_status(method, path)
        except RequestError as error:
            status, body = _HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR), {"error": error.message}
        return status, "application/json", json.dumps(body, indent=2).encode() + b"\n"

    def _model_status(self, method: str, path: str) -> dict:
        if not path.startswith("/v1/"):
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        name, version, label, suffix = match.groups()
        if method != "GET" or suffix is not None:
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                               f"This server answers only model status over REST; use gRPC. Received: {method} {path}")  # fmt: skip
        spec = model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        response = self.manager.status(spec)
        return json_format.MessageToDict(response, always_print_fields_with_no_presence=True,
                                         preserving_proto_field_name=True)  # fmt: skip


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # `server_close` joins the handler threads
    rest: RestServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = _HANDLER_TIMEOUT_S

    def _respond(self) -> None:
        # Read what was sent (and drop it): closing a socket with unread data resets it before the client has
        # read the answer.
        unread = int(self.headers.get("Content-Length") or 0)
        while unread > 0 and (chunk := self.rfile.read(min(unread, 1 << 16))):
            unread -= len(chunk)
        status, content_type, body = self.server.rest.answer(self.command, self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _respond

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the name of the overridden parameter)
        log.debug("%s %s", self.address_string(), format % args)
