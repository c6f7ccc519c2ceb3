"""DuckDB SQL text from Python values: quoted names, literals, file lists and instants, written once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deepfm_model.spec.dates import DateLike, to_utc


def name(column: str) -> str:
    """A column or table name, double-quoted."""
    return '"' + column.replace('"', '""') + '"'


def literal(value: object) -> str:
    """A value as a SQL literal: numbers as they are, anything else (text, paths) single-quoted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "'" + str(value).replace("'", "''") + "'"
    return repr(value)


def files(paths: Iterable[Path]) -> str:
    """A list of file paths, for `read_parquet([...])`."""
    return "[" + ", ".join(literal(path) for path in paths) + "]"


def instant(value: DateLike) -> str:
    """A `TIMESTAMPTZ` literal of an instant (naive values are UTC)."""
    return f"TIMESTAMPTZ '{to_utc(value).isoformat()}'"
