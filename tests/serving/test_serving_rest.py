"""serving.server's REST API (TF Serving's model status, the Prometheus path) and how often it re-reads the model
config file (`--model_config_file_poll_wait_seconds`); in-process servers, real HTTP and gRPC (local only)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dags.ops.bench.sample_model import sample_columns
from dags.ops.processes import free_port
from serving.client import ServingClient, ServingError
from serving.labels import set_label
from serving.model_config import build_model_config, write_model_config
from serving.push import push
from tests.serving.helpers import MODEL_NAME, PollCounter, http_get, local_only
from tests.serving.test_serving_server import wait_for

pytestmark = local_only

METRICS_PATH = "/monitoring/prometheus/metrics"


def version_status(version: int, state: str = "AVAILABLE") -> dict:
    """One entry of TF Serving's REST model status."""
    return {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}


def test_rest_status_answers_as_tf_serving(tmp_path, exports, start_server):
    base = tmp_path / "models"
    server, address = start_server(base, rest_port=free_port(), version_labels={"stable": 1})
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models"
    nothing_yet = http_get(f"{rest}/{MODEL_NAME}")  # no version on disk yet, as before the first nightly push
    assert (nothing_yet.status, nothing_yet.json()) == (404, {"error": f"Could not find any versions of model {MODEL_NAME}"})  # fmt: skip

    push(exports.good[0.0], base)
    first = {"model_version_status": [version_status(1)]}
    wait_for(lambda: http_get(f"{rest}/{MODEL_NAME}").json() == first, what="version 1 AVAILABLE over REST")
    push(exports.good[1.0], base)
    both = {"model_version_status": [version_status(2), version_status(1, "END")]}
    wait_for(lambda: http_get(f"{rest}/{MODEL_NAME}").json() == both, what="version 2 in place of 1 over REST")
    status = http_get(f"{rest}/{MODEL_NAME}")
    assert status.content_type == "application/json"
    with ServingClient(address, MODEL_NAME) as client:  # the same states as gRPC's GetModelStatus
        grpc_states = [(str(s.version), s.state) for s in client.model_status()]
    assert [(s["version"], s["state"]) for s in status.json()["model_version_status"]] == grpc_states
    assert http_get(f"{rest}/{MODEL_NAME}/versions/2").json() == {"model_version_status": [version_status(2)]}
    # `stable` still names version 1 (the server logs that it is no longer served), as TF Serving reports it
    assert http_get(f"{rest}/{MODEL_NAME}/labels/stable").json() == {"model_version_status": [version_status(1, "END")]}

    for path, code, error in [
        (f"{MODEL_NAME}/versions/7", 404, f"Could not find version 7 of model {MODEL_NAME}"),
        ("other", 404, "Could not find any versions of model other"),
        (f"{MODEL_NAME}/labels/nope", 400, "Unrecognized servable version label: nope"),
        (f"{MODEL_NAME}/versions/two", 400, f"Malformed request: GET /v1/models/{MODEL_NAME}/versions/two"),
        (f"{MODEL_NAME}/metadata", 501, None),
    ]:
        answer = http_get(f"{rest}/{path}")
        assert answer.status == code, (path, answer.body)
        assert error is None or answer.json() == {"error": error}, (path, answer.body)
    assert http_get(f"http://127.0.0.1:{server.rest_port}{METRICS_PATH}").status == 404  # not enabled


def test_rest_label_status_and_stop(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    server, _ = start_server(base, rest_port=free_port(), version_labels={"stable": 1})
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}"
    assert http_get(f"{rest}/labels/stable").json() == {"model_version_status": [version_status(1)]}
    server.stop(grace=0)
    with pytest.raises(OSError):  # refused: the REST API stops with the server
        http_get(rest, timeout=2)


def test_prometheus_path_serves_the_metrics(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    server, address = start_server(base, rest_port=free_port(), prometheus_path=METRICS_PATH)
    with ServingClient(address, MODEL_NAME) as client:
        for _ in range(3):
            client.predict(sample_columns(4))
        with pytest.raises(ServingError):
            client.model_status(version=9)
    metrics = http_get(f"http://127.0.0.1:{server.rest_port}{METRICS_PATH}?name=ignored")
    assert metrics.status == 200 and metrics.content_type.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.body.decode()) for s in family.samples}  # fmt: skip
    counted = ("serving_requests_total", (("code", "OK"), ("method", "Predict"), ("model", MODEL_NAME)))
    assert samples[counted] == 3
    refused = ("serving_requests_total", (("code", "NOT_FOUND"), ("method", "GetModelStatus"), ("model", MODEL_NAME)))
    assert samples[refused] == 1
    assert samples[("serving_predict_rows_total", (("model", MODEL_NAME),))] == 12
    assert samples[("serving_model_version_available", (("model", MODEL_NAME),))] == 1


def stable_version(address: str) -> int:
    with ServingClient(address, MODEL_NAME, version_label="stable") as client:
        return client.predict_versioned(sample_columns(2))[1]


def test_config_poll_wait_sets_how_fast_a_label_edit_takes_effect(tmp_path, exports, start_server):
    """1 s: the edit is served by the next re-read of the file, every second even with a folder poll of 30 s (the
    two are separate); 0 (TF Serving's default): never, while the folder poll still loads new versions."""
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    push(exports.good[1.0], base)
    path = write_model_config(base / "models.config", build_model_config(MODEL_NAME, str(base / MODEL_NAME),
                                                                         3, {"stable": 1}))  # fmt: skip
    every_second_server, every_second = start_server(base, model_config_file=str(path), model_config_poll_wait_s=1,
                                                     poll_interval_s=30)  # fmt: skip
    never_server, never = start_server(base, model_config_file=str(path), model_config_poll_wait_s=0,
                                       poll_interval_s=0.1)  # fmt: skip
    assert stable_version(every_second) == stable_version(never) == 1
    every_second_polls, never_polls = PollCounter(every_second_server), PollCounter(never_server)

    every_second_mark, never_mark = every_second_polls.started, never_polls.started
    set_label(base, MODEL_NAME, "stable", 2)
    # The 1 s server re-reads the file on its own cadence, not the folder poll's (its first folder poll is 30 s
    # after its start, past this deadline): the first re-read that began after the edit serves it.
    every_second_polls.wait(after=every_second_mark, config_reads=True, timeout_s=10)
    assert stable_version(every_second) == 2
    never_polls.wait(after=never_mark, passes=10)  # ten folder polls that began after the edit
    assert stable_version(never) == 1 and never_server.manager.version_labels == {"stable": 1}

    push(exports.good[2.0], base)  # the folder poll goes on: latest 3 loads version 3, the labels stay
    wait_for(lambda: never_server.manager.available_versions() == [1, 2, 3], what="version 3 loaded")
    assert stable_version(never) == 1 and never_server.manager.version_labels == {"stable": 1}


@pytest.mark.parametrize("settings", [{"model_config_poll_wait_s": -1}, {"rest_port": -1},
                                      {"rest_port": 8500, "port": 8500}])  # fmt: skip
def test_bad_rest_and_poll_settings_are_refused(tmp_path, settings):
    from serving.server import ModelServer, ServerConfig

    with pytest.raises(ValueError, match=next(iter(settings))):
        ModelServer(ServerConfig(base_path=str(tmp_path), **settings))
