"""Build the starting model for an objective: a pretrained checkpoint, or a small one from config.

Training and evaluation both call these, so "the base model" evaluated is exactly the model
training started from (same seed -> same random init).
"""

from __future__ import annotations

import transformers
from transformers import (
    AutoConfig,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    set_seed,
)

from lmpipe.config.pretrained import objective_problem, usable_positions
from lmpipe.config.schema import ModelConfig
from lmpipe.data.hub import is_local_reference, require_hub
from lmpipe.errors import PipelineInputError
from lmpipe.objectives import Objective, spec_of


def gpt2_config(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=model.max_positions,
        n_embd=model.hidden_size,
        n_layer=model.n_layers,
        n_head=model.n_heads,
        n_inner=model.intermediate_size,
        resid_pdrop=model.dropout,
        embd_pdrop=model.dropout,
        attn_pdrop=model.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def roberta_config(model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> RobertaConfig:
    return RobertaConfig(
        vocab_size=len(tokenizer),
        # RoBERTa numbers positions from padding_idx + 1 (see lmpipe.config.pretrained.usable_positions).
        max_position_embeddings=model.max_positions + tokenizer.pad_token_id + 1,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.n_layers,
        num_attention_heads=model.n_heads,
        intermediate_size=model.intermediate_size,
        hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout,
        type_vocab_size=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


SCRATCH_CONFIGS = {"gpt2": gpt2_config, "roberta": roberta_config}


def auto_class(objective: Objective) -> type:
    """The Auto class that loads and trains a model of this objective (AutoModelForCausalLM, ...)."""
    return getattr(transformers, spec_of(objective).model_class)


def scratch_config(objective: Objective, model: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return SCRATCH_CONFIGS[spec_of(objective).scratch_architecture](model, tokenizer)


def build_base_model(
    objective: Objective, model: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int, block_size: int
) -> PreTrainedModel:
    """The model training starts from; deterministic for a given seed."""
    set_seed(seed)
    if model.pretrained is None:
        return auto_class(objective).from_config(scratch_config(objective, model, tokenizer))
    field = f"model.{objective}.pretrained"
    if not is_local_reference(model.pretrained):
        require_hub(
            f"model {model.pretrained!r}",
            field=field,
            alternatives="Point it at a local save_pretrained directory, or set it to null to train from scratch",
        )
    # trust_remote_code=False, said explicitly: left unset, transformers asks on stdin whether to run
    # a repository's own code. A model type it does not know is refused before any code loads.
    try:
        model_config = AutoConfig.from_pretrained(
            model.pretrained, revision=model.revision, trust_remote_code=False
        ).to_dict()
    except ValueError as error:  # unknown model type, or one that needs the repository's own code
        raise PipelineInputError(
            f"{field}={model.pretrained!r}: {str(error).splitlines()[0]} (custom model code is never run)"
        ) from None
    problem = objective_problem(objective, model_config)
    if problem is not None:
        raise PipelineInputError(f"{field}={model.pretrained!r}: {problem}")
    positions = usable_positions(model_config)
    if positions is not None and block_size > positions:
        raise PipelineInputError(
            f"data.block_size={block_size} is larger than {field}={model.pretrained!r}'s {positions} positions"
        )
    loaded = auto_class(objective).from_pretrained(model.pretrained, revision=model.revision, trust_remote_code=False)
    if loaded.get_input_embeddings().num_embeddings < len(tokenizer):
        loaded.resize_token_embeddings(len(tokenizer))
    return loaded


def require_objective_tokens(tokenizer: PreTrainedTokenizerBase, objective: Objective, field: str) -> None:
    """The special tokens `objective` needs (a masked LM: mask and pad) are there, else an input error naming
    `field`, the config field that chose the tokenizer: GPT-2's tokenizer, say, cannot train a masked LM."""
    spec = spec_of(objective)
    missing = [name.removesuffix("_token") for name in spec.required_tokens if getattr(tokenizer, name) is None]
    if missing:
        raise PipelineInputError(
            f"{field}: the tokenizer has no {missing[0]} token, which {spec.head_kind}-LM training needs; "
            f"use a {spec.title}'s tokenizer (e.g. RoBERTa's) or null to train one here"
        )


def count_parameters(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
