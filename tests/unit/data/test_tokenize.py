"""lmpipe.data.tokenize, tokenizers and tokenizer_choice (the tokenize stage): the trained BPE, which tokenizer
each model uses, and the shared artifact key."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import AutoTokenizer

from lmpipe.config.loading import load_config
from lmpipe.data.columns import id_type_for
from lmpipe.data.tokenize import FastEncoder, _encode_batch, encoder_for, tokenize_saved
from lmpipe.data.tokenizer_choice import tokenizer_identity, tokenizer_origin, tokenizer_source
from lmpipe.data.tokenizers import SPECIAL_TOKENS, build_tokenizer
from lmpipe.store.manifest import CorruptArtifactError, DigestCheck, is_complete
from lmpipe.store.publish import building
from tasks.tokenize import tokenize_output_dir

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Return a new list containing all items from the iterable in ascending order.",
    "Unicode works too: café, naïve, 日本語.",
]


@pytest.fixture(scope="module")
def saved_tokenizer_dir(tiny_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(str(directory))
    return directory


# ---------------------------------------------------------------------------- the trained BPE


def test_trained_tokenizer_has_every_special_token(tiny_tokenizer):
    for attribute, token in SPECIAL_TOKENS.items():
        assert str(getattr(tiny_tokenizer, attribute)) == token
    ids = [tiny_tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS.values()]
    assert len(set(ids)) == len(ids)
    assert ids == [
        tiny_tokenizer.bos_token_id,
        tiny_tokenizer.pad_token_id,
        tiny_tokenizer.eos_token_id,
        tiny_tokenizer.unk_token_id,
        tiny_tokenizer.mask_token_id,
    ]


def test_trained_tokenizer_respects_the_vocab_size(tiny_tokenizer, tiny_vocab_size):
    assert 256 + len(SPECIAL_TOKENS) < len(tiny_tokenizer) <= tiny_vocab_size


def test_every_text_is_wrapped_in_bos_and_eos(tiny_tokenizer):
    for text in SENTENCES:
        ids = tiny_tokenizer(text)["input_ids"]
        assert ids[0] == tiny_tokenizer.bos_token_id
        assert ids[-1] == tiny_tokenizer.eos_token_id
        inner = ids[1:-1]
        assert tiny_tokenizer.bos_token_id not in inner and tiny_tokenizer.eos_token_id not in inner
        assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless


def test_mask_token_is_one_id(tiny_tokenizer):
    ids = tiny_tokenizer("a <mask> b")["input_ids"]
    assert ids.count(tiny_tokenizer.mask_token_id) == 1


def test_tokenizer_round_trips_through_save_pretrained(tiny_tokenizer, saved_tokenizer_dir):
    reloaded = AutoTokenizer.from_pretrained(str(saved_tokenizer_dir))
    assert reloaded.is_fast
    assert len(reloaded) == len(tiny_tokenizer)
    for attribute in SPECIAL_TOKENS:
        assert getattr(reloaded, f"{attribute}_id") == getattr(tiny_tokenizer, f"{attribute}_id")
    texts = [*SENTENCES, "a <mask> b", ""]
    assert reloaded(texts)["input_ids"] == tiny_tokenizer(texts)["input_ids"]


# ---------------------------------------------------------------------------- tokenize_saved


def tokenize_splits(splits: DatasetDict, tokenizer, num_proc: int, id_type: str | None = None) -> DatasetDict:
    """The stage's path: the flat splits saved, streamed through tokenize_saved, loaded back."""
    with tempfile.TemporaryDirectory() as scratch:
        splits.save_to_disk(f"{scratch}/flat")
        tokens = tokenize_saved(
            Path(scratch) / "flat", tokenizer, num_proc, Path(scratch) / "tokenized", id_type=id_type
        )
        tokenized = load_from_disk(f"{scratch}/tokenized", keep_in_memory=True)
    assert tokens == {split: sum(len(ids) for ids in tokenized[split]["input_ids"]) for split in tokenized}
    return tokenized


def test_tokenize_splits_keeps_only_the_ids(tiny_tokenizer):
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": SENTENCES, "title": ["t"] * len(SENTENCES)}),
            "test": Dataset.from_dict({"text": SENTENCES[:1], "title": ["t"]}),
        }
    )
    tokenized = tokenize_splits(splits, tiny_tokenizer, num_proc=1)
    assert tokenized["train"].column_names == ["input_ids"]  # unpadded text: a mask would be all ones
    assert list(tokenized["train"]["input_ids"]) == tiny_tokenizer(SENTENCES)["input_ids"]
    long_text = " ".join(SENTENCES * 200)
    long = tokenize_splits(
        DatasetDict({"train": Dataset.from_dict({"text": [long_text]}), "test": Dataset.from_dict({"text": ["x"]})}),
        tiny_tokenizer,
        num_proc=1,
    )
    assert len(long["train"][0]["input_ids"]) > 1024  # no truncation: group re-cuts every token


@pytest.mark.parametrize("num_proc, id_type, stored", [(1, None, "uint16"), (2, None, "uint16"), (2, "int32", "int32")])
def test_tokenized_ids_are_as_narrow_as_the_vocabulary_allows_in_row_order(
    tiny_tokenizer, sample_texts, num_proc, id_type, stored
):
    texts = [f"{i}: {sample_texts[i % len(sample_texts)]}" for i in range(2500)]  # 3 batches: 2 processes work
    tokenized = tokenize_splits(
        DatasetDict({"train": Dataset.from_dict({"text": texts}), "test": Dataset.from_dict({"text": ["x"]})}),
        tiny_tokenizer,
        num_proc=num_proc,
        id_type=id_type,
    )
    assert str(tokenized["train"].data.schema.field("input_ids").type) == f"list<item: {stored}>"
    assert tokenized["train"].features["input_ids"].feature.dtype == stored  # what load_from_disk hands on
    assert [row["input_ids"] for row in tokenized["train"].to_list()] == tiny_tokenizer(texts)["input_ids"]


def test_the_id_type_follows_the_vocabulary_size():
    assert id_type_for(4096) == id_type_for(2**16) == "uint16"
    assert id_type_for(2**16 + 1) == id_type_for(250_000) == "int32"


def test_an_id_past_the_stored_type_fails_instead_of_wrapping_around():
    with pytest.raises(pa.ArrowInvalid):
        _encode_batch(pa.table({"text": ["x"]}), lambda texts: [[70_000]], pa.uint16())


def test_fast_path_ignores_truncation_saved_in_the_tokenizer_file(tiny_tokenizer, tmp_path):
    """A tokenizer.json saved with truncation on: tokenizer(texts) turns it off per call, so must we."""
    tiny_tokenizer.backend_tokenizer.enable_truncation(max_length=8)
    try:
        tiny_tokenizer.save_pretrained(str(tmp_path))
    finally:
        tiny_tokenizer.backend_tokenizer.no_truncation()
    assert json.loads((tmp_path / "tokenizer.json").read_text())["truncation"]["max_length"] == 8
    truncating = AutoTokenizer.from_pretrained(str(tmp_path))
    encode = encoder_for(truncating, SENTENCES)
    assert isinstance(encode, FastEncoder)
    assert encode(SENTENCES) == truncating(SENTENCES)["input_ids"]
    assert max(len(ids) for ids in encode(SENTENCES)) > 8


def test_a_tokenizer_whose_call_differs_from_its_backend_keeps_its_own_call(tiny_tokenizer):
    class Lowercasing(type(tiny_tokenizer)):
        def __call__(self, text, **kwargs):
            return super().__call__([t.lower() for t in text], **kwargs)

    lowercasing = Lowercasing(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    encode = encoder_for(lowercasing, SENTENCES)
    assert not isinstance(encode, FastEncoder)
    assert encode(SENTENCES) == lowercasing(SENTENCES)["input_ids"] != FastEncoder(lowercasing)(SENTENCES)


# ---------------------------------------------------------------------------- which tokenizer


def config_with(*overrides: str):
    return load_config(overrides=list(overrides))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.clm.tokenizer=own-tok", "model.clm.pretrained=own-model", "tokenizer.pretrained=shared"], "own-tok"),
        (["model.clm.pretrained=own-model", "tokenizer.pretrained=shared"], "own-model"),
        (["tokenizer.pretrained=shared"], "shared"),
        ([], None),
    ],
)
def test_tokenizer_source_precedence(overrides, expected):
    assert tokenizer_source(config_with(*overrides), "clm") == expected


def test_tokenizer_source_is_per_objective():
    config = config_with("model.mlm.pretrained=roberta-like", "tokenizer.pretrained=shared")
    assert tokenizer_source(config, "mlm") == "roberta-like"
    assert tokenizer_source(config, "clm") == "shared"


def test_default_config_shares_one_tokenizer_artifact_between_objectives(tmp_path):
    config = config_with()
    assert tokenizer_identity(config, "clm") == tokenizer_identity(config, "mlm")
    assert tokenizer_identity(config, "clm") == {
        "trained_bpe": {"vocab_size": 4096, "min_frequency": 2, "train_sample": {"bytes": 100_000_000, "rows": None}}
    }
    flat_dir = str(tmp_path / "flatten" / "abc")
    assert tokenize_output_dir(flat_dir, config, "clm") == tokenize_output_dir(flat_dir, config, "mlm")


def test_trained_bpe_identity_tracks_its_settings():
    default = tokenizer_identity(config_with(), "clm")
    assert tokenizer_identity(config_with("tokenizer.vocab_size=500"), "clm") != default
    assert tokenizer_identity(config_with("tokenizer.min_frequency=3"), "clm") != default


def test_local_pretrained_model_gets_its_own_tokenizer_artifact(saved_tokenizer_dir, tmp_path):
    config = config_with(f"model.clm.pretrained={saved_tokenizer_dir}")
    clm, mlm = tokenizer_identity(config, "clm"), tokenizer_identity(config, "mlm")
    assert clm != mlm
    assert "tokenizer.json" in clm["local"]
    flat_dir = str(tmp_path / "flatten" / "abc")
    assert tokenize_output_dir(flat_dir, config, "clm") != tokenize_output_dir(flat_dir, config, "mlm")


def test_local_tokenizer_identity_follows_file_contents(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, vocab in ((first, {"a": 0}), (second, {"a": 0, "b": 1})):
        directory.mkdir()
        (directory / "vocab.json").write_text(json.dumps(vocab))
    one = tokenizer_identity(config_with(f"model.clm.pretrained={first}"), "clm")
    other = tokenizer_identity(config_with(f"model.clm.pretrained={second}"), "clm")
    assert one != other
    (second / "vocab.json").write_text(json.dumps({"a": 0}))
    assert tokenizer_identity(config_with(f"model.clm.pretrained={second}"), "clm") == one  # content, not path


def test_hub_tokenizer_identity_is_its_name_and_pinned_revision():
    unpinned = config_with("model.clm.pretrained=distilgpt2")
    assert tokenizer_identity(unpinned, "clm") == {"hub": "distilgpt2", "revision": None}
    pinned = config_with("model.clm.pretrained=distilgpt2", "model.clm.revision=abc123")
    assert tokenizer_identity(pinned, "clm") == {"hub": "distilgpt2", "revision": "abc123"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), (None, None, "tokenizer.pretrained")),
        (("tokenizer.pretrained=shared", "tokenizer.revision=r1"), ("shared", "r1", "tokenizer.pretrained")),
        (("model.clm.pretrained=gpt2", "model.clm.revision=r2"), ("gpt2", "r2", "model.clm.pretrained")),
        (
            (
                "model.clm.pretrained=gpt2",
                "model.clm.revision=r2",
                "model.clm.tokenizer=tok",
                "model.clm.tokenizer_revision=r3",
            ),
            ("tok", "r3", "model.clm.tokenizer"),
        ),
    ],
)
def test_tokenizer_origin_names_the_revision_and_the_field_that_chose_it(overrides, expected):
    assert tuple(tokenizer_origin(config_with(*overrides), "clm")) == expected


def test_build_tokenizer_loads_a_local_tokenizer(tiny_tokenizer, saved_tokenizer_dir):
    config = config_with(f"tokenizer.pretrained={saved_tokenizer_dir}")
    tokenizer = build_tokenizer(config, "mlm", [["unused"]])
    assert tokenizer(SENTENCES)["input_ids"] == tiny_tokenizer(SENTENCES)["input_ids"]


def test_build_tokenizer_trains_a_bpe_without_a_pretrained_one(sample_texts):
    config = config_with("tokenizer.vocab_size=300")
    tokenizer = build_tokenizer(config, "clm", [sample_texts[:100]])
    assert tokenizer.mask_token == "<mask>"
    assert len(tokenizer) <= 300


def test_local_tokenizer_identity_ignores_model_weights_beside_it(saved_tokenizer_dir, tmp_path):
    # A pretrained model folder: the same tokenizer files, plus weights that do not shape the tokenizer.
    model_dir = tmp_path / "model"
    shutil.copytree(saved_tokenizer_dir, model_dir)
    (model_dir / "model.safetensors").write_bytes(b"\0" * 1024)
    with_weights = tokenizer_identity(config_with(f"model.clm.pretrained={model_dir}"), "clm")
    without = tokenizer_identity(config_with(f"model.clm.pretrained={saved_tokenizer_dir}"), "clm")
    assert with_weights == without
    assert "model.safetensors" not in with_weights["local"]


def test_a_corrupt_flat_artifact_stops_tokenize_even_when_worker_processes_encode(tiny_tokenizer, tmp_path):
    texts = [f"{i}: some answer text that is long enough" for i in range(3000)]  # 3 batches for 2 processes
    flat = tmp_path / "flatten" / "key"
    with building(flat, "flatten", {}) as scratch:
        DatasetDict(
            {"train": Dataset.from_dict({"text": texts}), "test": Dataset.from_dict({"text": ["x"]})}
        ).save_to_disk(str(scratch / "dataset"))
    (data_file,) = (flat / "dataset" / "train").glob("*.arrow")
    stat = data_file.stat()
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside a text: still readable, so only the checksum can tell
    data_file.write_bytes(bytes(raw))
    os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CorruptArtifactError, match="flatten/key is corrupt"):
        tokenize_saved(flat / "dataset", tiny_tokenizer, 2, tmp_path / "out", check=DigestCheck.of(flat))
    assert not is_complete(flat)
