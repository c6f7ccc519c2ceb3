"""serving.model_config: the one writer of TF Serving's model config file; the committed configs are current."""

from __future__ import annotations

from pathlib import Path

from serving import model_config
from serving.labels import DEFAULT_NUM_VERSIONS
from serving.model_config import build_model_config, render_model_config, write_model_config

SERVING_DIR = Path(model_config.__file__).parent


def test_model_config_is_a_tf_serving_model_server_config(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = build_model_config("deepfm", "/models/deepfm", 2, {"stable": 3, "canary": 4})
    path = write_model_config(tmp_path / "models.config", config)
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("deepfm", "/models/deepfm", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 2
    assert dict(model.version_labels) == {"stable": 3, "canary": 4}


def test_committed_configs_are_current():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    committed = (SERVING_DIR / "models.config").read_text()
    assert committed == render_model_config(build_model_config("deepfm", "/models/deepfm", DEFAULT_NUM_VERSIONS))
    text_format.Parse(committed, model_server_config_pb2.ModelServerConfig())
    monitoring = (SERVING_DIR / "monitoring.config").read_text()
    assert "prometheus_config" in monitoring and "enable: true" in monitoring
