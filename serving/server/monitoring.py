"""TF Serving's `--monitoring_config_file`: a text `tensorflow.serving.MonitoringConfig`.

    prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }

With `prometheus_config.enable`, TF Serving serves its Prometheus metrics at `path` on the REST port (`rest.py`
here). The file is parsed with protobuf's text format, as TF Serving parses it: with
`tensorflow_serving.config.monitoring_config_pb2` where the installed `tensorflow-serving-api` ships it, else
with the same two messages declared here (the wheel on PyPI leaves that module out).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's `PrometheusExporter::kPrometheusPath`


@cache
def _monitoring_config_class() -> type:
    """`tensorflow.serving.MonitoringConfig`, generated or declared as `monitoring_config.proto` declares it."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        pass
    else:
        return monitoring_config_pb2.MonitoringConfig
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                         type_name=".tensorflow.serving.PrometheusConfig")  # fmt: skip
    pool = descriptor_pool.DescriptorPool()  # its own pool: no clash with a generated module imported later
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def parse_monitoring_config(text: str, source: str = "<monitoring config>") -> Any:
    """Parse a monitoring config's text into a `tensorflow.serving.MonitoringConfig`.

    Raises:
        ValueError: the text is not a MonitoringConfig (an unknown field, a syntax error); the message names
            `source`.
    """
    try:
        return text_format.Parse(text, _monitoring_config_class()())
    except text_format.ParseError as error:
        raise ValueError(
            f"Not a TF Serving monitoring config: {str(error).rstrip('.')}. Received: `{source}`"
        ) from error


def read_prometheus_path(path: str | Path) -> str | None:
    """Where a `--monitoring_config_file` asks for Prometheus metrics on the REST port; None when not enabled.

    An empty `path` is TF Serving's default, `DEFAULT_PROMETHEUS_PATH`.

    Raises:
        ValueError: the file cannot be read, is not a MonitoringConfig, or its path does not start with "/";
            the message names the file.
    """
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"Cannot read the monitoring config file: {error}. Received: `{path}`") from error
    prometheus = parse_monitoring_config(text, str(path)).prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise ValueError(f"prometheus_config.path must start with '/'. Received: `{metrics_path}` in `{path}`")
    return metrics_path
