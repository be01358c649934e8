"""The champion gate across tokenizers, on real flow runs of the tiny config (local SQLite MLflow store).

Three causal LMs trained on the same corpus, each with its own BPE vocabulary, so each has its own
tokenizer, blocks and evaluation set, and their perplexities are per different tokens:

    v1  vocab 400, 8 steps     -> champion (first version)
    v2  vocab 300, 200 steps   -> champion: better by bits per byte, measured for v1 on v2's text
    v3  vocab 350, 2 steps     -> challenger: worse by bits per byte than v2, measured on v3's text

Every run evaluates the whole test split (eval.max_blocks=null), so the three evaluation texts are one text
cut at different block boundaries, and a champion's number on another version's text can be checked
against the number it recorded on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pipeline_probe import tiny_config

from flows.clm import clm_flow
from lmpipe.evaluation.report import read_metrics
from lmpipe.store.keys import artifact_path
from lmpipe.store.manifest import read_manifest

pytestmark = pytest.mark.integration

CLM = "eli5-clm"


def upstream(artifact: str | Path, name: str) -> Path:
    """The artifact that `artifact`'s manifest names as its input `name`."""
    return artifact_path(Path(artifact).parent.parent, read_manifest(artifact)["inputs"][name])


def test_a_champion_with_another_tokenizer_is_compared_by_bits_per_byte(workspace):
    def run(*overrides: str) -> tuple[dict, dict]:
        state = clm_flow(tiny_config(workspace, "eval.max_blocks=null", *overrides), return_state=True)
        assert state.is_completed(), state.message
        (registration_dir,) = state.result()
        registration = json.loads((Path(registration_dir) / "registration.json").read_text())
        return registration, read_metrics(upstream(registration_dir, "eval"))

    first, first_metrics = run("tokenizer.vocab_size=400", "train.max_steps=8")
    better, better_metrics = run("tokenizer.vocab_size=300", "train.max_steps=200")
    worse, worse_metrics = run("tokenizer.vocab_size=350", "train.max_steps=2")
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    v1, v2, v3 = (client.get_model_version(CLM, str(n)) for n in (1, 2, 3))

    # Three tokenizers, three evaluation sets: perplexity alone could not be compared.
    assert len({v.tags["tokenizer.hash"] for v in (v1, v2, v3)}) == 3
    assert len({v.tags["eval.set"] for v in (v1, v2, v3)}) == 3
    for version, metrics in ((v1, first_metrics), (v2, better_metrics), (v3, worse_metrics)):
        assert version.tags["bits_per_byte"] == f"{metrics['bits_per_byte']:.4f}"
        assert metrics["bits_per_byte"] == pytest.approx(
            metrics["eval_loss"] * metrics["eval_tokens"] / math.log(2) / metrics["eval_bytes"]
        )

    assert [r["alias"] for r in (first, better, worse)] == ["champion", "champion", "challenger"]
    assert str(client.get_model_version_by_alias(CLM, "champion").version) == "2"

    # v2 against v1: v1 re-measured on v2's evaluation text, in v1's own tokenizer and block size.
    tags = v2.tags
    assert (tags["champion.version"], tags["champion.metric"], tags["champion.reevaluated"]) == (
        "1",
        "bits_per_byte",
        "true",
    )
    assert "champion.perplexity" not in tags  # per other tokens: never compared
    v1_on_v2_text = float(tags["champion.bits_per_byte"])
    assert better_metrics["bits_per_byte"] < v1_on_v2_text * (1 - 0.01)
    # v2's text is v1's own, cut at other block boundaries: v1 scores within a few percent of what it recorded.
    assert v1_on_v2_text == pytest.approx(first_metrics["bits_per_byte"], rel=0.03)
    assert better_metrics["eval_bytes"] == pytest.approx(first_metrics["eval_bytes"], rel=0.05)
    assert "bits per byte" in tags["lmpipe.alias_reason"] and "different tokenizers" in tags["lmpipe.alias_reason"]
    assert "compared by bits per byte" in v2.description and "| bits per byte |" in v2.description

    # v3 against v2: worse by bits per byte, so challenger, with the numbers in its reason.
    reason = v3.tags["lmpipe.alias_reason"]
    assert v3.tags["champion.version"] == "2" and v3.tags["champion.metric"] == "bits_per_byte"
    assert reason.startswith(f"bits per byte {worse_metrics['bits_per_byte']:.3f} does not beat champion v2's")
    assert worse_metrics["bits_per_byte"] > float(v3.tags["champion.bits_per_byte"])
