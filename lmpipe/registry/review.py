"""Review and use registered models: what `lmpipe models` and `lmpipe predict` show.

lmpipe models                                  # every version, newest first, with its perplexity
lmpipe predict eli5-mlm "The json module can <mask> Python objects." --version 1
lmpipe predict eli5-clm "The json module" --version 1 --max-new-tokens 20
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from lmpipe.objectives import MASK_PLACEHOLDER, OBJECTIVES


def version_rows(tracking_uri: str, name: str | None = None) -> list[dict[str, Any]]:
    """One row per model version, newest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    names = [name] if name else [model.name for model in client.search_registered_models()]
    rows = []
    for model_name in names:
        # Version search results leave aliases out; the registered model lists them.
        aliases: dict[str, list[str]] = {}
        for alias, number in client.get_registered_model(model_name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
        for version in client.search_model_versions(f"name = '{model_name}'"):
            created = datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc)
            rows.append(
                {
                    "model": model_name,
                    "version": int(version.version),
                    "perplexity": version.tags.get("perplexity", "?"),
                    "base perplexity": version.tags.get("base_perplexity", "?"),
                    "bits/byte": version.tags.get("bits_per_byte", "-"),  # causal LMs: compares across tokenizers
                    "aliases": ",".join(sorted(aliases.get(str(version.version), []))) or "-",
                    "review": version.tags.get("review.status", "-"),  # registry.approval=reviewer
                    "data": version.tags.get("data.fingerprint", "?"),
                    "eval set": version.tags.get("eval.set", "?"),
                    "created": created.strftime("%Y-%m-%d %H:%M"),
                    "_created": version.creation_timestamp,
                }
            )
    return sorted(rows, key=lambda row: row["_created"], reverse=True)


def model_uri(name: str, version: int | None, alias: str | None, tracking_uri: str) -> str:
    """A given version or alias; otherwise the champion, or the newest version while there is none."""
    if version is not None:
        return f"models:/{name}/{version}"
    if alias is not None:
        return f"models:/{name}@{alias}"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version_by_alias(name, "champion")
        return f"models:/{name}@champion"
    except MlflowException:
        versions = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
        if not versions:
            raise SystemExit(f"lmpipe: no registered model named {name!r} at {tracking_uri}") from None
        return f"models:/{name}/{max(versions)}"


def predict(uri: str, text: str, tracking_uri: str, top_k: int = 3, max_new_tokens: int = 20) -> list[dict[str, Any]]:
    """Run the registered pipeline (text-generation or fill-mask) on `text`; deterministic output."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    pipeline = mlflow.transformers.load_model(uri)
    if any(spec.masked and spec.pipeline_task == pipeline.task for spec in OBJECTIVES.values()):
        # '<mask>' works for every model; BERT-family tokenizers spell it '[MASK]'.
        text = text.replace(MASK_PLACEHOLDER, pipeline.tokenizer.mask_token)
        return [
            {"token": p["token_str"], "score": round(float(p["score"]), 4), "sequence": p["sequence"]}
            for p in pipeline(text, top_k=top_k)
        ]
    # Greedy decoding: the same model and prompt always give the same text.
    # No special tokens: a tokenizer with RoBERTa-style processing (the one trained here) would end the
    # prompt with </s>, and the model would continue a new document instead of the prompt.
    generated = pipeline(text, max_new_tokens=max_new_tokens, do_sample=False, add_special_tokens=False)
    return [{"generated_text": generated[0]["generated_text"]}]
