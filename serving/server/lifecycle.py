"""`ModelServer`: the gRPC server, health, the REST API and the polling thread, from `start()` to `stop()`."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from typing import Self

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.server.config import ServerConfig
from serving.server.rest import RestServer
from serving.server.services import ServerMetrics, ServiceHandlers
from serving.server.versions import ModelManager

log = logging.getLogger(__name__)

_HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class ModelServer:
    """The server: gRPC services, health, the REST API (`rest_port`), and a thread that polls the model folder
    every `poll_interval_s` and re-reads the model config file every `model_config_poll_wait_s`.

    Usable in-process (tests):

        server = ModelServer(ServerConfig(base_path=str(tmp), port=0))
        port = server.start()
        ...
        server.stop()
    """

    def __init__(self, config: ServerConfig, server_credentials: grpc.ServerCredentials | None = None):
        if config.num_versions < 1:
            raise ValueError(f"`num_versions` must be at least 1. Received: `num_versions={config.num_versions}`")
        if config.poll_interval_s <= 0:
            raise ValueError(
                f"`poll_interval_s` must be positive. Received: `poll_interval_s={config.poll_interval_s}`"
            )
        wait = config.model_config_poll_wait_s
        if wait is not None and wait < 0:
            raise ValueError(
                "`model_config_poll_wait_s` must be 0 (never) or more. Received: "
                f"`model_config_poll_wait_s={config.model_config_poll_wait_s}`"
            )
        if config.rest_port < 0 or (config.rest_port and config.rest_port == config.port):
            raise ValueError(
                "`rest_port` must be 0 (no REST API) or a port other than the gRPC port. Received: "
                f"`rest_port={config.rest_port}`, `port={config.port}`"
            )
        self.config = config
        self.server_credentials = server_credentials
        self.manager = ModelManager(config)
        self.metrics = ServerMetrics()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.manager.on_change = self._on_versions_changed
        self.port: int | None = None
        self.rest_port: int | None = None  # the REST API's bound port once started; None without one
        self._server: grpc.Server | None = None
        self._thread_pool: futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._metrics_http = None
        self._rest: RestServer | None = None

    def start(self) -> int:
        """Load the versions on disk, bind, start serving and polling; returns the bound gRPC port.

        The REST API (with `rest_port`) answers before gRPC starts, so both answer once `start` logs that it
        serves (the line `serving.server_process` waits for).
        """
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.manager.poll()
        self._start_rest()
        try:
            return self._start_grpc()
        except BaseException:
            self._stop_rest()
            raise

    def _start_rest(self) -> None:
        config = self.config
        if not config.rest_port:
            if config.prometheus_path:
                log.warning("No REST API port: Prometheus metrics at %s are not served (as TF Serving does)",
                            config.prometheus_path)  # fmt: skip
            return
        self._rest = RestServer(self.manager, self.metrics, config.host, config.rest_port, config.prometheus_path)
        self.rest_port = self._rest.start()
        metrics = f"; Prometheus metrics at {config.prometheus_path}" if config.prometheus_path else ""
        log.info("REST API of %s on http://%s:%d/v1/models/%s%s", config.model_name, config.host, self.rest_port,
                 config.model_name, metrics)  # fmt: skip

    def _start_grpc(self) -> int:
        options = [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._thread_pool = futures.ThreadPoolExecutor(
            self.config.max_workers, thread_name_prefix=f"{self.config.model_name}-grpc"
        )
        server = grpc.server(self._thread_pool, options=options)
        handlers = self._handlers = ServiceHandlers(self.manager, self.metrics)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(handlers, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(handlers, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.config.host}:{self.config.port}"
        if self.server_credentials is not None:
            port = server.add_secure_port(address, self.server_credentials)
        else:
            port = server.add_insecure_port(address)
        if not port:
            raise RuntimeError(f"Could not bind {address}")
        server.start()
        self._server, self.port = server, port
        if self.config.metrics_port is not None:
            import prometheus_client

            self._metrics_http, _ = prometheus_client.start_http_server(
                self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
            )
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()
        log.info("Serving %s from %s on %s:%d", self.config.model_name, self.manager.model_dir, self.config.host, port)
        return port

    def stop(self, grace: float | None = None) -> None:
        """Stop polling, report NOT_SERVING, let in-flight requests finish (`grace` seconds), unload.

        New requests are refused with UNAVAILABLE once polling has stopped (`ServiceHandlers.drain`); gRPC is stopped
        when the requests in flight are done or the grace period is over. A handler still running then (its call
        cancelled) is waited for before the versions are unloaded, so `stop` can outlast `grace` by one handler's
        run. Calling it again does nothing.
        """
        if self._server is None:
            return
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.join()
        grace = self.config.grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self._handlers.drain(grace)
        self._server.stop(max(0.0, deadline - time.monotonic())).wait()
        self._server = None
        # gRPC never shuts its pool down (idle handler threads would last until garbage collection); waiting also
        # lets a handler whose call gRPC cancelled finish before its version is unloaded.
        self._thread_pool.shutdown()
        self._stop_rest()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None
        self.manager.unload_all()
        log.info("Stopped serving %s", self.config.model_name)

    def wait(self) -> None:
        """Block until the server terminates."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _stop_rest(self) -> None:
        if self._rest is not None:
            self._rest.stop()
            self._rest = None

    def _watch(self) -> None:
        """Scan the folder every `poll_interval_s`; re-read the config file every `model_config_poll_wait_s` (on
        every scan when None, never when 0). A re-read runs a pass too: its policy may want other versions."""
        wait = self.config.model_config_poll_wait_s
        now = time.monotonic()
        next_scan = now + self.config.poll_interval_s
        next_read = now + wait if wait else float("inf")
        while not self._stopping.wait(max(0.0, min(next_scan, next_read) - time.monotonic())):
            now = time.monotonic()
            read_config = wait is None or now >= next_read
            if now >= next_scan:
                next_scan = now + self.config.poll_interval_s
            if read_config and wait:
                next_read = now + wait
            try:
                self.manager.poll(read_config=read_config)
            except Exception:
                log.exception("Polling %s failed", self.manager.model_dir)

    def _on_versions_changed(self, available: list[int]) -> None:
        self.metrics.available.labels(self.config.model_name).set(max(available, default=0))
        status = health_pb2.HealthCheckResponse.SERVING if available else health_pb2.HealthCheckResponse.NOT_SERVING
        self._set_health(status)

    def _set_health(self, status) -> None:
        for service in (*_HEALTH_SERVICES, self.config.model_name):
            self.health.set(service, status)
