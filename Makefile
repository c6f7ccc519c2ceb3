# Every target installs what it needs first: `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
DS ?= 1998-04-23
FROM ?= 1998-04-21
TO ?= 1998-04-23
SNAPSHOT ?= artifacts/latest/snapshot/train.parquet

export PYTHONPATH := $(CURDIR)
export DEEPFM_HOME := $(CURDIR)
export AIRFLOW_HOME := $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/dags/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install chromium data demo test validate serve ablation airflow backfill deploy-test chaos-test scale-test bench bench-train bench-features bench-serving bench-rank bench-scale lint clean

install: $(VENV)/.installed $(VENV)/.kernels

# The compiled training kernels (deepfm_model/kernels): without a C++ compiler training still runs, on slower
# TensorFlow ops, so a failed build warns rather than stops.
$(VENV)/.kernels: $(VENV)/.installed $(wildcard deepfm_model/kernels/*.cc deepfm_model/kernels/*.py)
	$(PY) -m deepfm_model.kernels || echo "warning: kernels not built; training uses TensorFlow ops (slower)" >&2
	@touch $@

$(VENV)/.installed: pyproject.toml uv.lock Makefile
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen --compile-bytecode --python 3.11  # as pip does: imports need not compile sources on every start
	@touch $@

data: install  ## fetch MovieLens-100K (checksum-verified) into data/movielens/
	$(PY) -m feature_repo.movielens data/movielens

demo: install data  ## the serving tier, one nightly DagRun through Airflow's scheduler, then rank over gRPC
	$(PY) -m dags.ops.demo --ds $(DS)

test: TEST_WORKERS ?= 2
test: install chromium  ## the whole pytest suite but the chaos cases (`make chaos-test`), one test file per worker: TEST_WORKERS=2 (1: in this process)
	$(PY) -m pytest -q -m "not chaos" $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=10

# The Airflow UI and dashboard tests drive Debian's Chromium (no browser download is possible): installed here when
# run as root, as .ci/run does; otherwise those tests fail saying so.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests" >&2; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: apt-get install chromium failed: the browser tests will fail" >&2; \
	  else \
	    echo "warning: chromium is not installed and this is not root: the browser tests will fail (apt-get install chromium)" >&2; \
	  fi; }

validate: install  ## validate a training snapshot against the suite: make validate SNAPSHOT=path.parquet
	$(PY) -m feature_repo.validation $(SNAPSHOT)

serve: install  ## the local TF Serving-compatible server on 127.0.0.1:8500 (model config kept by the pushes)
	$(PY) -m serving.labels ensure --base-path models > /dev/null
	$(PY) -m serving.server --model-config-file models/models.config --port 8500

bench: bench-train bench-features bench-serving  ## the three benchmarks that need no demo run and take minutes (bench-rank needs `make demo`, bench-scale takes an hour at 10M); figures in artifacts/bench/*.json

bench-train: install  ## DeepFM training throughput vs a plain Keras DeepFM (artifacts/bench/train.json)
	$(PY) -m dags.ops.bench.train

bench-features: install data  ## Feast historical retrieval and online read latency (artifacts/bench/features.json)
	$(PY) -m dags.ops.bench.features

bench-serving: install  ## client import, encoding, gRPC latency (artifacts/bench/serving.json)
	$(PY) -m dags.ops.bench.serving

bench-rank: install data  ## after `make demo`: rank(user, 1/100/1000 candidates), fast reader vs plain Feast read, SQLite and Redis (artifacts/bench/rank.json)
	$(PY) -m dags.ops.bench.rank

bench-scale: SIZES ?= 100k,1M,10M
bench-scale: NIGHTS ?= 1
bench-scale: ENGINE ?= duckdb
bench-scale: SPARK_WORKERS ?= 2
bench-scale: install  ## the whole nightly run, each stage in its own process, on generated sources: SIZES=100k,1M,10M NIGHTS=1 ENGINE=duckdb,spark SPARK_WORKERS=1,2 (artifacts/bench/scale.json)
	$(PY) -m dags.ops.bench.scale --sizes $(SIZES) --nights $(NIGHTS) --engines $(ENGINE) --spark-workers $(SPARK_WORKERS)

ablation: install  ## after `make demo`: each part of the model's training removed in turn, retrained on the run's snapshot and ranked on its candidates beside its rivals (artifacts/bench/ablation.json); VARIANTS=deepfm,with_prior
	$(PY) -m dags.ops.bench.ablation --ds $(DS) $(if $(VARIANTS),--variants $(VARIANTS))

airflow: install data  ## Airflow UI on http://127.0.0.1:8080 (LocalExecutor, SQLite); prints the admin login; SCHEDULED=1 turns scheduled runs on
	$(PY) -m dags.ops.airflow_stack --airflow-home $(AIRFLOW_HOME) --port 8080 $(if $(SCHEDULED),--scheduled-runs)

backfill: install  ## with `make airflow` running: one run per day, FROM..TO inclusive, one at a time (unpauses the DAG)
	$(VENV)/bin/airflow backfill create --dag-id deepfm_nightly --from-date $(FROM) --to-date $(TO) --max-active-runs 1
	$(VENV)/bin/airflow dags unpause deepfm_nightly

deploy-test: install  ## docker/compose.yaml's topology as local processes (Postgres, Redis, Celery gpu worker, 2 serving replicas, a Spark master and 2 workers): two nightly runs, a Spark worker killed during a stage; artifacts/test-output/deploy/summary.json
	$(PY) -m pytest tests/deploy -s -p no:cacheprovider

chaos-test: install  ## the deploy topology with a part killed, restarted or starved during each of six nightly runs (root: it mounts a small file system); artifacts/test-output/chaos/summary.json
	$(PY) -m pytest tests/chaos -s -p no:cacheprovider -m chaos

scale-test: deploy-test  ## the CeleryExecutor shape (Postgres, Redis, default and gpu workers): the deploy test

lint: install
	$(VENV)/bin/ruff check dags/ --select AIR3
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf artifacts airflow_home models feature_repo/data deepfm_model/kernels/_build $(VENV)/.kernels
