"""The nightly DAG's runs as Airflow's metadata database records them, read in the API server's process.

The plugin's app runs inside `airflow api-server`, so it reads the DagRun and TaskInstance tables through
Airflow's own session (`airflow.utils.session.create_session`): whatever database the deployment configures
(SQLite, Postgres), no REST round trip.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

NIGHTLY_DAG_ID = "deepfm_nightly"  # dags/deepfm_nightly.py (a test keeps the two equal)


@dataclass(frozen=True)
class DagRunRecord:
    """One DagRun of the nightly DAG.

    Attributes:
        run_id: Airflow's run id.
        ds: its logical date, `YYYY-MM-DD` (UTC).
        state: `queued`, `running`, `success` or `failed`.
        run_type: `manual`, `scheduled`, `backfill`, ...
        start_date: when it started (`None` while queued).
        end_date: when it finished (`None` while running).
        failed_tasks: ids of its task instances in state `failed`, in task order of their start.
    """

    run_id: str
    ds: str
    state: str | None
    run_type: str
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    failed_tasks: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.start_date is None or self.end_date is None:
            return None
        return (self.end_date - self.start_date).total_seconds()


def ds_of(logical_date: dt.datetime) -> str:
    """`YYYY-MM-DD` of a logical date, in UTC (Airflow stores them aware)."""
    if logical_date.tzinfo is not None:
        logical_date = logical_date.astimezone(dt.UTC)
    return logical_date.date().isoformat()


def nightly_runs(dag_id: str = NIGHTLY_DAG_ID) -> dict[str, DagRunRecord]:
    """The newest DagRun of each logical date of `dag_id`, by `ds`; runs without a logical date are left out."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session(scoped=False) as session:
        dag_runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date.is_not(None)).order_by(DagRun.run_after)
        ).all()
        failed = session.execute(
            select(TaskInstance.run_id, TaskInstance.task_id)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.state == "failed")
            .order_by(TaskInstance.start_date)
        ).all()
        failed_by_run: dict[str, list[str]] = {}
        for run_id, task_id in failed:
            failed_by_run.setdefault(run_id, []).append(task_id)
        records = {}
        for run in dag_runs:  # oldest first: a later run of the same date replaces an earlier one
            ds = ds_of(run.logical_date)
            records[ds] = DagRunRecord(
                run_id=run.run_id,
                ds=ds,
                state=_value(run.state),
                run_type=_value(run.run_type),
                start_date=run.start_date,
                end_date=run.end_date,
                failed_tasks=tuple(failed_by_run.get(run.run_id, ())),
            )
    return records


def run_ds(dag_id: str, run_id: str) -> str | None:
    """The logical date of DagRun `run_id` of `dag_id`; `None` when there is no such run or it has none."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session(scoped=False) as session:
        logical_date = session.scalar(
            select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
    return ds_of(logical_date) if logical_date is not None else None


def _value(enum_or_str) -> str | None:
    """The plain string of an Airflow state enum (`DagRunState.SUCCESS` -> `"success"`)."""
    return None if enum_or_str is None else str(getattr(enum_or_str, "value", enum_or_str))
