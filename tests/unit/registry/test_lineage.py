"""lmpipe.registry.lineage: git commit, the artifact chain, block counts and the tags built from them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from datasets import Dataset, DatasetDict

from lmpipe.config.loading import load_config
from lmpipe.registry.lineage import block_counts, data_source, git_commit, model_base, tokenizer_hash, upstream_dirs


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_commit_is_head_and_says_when_the_checkout_is_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    git(tmp_path, "add", "f.py")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_commit(tmp_path) == head.strip()
    (tmp_path / "f.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head.strip() + "+dirty"


def test_git_commit_counts_a_staged_change_as_dirty_and_ignores_untracked_files(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    git(tmp_path, "add", "f.py")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    (tmp_path / "scratch.txt").write_text("not part of the code\n")
    assert not git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "f.py").write_text("x = 2\n")
    git(tmp_path, "add", "f.py")
    assert git_commit(tmp_path).endswith("+dirty")


def test_git_commit_outside_a_checkout_or_before_the_first_commit_says_so(tmp_path):
    assert git_commit(tmp_path) == "unknown (not a git checkout)"
    git(tmp_path, "init", "-q")
    assert git_commit(tmp_path) == "unknown (not a git checkout)"


def manifest(directory: Path, upstream: Path | None) -> Path:
    directory.mkdir(parents=True)
    inputs = {"upstream": str(upstream)} if upstream else {}
    (directory / "artifact.json").write_text(json.dumps({"stage": directory.parent.name, "inputs": inputs}))
    return directory


def test_upstream_dirs_follow_the_manifests_back_to_the_download(tmp_path):
    download = manifest(tmp_path / "download" / "d1", None)
    flat = manifest(tmp_path / "flatten" / "f1", download)
    tokens = manifest(tmp_path / "tokenize" / "t1", flat)
    blocks = manifest(tmp_path / "group" / "g1", tokens)
    assert upstream_dirs(blocks) == {"group": blocks, "tokenize": tokens, "flatten": flat, "download": download}


def test_block_counts_count_real_tokens_not_padding(tmp_path):
    DatasetDict(
        train=Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5, 0]], "attention_mask": [[1, 1, 1], [1, 1, 0]]}),
        test=Dataset.from_dict({"input_ids": [[7, 8, 9]], "attention_mask": [[1, 1, 1]]}),
    ).save_to_disk(str(tmp_path / "dataset"))
    assert block_counts(tmp_path) == {"train_blocks": 2, "train_tokens": 5, "test_blocks": 1, "test_tokens": 3}


def test_tokenizer_hash_follows_the_vocabulary_files_only(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"v": 1}')
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = tokenizer_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert tokenizer_hash(tmp_path) == first
    (tmp_path / "tokenizer.json").write_text('{"v": 2}')
    assert tokenizer_hash(tmp_path) != first


def test_data_source_and_model_base_name_what_a_reviewer_needs():
    hub = load_config(None, ["data.source=hub", "data.path=eli5_category", "data.revision=abc123"])
    assert data_source(hub) == ("hub: eli5_category [train]", "abc123")
    sha = "f" * 40  # what the download's manifest records it read
    assert data_source(hub, sha) == ("hub: eli5_category [train]", f"{sha} (resolved from abc123)")
    assert (
        data_source(load_config(None, ["data.source=hub", "data.path=x"]))[1] == "unpinned (the hub's default branch)"
    )
    assert model_base(load_config(None, ["model.clm.pretrained=distilgpt2"]), "clm") == ("distilgpt2", "pretrained")
    base, sizes = model_base(load_config(), "mlm")
    assert base == "from scratch" and json.loads(sizes)["n_layers"] == 2
