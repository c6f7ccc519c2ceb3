"""Fetch MovieLens-100K at set-up, verify it, cache it, and parse it into `RawData`.

MovieLens may not be redistributed (DESIGN.md, Data licence), so nothing here is committed: the files are
downloaded into an ignored cache folder. GroupLens is tried first; where it is unreachable, the same files are
read from the `recbole==1.2.1` wheel on PyPI, downloaded (not installed) and checked against its sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from deepfm_model.spec.features import MULTI_VALUE_SEPARATOR
from deepfm_model.spec.raw_data import RawData

logger = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
PYPI_SIMPLE = "https://pypi.org/simple"
# Each archive the cache may hold: file name -> (hash algorithm, expected digest).
CHECKSUMS = {"ml-100k.zip": ("md5", GROUPLENS_MD5), RECBOLE_WHEEL: ("sha256", RECBOLE_SHA256)}
GENRE_NAMES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _recbole_wheel_url(index: str, timeout: float) -> str:
    request = urllib.request.Request(f"{index}/recbole/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        files = json.load(response)["files"]
    for entry in files:
        if entry["filename"] == RECBOLE_WHEEL:
            return entry["url"]
    raise RuntimeError(f"{RECBOLE_WHEEL} is not listed on {index}")


def fetch(
    cache_dir: Path,
    index: str = PYPI_SIMPLE,
    timeout: float = 60.0,
    grouplens_url: str = GROUPLENS_URL,
    checksums: dict[str, tuple[str, str]] = CHECKSUMS,
) -> Path:
    """Download MovieLens-100K into `cache_dir` unless a verified copy is there; return the archive path.

    Args:
        cache_dir: ignored folder that keeps the verified archive.
        index: PyPI simple index used when GroupLens is unreachable or its file fails its checksum.
        timeout: seconds per network request.
        grouplens_url: where GroupLens serves `ml-100k.zip`.
        checksums: the digest each archive must have (`CHECKSUMS`); a mirror's tests pass their own.

    Returns:
        Path of the cached archive: `ml-100k.zip` (GroupLens) or the recbole wheel.

    Raises:
        RuntimeError: neither source gave a file with its checksum; nothing is cached.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, (algorithm, digest) in checksums.items():
        cached = cache_dir / name
        if cached.exists() and hashlib.new(algorithm, cached.read_bytes()).hexdigest() == digest:
            return cached
    try:
        payload, name = _download(grouplens_url, timeout), "ml-100k.zip"
        algorithm, digest = checksums[name]
        if hashlib.new(algorithm, payload).hexdigest() != digest:
            raise OSError(f"checksum mismatch for {grouplens_url}")
    except OSError as error:
        logger.info("GroupLens unusable (%s); taking MovieLens-100K from the recbole wheel on PyPI", error)
        url = _recbole_wheel_url(index, timeout)
        payload, name = _download(url, timeout), RECBOLE_WHEEL
        algorithm, digest = checksums[name]
        actual = hashlib.new(algorithm, payload).hexdigest()
        if actual != digest:
            raise RuntimeError(f"Checksum mismatch for {name}: expected {algorithm} {digest}, got {actual}") from error
    partial = cache_dir / f"{name}.partial"
    partial.write_bytes(payload)
    partial.rename(cache_dir / name)
    logger.info("Cached MovieLens-100K as %s (%d bytes, %s verified)", cache_dir / name, len(payload), algorithm)
    return cache_dir / name


def _parse_grouplens(archive: zipfile.ZipFile) -> RawData:
    events = pd.read_csv(
        io.BytesIO(archive.read("ml-100k/u.data")), sep="\t", names=["user_id", "movie_id", "rating", "ts"]
    )
    users = pd.read_csv(
        io.BytesIO(archive.read("ml-100k/u.user")),
        sep="|",
        names=["user_id", "age", "gender", "occupation", "zip_code"],
    )
    movies = pd.read_csv(
        io.BytesIO(archive.read("ml-100k/u.item")), sep="|", encoding="latin-1", header=None,
        names=["movie_id", "title", "release_date", "video_date", "url", *GENRE_NAMES],
    )  # fmt: skip
    flags = movies[list(GENRE_NAMES)].to_numpy().astype(bool)
    movies["genres"] = [
        MULTI_VALUE_SEPARATOR.join(g for g, on in zip(GENRE_NAMES, row, strict=False) if on) for row in flags
    ]
    movies["release_year"] = pd.to_datetime(movies["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    movies["title"] = movies["title"].str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    return _normalise(events, users, movies[["movie_id", "title", "release_year", "genres"]])


def _parse_recbole(archive: zipfile.ZipFile) -> RawData:
    def table(suffix: str) -> pd.DataFrame:
        frame = pd.read_csv(
            io.BytesIO(archive.read(f"{RECBOLE_PREFIX}.{suffix}")), sep="\t", dtype=str, encoding="utf-8",
            keep_default_na=False, quoting=3,
        )  # fmt: skip
        frame.columns = [c.split(":")[0] for c in frame.columns]
        return frame

    events = table("inter").rename(columns={"item_id": "movie_id", "timestamp": "ts"})
    users = table("user")
    movies = table("item").rename(columns={"item_id": "movie_id", "movie_title": "title"})
    movies["genres"] = movies["class"].str.split().str.join(MULTI_VALUE_SEPARATOR)
    movies["release_year"] = pd.to_numeric(movies["release_year"], errors="coerce")
    return _normalise(events, users, movies[["movie_id", "title", "release_year", "genres"]])


def _normalise(events: pd.DataFrame, users: pd.DataFrame, movies: pd.DataFrame) -> RawData:
    events = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str),
            "movie_id": events["movie_id"].astype(str),
            "rating": pd.to_numeric(events["rating"]).astype("int64"),
            "event_timestamp": pd.to_datetime(pd.to_numeric(events["ts"]).astype("int64"), unit="s", utc=True),
        }
    )
    users = users.assign(
        user_id=users["user_id"].astype(str),
        age=pd.to_numeric(users["age"]).astype("int64"),
        zip_code=users["zip_code"].astype(str),
    )[["user_id", "age", "gender", "occupation", "zip_code"]]
    movies = movies.assign(movie_id=movies["movie_id"].astype(str), release_year=movies["release_year"].astype(float))
    return RawData(events.sort_values("event_timestamp", kind="stable").reset_index(drop=True), users, movies)


def load(cache_dir: Path) -> RawData:
    """Fetch (if needed) and parse MovieLens-100K into `RawData`, events sorted by time."""
    return parse(fetch(cache_dir))


def parse(archive_path: Path) -> RawData:
    """`RawData` of a fetched archive: GroupLens' `ml-100k.zip` or the recbole wheel (by its file name)."""
    with zipfile.ZipFile(archive_path) as archive:
        if archive_path.name == RECBOLE_WHEEL:
            return _parse_recbole(archive)
        return _parse_grouplens(archive)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fetch and verify MovieLens-100K into a cache folder.")
    parser.add_argument("cache_dir", type=Path, nargs="?", default=Path("data/movielens"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(fetch(parser.parse_args().cache_dir))
