"""The real services tests talk to, from the environment (defaults: what this machine and CI run).

POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD (127.0.0.1:5432, user postgres, trust auth);
REDIS_HOST, REDIS_PORT (127.0.0.1:6379). A test takes a database or a key prefix of its own and removes it.
A missing service fails the test that needs it: it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator


def postgres_params() -> dict[str, str | int]:
    params: dict[str, str | int] = {
        "host": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "port": int(os.environ.get("POSTGRES_PORT", "5432")),
        "user": os.environ.get("POSTGRES_USER", "postgres"),
    }
    if "POSTGRES_PASSWORD" in os.environ:
        params["password"] = os.environ["POSTGRES_PASSWORD"]
    return params


def redis_address() -> tuple[str, int]:
    return os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT", "6379"))


@contextlib.contextmanager
def postgres_database(prefix: str, driver: str = "postgresql+psycopg2", create: bool = True) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database `<prefix>_<random>`, dropped (connections and all) afterwards.

    With `create=False` only the name is taken: the code under test creates the database, and it is dropped
    afterwards all the same.
    """
    import psycopg2
    from sqlalchemy.engine import URL

    params = postgres_params()
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **params)
    admin.autocommit = True
    name = f"{prefix}_{secrets.token_hex(4)}"
    if create:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield URL.create(
            driver, username=str(params["user"]), password=params.get("password"),
            host=str(params["host"]), port=int(params["port"]), database=name,
        ).render_as_string(hide_password=False)  # fmt: skip
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def delete_redis_keys(pattern: str, db: int = 0) -> int:
    """Delete the keys matching `pattern` in Redis database `db`; return how many there were."""
    import redis

    host, port = redis_address()
    client = redis.Redis(host=host, port=port, db=db)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for key in keys:
            client.delete(key)
        return len(keys)
    finally:
        client.close()


@contextlib.contextmanager
def redis_key_space(prefix: str) -> Iterator[tuple[int, str]]:
    """(database number, key prefix) on Redis of a test's own; its keys are deleted afterwards.

    The database number is REDIS_DB if set, else a random one of 1-15 holding no keys; the key prefix
    `<prefix>-<random>:` keeps the test apart from anything else that picks the same database.
    """
    import redis

    host, port = redis_address()
    if "REDIS_DB" in os.environ:
        db = int(os.environ["REDIS_DB"])
    else:
        empty = [n for n in range(1, 16) if redis.Redis(host=host, port=port, db=n).dbsize() == 0]
        db = secrets.choice(empty or list(range(1, 16)))
    key_prefix = f"{prefix}-{secrets.token_hex(4)}:"
    try:
        yield db, key_prefix
    finally:
        delete_redis_keys(f"{key_prefix}*", db)
