"""How the server runs (`ServerConfig`) and the command line of `python -m serving.server` that makes one.

`ServerConfig.from_model_config_file` reads TF Serving's `--model_config_file` (`serving.model_config`) instead.
Parsing flags happens here and only for `serving.server.__main__`; importing this module parses nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from serving.model_config import VersionConfig, parse_model_config


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
    model_config_file: str | None = None  # re-read on every poll for the policy and labels (overrides both)
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
        keeps reading the file on every poll (`model_config_file`)."""
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


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m serving.server`."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="A TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime.",
    )
    parser.add_argument("--base-path", help="folder holding <model-name>/<version>/")
    parser.add_argument("--model-name", default="deepfm")
    parser.add_argument(
        "--model-config-file",
        help="TF Serving model config, read again on every poll (policy, labels); replaces --base-path/--model-name",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--poll-interval-s", type=float, default=1.0)
    parser.add_argument("--num-versions", type=int, default=1, help="latest-N version policy")
    parser.add_argument("--version-label", action="append", default=[], metavar="LABEL=VERSION")
    parser.add_argument("--max-batch-rows", type=int, default=0, help="refuse larger requests; 0 for no limit")
    parser.add_argument("--max-request-bytes", type=int, default=0, help="refuse larger requests; 0 for no limit")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port")
    parser.add_argument("--grace-s", type=float, default=5.0)
    parser.add_argument("--tls-cert", help="PEM certificate chain; with --tls-key, serve over TLS")
    parser.add_argument("--tls-key", help="PEM private key")
    parser.add_argument("--log-level", default="INFO")
    return parser


def parse_command_line(argv: list[str] | None = None) -> CommandLine:
    """Parse the flags (`sys.argv[1:]` when `argv` is None) into the server to run; exits on bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    labels = {}
    for item in args.version_label:
        label, _, version = item.partition("=")
        if not version.isdecimal():
            parser.error(f"--version-label must be LABEL=VERSION. Received: {item!r}")
        labels[label] = int(version)
    settings: dict[str, Any] = {
        "host": args.host, "port": args.port, "poll_interval_s": args.poll_interval_s,
        "max_batch_rows": args.max_batch_rows, "max_request_bytes": args.max_request_bytes,
        "metrics_port": args.metrics_port, "grace_s": args.grace_s,
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
