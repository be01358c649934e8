"""Pretrained references: which model types are accepted, repository code never runs, revisions pin.

The loading checks run in a fresh Python process whose stdin answers "y": left to its default,
transformers asks on stdin whether to run a repository's code, so this proves we never let it ask.
The revision checks use a real Hugging Face cache holding two commits of one repository, read in
offline mode, which is how a pinned Hub model resolves without the network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmpipe.config.loading import load_config
from lmpipe.config.pretrained import objective_problem
from lmpipe.config.schema import ModelConfig
from lmpipe.errors import ConfigError
from lmpipe.models.base import build_base_model

TINY = dict(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=64)
REPO = "acme/tiny-gpt2"
COMMIT_ONE_LAYER, COMMIT_TWO_LAYERS = "1" * 40, "2" * 40

# A repository that ships its own code: importing evil.py leaves a marker file behind.
EVIL_CODE = """
from pathlib import Path
Path(__file__).with_name("CODE_RAN").write_text("the repository's code ran")
from transformers import PretrainedConfig, PreTrainedTokenizerFast
class EvilConfig(PretrainedConfig):
    model_type = "evil-lm"
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture(scope="module")
def evil_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("evil-repo")
    (repo / "evil.py").write_text(EVIL_CODE)
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (repo / "config.json").write_text(json.dumps({"model_type": "evil-lm", "auto_map": auto_map}))
    tokenizer_config = {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": [None, "evil.EvilTokenizer"]}}
    (repo / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return repo


@pytest.fixture(scope="module")
def hub_cache(tiny_tokenizer, tmp_path_factory) -> Path:
    """A Hugging Face cache with two commits of REPO: one layer, then two; `main` points at the second."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo_dir = cache / f"models--{REPO.replace('/', '--')}"
    for commit, layers in ((COMMIT_ONE_LAYER, 1), (COMMIT_TWO_LAYERS, 2)):
        snapshot = repo_dir / "snapshots" / commit
        model = build_base_model("clm", ModelConfig(**{**TINY, "n_layers": layers}), tiny_tokenizer, 0, 32)
        model.save_pretrained(str(snapshot))
        tiny_tokenizer.save_pretrained(str(snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT_TWO_LAYERS)
    return cache


PROBE = """
import json, sys
from lmpipe.config.schema import ModelConfig
from lmpipe.models.base import build_base_model
from lmpipe.data.tokenizers import load_pretrained_tokenizer

evil, repo = sys.argv[1], sys.argv[2]
out = {}
for what, load in (
    ("model", lambda: build_base_model("clm", ModelConfig(pretrained=evil), None, 0, 16)),
    ("tokenizer", lambda: load_pretrained_tokenizer(evil, "model.clm.tokenizer")),
):
    try:
        load()
        out[what] = "loaded"
    except Exception as error:
        out[what] = f"{type(error).__name__}: {error}"
for revision in (None, "1" * 40, "2" * 40):
    tokenizer = load_pretrained_tokenizer(repo, "model.clm.pretrained", revision)
    model = build_base_model("clm", ModelConfig(pretrained=repo, revision=revision), tokenizer, 0, 16)
    out[str(revision)] = model.config.n_layer
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe(evil_repo, hub_cache, repo_root) -> dict[str, object]:
    """Run PROBE once in a fresh process, stdin answering 'y', the Hub only through the offline cache."""
    env = {
        **os.environ,
        "PYTHONPATH": str(repo_root),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(evil_repo), REPO],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1].rpartition("] ")[2])  # after any prompt
    return {**results, "output": done.stdout + done.stderr}


# ---------------------------------------------------------------------------- model types


def test_model_types_are_checked_against_the_objective():
    assert objective_problem("clm", {"model_type": "gpt2"}) is None
    assert objective_problem("mlm", {"model_type": "roberta"}) is None
    assert "has no masked LM head" in objective_problem("mlm", {"model_type": "gpt2"})
    assert "is unknown to transformers" in objective_problem("clm", {"model_type": "my-own-lm"})


def test_a_local_model_of_the_wrong_type_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 64}))
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"model.mlm.pretrained={tmp_path}", "data.block_size=32"])
    message = str(raised.value)
    assert f"model.mlm.pretrained={str(tmp_path)!r}: model type 'gpt2' has no masked LM head" in message


# ---------------------------------------------------------------------------- remote code


def test_a_repository_with_its_own_code_is_refused_by_the_config(evil_repo):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [f"model.clm.pretrained={evil_repo}"])
    assert "model type 'evil-lm' is unknown to transformers" in str(raised.value)
    assert "trust_remote_code is not supported" in str(raised.value)
    assert not (evil_repo / "CODE_RAN").exists()


def test_loading_never_runs_repository_code_even_when_stdin_says_yes(probe, evil_repo):
    assert probe["model"].startswith(f"PipelineInputError: model.clm.pretrained={str(evil_repo)!r}: ")
    assert probe["model"].endswith("(custom model code is never run)")
    assert probe["tokenizer"].startswith(f"PipelineInputError: model.clm.tokenizer={str(evil_repo)!r}: ")
    assert "\n" not in probe["model"] + probe["tokenizer"]
    assert "Do you wish to run the custom code?" not in probe["output"], "transformers must never ask"
    assert not (evil_repo / "CODE_RAN").exists(), "the repository's own code must never be imported"


def test_trust_remote_code_is_only_ever_passed_as_false(repo_root):
    passed = {
        f"{path.relative_to(repo_root)}: {match.group(0)}"
        for folder in ("lmpipe", "tasks", "flows")
        for path in (repo_root / folder).rglob("*.py")
        for match in re.finditer(r"trust_remote_code\s*=\s*[^,)\s]+", path.read_text())
    }
    assert passed, "the loaders of user-named models and tokenizers pass trust_remote_code explicitly"
    assert all(entry.endswith("trust_remote_code=False") for entry in passed), passed


# ---------------------------------------------------------------------------- revisions


def test_a_pinned_revision_loads_that_commit_and_none_loads_main(probe):
    assert probe[COMMIT_ONE_LAYER] == 1
    assert probe[COMMIT_TWO_LAYERS] == 2
    assert probe["None"] == 2  # refs/main


def test_the_revision_is_part_of_the_training_cache_key(tmp_path):
    from tasks.train import train_output_dir

    def key(*overrides: str) -> Path:
        config = load_config(None, [f"artifacts.root={tmp_path}", f"model.clm.pretrained={REPO}", *overrides])
        return train_output_dir(str(tmp_path / "blocks"), str(tmp_path / "tok"), config, "clm")

    assert key(f"model.clm.revision={COMMIT_ONE_LAYER}") != key(f"model.clm.revision={COMMIT_TWO_LAYERS}")
    assert key(f"model.clm.revision={COMMIT_ONE_LAYER}") == key(f"model.clm.revision={COMMIT_ONE_LAYER}")
