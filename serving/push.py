"""Push an exported SavedModel to the model base path: atomic, versioned copies; retraction of a bad version.

Layout (TF Serving's): `<base>/<model>/<version>/saved_model.pb`, integer versions that only grow. A push is
atomic: the export is copied into a hidden staging folder next to the versions, then renamed to its version in
one `os.rename`, so a server polling the folder sees either nothing or the whole version. Hidden names are not
integers, so TF Serving and `serving.server` ignore them. Under `<base>/<model>/` the push also keeps:

- `.push.lock`: an exclusive `flock` held for the whole push, so concurrent pushes get distinct versions;
- `.last_version`: the highest version ever handed out, so a version is never reused even after its folder
  (or every folder) was deleted.

TF Serving's model config file is `serving.model_config`'s. Imports the standard library and the durable writes of
`deepfm_model.spec.files` only: DAG tasks call this without TensorFlow.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from deepfm_model.spec import files

log = logging.getLogger(__name__)

_LOCK_FILE = ".push.lock"
_LAST_VERSION_FILE = ".last_version"
_STAGING_PREFIX = ".staging-"
_DELETING_PREFIX = ".deleting-"
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def list_versions(base_path: str | os.PathLike, model_name: str = "deepfm") -> list[int]:
    """Versions present under `<base_path>/<model_name>/`, ascending.

    A version is a folder whose name is a non-negative decimal integer, as TF Serving reads it; hidden staging
    folders and other names are not versions. A missing model folder has no versions.
    """
    model_dir = Path(base_path) / model_name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdecimal() and p.is_dir())


def push(
    export_dir: str | os.PathLike,
    base_path: str | os.PathLike,
    model_name: str = "deepfm",
    keep: int = 5,
    extra_files: Callable[[int], Mapping[str, bytes]] | None = None,
) -> int:
    """Copy an exported SavedModel to `<base_path>/<model_name>/<next version>/`, atomically.

    The next version is one above the highest version ever pushed there. After the rename, versions older than
    the newest `keep` are removed (each renamed to a hidden name first, so it disappears at once).

    Args:
        export_dir: folder holding `saved_model.pb` (and `variables/`, `assets/`, `assets.extra/`).
        base_path: model base path of the server.
        model_name: model folder under `base_path`.
        keep: how many newest versions to keep, at least 1.
        extra_files: given the new version, files (path relative to the version's folder -> bytes) written into
            it before it appears, so that the version never exists without them (its lineage, say).

    Returns:
        The new version.

    Raises:
        ValueError: `keep` below 1, or `export_dir` holds no SavedModel.
    """
    if keep < 1:
        raise ValueError(f"`keep` must be at least 1. Received: `keep={keep}`")
    export_dir = Path(export_dir)
    if not any((export_dir / name).is_file() for name in _SAVED_MODEL_FILES):
        raise ValueError(f"`export_dir` holds no saved_model.pb. Received: `export_dir={str(export_dir)!r}`")
    model_dir = Path(base_path) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(model_dir / _LOCK_FILE):
        _remove_leftovers(model_dir)
        version = max([_read_last_version(model_dir), *list_versions(base_path, model_name)], default=0) + 1
        staging = model_dir / f"{_STAGING_PREFIX}{version}-{uuid.uuid4().hex}"
        try:
            shutil.copytree(export_dir, staging)
            for relative, content in (extra_files(version) if extra_files else {}).items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                (staging / relative).write_bytes(content)
            files.fsync_tree(staging)
            files.write_text(model_dir / _LAST_VERSION_FILE, f"{version}\n")
            os.rename(staging, model_dir / str(version))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        files.fsync_dir(model_dir)
        log.info("Pushed %s to %s as version %d", export_dir, model_dir, version)
        for old in list_versions(base_path, model_name)[:-keep]:
            _remove_version(model_dir, old)
    return version


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_path` (created if missing) for the `with` block."""
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_last_version(model_dir: Path) -> int:
    try:
        return int((model_dir / _LAST_VERSION_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def retract(base_path: str | os.PathLike, model_name: str, version: int) -> None:
    """Take a version off the base path at once (rename, then delete): servers unload it on their next poll.

    For a pushed version that failed verification. Its number stays used: the next push gets a higher one.
    """
    model_dir = Path(base_path) / model_name
    with exclusive_lock(model_dir / _LOCK_FILE):
        _remove_version(model_dir, version)
    log.warning("Retracted version %d of %s", version, model_name)


def _remove_leftovers(model_dir: Path) -> None:
    """Delete staging and deleting folders of pushes that died; the lock guarantees none is in progress."""
    for leftover in model_dir.iterdir():
        if leftover.name.startswith((_STAGING_PREFIX, _DELETING_PREFIX)):
            log.warning("Removing leftover %s of an interrupted push", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_version(model_dir: Path, version: int) -> None:
    doomed = model_dir / f"{_DELETING_PREFIX}{version}-{uuid.uuid4().hex}"
    os.rename(model_dir / str(version), doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    log.info("Removed version %d of %s", version, model_dir)
