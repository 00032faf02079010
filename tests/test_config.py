from pathlib import Path

import pytest

from searcher.config import EmbeddingSettings, Runtime, Settings, SourceFormat, load_settings
from searcher.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"


def test_default_toml_is_what_runs_without_flags():
    assert load_settings(CONFIGS / "default.toml") == Settings() == load_settings()


def test_bert_as_service_preset():
    settings = load_settings(CONFIGS / "bert-as-service.toml")
    assert (settings.embedding.layer, settings.embedding.pooling) == (-2, "mean")


def test_flags_override_the_file_and_none_means_unset(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('layer = -3\npooling = "max"\nbatch_size = 8\ntext_fields = ["title"]\n')
    settings = load_settings(config, pooling="cls", batch_size=None)
    assert (settings.embedding.layer, settings.embedding.pooling) == (-3, "cls")
    assert (settings.runtime.batch_size, settings.source.text_fields) == (8, ("title",))


def test_layer_given_as_text_becomes_an_integer():
    assert load_settings(layer="-2").embedding.layer == -2
    assert load_settings(layer="auto").embedding.layer == "auto"


def test_unknown_key_names_the_valid_ones(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("poolng = 'mean'\n")
    with pytest.raises(ConfigError, match=r"unknown setting poolng; valid settings: model, layer, pooling"):
        load_settings(config)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"pooling": "median"}, "choose one of auto, mean, max, cls"),
        ({"layer": "last"}, "use 'auto' or an integer"),
        ({"device": "tpu"}, "choose one of auto, cpu, cuda, mps"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"write_buffer_mb": 0}, "write_buffer_mb must be a positive integer"),
        ({"max_length": -5}, "max_length must be a positive integer"),
    ],
)
def test_invalid_values_are_named(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**flags)


def test_wrong_type_in_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('batch_size = "many"\n')
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        load_settings(config)


def test_invalid_toml_and_missing_file(tmp_path):
    (tmp_path / "bad.toml").write_text("layer = = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml")


def test_settings_fall_into_parts_that_change_for_different_reasons():
    settings = load_settings(model="m", precision="fp16", device="cpu", batch_size=8, id_field="key", index_type="hnsw")
    assert settings.embedding == EmbeddingSettings(model="m", precision="fp16")
    assert settings.runtime == Runtime(device="cpu", batch_size=8)
    assert settings.source == SourceFormat(id_field="key")
    assert settings.index_type == "hnsw"
    assert Settings.of(**settings.flat()) == settings
