"""DAG files parse cleanly and import nothing heavy while they are parsed (top level or not)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
ALLOWED_TOP_LEVEL = {"airflow", "pendulum", "__future__"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_top_level_imports_are_light(dag_file: Path) -> None:
    tree = ast.parse(dag_file.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] in ALLOWED_TOP_LEVEL, f"{dag_file.name} imports {module} at top level"
            if module.startswith("airflow"):
                assert module == "airflow.sdk" or module.startswith("airflow.sdk."), (
                    f"{dag_file.name} imports {module}; only airflow.sdk is allowed"
                )


# What a DAG file must not import while the scheduler and DAG processor parse it (every few seconds, in every
# process): the ML stack, the data stack, clients of the serving tier and the stores, and the project's own
# packages (the tasks import those when they run). By top-level package.
HEAVY_LIBRARIES = (
    "tensorflow", "keras", "jax", "feast", "great_expectations", "pandas", "numpy", "pyarrow", "sklearn", "grpc", "redis",
)  # fmt: skip
HEAVY_MODULES = (*HEAVY_LIBRARIES, "deepfm_model", "feature_repo", "serving", "pipeline")


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parses_without_errors_or_heavy_imports(dag_file: Path) -> None:
    # A fresh interpreter, so that nothing imported by other tests hides what parsing imports. How long parsing
    # takes is measured by no test (it depends on the machine's load); what makes it slow is what it imports.
    code = (
        "import json, sys\n"
        "import airflow.sdk\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(dag_file)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "assert bag.dags, 'no DAG found'\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert "airflow.sdk" in imported  # the check below looks at the parsing process's modules
    packages = {name.split(".")[0] for name in imported}
    heavy = sorted((packages & set(HEAVY_MODULES)) | {name for name in imported if name.startswith("dags.")})
    assert not heavy, f"parsing {dag_file.name} imported {heavy}"


def test_ruff_airflow3_rules_are_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", str(DAGS_DIR), "--select", "AIR3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _parse_in_subprocess(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_every_pool_the_dags_use_is_in_pools_json() -> None:
    # Airflow never runs a task whose pool does not exist: every deployment imports dags/pools.json.
    pools = json.loads((DAGS_DIR / "pools.json").read_text())
    used = _parse_in_subprocess(
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_DIR)!r})\n"
        "print(json.dumps({f'{d}.{t.task_id}': t.pool for d, dag in bag.dags.items() for t in dag.tasks}))\n"
    )
    pool_of = json.loads(used)
    assert pool_of["deepfm_nightly.training.train"] == "training"
    assert set(pool_of.values()) - {"default_pool"} <= set(pools), pool_of
    assert pools["training"]["slots"] == 1


def test_train_task_requests_gpus_from_kubernetes_only_under_its_executor() -> None:
    code = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from airflow.serialization.serialized_objects import DagSerialization\n"
        f"bag = DagBag(dag_folder={str(DAGS_DIR / 'deepfm_nightly.py')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "dag = bag.dags['deepfm_nightly']\n"
        "config = dag.get_task('training.train').executor_config\n"
        "if 'pod_override' not in config:\n"
        "    print(json.dumps({'config': config, 'kubernetes_imported': 'kubernetes' in sys.modules})); sys.exit()\n"
        "stored = DagSerialization.from_dict(DagSerialization.to_dict(dag))\n"  # as the scheduler reads it
        "pod = stored.get_task('training.train').executor_config['pod_override']\n"
        "container = pod.spec.containers[0]\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY_LIBRARIES)!r}))\n"
        "print(json.dumps({'name': container.name, 'limits': container.resources.limits,\n"
        "                  'others': [t.task_id for t in stored.tasks if t.executor_config], 'heavy': heavy}))\n"
    )
    local = json.loads(_parse_in_subprocess(code, AIRFLOW__CORE__EXECUTOR="LocalExecutor"))
    assert local == {"config": {}, "kubernetes_imported": False}

    kubernetes = json.loads(
        _parse_in_subprocess(code, AIRFLOW__CORE__EXECUTOR="KubernetesExecutor", DEEPFM_TRAIN_GPUS="2")
    )
    # Under this executor parsing reads the GPU count from the configuration module: no heavy library comes with it.
    assert kubernetes == {"name": "base", "limits": {"nvidia.com/gpu": "2"}, "others": ["training.train"], "heavy": []}
