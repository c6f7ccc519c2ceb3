"""docker/compose.yaml read as `docker compose` reads it: an env file of secrets, `${VAR}` interpolation, anchors.

- `generate_env_file` writes what docker/.env.example asks a person to fill in (random secrets of the kinds it
  describes), plus any optional settings, as `docker/.env` would hold them;
- `interpolate` is compose's variable syntax: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
  `${VAR:?message}`, `${VAR?message}`, `$$` for a literal `$`; a required variable that is missing raises;
- `load_compose` parses the file (YAML anchors and `<<` merges resolved by the YAML loader) and interpolates every
  string in it;
- `as_list`, `environment`, `volumes`, `published_ports`, `dockerfile_env` read a service's command, environment,
  mounts and ports in either of compose's forms, and its image's `ENV`.

Used by the static checks of `docker/` and by the deploy test, which runs the file's topology as local processes.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dags.pipeline.config import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = COMPOSE_FILE.parent / ".env.example"
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_REQUIRED_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=$")  # a value .env.example leaves for a person to fill in


def new_secret(name: str) -> str:
    """A value for secret `name` as docker/.env.example says to generate it (URL-safe: it goes into URLs)."""
    if "FERNET" in name:
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_hex(24 if "PASSWORD" in name else 32)


def generate_env_file(path: Path, settings: Mapping[str, str] = {}) -> dict[str, str]:  # noqa: B006 (read only)
    """Write `path` as docker/.env: every value .env.example leaves empty, generated, then `settings`.

    Returns:
        The file's variables.
    """
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _REQUIRED_LINE.match(line.strip())
        if match:
            values[match.group(1)] = new_secret(match.group(1))
    values.update(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of an env file; comments and blank lines skipped."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value for name, value in pairs}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string.

    Raises:
        ValueError: a required variable (`${VAR:?message}`, `${VAR?message}`) is missing; the message names it.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        present = name in env and (env[name] != "" or operator not in (":-", ":?"))
        if present:
            return env[name]
        if operator in (":?", "?"):
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        if operator in (":-", "-"):
            return argument
        return ""

    return _VARIABLE.sub(replace, value)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors resolved and every string interpolated from `env`."""
    return _interpolated(yaml.safe_load(path.read_text()), env)


def as_list(value: Any) -> list[str]:
    """A compose `command`/`entrypoint`/healthcheck `test`, as a list of words."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's forms, as a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def volumes(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A service's `volumes`, short syntax normalized to the long one (type, source, target, read_only)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append({"read_only": False, **entry})
            continue
        parts = entry.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        kind = "bind" if source and source.startswith((".", "/", "~")) else "volume"
        mounts.append({"type": kind, "source": source, "target": target, "read_only": "ro" in parts[2:]})
    return mounts


def published_ports(service: Mapping[str, Any]) -> list[int]:
    """The container ports a service publishes (`ports:` targets)."""
    targets = []
    for entry in service.get("ports") or []:
        target = entry["target"] if isinstance(entry, dict) else str(entry).split("/")[0].rsplit(":", 1)[-1]
        targets.append(int(target))
    return targets


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """The `ENV` of a Dockerfile's final stage (values as written, `$VAR` references unexpanded)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        word, _, arguments = line.strip().partition(" ")
        if word.upper() == "FROM":
            env = {}
        elif word.upper() == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(arguments, comments=True) if "=" in token)
    return env
