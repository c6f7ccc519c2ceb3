"""TF Serving's `--model_config_file` (a text `ModelServerConfig`): where it lives, how it is read, its one writer.

`write_model_config` is the only code that writes the file. A fresh config (`build_model_config`) and the edits of
`serving.labels` (labels, version policy) both go through it, so every config on disk has the same header and
layout (protobuf's text format, which TF Serving and `serving.server` parse). The write is atomic and durable
(`deepfm_model.spec.files`): a server polling the file reads the old config or the new one, whole.

Imports no TensorFlow: the config protos of `tensorflow_serving.config` import none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from deepfm_model.spec import files

CONFIG_FILE_NAME = "models.config"
_HEADER = "# TF Serving --model_config_file, written by serving.model_config; serving.labels edits labels and policy.\n"


@dataclass(frozen=True)
class VersionConfig:
    """The version policy and labels of one model in a model config file."""

    num_versions: int  # latest-N policy: the newest N versions loaded (under specific: how many are listed)
    specific_versions: tuple[int, ...]  # specific policy: exactly these versions loaded; () under latest-N
    labels: dict[str, int]  # label -> version

    @classmethod
    def from_proto(cls, model: Any, source: str = "<model config>") -> VersionConfig:
        """Read a `tensorflow.serving.ModelConfig` entry; an unset policy is TF Serving's default, latest 1.

        Raises:
            ValueError: the `all` policy, or a specific policy listing no version.
        """
        policy = model.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        labels = dict(model.version_labels)
        if choice == "specific":
            if not policy.specific.versions:
                raise ValueError(f"The specific version policy lists no version. Received: `{source}`")
            versions = tuple(sorted(set(policy.specific.versions)))
            return cls(len(versions), versions, labels)
        if choice in (None, "latest"):
            return cls(policy.latest.num_versions or 1, (), labels)
        raise ValueError(f"Version policy `{choice}` is not supported. Received: `{source}`")

    def apply_to(self, model: Any) -> None:
        """Replace the version policy and labels of a `tensorflow.serving.ModelConfig` entry with these."""
        model.model_version_policy.Clear()
        if self.specific_versions:
            model.model_version_policy.specific.versions.extend(self.specific_versions)
        else:
            model.model_version_policy.latest.num_versions = self.num_versions
        model.version_labels.clear()
        model.version_labels.update(self.labels)


def model_config_path(base_path: str | os.PathLike) -> Path:
    """Where the model config of a model base path lives by default: `<base_path>/models.config`."""
    return Path(base_path) / CONFIG_FILE_NAME


def parse_model_config(text: str, model_name: str | None = None, source: str = "<model config>") -> tuple[Any, Any]:
    """Parse a model config's text; return the `ModelServerConfig` and the entry of `model_name` (the first
    when `None`).

    Raises:
        ValueError: the text is not a `ModelServerConfig`, or has no such model.
    """
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"Not a TF Serving model config: {error}. Received: `{source}`") from error
    for model in config.model_config_list.config:
        if model_name is None or model.name == model_name:
            return config, model
    raise ValueError(f"No model {model_name or ''} in the model config. Received: `{source}`")


def build_model_config(
    model_name: str = "deepfm",
    base_path: str = "/models/deepfm",
    num_versions: int = 1,
    version_labels: Mapping[str, int] | None = None,
    versions: Sequence[int] = (),
) -> Any:
    """A `ModelServerConfig` of one TensorFlow model, to write with `write_model_config`.

    `serving.labels` edits the file afterwards (labels, policy); see there for which policy suits labels.

    Args:
        model_name: the model's name in requests.
        base_path: the folder holding the version folders, as the server sees it (a container path for Docker).
        num_versions: latest-N version policy: how many newest versions stay loaded.
        version_labels: label to version, e.g. `{"stable": 3, "canary": 4}`.
        versions: the specific version policy instead: exactly these versions stay loaded.

    Raises:
        ValueError: `num_versions` below 1.
    """
    if num_versions < 1:
        raise ValueError(f"`num_versions` must be at least 1. Received: `num_versions={num_versions}`")
    specific = tuple(sorted(set(versions)))
    policy = VersionConfig(len(specific) or num_versions, specific, dict(version_labels or {}))
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=model_name, base_path=base_path, model_platform="tensorflow")
    policy.apply_to(model)
    return config


def render_model_config(config: Any) -> str:
    """The text `write_model_config` writes for a `ModelServerConfig`: a header, then protobuf's text format."""
    return _HEADER + text_format.MessageToString(config)


def write_model_config(path: str | os.PathLike, config: Any) -> Path:
    """Replace the model config file at `path` with `config` (a `ModelServerConfig`), atomically; return the path."""
    return files.write_text(path, render_model_config(config))
