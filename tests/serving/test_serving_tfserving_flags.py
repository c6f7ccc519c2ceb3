"""`python -m serving.server` takes TF Serving's command line: the one docker/compose.yaml gives `tf-serving`.

The compose command is read from the compose file itself, its container paths mapped through the service's own
volumes (a named volume to a temporary folder, a bind mount to its source in the repository), so a flag added
there that this server does not honour fails here.
"""

from __future__ import annotations

import re
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from dags.ops.bench.sample_model import sample_columns
from dags.ops.processes import free_port
from serving.client import ServingClient
from serving.labels import ensure_model_config
from serving.push import push
from serving.server.config import parse_command_line
from serving.server.monitoring import DEFAULT_PROMETHEUS_PATH
from serving.server_process import server_process
from tests import compose as cf
from tests.serving.helpers import MODEL_NAME, http_get, local_only

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
AVAILABLE_V1 = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}  # fmt: skip


def tf_serving_service(env: dict[str, str] | None = None) -> dict:
    """The tf-serving service, its variables interpolated from `env` (none set: compose's defaults)."""
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["tf-serving"]
    return {**service, "command": [cf.interpolate(word, env or {}) for word in service["command"]]}


def local_mounts(service: dict, tmp_path: Path) -> dict[str, Path]:
    """Container path -> local path, for each volume of the service."""
    mounts = {}
    for volume in service["volumes"]:
        if volume["type"] == "bind":
            mounts[volume["target"]] = (COMPOSE_FILE.parent / volume["source"]).resolve()
        else:
            mounts[volume["target"]] = tmp_path / volume["source"]
            mounts[volume["target"]].mkdir()
    return mounts


def localize(arg: str, mounts: dict[str, Path]) -> str:
    """`--flag=/container/path` with the path as this machine sees it."""
    flag, _, value = arg.partition("=")
    for target, local in mounts.items():
        if value == target or value.startswith(target + "/"):
            return f"{flag}={local}{value[len(target) :]}"
    return arg


def compose_command(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[list[str], dict[str, Path]]:
    """The compose command line of tf-serving on local paths, with a model config on its model volume."""
    service = tf_serving_service(env)
    assert service["entrypoint"] == ["tensorflow_model_server"]
    mounts = local_mounts(service, tmp_path)
    ensure_model_config(mounts["/models"], MODEL_NAME)
    return [localize(arg, mounts) for arg in service["command"]], mounts


def test_compose_command_line_of_tf_serving_gives_its_settings(tmp_path):
    argv, mounts = compose_command(tmp_path)
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv)
    config = parse_command_line(argv).config
    assert config.model_config_file == flags["model_config_file"] == str(mounts["/models"] / "models.config")
    assert config.model_config_poll_wait_s == float(flags["model_config_file_poll_wait_seconds"]) == 30
    assert (config.port, config.rest_port) == (int(flags["port"]), int(flags["rest_api_port"])) == (8500, 8501)
    assert flags["monitoring_config_file"] == str(mounts["/config/monitoring.config"])
    assert config.prometheus_path == "/monitoring/prometheus/metrics"  # what serving/monitoring.config enables
    assert (config.base_path, config.model_name) == (str(mounts["/models"]), MODEL_NAME)  # from the model config
    assert config.host == "127.0.0.1"  # not given: localhost


def test_the_config_poll_of_the_compose_command_line_is_docker_env_s_setting(tmp_path):
    argv, _ = compose_command(tmp_path, {"TFSERVING_CONFIG_POLL_SECONDS": "2"})
    assert parse_command_line(argv).config.model_config_poll_wait_s == 2


def test_flags_take_both_spellings_and_both_value_forms(tmp_path):
    dashed = ["--base-path", str(tmp_path), "--model-name", "m", "--port", "9000", "--rest-api-port", "9001",
              "--poll-interval-s", "0.5", "--num-versions", "2", "--version-label", "stable=1", "--grace-s", "1"]  # fmt: skip
    underscored = [f"--base_path={tmp_path}", "--model_name=m", "--port=9000", "--rest_api_port=9001",
                   "--file_system_poll_wait_seconds=0.5", "--num_versions=2", "--version_label=stable=1",
                   "--grace_s=1"]  # fmt: skip
    config = parse_command_line(dashed).config
    assert parse_command_line(underscored).config == config
    assert (config.rest_port, config.poll_interval_s, config.version_labels) == (9001, 0.5, {"stable": 1})


def test_tf_serving_defaults_where_its_flags_are_not_given(tmp_path):
    config = parse_command_line(["--base-path", str(tmp_path)]).config
    assert config.rest_port == 0  # TF Serving's --rest_api_port default: no REST API
    assert config.prometheus_path is None
    assert config.model_config_poll_wait_s is None  # (no config file: nothing to re-read)


def test_abbreviated_flags_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_command_line(["--base-path", str(tmp_path), "--rest", "8501"])
    assert "--rest" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("prometheus_config { enabled: true }", "enabled"),  # an unknown field
        ("prometheus_config { enable: true", 'Expected "}"'),  # not closed
        ('prometheus_config { enable: true path: "metrics" }', "must start with '/'"),
        (None, "Cannot read"),  # no such file
    ],
)
def test_bad_monitoring_config_file_is_refused_naming_it(tmp_path, capsys, text, names):
    path = tmp_path / "monitoring.config"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exited:
        parse_command_line(["--base-path", str(tmp_path), f"--monitoring_config_file={path}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--monitoring_config_file" in error and str(path) in error and names in error


@pytest.mark.parametrize(
    ("text", "prometheus_path"),
    [
        ("prometheus_config { enable: false path: '/metrics' }", None),
        ("", None),
        ("prometheus_config { enable: true }", DEFAULT_PROMETHEUS_PATH),
        ("# the metrics\nprometheus_config {\n  enable: true\n  path: '/metrics'\n}\n", "/metrics"),
    ],
)
def test_monitoring_config_enables_prometheus_at_its_path(tmp_path, text, prometheus_path):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    config = parse_command_line(["--base-path", str(tmp_path), "--monitoring_config_file", str(path)]).config
    assert config.prometheus_path == prometheus_path


def healthcheck_request(service: dict) -> bytes:
    """The bytes compose's healthcheck of tf-serving sends to the REST port (its `printf '...'`)."""
    script = service["healthcheck"]["test"][-1]
    return re.search(r"printf '([^']*)'", script).group(1).encode().decode("unicode_escape").encode()


@local_only
def test_two_replicas_run_with_the_compose_command_line(tmp_path, exports):
    """As the deploy test starts them: each with compose's flags, then its own ports."""
    argv, mounts = compose_command(tmp_path)
    push(exports.good[0.0], mounts["/models"], MODEL_NAME)
    rest_ports = [free_port(), free_port()]
    request = healthcheck_request(tf_serving_service())
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(server_process(mounts["/models"], MODEL_NAME, [*argv, "--port=0", f"--rest_api_port={port}"]))
            for port in rest_ports
        ]  # fmt: skip
        for replica, rest_port in zip(replicas, rest_ports, strict=True):
            with socket.create_connection(("127.0.0.1", rest_port), timeout=10) as healthcheck:
                healthcheck.sendall(request)
                assert healthcheck.makefile("rb").readline().startswith(b"HTTP/1.0 200 ")
            rest = f"http://127.0.0.1:{rest_port}"
            assert http_get(f"{rest}/v1/models/{MODEL_NAME}").json() == AVAILABLE_V1
            with ServingClient(replica.address, MODEL_NAME) as client:
                assert client.predict_versioned(sample_columns(3))[1] == 1
            metrics = http_get(rest + "/monitoring/prometheus/metrics")
            assert metrics.status == 200 and metrics.content_type.startswith("text/plain; version=0.0.4")
            assert (
                f'serving_requests_total{{code="OK",method="Predict",model="{MODEL_NAME}"}} 1.0'
                in metrics.body.decode()
            )
