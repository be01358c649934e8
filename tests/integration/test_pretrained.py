"""Fine-tuning a pretrained model goes through the hub code path, fed a local save_pretrained copy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import load_from_disk
from pipeline_probe import registered_versions, tiny_config
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from flows.clm import clm_flow
from flows.mlm import mlm_flow
from lmpipe.config.schema import ModelConfig
from lmpipe.data.tokenizers import train_bpe_tokenizer
from lmpipe.evaluation.perplexity import token_weighted_loss
from lmpipe.models.base import build_base_model
from lmpipe.models.batches import evaluation_batches

pytestmark = pytest.mark.integration

TINY = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)
TEXTS = [
    f"Question {i}: why does water boil at a lower temperature on a mountain? Because pressure drops."
    for i in range(60)
]


def save_pretrained_copy(objective: str, directory: Path) -> Path:
    """A stand-in for a Hub checkpoint: tokenizer + randomly initialised model, saved with save_pretrained."""
    tokenizer = train_bpe_tokenizer([TEXTS], vocab_size=400, min_frequency=2)
    model = build_base_model(objective, TINY, tokenizer, seed=123, block_size=32)  # seed != train.seed
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_fine_tune_from_a_local_save_pretrained_copy(workspace, objective):
    checkpoint = save_pretrained_copy(objective, workspace / f"pretrained-{objective}")
    data = workspace / "qa.jsonl"
    data.write_text("".join(json.dumps({"answers": {"text": [t]}}) + "\n" for t in TEXTS))
    config = tiny_config(
        workspace, "data.source=local", f"data.path={data}", f"model.{objective}.pretrained={checkpoint}"
    )

    flow = clm_flow if objective == "clm" else mlm_flow
    state = flow(config, return_state=True)
    assert state.is_completed(), state.message
    (registration_dir,) = state.result()
    registration = json.loads((Path(registration_dir) / "registration.json").read_text())
    assert math.isfinite(registration["perplexity"])
    assert registered_versions(config.registry.tracking_uri) == {registration["model_name"]: [1]}

    # The base perplexity is the checkpoint's own, measured on the same test blocks: proof that
    # training started from the pretrained weights and tokenizer, not from a fresh init.
    (group_dir,) = (workspace / "artifacts" / "group").iterdir()
    test_blocks = load_from_disk(str(group_dir / "dataset"))["test"]
    test_blocks = test_blocks.select(range(min(config.eval.max_blocks, len(test_blocks))))
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    collator = evaluation_batches(objective, tokenizer, config.train.mlm_probability, config.eval.mlm_seed)
    loss, _ = token_weighted_loss(
        auto.from_pretrained(checkpoint), test_blocks, collator, objective, config.eval.batch_size, "cpu"
    )
    assert registration["base_perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
