"""The README's "Where things live" table names every module and folder of the product: it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dags", "deepfm_model", "feature_repo", "serving")


def where_things_live() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Where things live") :].split("\n## ", 1)[0]


def test_every_module_is_named_in_its_folders_row() -> None:
    table = where_things_live()
    rows = {row.split("|")[1].strip().strip("`"): row for row in table.splitlines() if row.startswith("| `")}
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if path.name == "__init__.py" or "_build" in relative.parts:
                continue
            folder = f"{relative.parent.as_posix()}/"
            if not re.search(rf"`{re.escape(path.name)}`", rows.get(folder, "")):
                missing.append(str(relative))
    assert not missing, f"README 'Where things live' does not name: {missing}"


def test_every_named_module_exists() -> None:
    table = where_things_live()
    for row in table.splitlines():
        if not row.startswith("| `") or row.split("|")[1].strip().strip("`").split("/")[0] not in PACKAGES:
            continue
        folder = ROOT / row.split("|")[1].strip().strip("`")
        for name in re.findall(r"`([\w.]+\.py)`", row.split("|")[2]):
            assert (folder / name).is_file(), f"README names {folder.relative_to(ROOT) / name}, which does not exist"
