"""How the server runs (`ServerConfig`) and the command line of `python -m serving.server` that makes one.

`ServerConfig.from_model_config_file` reads TF Serving's `--model_config_file` (`serving.model_config`) instead.
Parsing flags happens here and only for `serving.server.__main__`; importing this module parses nothing.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from serving.model_config import VersionConfig, parse_model_config
from serving.server.monitoring import read_prometheus_path


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs; `from_model_config_file` reads TF Serving's `--model_config_file` instead."""

    base_path: str  # folder holding `<model_name>/<version>/`
    model_name: str = "deepfm"  # the name clients put in `ModelSpec.name`
    host: str = "127.0.0.1"  # interface to bind; "0.0.0.0" for all
    port: int = 8500  # gRPC port; 0 picks a free one (see `ModelServer.port`)
    poll_interval_s: float = 1.0  # how often the model folder is scanned for versions
    num_versions: int = 1  # latest-N policy: newest versions kept loaded
    specific_versions: tuple[int, ...] = ()  # specific policy: exactly these versions loaded; () for latest-N
    version_labels: dict[str, int] = field(default_factory=dict)  # label -> version
    model_config_file: str | None = None  # re-read for the policy and labels (overrides both), see below
    # How often `model_config_file` is re-read, in seconds (TF Serving's --model_config_file_poll_wait_seconds):
    # None on every folder poll; 0 never after start (TF Serving's default); else at most this often.
    model_config_poll_wait_s: float | None = None
    rest_port: int = 0  # TF Serving's REST API (model status, metrics) on `host`:this port; 0 for none
    prometheus_path: str | None = None  # Prometheus metrics at this path of the REST API; None for none
    max_workers: int = 8  # gRPC handler threads
    max_message_bytes: int = 64 * 1024 * 1024  # gRPC send and receive limit
    max_batch_rows: int = 0  # refuse requests with more rows (INVALID_ARGUMENT); 0 for no limit
    max_request_bytes: int = 0  # refuse larger Predict requests (INVALID_ARGUMENT); 0 for gRPC's limit only
    grace_s: float = 5.0  # how long `stop()` lets in-flight requests finish
    metrics_port: int | None = None  # Prometheus metrics over HTTP on this port; None for none

    @classmethod
    def from_model_config_file(cls, path: str | Path, **overrides: Any) -> ServerConfig:
        """Read the first model of a TF Serving `--model_config_file` (as `serving.push.write_model_config`
        writes it): name, base path (the parent of the model folder), version policy and labels. The server
        keeps reading the file (`model_config_file`, as often as `model_config_poll_wait_s` says)."""
        _, model = parse_model_config(Path(path).read_text(), None, str(path))
        policy = VersionConfig.from_proto(model, str(path))
        base = Path(model.base_path)
        if base.name != model.name:
            raise ValueError(f"This server expects base_path to end in the model name. Received: `{model.base_path}`")
        values: dict[str, Any] = {
            "base_path": str(base.parent),
            "model_name": model.name,
            "num_versions": policy.num_versions,
            "specific_versions": policy.specific_versions,
            "version_labels": policy.labels,
            "model_config_file": str(path),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class CommandLine:
    """What `python -m serving.server` was asked to run."""

    config: ServerConfig  # the server
    credentials: grpc.ServerCredentials | None  # TLS from --tls-cert and --tls-key; None for plaintext
    log_level: str  # level of the root logger


def _add_flag(parser: argparse.ArgumentParser, *names: str, **options: Any) -> None:
    """Add a flag under each name in both spellings: dashed and TF Serving's underscored (`--model-name`,
    `--model_name`). The first name gives the flag's `dest`."""
    spellings = [f"--{name[2:].replace(old, new)}" for name in names for old, new in (("_", "-"), ("-", "_"))]
    parser.add_argument(*dict.fromkeys(spellings), dest=names[0][2:].replace("-", "_"), **options)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m serving.server`; each in both spellings, `--model-name` and `--model_name`.

    TF Serving's own flags keep its meaning: `--port`, `--rest_api_port` (0: no REST API),
    `--model_config_file`, `--model_config_file_poll_wait_seconds`, `--monitoring_config_file`,
    `--file_system_poll_wait_seconds` (the folder poll, positive here). A value follows as `--flag=value` or
    `--flag value`.
    """
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="A TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime.",
        allow_abbrev=False,  # TF Serving takes no abbreviations; `--port` must never be read as another flag
    )
    flag = functools.partial(_add_flag, parser)
    flag("--base-path", help="folder holding <model-name>/<version>/")
    flag("--model-name", default="deepfm")
    flag(
        "--model-config-file",
        help="TF Serving model config (policy, labels), re-read as --model-config-file-poll-wait-seconds says; "
        "replaces --base-path/--model-name",
    )
    flag(
        "--model-config-file-poll-wait-seconds",
        type=float,
        help="re-read --model-config-file this often; 0: never after start (TF Serving's default); "
        "unset: on every folder poll",
    )
    flag("--monitoring-config-file", help="TF Serving monitoring config: Prometheus metrics on the REST port")
    flag("--host", default="127.0.0.1", help="interface to bind, gRPC and REST (0.0.0.0 for all)")
    flag("--port", type=int, default=8500, help="gRPC port; 0 picks a free one")
    flag("--rest-api-port", type=int, default=0, help="REST API port (model status, metrics); 0 for none")
    flag("--poll-interval-s", "--file-system-poll-wait-seconds", type=float, default=1.0,
         help="how often the model folder is scanned for versions")  # fmt: skip
    flag("--num-versions", type=int, default=1, help="latest-N version policy")
    flag("--version-label", action="append", default=[], metavar="LABEL=VERSION")
    flag("--max-batch-rows", type=int, default=0, help="refuse larger requests; 0 for no limit")
    flag("--max-request-bytes", type=int, default=0, help="refuse larger requests; 0 for no limit")
    flag("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port")
    flag("--grace-s", type=float, default=5.0)
    flag("--tls-cert", help="PEM certificate chain; with --tls-key, serve over TLS")
    flag("--tls-key", help="PEM private key")
    flag("--log-level", default="INFO")
    return parser


def parse_command_line(argv: list[str] | None = None) -> CommandLine:
    """Parse the flags (`sys.argv[1:]` when `argv` is None) into the server to run; exits on bad flags (and on
    a monitoring config file that cannot be read, naming it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    labels = {}
    for item in args.version_label:
        label, _, version = item.partition("=")
        if not version.isdecimal():
            parser.error(f"--version-label must be LABEL=VERSION. Received: {item!r}")
        labels[label] = int(version)
    prometheus_path = None
    if args.monitoring_config_file:
        try:
            prometheus_path = read_prometheus_path(args.monitoring_config_file)
        except ValueError as error:
            parser.error(f"--monitoring_config_file: {error}")
    settings: dict[str, Any] = {
        "host": args.host, "port": args.port, "poll_interval_s": args.poll_interval_s,
        "max_batch_rows": args.max_batch_rows, "max_request_bytes": args.max_request_bytes,
        "metrics_port": args.metrics_port, "grace_s": args.grace_s,
        "model_config_poll_wait_s": args.model_config_file_poll_wait_seconds, "rest_port": args.rest_api_port,
        "prometheus_path": prometheus_path,
    }  # fmt: skip
    if args.model_config_file:
        config = ServerConfig.from_model_config_file(args.model_config_file, **settings)
    elif args.base_path:
        config = ServerConfig(
            base_path=args.base_path, model_name=args.model_name, num_versions=args.num_versions,
            version_labels=labels, **settings,
        )  # fmt: skip
    else:
        parser.error("pass --base-path or --model-config-file")
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        credentials = grpc.ssl_server_credentials([(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())])
    return CommandLine(config, credentials, args.log_level)
