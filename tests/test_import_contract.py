"""The import contract: layers whose arrows point one way, no module or folder cycle, no product import of tests.

Read from the source with `ast`, every import counted (inside functions and `TYPE_CHECKING` blocks too):

```
dags/ops/              runners (demo, Airflow)  -> dags.pipeline and anything below; nothing imports them
dags/ops/bench/        benchmarks (as dags/ops) -> dags.pipeline and anything below; nothing imports them
dags/deepfm_nightly.py ... DAG files            -> dags.pipeline only
dags/pipeline/         orchestration            -> anything below
feature_repo/ | deepfm_model/ | serving/        -> deepfm_model.spec and themselves, never each other
deepfm_model/spec/     the contracts            -> nothing of the project
```

Each check also runs on a small planted tree that breaks it, so a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("dags", "deepfm_model", "feature_repo", "serving")
MAX_LINES = 600

# Layer of a module, by the longest matching prefix; a module may import only its own layer and those in `MAY_IMPORT`.
LAYERS = {
    "deepfm_model.spec": "spec",
    "deepfm_model": "model",
    "feature_repo": "features",
    "serving": "serving",
    "dags.pipeline": "orchestration",
    "dags.ops": "operations",
    "dags": "dag_files",
}
MAY_IMPORT = {
    "spec": set(),
    "model": {"spec"},
    "features": {"spec"},
    "serving": {"spec"},
    "orchestration": {"spec", "model", "features", "serving"},
    "dag_files": {"orchestration"},
    "operations": {"spec", "model", "features", "serving", "orchestration"},
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: tuple[str, ...] = PRODUCT) -> dict[str, set[str]]:
    """Module -> the project modules (or `tests...` names) it imports, resolved to the longest known module."""
    files = {module_name(root, p): p for package in packages for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from package import module` imports the module; `from module import name`, the module.
                candidates = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            for candidate in candidates:
                top = candidate.split(".")[0]
                if top == "tests":
                    targets.add(candidate)
                elif top in packages:
                    while candidate and candidate not in files:
                        candidate = candidate.rpartition(".")[0]
                    if candidate and candidate != name:
                        targets.add(candidate)
        graph[name] = targets
    return graph


def layer_of(module: str) -> str:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(targets):
            if target.split(".")[0] == "tests":
                found.append(f"{module} imports {target} (tests/)")
                continue
            other = layer_of(target)
            if other != layer and other not in MAY_IMPORT[layer]:
                found.append(f"{module} ({layer}) imports {target} ({other})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        folder = module.split(".")[0]
        folders.setdefault(folder, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != folder)
    return folders


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PROJECT_ROOT)


def test_every_layer_imports_only_the_layers_below_it(graph) -> None:
    assert layer_violations(graph) == []


def test_no_module_is_in_an_import_cycle(graph) -> None:
    assert cycles(graph) == []


def test_no_two_top_level_folders_import_each_other(graph) -> None:
    assert cycles(folder_graph(graph)) == []


def test_package_inits_import_nothing_of_the_project(graph) -> None:
    """Importing `deepfm_model.spec.features` runs `deepfm_model/__init__.py`: it must pull in nothing else."""
    for package in ("deepfm_model", "deepfm_model.spec", "feature_repo", "serving", "dags.pipeline"):
        assert graph[package] == set(), package


def test_no_product_file_is_over_the_line_limit() -> None:
    long = {
        str(p.relative_to(PROJECT_ROOT)): n
        for package in PRODUCT
        for p in (PROJECT_ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_make_target_but_the_tests_runs_a_module_under_tests() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.findall(r"-m\s+tests\.", makefile) == []


def test_the_checks_find_planted_faults(tmp_path: Path) -> None:
    root = plant(
        tmp_path,
        {
            "deepfm_model/__init__.py": "",
            "deepfm_model/spec/__init__.py": "",
            "deepfm_model/spec/features.py": "def f():\n    from deepfm_model import train\n",
            "deepfm_model/train.py": "from deepfm_model.evaluate import x\n",
            "deepfm_model/evaluate.py": "def g():\n    from .train import y\n",
            "feature_repo/__init__.py": "",
            "feature_repo/store.py": "from serving.client import c\nimport tests.helpers\n",
            "serving/__init__.py": "",
            "serving/client.py": "from feature_repo import store\n",
            "dags/pipeline/__init__.py": "",
            "dags/pipeline/stages.py": "from deepfm_model import train\n",
            "dags/nightly.py": "from feature_repo import store\n",
        },
    )
    planted = import_graph(root)
    assert layer_violations(planted) == [
        "dags.nightly (dag_files) imports feature_repo.store (features)",
        "deepfm_model.spec.features (spec) imports deepfm_model.train (model)",
        "feature_repo.store (features) imports serving.client (serving)",
        "feature_repo.store imports tests.helpers (tests/)",
        "serving.client (serving) imports feature_repo.store (features)",
    ]
    assert sorted(cycles(planted)) == [
        ["deepfm_model.evaluate", "deepfm_model.train"],
        ["feature_repo.store", "serving.client"],
    ]
    assert cycles(folder_graph(planted)) == [["feature_repo", "serving"]]
