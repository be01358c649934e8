"""lmpipe.registry.model_card: rendering, escaping and fitting the card into a version description."""

from __future__ import annotations

import dataclasses

from lmpipe.config.schema import PipelineConfig
from lmpipe.registry.model_card import DESCRIPTION_LIMIT, CardFacts, _cell, description_of, render
from lmpipe.registry.promotion import BITS_PER_BYTE, Decision, Standing

LINEAGE = {
    "code.git_commit": "a" * 40,
    "prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/123",
    "data.source": "builtin: Python standard library docstrings",
    "data.revision": "stdlib",
    "data.train_blocks": "950",
    "data.train_tokens": "121600",
    "data.test_blocks": "240",
    "data.test_tokens": "30720",
    "data.fingerprint": "blocks123",
    "data.download": "corpus456",
    "model.base": "from scratch",
    "tokenizer.source": "byte-level BPE trained here, vocab 4096",
    "tokenizer.hash": "tok789",
}
METRICS = {
    "perplexity": 225.234,
    "base_perplexity": 4142.41,
    "eval_set": "set42",
    "eval_blocks": 240,
    "eval_blocks_total": 240,
    "eval_tokens": 30480,
    "bits_per_byte": 2.1234,  # the causal LM's only
    "base_bits_per_byte": 5.4321,
    "eval_bytes": 98_765,
}
MLM_METRICS = {k: v for k, v in METRICS.items() if k not in ("bits_per_byte", "base_bits_per_byte", "eval_bytes")}
TRAIN = {
    "train_steps": 399,
    "train_loss": 5.5,
    "train_tokens": 817_152,
    "train_runtime_s": 64.0,
    "train_tokens_per_s": 12768.0,
    "parameters": 1_100_000,
    "device": "cpu, 2 threads, fp32",
}


def facts(objective="clm", samples=None, decision=None):
    samples = samples or [
        {"prompt": "The json module", "max_new_tokens": 24, "generated_text": "The json module | encodes ``` things"},
        {"prompt": "A long prompt", "max_new_tokens": 16, "generated_text": "A long prompt cut short"},
    ]
    decision = decision or Decision(
        "champion",
        "perplexity 225.23 beats champion v2's 240.00 by 6.2% (margin 1.0%)",
        Standing(2, 240.0, own_set_value=250.5, reevaluated=True),
    )
    metrics = METRICS if objective == "clm" else MLM_METRICS
    return CardFacts("eli5-clm", 3, objective, metrics, TRAIN, LINEAGE, decision, samples, "http://mlflow:5000")


def test_the_card_answers_what_it_is_whether_it_is_better_and_how_to_use_it():
    card = render(facts(), PipelineConfig())
    assert card.startswith("# eli5-clm v3\n\n**Alias: champion.** perplexity 225.23 beats champion v2's")
    assert "| model | perplexity | bits per byte |" in card
    assert "| base model, before training | 4,142.41 | 5.432 |" in card
    assert "| this version (v3) | 225.23 | 2.123 |" in card
    assert "| champion v2 (compared by perplexity; re-evaluated on this set; 250.50 on its own) | 240.00 | - |" in card
    assert "from scratch: 2 layers, hidden 128, 4 heads, 1,100,000 parameters" in card
    assert "950 train (121,600 tokens), 240 test (30,720 tokens)" in card
    assert "| throughput | 12,768 tokens/s over 64.0 s |" in card  # CPU: no MFU
    assert 'load_model("models:/eli5-clm/3")' in card and "lmpipe predict eli5-clm" in card
    # A code fence inside a generation must not close the card's fence.
    assert "```text\nThe json module | encodes ''' things\n```" in card
    # A generation capped by the model's positions says so, right above its text.
    assert "*16 new tokens: what fits the model's positions.*\n\n```text\nA long prompt cut short\n```" in card


def test_the_card_names_the_evaluation_set_and_whether_it_was_bounded():
    assert "`set42`, 240 test blocks, 30,480 predicted tokens (98,765 bytes of text)." in render(
        facts(), PipelineConfig()
    )
    bounded = {**MLM_METRICS, "eval_blocks": 2048, "eval_blocks_total": 51_200, "eval_tokens": 260_096}
    card = render(dataclasses.replace(facts(), metrics=bounded), PipelineConfig())
    assert (
        "`set42`, 2,048 of 51,200 test blocks (eval.max_blocks=2048, evenly spaced), 260,096 predicted tokens." in card
    )


def test_a_champion_with_another_tokenizer_is_shown_by_the_bits_per_byte_it_was_compared_by():
    reason = (
        "bits per byte 2.123 beats champion v2's 2.500 by 15.1% (margin 1.0%), on the text of this version's "
        "evaluation set re-tokenized for the champion; compared by bits per byte because the two read different "
        "tokenizers, so their perplexities are per different tokens"
    )
    standing = Standing(2, 2.5, own_set_value=2.6, metric=BITS_PER_BYTE, reevaluated=True)
    card = render(facts(decision=Decision("champion", reason, standing)), PipelineConfig())
    assert card.startswith(f"# eli5-clm v3\n\n**Alias: champion.** {reason}.")
    assert (
        "| champion v2 (compared by bits per byte; on this version's evaluation text, in its own tokenizer; "
        "2.600 on its own) | - | 2.500 |" in card
    )
    assert "it compares models that read different tokenizers" in card


def test_a_gpu_run_shows_its_mfu_next_to_its_tokens_per_second():
    gpu_metrics = {**TRAIN, "device": "cuda (NVIDIA H100), bf16", "train_mfu": 0.3712}
    gpu_facts = dataclasses.replace(facts(), train_metrics=gpu_metrics)
    assert "| throughput | 12,768 tokens/s over 64.0 s, MFU 37.1% |" in render(gpu_facts, PipelineConfig())


def test_an_mlm_card_tables_the_top_fillings_with_escaped_cells():
    samples = [
        {
            "sentence": "The Milky Way is a <mask> galaxy.",
            "predictions": [
                {"token": " spiral", "score": 0.51},
                {"token": "a|b", "score": 0.2},
                {"token": "`x`", "score": 0.1},
            ],
        }
    ]
    card = render(facts("mlm", samples, Decision(None, "promotion is off")), PipelineConfig())
    assert '| The Milky Way is a &lt;mask> galaxy. | " spiral" (0.510), "a\\|b" (0.200), "\'x\'" (0.100) |' in card
    assert "**Alias: no alias.** promotion is off." in card
    assert "| champion" not in card
    assert "masking | 15% of tokens" in card
    assert "| model | perplexity |\n" in card and "bits per byte" not in card  # a masked LM has none


def test_cells_never_break_a_markdown_table():
    assert _cell("a|b\nc`d<e") == "a\\|b c'd&lt;e"


def test_a_long_card_is_cut_at_a_section_with_a_pointer_to_the_artifact():
    card = "# t\n\n" + "\n\n".join(f"## section {i}\n\n" + "x" * 900 for i in range(8))
    description = description_of(card)
    assert len(description) <= DESCRIPTION_LIMIT
    assert description.endswith("the whole card is the run's `model_card.md` artifact.*\n")
    assert "## section 4" in description and "## section 5" not in description


def test_a_short_card_is_the_description_unchanged():
    assert description_of("# short\n") == "# short\n"
