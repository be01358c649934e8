"""lmpipe.models.base: the base model of each objective, from config or from a local checkpoint (no Hub)."""

from __future__ import annotations

import pytest

from lmpipe.config.schema import ModelConfig
from lmpipe.errors import HubUnreachableError, PipelineInputError
from lmpipe.models.base import build_base_model, count_parameters, require_objective_tokens

TINY = dict(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)


@pytest.fixture(scope="module")
def saved_gpt2(tiny_tokenizer, tmp_path_factory):
    """A tiny GPT-2 with 64 positions saved like a pretrained checkpoint."""
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    build_base_model("clm", ModelConfig(**TINY), tiny_tokenizer, seed=0, block_size=32).save_pretrained(str(directory))
    return directory


def test_from_scratch_models_follow_the_config(tiny_tokenizer):
    clm = build_base_model("clm", ModelConfig(**TINY), tiny_tokenizer, seed=0, block_size=32)
    mlm = build_base_model("mlm", ModelConfig(**TINY), tiny_tokenizer, seed=0, block_size=32)
    assert clm.config.model_type == "gpt2" and mlm.config.model_type == "roberta"
    assert clm.config.n_positions == 64
    assert mlm.config.max_position_embeddings == 64 + 2  # RoBERTa's padding offset
    for model in (clm, mlm):
        assert model.get_input_embeddings().num_embeddings == len(tiny_tokenizer)
        assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    assert 0 < count_parameters(clm) < 100_000


def test_a_local_checkpoint_loads_and_is_recognised(saved_gpt2, tiny_tokenizer):
    assert (saved_gpt2 / "config.json").is_file() and any(saved_gpt2.glob("*.safetensors"))
    loaded = build_base_model("clm", ModelConfig(pretrained=str(saved_gpt2)), tiny_tokenizer, seed=0, block_size=64)
    assert loaded.config.n_positions == 64


def test_block_size_beyond_a_checkpoints_positions_is_an_input_error(saved_gpt2, tiny_tokenizer):
    with pytest.raises(PipelineInputError) as caught:
        build_base_model("clm", ModelConfig(pretrained=str(saved_gpt2)), tiny_tokenizer, seed=0, block_size=128)
    message = str(caught.value)
    assert "data.block_size=128" in message and "model.clm.pretrained" in message and "64 positions" in message


def test_hub_model_fails_fast_when_the_hub_is_unreachable(tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError, match="model.mlm.pretrained"):
        build_base_model(
            "mlm", ModelConfig(pretrained="distilroberta-base-not-local"), tiny_tokenizer, seed=0, block_size=32
        )


def test_masked_lm_needs_a_mask_token(tiny_tokenizer):
    without_mask = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, pad_token="<pad>")
    with pytest.raises(PipelineInputError, match="tokenizer.pretrained: the tokenizer has no mask token"):
        require_objective_tokens(without_mask, "mlm", "tokenizer.pretrained")
    require_objective_tokens(without_mask, "clm", "tokenizer.pretrained")  # a causal LM needs no mask
