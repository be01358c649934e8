"""Blocks stored compact (uint16 ids, no mask) train to exactly the weights of the int32 layout, for both
objectives: the collators widen each batch, so nothing is converted in memory up front."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict, load_from_disk
from safetensors.torch import load_file

from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.data.blocks import group_saved
from lmpipe.data.tokenize import tokenize_saved
from lmpipe.training.job import TrainingJob
from lmpipe.training.loop import train_model

BLOCK = 32
TINY = ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64, dropout=0.0)


@pytest.fixture(scope="module")
def blocks_by_type(tmp_path_factory, tiny_tokenizer, sample_texts):
    work = tmp_path_factory.mktemp("compact")
    texts = [text for text in sample_texts if text.strip()]
    DatasetDict(train=Dataset.from_dict({"text": texts}), test=Dataset.from_dict({"text": texts[:8]})).save_to_disk(
        str(work / "flat")
    )
    tiny_tokenizer.save_pretrained(str(work / "tokenizer"))
    for id_type in ("uint16", "int32"):
        tokenize_saved(work / "flat", tiny_tokenizer, 1, work / id_type / "tokenize", id_type=id_type)
        group_saved(work / id_type / "tokenize", work / id_type / "blocks" / "dataset", BLOCK, "drop", 0)
    return work


def trained_weights(work, objective: str, id_type: str) -> dict:
    job = TrainingJob(
        objective=objective,
        blocks_dir=str(work / id_type / "blocks"),
        tokenizer_dir=str(work / "tokenizer"),
        model=TINY,
        train=TrainConfig(max_steps=4, batch_size=4, logging_steps=2, checkpoint_steps=None, learning_rate=1e-2),
        block_size=BLOCK,
        checkpoint_dir=str(work / f"checkpoints-{objective}-{id_type}"),
    )
    out = work / f"model-{objective}-{id_type}"
    out.mkdir()
    train_model(job, out)
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_uint16_and_int32_blocks_train_to_the_same_weights(blocks_by_type, objective):
    compact = load_from_disk(str(blocks_by_type / "uint16" / "blocks" / "dataset"))["train"]
    wide = load_from_disk(str(blocks_by_type / "int32" / "blocks" / "dataset"))["train"]
    assert compact.features["input_ids"].feature.dtype == "uint16" and compact.column_names == ["input_ids"]
    assert wide.features["input_ids"].feature.dtype == "int32"
    assert compact["input_ids"] == wide["input_ids"]
    blocks_bytes = {
        t: sum(f.stat().st_size for f in (blocks_by_type / t / "blocks").rglob("*.arrow")) for t in ("uint16", "int32")
    }
    assert blocks_bytes["uint16"] < 0.6 * blocks_bytes["int32"]

    narrow, widened = (
        trained_weights(blocks_by_type, objective, "uint16"),
        trained_weights(blocks_by_type, objective, "int32"),
    )
    assert narrow.keys() == widened.keys()
    for name in narrow:
        assert narrow[name].equal(widened[name]), f"{name} differs"
