"""Version labels (`stable`, `canary`) and the version policy in TF Serving's model config; rollback.

The labels live where TF Serving reads them: the `--model_config_file`, by default `<base>/models.config` next to
the model folders (`model_config_path`). Serve with that file and every edit here takes effect on the server's
next poll, without a restart:

    python -m serving.server --model-config-file models/models.config
    tensorflow_model_server --model_config_file=/models/models.config --model_config_file_poll_wait_seconds=10

Version policy. TF Serving's default, latest 1, loads only the newest version, so a `stable` label on an older
version would name nothing loaded. Two policies keep the labelled versions loaded:

- latest 2 (what `ensure_model_config` writes): the newest two versions on disk stay loaded, so `stable` on
  version N-1 and `canary` on N coexist. Move `stable` to N before pushing N+1, or N+1 unloads N-1 under it;
  `set_label` refuses a version outside the newest N.
- specific (`set_version_policy(versions=[...])`): exactly the listed versions stay loaded, whatever is pushed.
  `set_label` keeps the list in step: it adds the version a label moves to, and drops the version the label
  left when no other label names it. Use it to roll back further than the newest two, or to keep a push from
  loading before it is labelled.

A label is only moved to a version the server reports AVAILABLE, at two places: `promote` (and `rollback` with a
client) asks the server first and raises FAILED_PRECONDITION otherwise; and the server itself (TF Serving and
`serving.server`) refuses a label map that names a version it has not loaded, keeping the labels in force.

A canary, then its promotion, then a rollback:

    version = push(export_dir, "models")                      # loads as the newest; `stable` keeps the older one
    promote(client, "models", "deepfm", "canary", version)    # only once the server reports it AVAILABLE
    promote(client, "models", "deepfm", "stable", version)
    rollback("models", "deepfm", "stable", client=client)     # back to the newest version below it

Edits are atomic (a temporary file, then `os.replace`) and serialized by a lock file beside the config. Imports
neither TensorFlow nor `tensorflow_serving.apis` (only the config protos, which import no TensorFlow).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import grpc

from serving.errors import ServingError
from serving.model_config import (
    VersionConfig,
    build_model_config,
    model_config_path,
    parse_model_config,
    write_model_config,
)
from serving.push import exclusive_lock, list_versions

log = logging.getLogger(__name__)

DEFAULT_NUM_VERSIONS = 2  # latest-N policy of a config written here: `stable` and `canary` both loaded
PathLike = str | os.PathLike


def ensure_model_config(
    base_path: PathLike,
    model_name: str = "deepfm",
    config_path: PathLike | None = None,
    num_versions: int = DEFAULT_NUM_VERSIONS,
) -> Path:
    """Write the model config with a latest-`num_versions` policy and no labels, unless it exists already.

    Its base path is `<base_path>/<model_name>` made absolute, as the local server sees it.

    Returns:
        The config's path.
    """
    path = Path(config_path) if config_path is not None else model_config_path(base_path)
    if not path.exists():
        model_dir = str((Path(base_path) / model_name).resolve())
        write_model_config(path, build_model_config(model_name, model_dir, num_versions))
        log.info("Wrote %s: %s, latest %d", path, model_dir, num_versions)
    return path


def read_version_config(
    base_path: PathLike, model_name: str = "deepfm", config_path: PathLike | None = None
) -> VersionConfig:
    """The version policy and labels of `model_name` in its model config.

    Raises:
        FileNotFoundError: no config file.
        ValueError: the file has no such model or an unsupported policy.
    """
    path = Path(config_path) if config_path is not None else model_config_path(base_path)
    _, model = parse_model_config(path.read_text(), model_name, str(path))
    return VersionConfig.from_proto(model, str(path))


def set_label(
    base_path: PathLike, model_name: str, label: str, version: int, config_path: PathLike | None = None
) -> VersionConfig:
    """Point `label` at `version` in the model config (written first by `ensure_model_config` if missing).

    Does not ask the server: use `promote` to move a label only to a version the server reports AVAILABLE
    (the server also refuses a label on a version it has not loaded, and keeps the labels in force).
    Under the specific policy the version joins the loaded versions, and the version the label left is
    dropped from them when no other label names it.

    Returns:
        The policy and labels written.

    Raises:
        ValueError: `version` is not on disk, or the latest-N policy does not load it (it is not among the
            newest N on disk), or `label` is empty.
    """
    if not label:
        raise ValueError(f"`label` must be a non-empty string. Received: `label={label!r}`")
    on_disk = list_versions(base_path, model_name)
    if version not in on_disk:
        raise ValueError(
            f"Version {version} of {model_name} is not on disk under {Path(base_path) / model_name}; "
            f"found {on_disk}. Received: `version={version}`"
        )

    def move(policy: VersionConfig) -> VersionConfig:
        labels = {**policy.labels, label: version}
        if policy.specific_versions:
            versions = set(policy.specific_versions) | {version}
            left = policy.labels.get(label)
            if left is not None and left != version and left not in labels.values():
                versions.discard(left)
            return VersionConfig(len(versions), tuple(sorted(versions)), labels)
        if version not in on_disk[-policy.num_versions :]:
            raise ValueError(
                f"Version {version} of {model_name} is not among the newest {policy.num_versions} on disk "
                f"({on_disk[-policy.num_versions :]}), which the latest-{policy.num_versions} policy loads; "
                "switch to the specific policy (`set_version_policy(versions=...)`) to label it"
            )
        return VersionConfig(policy.num_versions, (), labels)

    written = _edit(base_path, model_name, config_path, move)
    log.info("Label %r of %s -> version %d (labels %s)", label, model_name, version, written.labels)
    return written


def promote(
    client: Any, base_path: PathLike, model_name: str, label: str, version: int, config_path: PathLike | None = None
) -> VersionConfig:
    """Point `label` at `version` once the server reports that version AVAILABLE.

    Args:
        client: a `serving.client.ServingClient` of the server reading the config (its `model_status`).
        base_path, model_name, label, version, config_path: as for `set_label`.

    Returns:
        The policy and labels written.

    Raises:
        ServingError: FAILED_PRECONDITION when the version is not AVAILABLE or unknown to the server (nothing
            is written); the server's code (UNAVAILABLE, ...) when the status call fails otherwise.
        ValueError: as `set_label`.
    """
    try:
        states = {status.version: status.state for status in client.model_status(version=version)}
    except ServingError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
        states = {}  # the server has never seen the version
    if states.get(version) != "AVAILABLE":
        raise ServingError(
            f"Refusing to point label {label!r} of {model_name} at version {version}: the server reports it "
            f"{states.get(version, 'unknown')}, not AVAILABLE",
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    return set_label(base_path, model_name, label, version, config_path)


def rollback(
    base_path: PathLike,
    model_name: str = "deepfm",
    label: str = "stable",
    to_version: int | None = None,
    *,
    config_path: PathLike | None = None,
    client: Any = None,
) -> int:
    """Point `label` back at an earlier version: `to_version`, or the newest version on disk below the one
    the label names now.

    Args:
        base_path, model_name, label, config_path: as for `set_label`.
        to_version: the version to go back to.
        client: when given, the move goes through `promote` (the version must be AVAILABLE).

    Returns:
        The version the label now names.

    Raises:
        ValueError: the label is not set and no `to_version` was given, or no earlier version is on disk, or
            as `set_label`.
        ServingError: as `promote`, with a client.
    """
    if to_version is None:
        try:
            current = read_version_config(base_path, model_name, config_path).labels.get(label)
        except FileNotFoundError:
            current = None
        if current is None:
            raise ValueError(f"Label {label!r} of {model_name} is not set; pass `to_version`")
        earlier = [v for v in list_versions(base_path, model_name) if v < current]
        if not earlier:
            raise ValueError(f"No version of {model_name} below {current} is on disk to roll {label!r} back to")
        to_version = earlier[-1]
    if client is not None:
        promote(client, base_path, model_name, label, to_version, config_path)
    else:
        set_label(base_path, model_name, label, to_version, config_path)
    log.warning("Rolled label %r of %s back to version %d", label, model_name, to_version)
    return to_version


def set_version_policy(
    base_path: PathLike,
    model_name: str = "deepfm",
    *,
    num_versions: int | None = None,
    versions: tuple[int, ...] | list[int] | None = None,
    config_path: PathLike | None = None,
) -> VersionConfig:
    """Switch the model to a latest-`num_versions` or a specific (`versions`) policy, keeping the labels.

    Raises:
        ValueError: not exactly one of `num_versions` and `versions`; `num_versions` below 1; a version not on
            disk; or a labelled version the new policy would not load.
    """
    if (num_versions is None) == (versions is None):
        raise ValueError(f"Pass `num_versions` or `versions`. Received: `{num_versions=}, {versions=}`")
    if num_versions is not None and num_versions < 1:
        raise ValueError(f"`num_versions` must be at least 1. Received: `num_versions={num_versions}`")
    on_disk = list_versions(base_path, model_name)
    if versions is not None:
        missing = sorted(set(versions) - set(on_disk))
        if not versions or missing:
            raise ValueError(f"Versions {missing} of {model_name} are not on disk (found {on_disk}). "
                             f"Received: `versions={versions}`")  # fmt: skip

    def change(policy: VersionConfig) -> VersionConfig:
        loaded = set(versions) if versions is not None else set(on_disk[-num_versions:])
        unloaded = {label: v for label, v in policy.labels.items() if v not in loaded}
        if unloaded:
            raise ValueError(f"The new policy would unload labelled versions {unloaded}; move the labels first")
        if versions is not None:
            return VersionConfig(len(loaded), tuple(sorted(loaded)), policy.labels)
        return VersionConfig(num_versions, (), policy.labels)

    return _edit(base_path, model_name, config_path, change)


def _edit(base_path, model_name: str, config_path, change) -> VersionConfig:
    """Read the config (writing the default first if missing), apply `change` to the model's policy and labels,
    write it back atomically; everything else in the file is kept."""
    path = ensure_model_config(base_path, model_name, config_path)
    with exclusive_lock(path.with_name(f".{path.name}.lock")):
        config, model = parse_model_config(path.read_text(), model_name, str(path))
        written = change(VersionConfig.from_proto(model, str(path)))
        written.apply_to(model)
        write_model_config(path, config)
    return written


def main(argv: list[str] | None = None) -> None:
    """`python -m serving.labels {ensure,show,set,rollback}`: the model config from a shell (`make serve`, ops)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serving.labels", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("ensure", "show", "set", "rollback"))
    parser.add_argument("label", nargs="?", help="set, rollback: the label (e.g. stable)")
    parser.add_argument("version", nargs="?", type=int, help="set: the version; rollback: optional target")
    parser.add_argument("--base-path", default="models", help="the model base path")
    parser.add_argument("--model-name", default="deepfm")
    parser.add_argument("--config-file", help="the model config file (default <base-path>/models.config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("set", "rollback") and not args.label:
        parser.error(f"{args.command} needs a LABEL")
    if args.command == "set" and args.version is None:
        parser.error("set needs a LABEL and a VERSION")
    path = ensure_model_config(args.base_path, args.model_name, args.config_file)
    try:
        if args.command == "set":
            set_label(args.base_path, args.model_name, args.label, args.version, args.config_file)
        elif args.command == "rollback":
            rollback(args.base_path, args.model_name, args.label, args.version, config_path=args.config_file)
    except ValueError as error:  # a version not on disk, nothing to roll back to: said, the config unchanged
        parser.exit(1, f"{parser.prog} {args.command}: {error}\n")
    policy = read_version_config(args.base_path, args.model_name, args.config_file)
    print(f"{path}: {policy}")


if __name__ == "__main__":
    main()
