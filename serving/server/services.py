"""The gRPC handlers of PredictionService and ModelService, and the Prometheus metrics they keep."""

from __future__ import annotations

import logging
import threading
import time

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.server.codecs import RequestError, run_predict
from serving.server.versions import ModelManager

log = logging.getLogger(__name__)


class ServerMetrics:
    """Prometheus counters and latency of the gRPC methods, in the server's own registry."""

    def __init__(self):
        import prometheus_client

        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "serving_requests", "gRPC requests by method and status code.", ["model", "method", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = prometheus_client.Histogram(
            "serving_request_latency_seconds", "gRPC request latency.", ["model", "method"], registry=self.registry
        )
        self.rows = prometheus_client.Counter("serving_predict_rows", "Rows scored.", ["model"], registry=self.registry)
        self.available = prometheus_client.Gauge(
            "serving_model_version_available", "Newest available version (0 when none).", ["model"],
            registry=self.registry,
        )  # fmt: skip


class ServiceHandlers(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):
    """PredictionService and ModelService methods; each turns a RequestError into its status code."""

    def __init__(self, manager: ModelManager, metrics: ServerMetrics):
        self.manager = manager
        self.metrics = metrics
        self._in_flight = 0  # requests in a handler now
        self._draining = False
        self._in_flight_changed = threading.Condition()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests with UNAVAILABLE from now on; wait up to `timeout` s for those in flight to end.

        Returns whether none is left. gRPC's own stop comes after this: a request it refuses while shutting down
        may reach the client as CANCELLED rather than UNAVAILABLE, so the refusing is done here first.
        """
        with self._in_flight_changed:
            self._draining = True
            return self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout)

    def _handle(self, method: str, context: grpc.ServicerContext, body):
        started = time.monotonic()
        code = grpc.StatusCode.OK
        with self._in_flight_changed:
            refused = self._draining
            self._in_flight += not refused
        try:
            if refused:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            return body()
        except RequestError as error:
            code = error.code
            context.abort(error.code, error.message)
        except Exception as error:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            model = self.manager.config.model_name
            self.metrics.requests.labels(model, method, code.name).inc()
            self.metrics.latency.labels(model, method).observe(time.monotonic() - started)
            if not refused:
                with self._in_flight_changed:
                    self._in_flight -= 1
                    self._in_flight_changed.notify_all()

    def Predict(self, request, context):
        def body():
            limit = self.manager.config.max_request_bytes
            if limit and request.ByteSize() > limit:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Request of {request.ByteSize()} bytes exceeds the limit of {limit}",
                )
            model = self.manager.resolve(request.model_spec)
            response = run_predict(model, self.manager.config.model_name, request, self.manager.config.max_batch_rows)
            first_dims = [tensor.tensor_shape.dim for tensor in request.inputs.values()][:1]
            rows = first_dims[0][0].size if first_dims and first_dims[0] else 1
            self.metrics.rows.labels(self.manager.config.model_name).inc(rows)
            return response

        return self._handle("Predict", context, body)

    def GetModelMetadata(self, request, context):
        def body():
            fields = list(request.metadata_field)
            if not fields:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for name in fields:
                if name != "signature_def":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
            model = self.manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = self.manager.config.model_name
            response.model_spec.version.value = model.version
            response.metadata["signature_def"].Pack(model.signature_def_map)
            return response

        return self._handle("GetModelMetadata", context, body)

    def GetModelStatus(self, request, context):
        return self._handle("GetModelStatus", context, lambda: self.manager.status(request.model_spec))

    def HandleReloadConfigRequest(self, request, context):
        """Take the served model's policy, labels and base path from a ModelServerConfig; the outcome is in the
        response's StatusProto, as TF Serving reports it (the RPC itself succeeds)."""

        def body():
            code, message = self._reload(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = code.value[0]
            response.status.error_message = message
            return response

        return self._handle("HandleReloadConfigRequest", context, body)

    def _reload(self, config) -> tuple[grpc.StatusCode, str]:
        if config.WhichOneof("config") != "model_config_list":
            return grpc.StatusCode.INVALID_ARGUMENT, "ModelServerConfig must hold a model_config_list"
        models = list(config.model_config_list.config)
        names = [model.name for model in models]
        if names != [self.manager.config.model_name]:
            return (grpc.StatusCode.UNIMPLEMENTED,
                    f"This server serves one model, {self.manager.config.model_name}. Received: {names}")  # fmt: skip
        return self.manager.reload_config(models[0])
