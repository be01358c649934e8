"""The pre-flight's local checks: each problem is one PreflightFailed line naming the field, found before
any stage runs (the registry's checks are in tests/unit/registry/test_readiness.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpipe.config.loading import load_config
from lmpipe.errors import PreflightFailed, is_input_error
from lmpipe.orchestration.preflight import require_local_references, require_writable_root


def config_with(*overrides: str):
    return load_config(None, ["data.block_size=32", *overrides])


def save_model_files(directory: Path, *names: str) -> str:
    directory.mkdir()
    for name in names:
        content = json.dumps({"model_type": "gpt2", "n_positions": 64}) if name == "config.json" else "{}"
        (directory / name).write_text(content)
    return str(directory)


def test_a_complete_local_model_passes(tmp_path):
    model = save_model_files(tmp_path / "gpt2", "config.json", "model.safetensors", "vocab.json", "merges.txt")
    require_local_references(config_with(f"model.clm.pretrained={model}"), "clm")


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (("config.json",), "has no weights (model.safetensors or pytorch_model.bin)"),
        (("config.json", "pytorch_model.bin"), "has no tokenizer files (tokenizer.json, or vocab.json and merges.txt"),
        (("model.safetensors", "tokenizer.json"), "has no config.json"),
    ],
)
def test_a_local_model_missing_a_part_is_named(tmp_path, files, problem):
    model = save_model_files(tmp_path / "gpt2", *files)
    config = config_with(f"model.clm.pretrained={model}")
    with pytest.raises(PreflightFailed) as caught:
        require_local_references(config, "clm")
    assert str(caught.value).startswith(f"model.clm.pretrained='{model}': {model} {problem}")


def test_a_tokenizer_from_its_own_field_excuses_the_model_directory(tmp_path):
    model = save_model_files(tmp_path / "gpt2", "config.json", "model.safetensors")
    tokenizer = save_model_files(tmp_path / "tok", "tokenizer.json")
    config = config_with(f"model.clm.pretrained={model}", f"model.clm.tokenizer={tokenizer}")
    require_local_references(config, "clm")


@pytest.mark.parametrize("reference", ["{tmp}/no-tokenizer", "./no-tokenizer", "~/no-tokenizer-here", "a/b/c"])
def test_a_local_tokenizer_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path, reference):
    reference = reference.format(tmp=tmp_path)
    with pytest.raises(PreflightFailed) as caught:
        require_local_references(config_with(f"tokenizer.pretrained={reference}"), "clm")
    assert str(caught.value).startswith(f"tokenizer.pretrained={reference!r}: ")
    assert str(caught.value).endswith("does not exist")


def test_a_hub_id_is_left_to_the_hub_check(tmp_path):
    require_local_references(config_with("tokenizer.pretrained=openai-community/gpt2"), "clm")


def test_an_artifacts_root_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PreflightFailed) as caught:
        require_writable_root(str(blocker / "artifacts"))
    assert str(caught.value).startswith(f"artifacts.root='{blocker / 'artifacts'}': cannot write there (")
    require_writable_root(str(tmp_path / "new" / "root"))
    assert (tmp_path / "new" / "root").is_dir() and not list((tmp_path / "new" / "root").iterdir())


def test_mlflow_answers_that_mean_a_wrong_request_are_input_errors():
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

    assert is_input_error(MlflowException("Invalid model name", error_code=INVALID_PARAMETER_VALUE))
    assert is_input_error(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"}))
    assert not is_input_error(MlflowException("API request failed", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_input_error(ConnectionError("reset by peer"))
