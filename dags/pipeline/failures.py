"""The line a failed task of the nightly DAG writes to its log, and finding it again: one format for both.

The DAG's failure callback logs `failure_line(...)`, every line of the reason kept (a raw source check names the
column on its second line); `make demo` reads it back from the task log through the REST API (`failure_reason`)
to print why a run failed. Imports the standard library only: the DAG file imports it at parse time.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "deepfm_nightly {task_id} failed for "


def failure_line(task_id: str, ds: str | None, error: BaseException | None) -> str:
    """`deepfm_nightly <task> failed for <ds>: <the whole reason>`."""
    reason = str(error).strip() if error is not None else "unknown"
    return f"{PREFIX.format(task_id=task_id)}{ds}: {reason or type(error).__name__}"


def failure_reason(events: Iterable[str], task_id: str) -> str | None:
    """The last failure line of `task_id` among a task log's messages, or `None`."""
    prefix = PREFIX.format(task_id=task_id)
    found = [event for event in events if event.startswith(prefix)]
    return found[-1] if found else None
