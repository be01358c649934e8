"""The model card's sample outputs, generated from the trained model by the evaluate stage.

Seeded sampling for the causal LM's prompts, the top-3 fillings for the masked LM's sentences, as
the Hugging Face guide shows them. Made with the evaluation rather than at registration: they
describe how the model behaves, as the perplexity does, a register retry never makes them again,
and register never needs the model in memory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from lmpipe.config.pretrained import usable_positions
from lmpipe.config.schema import CardConfig, PipelineConfig
from lmpipe.evaluation.perplexity import trained_model
from lmpipe.objectives import MASK_PLACEHOLDER, OBJECTIVES, Objective, spec_of

TOP_K_SAMPLING = 50  # what the guide's generate() call samples from

_log = logging.getLogger(__name__)


def clm_samples(model: Any, tokenizer: Any, card: CardConfig) -> list[dict[str, Any]]:
    """One seeded, sampled generation per prompt: the same model always shows the same text."""
    from transformers import pipeline, set_seed

    generator = pipeline(OBJECTIVES["clm"].pipeline_task, model=model, tokenizer=tokenizer, device="cpu")
    samples = []
    for configured in card.clm_prompts:
        prompt, new_tokens = fitted_prompt(configured, tokenizer, model, card.max_new_tokens)
        set_seed(card.seed)
        output = generator(prompt, **generation_kwargs(tokenizer, new_tokens))
        samples.append({"prompt": prompt, "max_new_tokens": new_tokens, "generated_text": output[0]["generated_text"]})
    return samples


def generation_kwargs(tokenizer: Any, max_new_tokens: int) -> dict[str, Any]:
    """The sampling the card uses; a reviewer's own check calls generation with these and the card's seed."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "do_sample": True,
        "top_k": TOP_K_SAMPLING,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad,
        # Continue the prompt itself: RoBERTa-style processing would append </s> to it.
        "add_special_tokens": False,
    }


def fitted_prompt(prompt: str, tokenizer: Any, model: Any, max_new_tokens: int) -> tuple[str, int]:
    """The prompt and new-token count that fit the model's positions (small models have few).

    Past the last position embedding generation crashes, so the new tokens are capped and, when
    the prompt alone is too long, its end is cut. At least a quarter of the positions generate.
    """
    limit = usable_positions(model.config.to_dict())
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if limit is None or len(ids) + max_new_tokens <= limit:
        return prompt, max_new_tokens
    new_tokens = min(max_new_tokens, max(limit - len(ids), limit // 4))
    keep = limit - new_tokens
    while len(ids) > limit - new_tokens:
        # Decoding a cut through a multi-byte character can re-encode longer: cut until it fits.
        prompt = tokenizer.decode(ids[:keep])
        ids, keep = tokenizer(prompt, add_special_tokens=False)["input_ids"], keep - 1
    return prompt, new_tokens


def mlm_samples(model: Any, tokenizer: Any, card: CardConfig, top_k: int = 3) -> list[dict[str, Any]]:
    """The top-k fillings of each sentence's <mask>, with their scores."""
    from transformers import pipeline

    filler = pipeline(OBJECTIVES["mlm"].pipeline_task, model=model, tokenizer=tokenizer, device="cpu")
    limit = usable_positions(model.config.to_dict())
    samples = []
    for sentence in card.mlm_sentences:
        text = sentence.replace(MASK_PLACEHOLDER, tokenizer.mask_token)
        if limit is not None and len(tokenizer(text)["input_ids"]) > limit:  # it would crash the model
            samples.append(
                {"sentence": sentence, "predictions": [], "note": f"longer than the model's {limit} positions"}
            )
            continue
        predictions = filler(text, top_k=top_k)
        samples.append(
            {
                "sentence": sentence,
                "predictions": [{"token": p["token_str"], "score": round(float(p["score"]), 4)} for p in predictions],
            }
        )
    return samples


def sample_outputs(objective: Objective, model: Any, tokenizer: Any, card: CardConfig) -> list[dict[str, Any]]:
    if spec_of(objective).masked:
        return mlm_samples(model, tokenizer, card)
    return clm_samples(model, tokenizer, card)


def card_samples(
    objective: Objective,
    model_dir: Path,
    config: PipelineConfig,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> list[dict[str, Any]]:
    """The card's samples from the trained model in model_dir, loaded with its tokenizer as saved, as a
    reviewer would load it."""
    started = time.perf_counter()
    model, tokenizer = trained_model(objective, model_dir), AutoTokenizer.from_pretrained(str(model_dir))
    samples = sample_outputs(objective, model, tokenizer, config.card)
    log.info(f"evaluate {objective}: {len(samples)} model-card samples in {time.perf_counter() - started:.1f} s")
    return samples
