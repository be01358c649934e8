"""lmpipe.config.schema and loading: defaults, YAML files, dotted overrides and one-line error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmpipe.config.loading import apply_override, load_config
from lmpipe.config.pretrained import max_positions_of
from lmpipe.config.schema import REFUSED_IN_MODEL_NAMES, PipelineConfig
from lmpipe.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.yaml"))


def config_error(*overrides: str, path: str | Path | None = None) -> str:
    """The message of the ConfigError these overrides raise; it must be a single line."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message, f"error message spans several lines: {message!r}"
    return message


def dotted_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= dotted_keys(value, f"{prefix}{key}.")
    return keys


# ---------------------------------------------------------------------------- loading


def test_no_file_and_no_overrides_gives_the_defaults():
    config = load_config()
    assert config == PipelineConfig()
    assert config.data.source == "builtin"
    assert config.data.block_size == 128
    assert config.data.remainder == "drop"
    assert config.train.mlm_probability == 0.15


def test_default_yaml_equals_the_builtin_defaults(repo_root):
    assert load_config(repo_root / "configs" / "default.yaml") == PipelineConfig()


def test_default_yaml_spells_out_every_field(repo_root):
    """default.yaml mirrors the defaults: every field is written out, and nothing else."""
    tree = yaml.safe_load((repo_root / "configs" / "default.yaml").read_text())
    assert dotted_keys(tree) == dotted_keys(PipelineConfig().model_dump(mode="json"))


def test_configs_folder_holds_the_shipped_configs():
    assert {"default.yaml", "tiny.yaml"} <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates_and_fits_its_block_size(path):
    config = load_config(path)
    for model in (config.model.clm, config.model.mlm):
        limit = max_positions_of(model.pretrained, model.max_positions)
        assert limit is None or config.data.block_size <= limit


def test_missing_config_file_is_a_config_error(tmp_path):
    message = config_error(path=tmp_path / "nope.yaml")
    assert "nope.yaml" in message


def test_invalid_yaml_is_reported_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  block_size: [1, 2\n  seed: 3\n")
    assert "not valid YAML" in config_error(path=bad)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert "mapping" in config_error(path=listing)


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    assert load_config(empty) == PipelineConfig()


# ---------------------------------------------------------------------------- overrides


def test_overrides_are_parsed_as_yaml_values():
    config = load_config(
        overrides=[
            "train.epochs=2",
            "train.learning_rate=5e-4",
            "train.max_steps=10",
            "eval.max_blocks=null",
            "data.split=train[:5000]",
            "registry.experiment=my experiment",
            "data.num_proc=3",
        ]
    )
    assert config.train.epochs == 2.0
    assert isinstance(config.train.learning_rate, float) and config.train.learning_rate == pytest.approx(5e-4)
    assert config.train.max_steps == 10
    assert config.eval.max_blocks is None
    assert config.data.split == "train[:5000]"
    assert config.registry.experiment == "my experiment"
    assert config.data.num_proc == 3


def test_apply_override_builds_nested_sections_with_yaml_types():
    tree: dict = {}
    for assignment in (
        "train.epochs=2",
        "train.weight_decay=0.5",
        "eval.max_blocks=null",
        "data.path=a=b.jsonl",
        "tokenizer.pretrained=",
    ):
        apply_override(tree, assignment)
    assert tree == {
        "train": {"epochs": 2, "weight_decay": 0.5},
        "eval": {"max_blocks": None},
        "data": {"path": "a=b.jsonl"},  # only the first '=' separates key and value
        "tokenizer": {"pretrained": None},  # an empty value means null
    }
    assert isinstance(tree["train"]["epochs"], int)


def test_overrides_apply_on_top_of_a_file(repo_root):
    config = load_config(repo_root / "configs" / "tiny.yaml", ["data.block_size=16", "train.max_steps=2"])
    assert config.data.block_size == 16
    assert config.train.max_steps == 2
    assert config.model.clm.hidden_size == 32  # from the file


def test_a_quoted_number_override_stays_a_string():
    assert load_config(overrides=['registry.experiment="2024"']).registry.experiment == "2024"


def test_override_into_a_value_is_rejected():
    message = config_error("train.epochs=2", "train.epochs.inner=3")
    assert "'train.epochs.inner'" in message and "'epochs' is a value" in message


def test_override_without_equals_sign_is_rejected():
    message = config_error("train.epochs")
    assert "train.epochs" in message and "=" in message


# ---------------------------------------------------------------------------- validation errors


@pytest.mark.parametrize(
    "override, dotted",
    [
        ("train.epoch=2", "train.epoch"),
        ("model.clm.layers=3", "model.clm.layers"),
        ("trainer=1", "trainer"),
    ],
)
def test_unknown_key_names_the_dotted_key(override, dotted):
    message = config_error(override)
    assert f"unknown key '{dotted}'" in message


def test_negative_learning_rate_names_field_and_value():
    message = config_error("train.learning_rate=-1")
    assert message.startswith("invalid config")
    assert "train.learning_rate" in message
    assert "-1" in message


def test_several_problems_are_joined_on_one_line():
    message = config_error("train.learning_rate=-1", "train.batch_size=0")
    assert "train.learning_rate" in message and "train.batch_size" in message


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_block_size_above_a_models_positions_names_both(objective):
    message = config_error(f"model.{objective}.max_positions=64", "data.block_size=128")
    assert "block_size=128" in message
    assert f"model.{objective}" in message
    assert "64" in message


def test_block_size_equal_to_positions_is_allowed():
    config = load_config(overrides=["model.clm.max_positions=64", "model.mlm.max_positions=64", "data.block_size=64"])
    assert config.data.block_size == 64


@pytest.mark.parametrize("source", ["local", "hub"])
def test_local_or_hub_source_requires_a_path(source):
    message = config_error(f"data.source={source}")
    assert "data.path" in message and source in message


def test_pretrained_local_model_with_too_few_positions_is_rejected(tmp_path):
    model_dir = tmp_path / "small-gpt2"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 64}))
    message = config_error(f"model.clm.pretrained={model_dir}", "data.block_size=128")
    assert "block_size=128" in message
    assert "model.clm" in message
    assert "64" in message


def test_pretrained_roberta_positions_exclude_the_padding_offset(tmp_path):
    model_dir = tmp_path / "small-roberta"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        json.dumps({"model_type": "roberta", "max_position_embeddings": 66, "pad_token_id": 1})
    )
    assert max_positions_of(str(model_dir), 256) == 64
    assert load_config(overrides=[f"model.mlm.pretrained={model_dir}", "data.block_size=64"]).data.block_size == 64
    assert "model.mlm" in config_error(f"model.mlm.pretrained={model_dir}", "data.block_size=65")


def test_hub_model_id_is_not_checked_offline():
    assert max_positions_of("some-org/not-a-local-dir", 256) is None
    assert (
        load_config(
            overrides=[
                "model.clm.pretrained=some-org/not-a-local-dir",
                "data.block_size=4096",
                "model.mlm.max_positions=4096",
            ]
        ).data.block_size
        == 4096
    )


def test_heads_must_divide_hidden_size():
    message = config_error("model.clm.hidden_size=30", "model.clm.n_heads=4")
    assert "n_heads=4" in message and "hidden_size=30" in message


def test_config_is_validated_on_assignment():
    config = PipelineConfig()
    with pytest.raises(ValueError):
        config.train.learning_rate = -1.0


def test_number_like_override_for_a_text_field_is_kept_as_text():
    assert load_config(overrides=["registry.experiment=2024"]).registry.experiment == "2024"


def test_yaml_1_1_exponent_without_a_dot_is_a_float():
    from lmpipe.config.loading import parse_override_value

    assert parse_override_value("5e-4") == pytest.approx(5e-4)
    assert parse_override_value("train[:5000]") == "train[:5000]"


def test_every_config_field_has_a_description_for_the_prefect_form():
    from pydantic import BaseModel

    from lmpipe.config.schema import PipelineConfig

    def undocumented(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(prefix + name)
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                missing += undocumented(annotation, f"{prefix}{name}.")
        return missing

    assert undocumented(PipelineConfig, "") == []


def test_flow_parameter_schema_is_the_typed_config_form():
    from prefect.utilities.callables import parameter_schema

    from flows.both import both_flow

    schema = parameter_schema(both_flow.fn).model_dump()
    learning_rate = schema["definitions"]["TrainConfig"]["properties"]["learning_rate"]
    assert learning_rate["type"] == "number" and learning_rate["exclusiveMinimum"] == 0
    assert "learning rate" in learning_rate["description"].lower()
    assert schema["properties"]["config"]["$ref"].endswith("PipelineConfig")


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            'card.mlm_sentences=["no mask here"]',
            "card.mlm_sentences = ['no mask here']: 'no mask here' must hold exactly one <mask>",
        ),
        ('card.mlm_sentences=["<mask> and <mask>"]', "must hold exactly one <mask>"),
        ("registry.champion_margin=1", "registry.champion_margin = 1: Input should be less than 1"),
        (
            "registry.champion_margin=-0.1",
            "registry.champion_margin = -0.1: Input should be greater than or equal to 0",
        ),
        (
            "registry.on_other_eval_set=ignore",
            "registry.on_other_eval_set = 'ignore': Input should be 'reevaluate' or 'refuse'",
        ),
        ("card.max_new_tokens=0", "card.max_new_tokens = 0: Input should be greater than or equal to 1"),
    ],
)
def test_review_settings_are_validated_with_one_line_naming_the_field(override, expected):
    message = config_error(override)
    assert expected in message and "\n" not in message


def test_review_settings_parse_from_the_command_line():
    config = load_config(
        overrides=['card.clm_prompts=["Once upon a time"]', "registry.promote=false", "registry.champion_margin=0.05"]
    )
    assert config.card.clm_prompts == ["Once upon a time"]
    assert config.registry.promote is False and config.registry.champion_margin == 0.05


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            'registry.clm_model_name=my"model',
            "registry.clm_model_name = 'my\"model': a registered model name cannot contain \"",
        ),
        (
            "registry.mlm_model_name=50%-masked",
            "registry.mlm_model_name = '50%-masked': a registered model name cannot contain %",
        ),
        (
            r'registry.clm_model_name="eli5\nclm"',
            r"registry.clm_model_name = 'eli5\nclm': a registered model name must be printable: it contains '\n'",
        ),
        (
            r'registry.mlm_model_name="eli5\tmlm"',
            r"registry.mlm_model_name = 'eli5\tmlm': a registered model name must be printable: it contains '\t'",
        ),
        ('registry.clm_model_name="   "', "registry.clm_model_name = '   ': a registered model name cannot be empty"),
        (f"registry.clm_model_name={'x' * 257}", "a registered model name is at most 256 characters, not 257"),
    ],
)
def test_registered_model_names_are_refused_at_load_time_with_one_line_naming_the_field(override, expected):
    message = config_error(override)
    assert expected in message and "\n" not in message


def test_registered_model_names_may_hold_spaces_and_dots_and_be_256_characters_long():
    config = load_config(overrides=["registry.clm_model_name=team eli5.clm v2", f"registry.mlm_model_name={'m' * 256}"])
    assert config.registry.clm_model_name == "team eli5.clm v2"
    assert len(config.registry.mlm_model_name) == 256


def test_a_registrable_name_makes_a_valid_prefect_concurrency_limit_name():
    # The register task takes the global concurrency limit `lmpipe-register-<name>`; a name the config
    # accepts must never be refused there, after training.
    from prefect.server.schemas.core import ConcurrencyLimitV2
    from prefect.types.names import BANNED_CHARACTERS

    assert set(BANNED_CHARACTERS) <= set(REFUSED_IN_MODEL_NAMES)
    for name in ("team eli5.clm v2", "m" * 256, "eli5-clm"):
        registry = load_config(overrides=[f"registry.clm_model_name={name}"]).registry
        ConcurrencyLimitV2(name=f"lmpipe-register-{registry.clm_model_name}", limit=1)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.jsonl").write_text("{}\n")
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (data / "escape").symlink_to(tmp_path)  # a link inside the root that leads out of it
    monkeypatch.setenv("LMPIPE_DATA_ROOT", str(data))
    monkeypatch.setenv("LMPIPE_ARTIFACTS_ROOT", str(artifacts))
    return data, artifacts


@pytest.mark.parametrize(
    "path_of",
    [
        lambda data: str(data / ".." / "secret.jsonl"),  # ../ out of the root
        lambda data: str(data.parent / "secret.jsonl"),  # absolute, outside
        lambda data: str(data / "escape" / "secret.jsonl"),  # a symlink out
        lambda data: str(data / ".." / "**" / "*.jsonl"),  # a glob reaching above the root
    ],
    ids=["dotdot", "absolute", "symlink", "glob"],
)
def test_local_data_outside_the_data_root_is_rejected(roots, path_of):
    data, _ = roots
    message = config_error("data.source=local", f"data.path={path_of(data)}")
    assert "data.path: " in message and "is outside the allowed data root" in message and "LMPIPE_DATA_ROOT" in message


def test_paths_inside_the_roots_are_accepted(roots):
    data, artifacts = roots
    config = load_config(
        overrides=["data.source=local", f"data.path={data / 'sub' / '*.jsonl'}", f"artifacts.root={artifacts / 'x'}"]
    )
    assert config.data.path.endswith("*.jsonl")


def test_artifacts_and_local_models_outside_their_roots_are_rejected(roots, tmp_path):
    _, artifacts = roots
    assert "artifacts.root: " in config_error(f"artifacts.root={tmp_path / 'elsewhere'}")
    assert "artifacts.root: " in config_error()  # the default, ./artifacts, is not under the configured root
    assert "model.clm.pretrained: " in config_error(f"artifacts.root={artifacts}", f"model.clm.pretrained={tmp_path}")
    hub_id = load_config(overrides=[f"artifacts.root={artifacts}", "model.clm.pretrained=distilgpt2"])
    assert hub_id.model.clm.pretrained == "distilgpt2"  # not a local path: the Hub answers for it


def test_without_configured_roots_any_path_is_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("LMPIPE_DATA_ROOT", raising=False)
    monkeypatch.delenv("LMPIPE_ARTIFACTS_ROOT", raising=False)
    assert load_config(overrides=[f"artifacts.root={tmp_path}"]).artifacts.root == str(tmp_path)
