# Every target installs what it needs first: `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
DS ?= 1998-04-23
SNAPSHOT ?= artifacts/latest/snapshot/train.parquet

export PYTHONPATH := $(CURDIR)
export DEEPFM_HOME := $(CURDIR)
export AIRFLOW_HOME := $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install data demo test validate serve lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen --python 3.11
	@touch $@

data: install  ## fetch MovieLens-100K (checksum-verified) into data/movielens/
	$(PY) -m deepfm_model.movielens data/movielens

$(AIRFLOW_HOME)/airflow.db: | install
	$(VENV)/bin/airflow db migrate > /dev/null

demo: install data $(AIRFLOW_HOME)/airflow.db  ## one nightly DagRun, then serve and rank over gRPC
	$(VENV)/bin/airflow dags test deepfm_nightly $(DS)
	$(PY) -m deepfm_model.demo --ds $(DS)

test: install  ## the whole pytest suite
	$(PY) -m pytest -q

validate: install  ## validate a training snapshot against the suite: make validate SNAPSHOT=path.parquet
	$(PY) -m feature_repo.validation $(SNAPSHOT)

serve: install  ## the local TF Serving-compatible server on 127.0.0.1:8500
	$(PY) -m serving.server --base-path models --model-name deepfm --port 8500

lint: install
	$(VENV)/bin/ruff check dags/ --select AIR3
	$(VENV)/bin/ruff check .

clean:
	rm -rf artifacts airflow_home models feature_repo/data
