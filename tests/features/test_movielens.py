"""The MovieLens fetch and both parsers, on small archives of the same formats served by a local HTTP server.

GroupLens first (md5-checked); when it is unreachable or its file fails the checksum, the recbole wheel found
through a PyPI simple index (JSON API) and sha256-checked; a verified copy in the cache is used without a request.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from feature_repo import movielens

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t4\t878887116\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n"
U_ITEM = (
    "10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "20|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
)
RECBOLE = {
    "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t881250949\n"
             "2\t10\t3\t891717742\n1\t20\t4\t878887116\n",
    "user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n"
            "2\t53\tF\tother\t94043\n",
    "item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n10\tToy Story\t1995\t"
            "Animation Children's Comedy\n20\tGoldenEye\t1995\tAction Adventure Thriller\n",
}  # fmt: skip


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text.encode("latin-1" if name.endswith("u.item") else "utf-8"))
    return buffer.getvalue()


GROUPLENS_ZIP = zipped({"ml-100k/u.data": U_DATA, "ml-100k/u.user": U_USER, "ml-100k/u.item": U_ITEM})
WHEEL = zipped({f"{movielens.RECBOLE_PREFIX}.{suffix}": text for suffix, text in RECBOLE.items()})


class Mirror:
    """GroupLens and a PyPI simple index on 127.0.0.1; `files` maps a path to its body (absent: 404)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.files["/simple/recbole/"] = json.dumps(
            {"files": [{"filename": movielens.RECBOLE_WHEEL, "url": f"{self.url}/files/{movielens.RECBOLE_WHEEL}"}]}
        ).encode()

    def fetch(self, cache: Path, checksums: dict | None = None) -> Path:
        return movielens.fetch(cache, index=f"{self.url}/simple", timeout=10, grouplens_url=f"{self.url}/ml-100k.zip",
                               checksums=checksums or CHECKSUMS)  # fmt: skip


CHECKSUMS = {
    "ml-100k.zip": ("md5", hashlib.md5(GROUPLENS_ZIP).hexdigest()),
    movielens.RECBOLE_WHEEL: ("sha256", hashlib.sha256(WHEEL).hexdigest()),
}


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    served = Mirror()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def expected_tables(data) -> None:
    events = data.events
    assert events["user_id"].tolist() == ["1", "1", "2"]  # sorted by time
    assert events["movie_id"].tolist() == ["20", "10", "10"] and events["rating"].tolist() == [4, 5, 3]
    assert events["event_timestamp"].iloc[0] == pd.Timestamp(878887116, unit="s", tz="UTC")
    assert data.users.set_index("user_id").loc["2", ["age", "gender", "occupation", "zip_code"]].tolist() == [
        53, "F", "other", "94043"]  # fmt: skip
    movies = data.movies.set_index("movie_id")
    assert movies.loc["10", "title"] == "Toy Story" and movies.loc["20", "release_year"] == 1995.0
    assert movies.loc["20", "genres"].split("|") == ["Action", "Adventure", "Thriller"]


def test_grouplens_is_fetched_verified_cached_and_parsed(mirror, tmp_path):
    mirror.files["/ml-100k.zip"] = GROUPLENS_ZIP
    path = mirror.fetch(tmp_path)
    assert path == tmp_path / "ml-100k.zip" and path.read_bytes() == GROUPLENS_ZIP
    expected_tables(movielens.parse(path))
    mirror.server.shutdown()  # a verified copy in the cache needs no request
    assert mirror.fetch(tmp_path) == path


@pytest.mark.parametrize("grouplens", [None, b"truncated"], ids=["unreachable", "bad-checksum"])
def test_the_recbole_wheel_is_the_fallback_and_parses_to_the_same_tables(mirror, tmp_path, grouplens):
    if grouplens is not None:
        mirror.files["/ml-100k.zip"] = grouplens
    mirror.files[f"/files/{movielens.RECBOLE_WHEEL}"] = WHEEL
    path = mirror.fetch(tmp_path)
    assert path == tmp_path / movielens.RECBOLE_WHEEL and "/simple/recbole/" in mirror.requests
    assert not (tmp_path / "ml-100k.zip").exists()
    expected_tables(movielens.parse(path))


def test_no_verified_source_raises_and_caches_nothing(mirror, tmp_path):
    mirror.files["/ml-100k.zip"] = b"truncated"
    mirror.files[f"/files/{movielens.RECBOLE_WHEEL}"] = WHEEL[:-10]
    with pytest.raises(RuntimeError, match=f"Checksum mismatch for {movielens.RECBOLE_WHEEL}"):
        mirror.fetch(tmp_path)
    assert list(tmp_path.iterdir()) == []
