"""Atomic, durable file writes: every file one stage hands to the next is written through here.

A reader sees the old file or the new one, whole, never a half-written one, and a written file survives a crash
of the machine (the data and the directory entry are fsynced before the call returns).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the directory entries of `path` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under `root` (before renaming a whole staged folder into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


@contextlib.contextmanager
def staged_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it is fsynced and renamed onto `path`.

    For writers that want a file name rather than bytes (`DataFrame.to_parquet`, a compiler's `-o`). On an
    error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        yield staged
        move_into_place(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def move_into_place(source: str | os.PathLike, target: str | os.PathLike, sync_dir: bool = True) -> None:
    """Rename a finished file over `target`: its data fsynced first, then (unless `sync_dir` is off, for a caller
    that syncs the folder once after many files) the folder's entry."""
    with open(source, "rb+") as f:
        os.fsync(f.fileno())
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    if sync_dir:
        fsync_dir(Path(target).parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace `path` with `data` atomically and durably; return the path."""
    with staged_path(path) as staged:
        staged.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text` (UTF-8) atomically and durably; return the path."""
    return write_bytes(path, text.encode("utf-8"))


def to_python(value: Any) -> Any:
    """A NumPy or pandas scalar as the plain Python value JSON and protobuf take; anything else unchanged."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def write_json(path: str | os.PathLike, payload: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Replace `path` with `payload` as indented JSON, atomically and durably; return the path.

    NumPy scalars become Python values; other unknown objects go through `default` (`str` when not given).
    """

    def fallback(value: Any) -> Any:
        plain = to_python(value)
        if plain is not value:
            return plain
        return (default or str)(value)

    return write_text(path, json.dumps(payload, indent=2, default=fallback))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in `path`, or `None` when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
