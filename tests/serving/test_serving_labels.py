"""serving.labels: labels and version policy in the model config; the server follows them without a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

from dags.ops.bench.sample_model import sample_columns
from serving.client import ServingClient, ServingError
from serving.labels import (
    ensure_model_config,
    model_config_path,
    promote,
    read_version_config,
    rollback,
    set_label,
    set_version_policy,
)
from serving.model_config import build_model_config, write_model_config
from serving.push import push
from tests.serving.helpers import MODEL_NAME, local_only, request_streams
from tests.serving.test_serving_server import states, wait_for


@pytest.fixture
def fake_export(tmp_path) -> Path:
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"graph")
    return export


def _official_config(path: Path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())


def test_set_label_writes_a_latest_2_config_tf_serving_parses(fake_export, tmp_path):
    base = tmp_path / "models"
    for _ in range(3):
        push(fake_export, base)
    written = set_label(base, MODEL_NAME, "canary", 3)
    set_label(base, MODEL_NAME, "stable", 2)
    (model,) = _official_config(model_config_path(base)).model_config_list.config
    assert model.name == MODEL_NAME and Path(model.base_path) == (base / MODEL_NAME).resolve()
    assert model.model_version_policy.latest.num_versions == 2
    assert dict(model.version_labels) == {"stable": 2, "canary": 3}
    assert written.labels == {"canary": 3}
    assert read_version_config(base, MODEL_NAME).labels == {"stable": 2, "canary": 3}


def test_set_label_refuses_versions_not_on_disk_or_not_loaded(fake_export, tmp_path):
    base = tmp_path / "models"
    for _ in range(3):
        push(fake_export, base)
    with pytest.raises(ValueError, match="not on disk"):
        set_label(base, MODEL_NAME, "stable", 7)
    with pytest.raises(ValueError, match="newest 2"):
        set_label(base, MODEL_NAME, "stable", 1)  # latest-2 loads 2 and 3 only
    with pytest.raises(ValueError, match="label"):
        set_label(base, MODEL_NAME, "", 3)
    assert read_version_config(base, MODEL_NAME).labels == {}


def test_specific_policy_follows_the_labels(fake_export, tmp_path):
    base = tmp_path / "models"
    for _ in range(4):
        push(fake_export, base)
    set_label(base, MODEL_NAME, "stable", 3)
    set_label(base, MODEL_NAME, "canary", 4)
    with pytest.raises(ValueError, match="unload labelled"):
        set_version_policy(base, MODEL_NAME, versions=[3])
    policy = set_version_policy(base, MODEL_NAME, versions=[3, 4])
    assert policy.specific_versions == (3, 4)
    assert set_label(base, MODEL_NAME, "stable", 1).specific_versions == (1, 4)  # 3 lost its only label
    assert set_label(base, MODEL_NAME, "canary", 1).specific_versions == (1,)
    (model,) = _official_config(model_config_path(base)).model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1]
    assert set_version_policy(base, MODEL_NAME, num_versions=4).num_versions == 4
    with pytest.raises(ValueError, match="num_versions"):
        set_version_policy(base, MODEL_NAME, num_versions=0)


def test_rollback_goes_to_the_version_below(fake_export, tmp_path):
    base = tmp_path / "models"
    for _ in range(3):
        push(fake_export, base)
    with pytest.raises(ValueError, match="not set"):
        rollback(base, MODEL_NAME)
    set_label(base, MODEL_NAME, "stable", 3)
    assert rollback(base, MODEL_NAME) == 2
    assert read_version_config(base, MODEL_NAME).labels == {"stable": 2}
    with pytest.raises(ValueError, match="newest 2"):
        rollback(base, MODEL_NAME)  # version 1 is not loaded under latest 2
    set_version_policy(base, MODEL_NAME, versions=[2, 3])
    assert rollback(base, MODEL_NAME, "stable") == 1
    with pytest.raises(ValueError, match="below 1"):
        rollback(base, MODEL_NAME)
    assert rollback(base, MODEL_NAME, to_version=3) == 3


def test_edits_keep_the_rest_of_the_file(fake_export, tmp_path):
    base = tmp_path / "models"
    push(fake_export, base)
    path = tmp_path / "serving.config"
    write_model_config(path, build_model_config(MODEL_NAME, "/models/deepfm", 2))
    path.write_text(path.read_text().replace("model_config_list {", 'model_config_list {\n  config { name: "other" '
                                             'base_path: "/models/other" model_platform: "tensorflow" }'))  # fmt: skip
    set_label(base, MODEL_NAME, "stable", 1, config_path=path)
    models = {m.name: m for m in _official_config(path).model_config_list.config}
    assert set(models) == {"other", MODEL_NAME}
    assert models[MODEL_NAME].base_path == "/models/deepfm"  # a container path stays as it was
    assert dict(models[MODEL_NAME].version_labels) == {"stable": 1}
    assert not (base / "models.config").exists()
    assert ensure_model_config(base, MODEL_NAME) == base / "models.config"


class _Status:
    def __init__(self, states_by_version):
        self.states = states_by_version

    def model_status(self, version=None):
        from serving.client import VersionStatus

        if version not in self.states:
            raise ServingError("not found", grpc.StatusCode.NOT_FOUND)
        return [VersionStatus(version, self.states[version], 0, "")]


def test_promote_asks_the_server_first(fake_export, tmp_path):
    base = tmp_path / "models"
    push(fake_export, base)
    push(fake_export, base)
    for server_states in ({2: "LOADING"}, {2: "END"}, {}):
        with pytest.raises(ServingError) as raised:
            promote(_Status(server_states), base, MODEL_NAME, "canary", 2)
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not model_config_path(base).exists()
    assert promote(_Status({2: "AVAILABLE"}), base, MODEL_NAME, "canary", 2).labels == {"canary": 2}


@local_only
def test_label_moves_reach_the_running_server_without_losing_a_request(tmp_path, exports, start_server, caplog):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    push(exports.good[1.0], base)
    config_path = ensure_model_config(base, MODEL_NAME)
    _, address = start_server(base, model_config_file=str(config_path))
    columns = sample_columns(8, seed=11)
    expected = {v: exports.reference(e, columns) for v, e in ((1, exports.good[0.0]), (2, exports.good[1.0]),
                                                             (3, exports.good[2.0]))}  # fmt: skip

    def answered(label: str) -> int | None:
        try:
            with ServingClient(address, MODEL_NAME, version_label=label) as labelled:
                outputs, version = labelled.predict_versioned(columns)
        except ServingError:
            return None
        np.testing.assert_allclose(outputs["probability"], expected[version], rtol=1e-6)
        return version

    with ServingClient(address, MODEL_NAME) as client:
        assert states(client) == {1: "AVAILABLE", 2: "AVAILABLE"}  # latest 2
        promote(client, base, MODEL_NAME, "stable", 1)
        promote(client, base, MODEL_NAME, "canary", 2)
        wait_for(lambda: answered("stable") == 1 and answered("canary") == 2, what="labels stable=1, canary=2")

        def version_answering(stable: ServingClient) -> int:
            return stable.predict_versioned(columns)[1]

        with request_streams(address, version_answering, version_label="stable") as stream:
            promote(client, base, MODEL_NAME, "stable", 2)
            wait_for(lambda: answered("stable") == 2, what="stable moved to 2")
            assert rollback(base, MODEL_NAME, "stable", client=client) == 1
            wait_for(lambda: answered("stable") == 1, what="stable rolled back to 1")

            # Specific policy: a new push is not loaded, so it cannot be promoted ...
            set_version_policy(base, MODEL_NAME, versions=[1, 2])
            push(exports.good[2.0], base)
            with pytest.raises(ServingError) as raised:
                promote(client, base, MODEL_NAME, "canary", 3)
            assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
            # ... until a label names it: the server loads it, then applies the labels, then unloads 2.
            set_label(base, MODEL_NAME, "canary", 3)
            wait_for(lambda: answered("canary") == 3 and states(client).get(2) == "END", what="canary on 3")
            assert states(client) == {1: "AVAILABLE", 2: "END", 3: "AVAILABLE"}

            # A label on a version that cannot load is refused by the server; the labels in force stay.
            push(exports.corrupt, base)
            set_label(base, MODEL_NAME, "shadow", 4)
            wait_for(lambda: states(client).get(4) == "END", what="version 4 to fail")
            wait_for(lambda: any("Refusing version labels" in r.getMessage() for r in caplog.records),
                     what="the refusal")  # fmt: skip
            assert answered("canary") == 3 and answered("stable") == 1
            with (
                ServingClient(address, MODEL_NAME, version_label="shadow") as shadow,
                pytest.raises(ServingError) as raised,
            ):
                shadow.predict(columns)
            assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT  # an unknown label, as TF Serving says
    errors, versions_seen = stream.errors, stream.answers
    assert not errors, errors[:3]
    assert set(versions_seen) == {1, 2}  # stable answered all along, on 1, then 2, then 1


@local_only
def test_server_reads_policy_and_labels_from_the_config_file(tmp_path, exports, start_server, caplog):
    from serving.server import ServerConfig

    base = tmp_path / "models"
    for bias in (0.0, 1.0, 2.0):
        push(exports.good[bias], base)
    policy = build_model_config(MODEL_NAME, str(base / MODEL_NAME), versions=[1, 3],
                                version_labels={"stable": 1, "canary": 3})  # fmt: skip
    path = write_model_config(tmp_path / "models.config", policy)
    config = ServerConfig.from_model_config_file(path)
    assert (config.specific_versions, config.version_labels) == ((1, 3), {"stable": 1, "canary": 3})
    assert config.base_path == str(base) and config.model_config_file == str(path)
    caplog.set_level(logging.INFO, logger="serving.server")
    _, address = start_server(base, model_config_file=str(path))
    with ServingClient(address, MODEL_NAME, version_label="canary") as client:
        assert states(client) == {1: "AVAILABLE", 3: "AVAILABLE"}
        assert client.predict_versioned(sample_columns(2))[1] == 3
        path.write_text("not a model config {")
        wait_for(lambda: any("Cannot read the model config" in r.getMessage() for r in caplog.records),
                 what="the parse error")  # fmt: skip
        assert client.predict_versioned(sample_columns(2))[1] == 3  # the policy and labels in force stay
