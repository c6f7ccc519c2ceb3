"""Static checks of `docker/`: the compose file, the Dockerfiles and their contracts with `serving/`.

No Docker engine is needed: files are parsed, never built or started. `docker compose config` runs too, but only
where a Compose CLI is installed (it renders the file without an engine).
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dags.ops.task_preload import CELERY_ENV
from tests.compose import as_list, environment, volumes

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
SERVING_DIR = REPO / "serving"
MODELS_CONFIG = SERVING_DIR / "models.config"
MONITORING_CONFIG = SERVING_DIR / "monitoring.config"
CLIENT_MODULE = SERVING_DIR / "client.py"

DATABASES = ("postgres", "redis")
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
)
WORKERS = ("airflow-worker", "airflow-worker-gpu")
SERVING = "tf-serving"
REQUIRED_SERVICES = (*DATABASES, *AIRFLOW_SERVICES, SERVING)
MODEL_VOLUME = "deepfm-models"
LOCALHOST = "127.0.0.1"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

EXPECTED_BASE_IMAGES = {
    "airflow.Dockerfile": "python:3.11-slim",
    "trainer-gpu.Dockerfile": "tensorflow/tensorflow:2.21.0-gpu",
}
DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip

# Names whose values are secrets, and suffixes that make such a name point at a secret instead of holding one.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|FERNET|(^|_)KEY$|_KEY_", re.IGNORECASE)
NOT_A_SECRET_SUFFIX = re.compile(r"_(FILE|PATH|CMD|USERS?|USERNAME)$", re.IGNORECASE)
# A required reference: `${VAR}` or `${VAR:?message}`; a `${VAR:-default}` would write the default down.
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s]*)@", re.IGNORECASE)
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# --- helpers --------------------------------------------------------------------------------------------------------


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}` interpolation: `env` values, else defaults, else `<VAR>` for required variables."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3)
        if name in env and (env[name] or operator != ":-"):
            return env[name]
        if operator in (":-", "-"):
            return default
        return f"<{name}>"

    return VARIABLE.sub(replace, value)


def published_ports(service: dict[str, Any]) -> list[dict[str, str]]:
    """A service's `ports` (defaults interpolated), each as {host_ip, published, target}."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append({
                "host_ip": interpolate(str(entry.get("host_ip", ""))),
                "published": interpolate(str(entry.get("published", ""))),
                "target": interpolate(str(entry["target"])),
            })  # fmt: skip
            continue
        spec = interpolate(str(entry)).split("/")[0]
        parts = spec.rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        published = parts[-2] if len(parts) >= 2 else ""
        ports.append({"host_ip": host_ip.strip("[]"), "published": published, "target": parts[-1]})
    return ports


def flags(words: list[str]) -> dict[str, str]:
    """`--name=value` words of a command line as a dict."""
    return dict(word[2:].split("=", 1) for word in words if word.startswith("--") and "=" in word)


def queues(service: dict[str, Any]) -> set[str]:
    """Queues of an `airflow celery worker` command (`--queues a,b` or `-q a,b`)."""
    words = [interpolate(word) for word in as_list(service.get("command"))]
    for flag, value in itertools.pairwise(words):
        if flag in ("--queues", "-q"):
            return set(value.split(","))
    for word in words:
        if word.startswith("--queues="):
            return set(word.split("=", 1)[1].split(","))
    return {"default"}


def mount_target(service: dict[str, Any], source: Path) -> str:
    """Where `service` bind-mounts the local file `source`; fails when it does not."""
    for mount in volumes(service):
        if mount["type"] == "bind" and (COMPOSE_FILE.parent / mount["source"]).resolve() == source.resolve():
            return mount["target"]
    pytest.fail(f"{source.relative_to(REPO)} is not bind-mounted into {service.get('image', 'the service')}")


def is_under(path: str, folder: str) -> bool:
    return path.rstrip("/").startswith(folder.rstrip("/") + "/")


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML document (keys and values)."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return [node] if isinstance(node, str) else []


def required_variables() -> set[str]:
    """Variables compose.yaml requires (`${VAR}`, `${VAR:?...}`; comments do not count)."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    found = set()
    for text in strings(document):
        found |= {m.group(1) for m in VARIABLE.finditer(text) if m.group(1) and m.group(2) in (None, ":?", "?")}
    return found


def text_proto_values(text: str, field: str) -> list[str]:
    """Values of a string field anywhere in a text proto."""
    return re.findall(rf'\b{field}\s*:\s*"([^"]*)"', text)


# --- Dockerfile parsing ---------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) of a Dockerfile: continuations joined, comments and heredoc bodies skipped."""
    instructions: list[tuple[int, str, str]] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        start, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1]
            while index < len(lines) and (not lines[index].strip() or lines[index].strip().startswith("#")):
                index += 1
            if index < len(lines):
                line += " " + lines[index].strip()
                index += 1
        for delimiter in re.findall(r"<<-?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?", line):
            while index < len(lines) and lines[index].strip() != delimiter:
                index += 1
            index += 1
        word, _, arguments = line.partition(" ")
        instructions.append((start, word, arguments.strip()))
    return instructions


def build_args(instructions: list[tuple[int, str, str]]) -> dict[str, str]:
    """Defaults of every `ARG name=value`."""
    args = {}
    for _, word, arguments in instructions:
        if word.upper() == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            args[name.strip()] = value.strip().strip('"')
    return args


def copy_sources(arguments: str) -> list[str] | None:
    """Local sources of a COPY/ADD; None for `--from` copies (they read another stage or image)."""
    if arguments.startswith("["):
        words = json.loads(arguments)
    else:
        words = shlex.split(arguments)
    options = [word for word in words if word.startswith("--")]
    if any(option.startswith("--from") for option in options):
        return None
    paths = [word for word in words if not word.startswith("--")]
    return [source for source in paths[:-1] if "://" not in source]


def dockerignore_patterns(dockerfile: Path, context: Path) -> list[str]:
    """BuildKit's ignore file for `dockerfile`: `<name>.dockerignore` beside it, else the context's."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.exists():
            lines = (line.strip() for line in candidate.read_text().splitlines())
            return [line for line in lines if line and not line.startswith("#")]
    return []


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif pattern[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif pattern[index] == "?":
            regex, index = regex + "[^/]", index + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return re.compile(regex + "$")


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent folders, decides."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negated else pattern)
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict), "no `services` mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def built_dockerfiles() -> list[tuple[str, Path, Path]]:
    """(service, Dockerfile, context) of every service with a `build`, one per Dockerfile."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    found: dict[Path, tuple[str, Path, Path]] = {}
    for name, service in document["services"].items():
        build = service.get("build")
        if build is None:
            continue
        context = (COMPOSE_FILE.parent / (build if isinstance(build, str) else build.get("context", "."))).resolve()
        dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        found.setdefault(dockerfile.resolve(), (name, dockerfile.resolve(), context))
    return list(found.values())


DOCKERFILES = built_dockerfiles()
DOCKERFILE_PARAMS = [pytest.param(*entry, id=entry[1].name) for entry in DOCKERFILES]


# --- the service graph ----------------------------------------------------------------------------------------------


def test_required_services_are_present(services: dict[str, dict[str, Any]]) -> None:
    missing = sorted(set(REQUIRED_SERVICES) - set(services))
    assert not missing, f"compose.yaml lacks the services {missing}"


def test_depends_on_targets_exist_with_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on must use the long form, with conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on `{target}`, which is not a service"
            condition = (spec or {}).get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: condition {condition!r} not in {sorted(CONDITIONS)}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no check"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    one_shot = {
        target
        for service in services.values()
        for target, spec in (service.get("depends_on") or {}).items()
        if (spec or {}).get("condition") == "service_completed_successfully"
    }
    assert one_shot == {"airflow-init"}, f"one-shot services: {sorted(one_shot)}"
    assert str(services["airflow-init"].get("restart", "no")) == "no", "a one-shot service must not restart"
    for name, service in services.items():
        if name in one_shot:
            continue
        healthcheck = service.get("healthcheck") or {}
        test = as_list(healthcheck.get("test"))
        assert test and test[0] != "NONE" and not healthcheck.get("disable"), f"{name} has no healthcheck"


def test_airflow_services_start_after_init_and_databases(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        depends_on = services[name].get("depends_on") or {}
        assert depends_on.get("postgres", {}).get("condition") == "service_healthy", f"{name} must wait for postgres"
        if name != "airflow-init":
            assert depends_on.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
            assert depends_on.get("redis", {}).get("condition") == "service_healthy", f"{name} must wait for redis"
    for name in WORKERS:
        depends_on = services[name]["depends_on"]
        assert depends_on.get("airflow-api-server", {}).get("condition") == "service_healthy", name


def test_gpu_worker_reserves_nvidia_gpus_and_serves_queue_gpu(services: dict[str, dict[str, Any]]) -> None:
    gpu_worker = services["airflow-worker-gpu"]
    devices = gpu_worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []
    assert any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices), devices
    assert queues(gpu_worker) == {"gpu"}
    assert "gpu" not in queues(services["airflow-worker"]), "by default the CPU worker must leave `gpu` alone"
    assert gpu_worker["build"]["dockerfile"].endswith("trainer-gpu.Dockerfile")
    assert as_list(gpu_worker.get("command"))[:2] == ["celery", "worker"]


def test_airflow_is_configured_by_environment(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert env.get("AIRFLOW__CORE__LOAD_EXAMPLES", "").lower() == "false", name
        assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql"), name
        assert "@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://redis:"), name
        assert CELERY_ENV.items() <= env.items(), f"{name}: its workers must import the stages' libraries once"
        assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false").lower() == "false", "auth is off"
        assert env.get("DEEPFM_FEAST_ONLINE_STORE") == "redis", name
        assert env.get("DEEPFM_REDIS_ADDR") == "redis:6379", name
        api = re.match(r"http://([a-z0-9-]+):(\d+)/execution/$", env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
        assert api and api.group(1) == "airflow-api-server", f"{name}: execution API must be the API server"
        for secret in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
            assert secret in env, f"{name} lacks {secret} (all components must share one value)"


def test_auth_manager_is_airflows_default(services: dict[str, dict[str, Any]]) -> None:
    configured = {environment(services[name]).get("AIRFLOW__CORE__AUTH_MANAGER") for name in AIRFLOW_SERVICES}
    assert len(configured) == 1, f"the Airflow services disagree on the auth manager: {configured}"
    spec = importlib.util.find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Airflow is not installed here: cannot read its default auth manager")
    config_yml = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    default = yaml.safe_load(config_yml.read_text())["core"]["options"]["auth_manager"]["default"]
    assert configured == {default}


def test_every_worker_mounts_the_model_base_path(services: dict[str, dict[str, Any]]) -> None:
    for name in (*WORKERS, "airflow-init"):
        env = environment(services[name])
        targets = {m["target"] for m in volumes(services[name]) if m["source"] == MODEL_VOLUME}
        assert targets == {env["DEEPFM_MODEL_BASE_PATH"]}, f"{name} must mount {MODEL_VOLUME} at the base path"
    cpu, gpu = ({(m["source"], m["target"]) for m in volumes(services[name])} for name in WORKERS)
    assert cpu == gpu, f"the workers must mount the same run folders; they differ in {sorted(cpu ^ gpu)}"


# --- local paths ----------------------------------------------------------------------------------------------------


def test_referenced_local_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = COMPOSE_FILE.parent / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            if isinstance(build, dict) and "dockerfile" in build:
                assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} does not exist"
        for mount in volumes(service):
            if mount["type"] == "bind":
                source = COMPOSE_FILE.parent / mount["source"]
                assert source.exists(), f"{name} bind-mounts {mount['source']}, which does not exist"
        for env_file in as_list(service.get("env_file")):
            assert (COMPOSE_FILE.parent / env_file).exists(), f"{name}: env_file {env_file} does not exist"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in volumes(service):
            if mount["type"] == "volume" and mount["source"]:
                assert mount["source"] in declared, f"{name} mounts undeclared volume {mount['source']}"


# --- exposure and secrets -------------------------------------------------------------------------------------------


def test_published_ports_bind_to_localhost(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} uses the host network"
        for port in published_ports(service):
            assert port["host_ip"] == LOCALHOST, f"{name} publishes {port} beyond {LOCALHOST}"


def test_databases_publish_no_ports(services: dict[str, dict[str, Any]]) -> None:
    for name in DATABASES:
        assert not services[name].get("ports"), f"{name} must not be published to the host"


def _secret_values(services: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    found = []
    for name, service in services.items():
        build = service.get("build")
        args = (build.get("args") or {}) if isinstance(build, dict) else {}
        items = list(environment(service).items()) + [(k, str(v)) for k, v in dict(args).items()]
        found.extend((name, key, value) for key, value in items)
    return found


def test_no_literal_secrets_in_compose(services: dict[str, dict[str, Any]]) -> None:
    for service, key, value in _secret_values(services):
        if SECRET_NAME.search(key) and not NOT_A_SECRET_SUFFIX.search(key):
            assert REQUIRED_REFERENCE.match(value), f"{service}: {key} must be a required ${{VAR}}, not {value!r}"
        for password in URL_CREDENTIALS.findall(value):
            assert REQUIRED_REFERENCE.match(password), f"{service}: {key} has a literal password in a URL"


def test_env_example_holds_no_secret_values() -> None:
    assert ENV_EXAMPLE.exists(), "docker/.env.example is missing"
    documented = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            documented[key.strip()] = value.strip()
    for key, value in documented.items():
        if SECRET_NAME.search(key) and not NOT_A_SECRET_SUFFIX.search(key):
            assert value == "", f".env.example gives {key} a value; leave secrets empty"
    required = required_variables()
    assert required, "compose.yaml requires no variables: where do its secrets come from?"
    assert required <= set(documented), f".env.example does not list {sorted(required - set(documented))}"


def test_dockerfiles_hold_no_secrets() -> None:
    for _, dockerfile, _ in DOCKERFILES:
        for line, word, arguments in dockerfile_instructions(dockerfile):
            if word.upper() in ("ENV", "ARG"):
                for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments) or [arguments.split()[0]]:
                    assert not (SECRET_NAME.search(name) and not NOT_A_SECRET_SUFFIX.search(name)), (
                        f"{dockerfile.name}:{line} bakes {name} into the image; pass secrets at run time"
                    )


# --- TF Serving and its contract with serving/ ----------------------------------------------------------------------


def test_tf_serving_command_and_mounts(services: dict[str, dict[str, Any]]) -> None:
    serving = services[SERVING]
    assert serving["image"].split(":")[0] == "tensorflow/serving"
    options = flags(as_list(serving.get("command")))
    assert options.get("model_config_file_poll_wait_seconds") == "${TFSERVING_CONFIG_POLL_SECONDS:-30}"
    model_mounts = [m for m in volumes(serving) if m["source"] == MODEL_VOLUME]
    assert [m["target"] for m in model_mounts] == ["/models"], "the model volume must be at /models"
    assert model_mounts[0]["read_only"], "TF Serving only reads the model base path"

    # The model config lives in the model volume (so TF Serving's poll, 30 s by default, sees it change);
    # airflow-init installs serving/models.config there.
    model_config = options["model_config_file"]
    assert is_under(model_config, "/models"), model_config
    init = services["airflow-init"]
    init_env = environment(init)
    assert init_env["DEEPFM_MODEL_CONFIG_FILE"] == model_config
    assert init_env["MODEL_CONFIG_SOURCE"] == mount_target(init, MODELS_CONFIG)
    assert options["monitoring_config_file"] == mount_target(serving, MONITORING_CONFIG)


def test_models_config_names_deepfm_under_the_mounted_base_path(services: dict[str, dict[str, Any]]) -> None:
    text = MODELS_CONFIG.read_text()
    assert "model_config_list" in text
    assert text_proto_values(text, "name") == ["deepfm"]
    model_root = next(m["target"] for m in volumes(services[SERVING]) if m["source"] == MODEL_VOLUME)
    for base_path in text_proto_values(text, "base_path"):
        assert is_under(base_path, model_root), f"base_path {base_path} is outside the mounted {model_root}"
    assert re.search(r"prometheus_config\s*\{[^}]*enable\s*:\s*true", MONITORING_CONFIG.read_text())


def _grpc_port(services: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(published host port, container port) of TF Serving's gRPC API."""
    container_port = flags(as_list(services[SERVING].get("command"))).get("port", "8500")
    for port in published_ports(services[SERVING]):
        if port["target"] == container_port:
            return port["published"], container_port
    pytest.fail(f"TF Serving's gRPC port {container_port} is not published")


def _client_defaults(source: str) -> dict[str, list[Any]]:
    """Constant defaults of `serving/client.py`: module and class assignments, and parameter defaults, by name."""
    defaults: dict[str, list[Any]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    defaults.setdefault(target.id, []).append(node.value.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.posonlyargs + node.args.args
            pairs = list(zip(positional[len(positional) - len(node.args.defaults) :], node.args.defaults, strict=False))
            pairs += [
                (a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=False) if d is not None
            ]
            for arg, default in pairs:
                if isinstance(default, ast.Constant):
                    defaults.setdefault(arg.arg, []).append(default.value)
    return defaults


def test_client_defaults_agree_with_tf_serving(services: dict[str, dict[str, Any]]) -> None:
    if not CLIENT_MODULE.exists():
        pytest.skip("serving/client.py is not there yet: nothing to compare TF Serving's model name and port with")
    defaults = _client_defaults(CLIENT_MODULE.read_text())
    model_names = {v for k, vs in defaults.items() if "model_name" in k.lower() for v in vs if isinstance(v, str)}
    addresses = {
        v
        for k, vs in defaults.items()
        if re.search(r"addr|target|endpoint", k, re.IGNORECASE)
        for v in vs
        if isinstance(v, str)
    }
    ports = {str(v) for k, vs in defaults.items() if k.lower().endswith("port") for v in vs if isinstance(v, int)}
    ports |= {a.rsplit(":", 1)[1] for a in addresses if re.fullmatch(r"[\w.\[\]:-]+:\d+", a)}
    assert model_names, "serving/client.py has no default model name (a `model_name=...` default) to compare"
    assert ports, "serving/client.py has no default address or port to compare"

    served = text_proto_values(MODELS_CONFIG.read_text(), "name")
    assert model_names == set(served), f"client default model {model_names} vs models.config {served}"
    published, container = _grpc_port(services)
    assert ports == {published} == {container}, f"client default port {ports}; TF Serving {published}:{container}"


def test_airflow_connections_point_at_compose_services(services: dict[str, dict[str, Any]]) -> None:
    connections = json.loads((DOCKER_DIR / "connections.json").read_text())
    for conn_id, connection in connections.items():
        assert connection["host"] in services, f"{conn_id} points at {connection['host']}, not a service"
    _, grpc_port = _grpc_port(services)
    assert str(connections["deepfm_tfserving"]["port"]) == grpc_port
    assert (
        f"{connections['deepfm_feast_redis']['host']}:{connections['deepfm_feast_redis']['port']}"
        == (environment(services["airflow-worker"])["DEEPFM_REDIS_ADDR"])
    )


# --- Dockerfiles ----------------------------------------------------------------------------------------------------


def test_compose_builds_both_images() -> None:
    assert sorted(dockerfile.name for _, dockerfile, _ in DOCKERFILES) == sorted(EXPECTED_BASE_IMAGES)


@pytest.mark.parametrize(("service", "dockerfile", "context"), DOCKERFILE_PARAMS)
def test_dockerfile_parses(service: str, dockerfile: Path, context: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    assert instructions, f"{dockerfile.name} is empty"
    for line, word, _ in instructions:
        assert word.isupper() and word in DOCKERFILE_INSTRUCTIONS, f"{dockerfile.name}:{line}: unknown {word!r}"
    first = next(word for _, word, _ in instructions if word != "ARG")
    assert first == "FROM", f"{dockerfile.name}: the first instruction after ARGs must be FROM, not {first}"

    args = build_args(instructions)
    bases = [interpolate(arguments.split()[0], args) for _, word, arguments in instructions if word == "FROM"]
    assert bases[-1] == EXPECTED_BASE_IMAGES[dockerfile.name], f"{dockerfile.name} runs on {bases[-1]}"


@pytest.mark.parametrize(("service", "dockerfile", "context"), DOCKERFILE_PARAMS)
def test_dockerfile_copies_only_what_exists_and_is_in_the_context(
    service: str, dockerfile: Path, context: Path
) -> None:
    patterns = dockerignore_patterns(dockerfile, context)
    copied = 0
    for line, word, arguments in dockerfile_instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        for source in copy_sources(arguments) or []:
            matches = [p for p in context.glob(source.rstrip("/"))] if any(c in source for c in "*?[") else []
            path = context / source
            assert path.exists() or matches, f"{dockerfile.name}:{line} copies {source}, which does not exist"
            relative = path.resolve().relative_to(context).as_posix()
            assert not is_ignored(relative, patterns), f"{dockerfile.name}:{line}: {source} is in the ignore file"
            copied += 1
    assert copied, f"{dockerfile.name} copies nothing from the context"
    for heavy in (".venv", "data", "artifacts", "models", ".git", "feature_repo/data"):
        assert is_ignored(heavy, patterns), f"the build context of {dockerfile.name} would include {heavy}/"


@pytest.mark.parametrize(("service", "dockerfile", "context"), DOCKERFILE_PARAMS)
def test_dockerfile_installs_from_the_lock_as_non_root(service: str, dockerfile: Path, context: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    runs = " ".join(arguments for _, word, arguments in instructions if word == "RUN")
    assert re.search(r"uv sync [^&;]*--frozen", runs), f"{dockerfile.name} must install with `uv sync --frozen`"

    makefile_uv = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert makefile_uv, "the Makefile no longer pins UV_VERSION"
    assert build_args(instructions).get("UV_VERSION") == makefile_uv.group(1), "uv differs from the Makefile's"

    users = [arguments.split(":")[0] for _, word, arguments in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} must end as a non-root user"

    copied = {src.rstrip("/") for _, w, a in instructions if w == "COPY" for src in copy_sources(a) or []}
    for package in ("dags", "deepfm_model", "feature_repo", "serving"):
        assert package in copied, f"{dockerfile.name} does not copy {package}/"


def test_trainer_image_runs_a_gpu_queue_worker() -> None:
    instructions = dockerfile_instructions(DOCKER_DIR / "trainer-gpu.Dockerfile")
    entrypoint = [json.loads(a) for _, w, a in instructions if w == "ENTRYPOINT"][-1]
    command = [json.loads(a) for _, w, a in instructions if w == "CMD"][-1]
    words = entrypoint + command
    assert words[:3] == ["airflow", "celery", "worker"], words
    assert queues({"command": words[1:]}) == {"gpu"}


def dockerfile_env(dockerfile: Path) -> set[str]:
    """Names the Dockerfile sets with ENV."""
    names: set[str] = set()
    for _, word, arguments in dockerfile_instructions(dockerfile):
        if word == "ENV":
            names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments))
    return names


def test_init_script_gets_every_variable_it_reads(services: dict[str, dict[str, Any]]) -> None:
    script = (DOCKER_DIR / "airflow-init.sh").read_text()
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", script))
    assigned = set(re.findall(r"^\s*(?:local\s+)?([A-Za-z_][A-Za-z0-9_]*)=", script, re.MULTILINE))
    assigned |= set(re.findall(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b", script))
    assigned |= set(re.findall(r"\bread\s+(?:-r\s+)?([A-Za-z_][A-Za-z0-9_]*)", script))
    given = set(environment(services["airflow-init"])) | dockerfile_env(DOCKER_DIR / "airflow.Dockerfile")
    missing = sorted(read - assigned - given)
    assert not missing, f"airflow-init.sh reads {missing}, which neither compose nor the image sets"


def test_init_script_is_valid_bash() -> None:
    script = DOCKER_DIR / "airflow-init.sh"
    assert os.access(script, os.X_OK), "docker/airflow-init.sh must be executable"
    if shutil.which("bash") is None:
        pytest.skip("no bash here to check the init script's syntax")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --- docker compose itself, where installed -------------------------------------------------------------------------


def _compose_cli_works() -> str | None:
    """None when `docker compose` runs here, else why not (the CLI renders config without an engine)."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "`docker compose version` timed out"
    if result.returncode != 0:
        return f"`docker compose version` failed: {(result.stderr or result.stdout).strip()[:200]}"
    return None


def test_docker_compose_config_renders() -> None:
    reason = _compose_cli_works()
    if reason:
        pytest.skip(f"Compose CLI unavailable ({reason})")
    required = required_variables()
    env = {**os.environ, **{name: f"placeholder-{name.lower()}" for name in required}}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", os.devnull, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in required},
        check=False,
    )
    assert missing.returncode != 0, "compose must refuse to render without the required secrets"


def test_ignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!dags/", "**/__pycache__", "feature_repo/data/", "!feature_repo/"]
    assert is_ignored(".venv", patterns)
    assert is_ignored(".venv/bin/python", patterns)
    assert not is_ignored("dags/deepfm_nightly.py", patterns)
    assert is_ignored("dags/__pycache__/x.pyc", patterns)
    assert not is_ignored("feature_repo/data/registry.db", patterns), "the last matching pattern decides"


def test_the_spark_cluster_runs_the_drivers_spark_and_the_workers_see_the_feature_data(
    services: dict[str, dict[str, Any]],
) -> None:
    """The master's image is the installed pyspark's Spark; the workers run the project's image (the driver's
    Python and packages, a Java runtime) with the workers' volumes; the feature tasks submit to the master."""
    import importlib.metadata

    master, worker = services["spark-master"], services["spark-worker"]
    image, default = re.fullmatch(r"(apache/spark):\$\{SPARK_VERSION:-([\d.]+)\}", master["image"]).groups()
    assert default == importlib.metadata.version("pyspark"), "the master's Spark must be the driver's"
    assert (
        worker["image"] == services["airflow-worker"]["image"]
        and worker["build"] == services["airflow-worker"]["build"]
    )
    assert as_list(worker["entrypoint"]) == ["/opt/venv/bin/spark-class"]
    assert volumes(worker) == volumes(services["airflow-worker"]), "the workers read and write what the tasks do"
    assert "default-jre-headless" in (DOCKER_DIR / "airflow.Dockerfile").read_text()
    env = environment(services["airflow-worker"])
    assert env["DEEPFM_SPARK_MASTER"] == f"spark://spark-master:{as_list(master['command'])[4]}"
    assert env["DEEPFM_FEATURE_ENGINE"] == "${DEEPFM_FEATURE_ENGINE:-spark}"
