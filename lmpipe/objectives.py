"""The one table of what differs between the causal and the masked objective.

Everything else (data stages, the training loop, evaluation, registration) is one code path
that reads its objective's row here. The table is plain data, cheap to import: transformers
classes are named as transformers names them in its own Auto mappings, and resolved where a
model is actually built (lmpipe.models.base), so loading a config never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Objective = Literal["clm", "mlm"]  # causal LM (GPT-2 family) or masked LM (RoBERTa family)

# How users write the masked token in card sentences and `lmpipe predict`, whatever the tokenizer
# calls it (RoBERTa's <mask>, BERT's [MASK]).
MASK_PLACEHOLDER = "<mask>"


@dataclass(frozen=True)
class ObjectiveSpec:
    name: Objective
    title: str  # how logs and cards name it
    train_stage: str  # the Prefect task that trains it, as the UI shows it
    model_class: str  # transformers Auto class that loads and trains it
    head_mapping: str  # transformers' table of model types that have this head
    scratch_architecture: Literal["gpt2", "roberta"]  # what a from-scratch model is built as
    pipeline_task: str  # the transformers pipeline it is logged and served as
    registry_field: str  # RegistryConfig field holding its registered-model name
    required_tokens: tuple[str, ...]  # special tokens its tokenizer must have
    masked: bool  # labels are masked-out tokens (MLM), not the next token (CLM)
    purpose: str  # the model card's first words

    @property
    def shifts_labels(self) -> bool:
        """Position t is scored on token t+1: the first token of a block is never a target."""
        return not self.masked

    @property
    def head_kind(self) -> str:
        return "masked" if self.masked else "causal"

    def registered_name(self, registry: object) -> str:
        """Its registered-model name in a RegistryConfig."""
        return getattr(registry, self.registry_field)


OBJECTIVES: dict[Objective, ObjectiveSpec] = {
    "clm": ObjectiveSpec(
        name="clm",
        title="causal LM",
        train_stage="train-clm",
        model_class="AutoModelForCausalLM",
        head_mapping="MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        scratch_architecture="gpt2",
        pipeline_task="text-generation",
        registry_field="clm_model_name",
        # Labels come from the attention mask, so no pad token is needed, and EOS is a target like any token.
        required_tokens=(),
        masked=False,
        purpose="Causal language model (GPT-2 family): predicts the next token; use it to generate text.",
    ),
    "mlm": ObjectiveSpec(
        name="mlm",
        title="masked LM",
        train_stage="train-mlm",
        model_class="AutoModelForMaskedLM",
        head_mapping="MODEL_FOR_MASKED_LM_MAPPING_NAMES",
        scratch_architecture="roberta",
        pipeline_task="fill-mask",
        registry_field="mlm_model_name",
        required_tokens=("mask_token", "pad_token"),  # masking replaces tokens by <mask>; pad is never masked
        masked=True,
        purpose="Masked language model (RoBERTa family): predicts hidden tokens; use it to fill masks or as an "
        "encoder.",
    ),
}


def spec_of(objective: Objective) -> ObjectiveSpec:
    return OBJECTIVES[objective]
