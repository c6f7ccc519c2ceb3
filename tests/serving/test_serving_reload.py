"""ModelService.HandleReloadConfigRequest of serving.server, sent with the official TF Serving classes (local only)."""

from __future__ import annotations

import grpc
import numpy as np

from dags.ops.bench.sample_model import sample_columns
from serving.client import ServingClient
from serving.push import push
from tests.serving.helpers import MODEL_NAME, PollCounter, local_only
from tests.serving.test_serving_server import states, wait_for

pytestmark = local_only


def reload_config(address: str, base_path, policy: str = "", labels: dict[str, int] | None = None,
                  name: str = MODEL_NAME) -> tuple[grpc.StatusCode, str]:  # fmt: skip
    """Send a ModelServerConfig of one model; return the status code and message of the response."""
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add(name=name, base_path=str(base_path))
    model.model_platform = "tensorflow"
    if policy:
        versions = [int(v) for v in policy.split(",")]
        model.model_version_policy.specific.versions.extend(versions)
    for label, version in (labels or {}).items():
        model.version_labels[label] = version
    with grpc.insecure_channel(address) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
    code = next(c for c in grpc.StatusCode if c.value[0] == response.status.error_code)
    return code, response.status.error_message


def test_reload_switches_policy_labels_and_base_path(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    push(exports.good[1.0], base)
    _, address = start_server(base)  # latest 1: version 2 only
    columns = sample_columns(4, seed=3)
    with ServingClient(address, MODEL_NAME) as client:
        wait_for(lambda: states(client).get(2) == "AVAILABLE", what="version 2")

        assert reload_config(address, base / MODEL_NAME, "1,2", {"stable": 1, "canary": 2}) == (grpc.StatusCode.OK, "")
        assert {v: s for v, s in states(client).items() if v in (1, 2)} == {1: "AVAILABLE", 2: "AVAILABLE"}
        with ServingClient(address, MODEL_NAME, version_label="stable") as stable:
            assert stable.predict_versioned(columns)[1] == 1

        # A label on a version that is not loaded is refused; the labels in force stay.
        code, message = reload_config(address, base / MODEL_NAME, "1,2", {"stable": 1, "canary": 7})
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "canary" in message
        with ServingClient(address, MODEL_NAME, version_label="canary") as canary:
            assert canary.predict_versioned(columns)[1] == 2

        # Another base path: its versions answer once loaded, labels included.
        other = tmp_path / "other"
        push(exports.good[2.0], other)
        assert reload_config(address, other / MODEL_NAME, labels={"stable": 1}) == (grpc.StatusCode.OK, "")
        outputs, version = client.predict_versioned(columns)
        assert version == 1
        np.testing.assert_allclose(outputs["probability"], exports.reference(exports.good[2.0], columns), rtol=1e-6)
        with ServingClient(address, MODEL_NAME, version_label="stable") as stable:
            assert stable.predict_versioned(columns)[1] == 1


def test_reload_refuses_what_this_server_cannot_serve(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    _, address = start_server(base)
    with ServingClient(address, MODEL_NAME) as client:
        wait_for(lambda: states(client).get(1) == "AVAILABLE", what="version 1")
        assert reload_config(address, base / "other", name="other")[0] == grpc.StatusCode.UNIMPLEMENTED
        assert client.predict_versioned(sample_columns(2))[1] == 1  # still serving


def test_refused_labels_change_nothing(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    push(exports.good[1.0], base)
    server, address = start_server(base)
    columns = sample_columns(2, seed=5)
    with ServingClient(address, MODEL_NAME) as client:
        wait_for(lambda: states(client).get(2) == "AVAILABLE", what="version 2")
        assert reload_config(address, base / MODEL_NAME, "1,2", {"stable": 1}) == (grpc.StatusCode.OK, "")

        # A new base path whose policy does not load the labelled version: refused, nothing switches.
        other = tmp_path / "other"
        push(exports.good[2.0], other)
        code, message = reload_config(address, other / MODEL_NAME, labels={"stable": 1, "canary": 5})
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "canary -> version 5" in message
        assert server.manager.model_dir == base / MODEL_NAME
        assert server.manager.version_labels == {"stable": 1}
        # The policy dropping the labelled version: refused, version 1 stays AVAILABLE and labelled.
        code, message = reload_config(address, base / MODEL_NAME, "2", {"stable": 1})
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "stable -> version 1" in message
        assert {v: s for v, s in states(client).items() if v in (1, 2)} == {1: "AVAILABLE", 2: "AVAILABLE"}
        with ServingClient(address, MODEL_NAME, version_label="stable") as stable:
            assert stable.predict_versioned(columns)[1] == 1
        # The policy still in force is specific [1, 2]: a new push is not loaded, not by any poll after it.
        polls = PollCounter(server)
        pushed_at = polls.started
        push(exports.good[2.0], base)
        polls.wait(after=pushed_at, passes=3)  # passes that began after the push, and so listed version 3
        assert 3 not in server.manager.available_versions()
        assert 3 not in states(client)  # not even tried: nothing LOADING or END


def test_missing_versions_are_awaited_on_any_base_path(tmp_path, exports, start_server):
    """TF Serving's behaviour: the config is accepted, the versions in force serve until the awaited one loads."""
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    server, address = start_server(base)
    columns = sample_columns(2, seed=6)
    with ServingClient(address, MODEL_NAME) as client:
        wait_for(lambda: states(client).get(1) == "AVAILABLE", what="version 1")
        # Same base path, a version not pushed yet.
        assert reload_config(address, base / MODEL_NAME, "1,2") == (grpc.StatusCode.OK, "")
        assert client.predict_versioned(columns)[1] == 1
        # A policy naming only a missing version: every version in force keeps serving meanwhile.
        assert reload_config(address, base / MODEL_NAME, "7") == (grpc.StatusCode.OK, "")
        assert server.manager.available_versions() == [1]
        assert reload_config(address, base / MODEL_NAME, "1,2") == (grpc.StatusCode.OK, "")
        push(exports.good[1.0], base)
        wait_for(lambda: states(client).get(2) == "AVAILABLE", what="awaited version 2")
        # Another base path with no versions yet: accepted, version 2 of the old folder keeps serving ...
        empty = tmp_path / "empty"
        assert reload_config(address, empty / MODEL_NAME) == (grpc.StatusCode.OK, "")
        assert server.manager.model_dir == empty / MODEL_NAME
        assert client.predict_versioned(columns)[1] == 2
        # ... until the new folder has a version, which then replaces the old folder's.
        push(exports.good[2.0], empty)
        wait_for(lambda: server.manager.available_versions() == [1], what="the new folder's version 1")
        outputs, version = client.predict_versioned(columns)
        assert version == 1
        np.testing.assert_allclose(outputs["probability"], exports.reference(exports.good[2.0], columns), rtol=1e-6)
        assert states(client)[2] == "END"


def test_a_broken_base_path_is_refused_every_time(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    server, address = start_server(base)
    broken = tmp_path / "broken" / MODEL_NAME / "3"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with ServingClient(address, MODEL_NAME) as client:
        wait_for(lambda: states(client).get(1) == "AVAILABLE", what="version 1")
        for _ in range(2):  # the second time the failed version is not loaded again, and still refused
            code, _message = reload_config(address, broken.parent)
            assert code == grpc.StatusCode.UNKNOWN
            assert server.manager.model_dir == base / MODEL_NAME
        push(exports.good[1.0], base)  # the base path in force still takes new versions
        wait_for(lambda: 2 in server.manager.available_versions(), what="version 2 of the base path in force")
        assert client.predict_versioned(sample_columns(2))[1] == 2
