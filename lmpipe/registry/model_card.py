"""The model card: the Markdown a reviewer reads on the model version page in MLflow.

It answers three questions: what is this model, is it better than what we have, can I use it.
The sample outputs it shows were made from the model by the evaluate stage
(lmpipe.evaluation.samples); rendering never loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmpipe.config.schema import CardConfig, PipelineConfig
from lmpipe.evaluation.samples import TOP_K_SAMPLING
from lmpipe.objectives import Objective, spec_of
from lmpipe.registry.promotion import BITS_PER_BYTE, PERPLEXITY, Decision, Metric, format_value

# MLflow keeps at most 5000 characters of a version description on SQL stores.
DESCRIPTION_LIMIT = 5000


@dataclass
class CardFacts:
    """Everything the card shows, gathered by the register task."""

    name: str
    version: int
    objective: Objective
    metrics: dict[str, Any]  # evaluate's metrics.json
    train_metrics: dict[str, Any]  # train_metrics.json
    lineage: dict[str, str]
    decision: Decision
    samples: list[dict[str, Any]]
    tracking_uri: str


def _code_text(text: str) -> str:
    return text.replace("```", "'''")  # a fence inside generated text must not end ours


def _cell(text: str) -> str:
    # Markdown table cell: no pipes, no backticks, no newlines, and '<mask>' must not read as HTML.
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ").replace("<", "&lt;")


def render(facts: CardFacts, config: PipelineConfig) -> str:
    sections = [
        _title(facts),
        _purpose(facts),
        _perplexity_table(facts),
        _data(facts, config),
        _config_highlights(facts, config),
        _samples(facts, config.card),
        _how_to_load(facts),
    ]
    return "\n\n".join(sections) + "\n"


def _title(facts: CardFacts) -> str:
    alias = facts.decision.alias or "no alias"
    return f"# {facts.name} v{facts.version}\n\n**Alias: {alias}.** {facts.decision.reason}."


def _purpose(facts: CardFacts) -> str:
    run = facts.lineage.get("prefect.flow_run_url") or facts.lineage.get("prefect.flow_run_id") or "outside Prefect"
    return (
        f"## Purpose\n\n{spec_of(facts.objective).purpose}\n\n"
        f"Trained by the lmpipe pipeline (code `{facts.lineage['code.git_commit']}`), Prefect flow run: {run}."
    )


def _perplexity_table(facts: CardFacts) -> str:
    """Perplexity, and for a causal LM bits per byte beside it; the champion's row shows the number compared."""
    metrics = facts.metrics
    per_byte = metrics.get("bits_per_byte") is not None  # causal LM only (lmpipe.evaluation.bits_per_byte)
    rows: list[tuple[str, float | None, float | None]] = [
        ("base model, before training", metrics["base_perplexity"], metrics.get("base_bits_per_byte")),
        (f"this version (v{facts.version})", metrics["perplexity"], metrics.get("bits_per_byte")),
    ]
    champion = facts.decision.champion
    if champion is not None:
        compared = "bits per byte" if champion.metric == BITS_PER_BYTE else "perplexity"
        note = f" (compared by {compared}"
        if champion.metric == BITS_PER_BYTE:
            note += "; on this version's evaluation text, in its own tokenizer"
        elif champion.reevaluated:
            note += "; re-evaluated on this set"
        if champion.own_set_value is not None:
            note += f"; {format_value(champion.own_set_value, champion.metric)} on its own"
        value = champion.value
        row = (value, None) if champion.metric == PERPLEXITY else (None, value)
        rows.append((f"champion v{champion.version}{note})", *row))
        per_byte = per_byte or champion.metric == BITS_PER_BYTE

    def cell(value: float | None, metric: Metric) -> str:
        return "-" if value is None else format_value(value, metric)

    if per_byte:
        header = "| model | perplexity | bits per byte |\n|---|---|---|"
        lines = [f"| {label} | {cell(ppl, PERPLEXITY)} | {cell(bpb, BITS_PER_BYTE)} |" for label, ppl, bpb in rows]
    else:
        header = "| model | perplexity |\n|---|---|"
        lines = [f"| {label} | {cell(ppl, PERPLEXITY)} |" for label, ppl, _ in rows]
    blocks = f"{metrics['eval_blocks']:,} test blocks"
    # eval.max_blocks bounded it, to eval_blocks (metrics from before the bound existed have no total)
    if metrics["eval_blocks"] < metrics.get("eval_blocks_total", metrics["eval_blocks"]):
        blocks = (
            f"{metrics['eval_blocks']:,} of {metrics['eval_blocks_total']:,} test blocks "
            f"(eval.max_blocks={metrics['eval_blocks']}, evenly spaced)"
        )
    text = f"{metrics['eval_tokens']:,} predicted tokens"
    if metrics.get("eval_bytes") is not None:
        text += f" ({metrics['eval_bytes']:,} bytes of text)"
    explain = ""
    if per_byte:
        explain = (
            " Bits per byte is the same loss in bits per UTF-8 byte of the predicted text: unlike perplexity, "
            "which is per token, it compares models that read different tokenizers."
        )
    return (
        f"## Perplexity\n\nLower is better. All on one evaluation set: `{metrics['eval_set']}`, {blocks}, "
        f"{text}.{explain}\n\n{header}\n" + "\n".join(lines)
    )


def _data(facts: CardFacts, config: PipelineConfig) -> str:
    tags = facts.lineage
    return (
        "## Data\n\n"
        f"- source: {tags['data.source']}; revision: {tags['data.revision']}\n"
        f"- {config.data.block_size}-token blocks: {int(tags['data.train_blocks']):,} train "
        f"({int(tags['data.train_tokens']):,} tokens), {int(tags['data.test_blocks']):,} test "
        f"({int(tags['data.test_tokens']):,} tokens); held out: {config.data.test_size:.0%}, "
        f"split seed {config.data.seed}\n"
        f"- blocks artifact `{tags['data.fingerprint']}`, corpus artifact `{tags['data.download']}`"
    )


def _throughput(train_metrics: dict[str, Any]) -> str:
    """Tokens/s of the training run, and its MFU when it ran on a GPU."""
    text = f"{train_metrics['train_tokens_per_s']:,.0f} tokens/s over {train_metrics['train_runtime_s']:,.1f} s"
    return text + (f", MFU {train_metrics['train_mfu']:.1%}" if "train_mfu" in train_metrics else "")


def _config_highlights(facts: CardFacts, config: PipelineConfig) -> str:
    train = config.train
    base = facts.lineage["model.base"]
    if base == "from scratch":
        model = getattr(config.model, facts.objective)
        base = (
            f"from scratch: {model.n_layers} layers, hidden {model.hidden_size}, {model.n_heads} heads, "
            f"{facts.train_metrics.get('parameters', 0):,} parameters"
        )
    rows = [
        ("base model", base),
        ("tokenizer", f"{facts.lineage['tokenizer.source']} (hash {facts.lineage['tokenizer.hash']})"),
        (
            "steps",
            f"{facts.train_metrics['train_steps']:,} ({train.max_steps or train.epochs} "
            f"{'max steps' if train.max_steps else 'epochs'})",
        ),
        (
            "learning rate",
            f"{train.learning_rate:g}, warmup {train.warmup_ratio:g}, weight decay {train.weight_decay:g}",
        ),
        ("batch", f"{train.batch_size} x {train.grad_accum} accumulation, seed {train.seed}"),
        ("device", facts.train_metrics.get("device", "?")),
        ("throughput", _throughput(facts.train_metrics)),
        ("train loss", f"{facts.train_metrics['train_loss']:.4f}"),
    ]
    if spec_of(facts.objective).masked:
        rows.append(("masking", f"{train.mlm_probability:.0%} of tokens"))
    return "## Config highlights\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {_cell(str(v))} |" for k, v in rows)


def _samples(facts: CardFacts, card: CardConfig) -> str:
    if not spec_of(facts.objective).masked:
        lines = [
            f"## Sample outputs\n\nSampled with seed {card.seed}, top_k {TOP_K_SAMPLING}, "
            f"up to {card.max_new_tokens} new tokens. The prompt is the start of each text."
        ]
        for sample in facts.samples:
            if sample["max_new_tokens"] < card.max_new_tokens:
                lines.append(f"*{sample['max_new_tokens']} new tokens: what fits the model's positions.*")
            lines.append(f"```text\n{_code_text(sample['generated_text'])}\n```")
        return "\n\n".join(lines)
    rows = []
    for sample in facts.samples:
        top = ", ".join(f'"{_cell(p["token"])}" ({p["score"]:.3f})' for p in sample["predictions"])
        top = top or f"not run: {sample.get('note', 'no prediction')}"
        rows.append(f"| {_cell(sample['sentence'])} | {top} |")
    return (
        "## Sample outputs\n\nTop-3 fillings of the mask.\n\n| sentence | predictions (score) |\n|---|---|\n"
        + "\n".join(rows)
    )


def _how_to_load(facts: CardFacts) -> str:
    uri = f"models:/{facts.name}/{facts.version}"
    if spec_of(facts.objective).masked:
        example = "The json module can <mask> Python objects."
        call = 'pipe(text.replace("<mask>", pipe.tokenizer.mask_token), top_k=3)'
    else:
        example, call = "The json module", "pipe(text, max_new_tokens=20, add_special_tokens=False)"
    return (
        "## How to load\n\n"
        f"```python\nimport mlflow\n\nmlflow.set_tracking_uri({facts.tracking_uri!r})\n"
        f'pipe = mlflow.transformers.load_model("{uri}")  # or "models:/{facts.name}@champion"\n'
        f"text = {example!r}\n{call}\n```\n\n"
        f"From the command line: `lmpipe predict {facts.name} {example!r} --version {facts.version}`"
    )


def description_of(card: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card as a version description: whole when it fits, else cut at a section with a pointer."""
    if len(card) <= limit:
        return card
    note = "\n\n*Cut to fit; the whole card is the run's `model_card.md` artifact.*\n"
    cut = card.rfind("\n\n## ", 0, limit - len(note))
    return card[: cut if cut > 0 else limit - len(note)] + note
