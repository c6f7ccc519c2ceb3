"""A file of a run directory, by the relative path a browser asks for, and never a file outside it.

The path arrives percent-decoded (`%2e%2e` is `..`, `%2f` is `/`), so it is checked after decoding: no empty,
`.` or `..` segment, no backslash or NUL, not absolute; then it is resolved with every symlink followed and must
still lie inside the run directory (itself resolved), so a link pointing out of it is refused too.
"""

from __future__ import annotations

from pathlib import Path

INDEX = "index.html"  # served for a folder that has one (the Data Docs sites, the model report)


class NotInRun(LookupError):
    """The path names nothing servable inside the run directory; the message says why (for logs, not clients)."""


def resolve_run_file(root: Path, relative: str) -> Path:
    """The file `relative` names inside run directory `root` (a folder's `index.html` for a folder).

    Raises:
        NotInRun: the path is malformed, leaves `root` (`..`, an absolute path, a symlink out), or names no file.
    """
    if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
        raise NotInRun(f"malformed or absolute path {relative!r}")
    segments = relative.split("/")
    if segments[-1] == "":  # a folder asked for with a trailing slash
        segments.pop()
    if any(segment in ("", ".", "..") for segment in segments):
        raise NotInRun(f"path {relative!r} has an empty, '.' or '..' segment")
    try:
        base = Path(root).resolve(strict=True)
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError) as error:  # missing, a symlink loop
        raise NotInRun(f"{relative!r}: {error}") from error
    if not target.is_relative_to(base):
        raise NotInRun(f"{relative!r} resolves to {target}, outside {base}")
    if target.is_dir():
        index = (target / INDEX).resolve()  # the index itself may be a symlink out
        if not (index.is_file() and index.is_relative_to(base)):
            raise NotInRun(f"{relative!r} is a folder without {INDEX} inside {base}")
        target = index
    if not target.is_file():
        raise NotInRun(f"{relative!r} is not a regular file")
    return target
