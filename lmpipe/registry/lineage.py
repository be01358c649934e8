"""Where a registered model came from: data, tokenizer, base model, code and the Prefect run.

Every value here becomes a tag on the MLflow model version, so a reviewer can trace a version
back to the exact artifacts, commit and flow run without reading code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.compute as pc
from datasets import load_from_disk

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective
from lmpipe.store.keys import artifact_path, file_digest, fingerprint
from lmpipe.store.manifest import read_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The files that define a tokenizer's vocabulary, fast or slow; never the weights beside them.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """HEAD of the pipeline's checkout, '+dirty' when it has uncommitted changes; 'unknown' outside git.

    One `git status` answers both, asked afresh each time: a process that outlives a commit or an edit
    (a notebook, a test session) must not tag later versions with what the checkout was earlier."""
    try:
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    commit = next((line.split()[2] for line in status if line.startswith("# branch.oid ")), "(initial)")
    if commit == "(initial)":  # a repository without a commit yet has no HEAD to name
        return "unknown (not a git checkout)"
    dirty = any(not line.startswith("#") for line in status)  # '#' lines are headers, the others changes
    return f"{commit}+dirty" if dirty else commit


def tokenizer_hash(model_dir: Path) -> str:
    """Identifies the vocabulary a model reads: two models compare on one token set only when this matches."""
    files = [model_dir / name for name in _TOKENIZER_FILES if (model_dir / name).is_file()]
    return fingerprint({f.name: file_digest(f) for f in files})


def upstream_dirs(blocks_dir: Path) -> dict[str, Path]:
    """The artifact chain behind a group artifact, read from each manifest: group <- tokenize <- flatten <- download.
    Each manifest names its upstream by reference, resolved under the root this group artifact is in."""
    root = blocks_dir.parent.parent
    chain = {"group": blocks_dir}
    for stage, child in (("tokenize", "group"), ("flatten", "tokenize"), ("download", "flatten")):
        chain[stage] = artifact_path(root, read_manifest(chain[child])["inputs"]["upstream"])
    return chain


def block_counts(blocks_dir: Path) -> dict[str, int]:
    """Blocks and real (unpadded) tokens per split, read from the Arrow columns, never as Python lists."""
    counts: dict[str, int] = {}
    for split, dataset in load_from_disk(str(blocks_dir / "dataset")).items():
        counts[f"{split}_blocks"] = len(dataset)
        if "attention_mask" in dataset.column_names:  # padded blocks: the mask says which tokens are real
            counts[f"{split}_tokens"] = int(pc.sum(pc.list_flatten(dataset.data.column("attention_mask"))).as_py() or 0)
        else:  # packed blocks are all real tokens; the offsets say how many, no id is read
            counts[f"{split}_tokens"] = int(pc.sum(pc.list_value_length(dataset.data.column("input_ids"))).as_py() or 0)
    return counts


def data_source(config: PipelineConfig, hub_commit: str | None = None) -> tuple[str, str]:
    """(source, revision) of the corpus as a reviewer would name them; `hub_commit` is the commit the download
    read (its manifest records it), which says more than the branch or the absence of a pin."""
    data = config.data
    if data.source == "builtin":
        return "builtin: Python standard library docstrings", "the stdlib of the Python that ran download"
    if data.source == "local":
        return f"local: {data.path} [{data.split}]", "file contents (see data.download)"
    name = data.path if data.hub_config_name is None else f"{data.path}/{data.hub_config_name}"
    given = data.revision or "unpinned (the hub's default branch)"
    return f"hub: {name} [{data.split}]", (
        f"{hub_commit} (resolved from {given})" if hub_commit and hub_commit != data.revision else given
    )


def model_base(config: PipelineConfig, objective: Objective) -> tuple[str, str]:
    """(base, config): the pretrained name, or 'from scratch' and the sizes it was built with."""
    model = getattr(config.model, objective)
    if model.pretrained is not None:
        return model.pretrained + (f"@{model.revision}" if model.revision else ""), "pretrained"
    sizes = model.model_dump(exclude={"pretrained", "tokenizer", "revision", "tokenizer_revision"})
    return "from scratch", json.dumps(sizes, sort_keys=True)


def lineage_tags(
    config: PipelineConfig,
    objective: Objective,
    model_dir: Path,
    blocks_dir: Path,
    tokenizer_source: str | None,
    flow_run_id: str | None,
    flow_run_url: str | None,
) -> dict[str, str]:
    """Every lineage tag of a model version, as strings; tokenizer_source None means trained here."""
    chain = upstream_dirs(blocks_dir)
    counts = block_counts(blocks_dir)
    source, revision = data_source(config, read_manifest(chain["download"])["inputs"].get("hub_commit"))
    base, base_config = model_base(config, objective)
    tags = {
        "data.fingerprint": blocks_dir.name,
        "data.download": chain["download"].name,
        "data.source": source,
        "data.revision": revision,
        "data.block_size": str(config.data.block_size),
        **{f"data.{name}": str(value) for name, value in counts.items()},
        "tokenizer.hash": tokenizer_hash(model_dir),
        "tokenizer.source": tokenizer_source or f"byte-level BPE trained here, vocab {config.tokenizer.vocab_size}",
        "model.base": base,
        "model.base_config": base_config,
        "code.git_commit": git_commit(),
        "prefect.flow_run_id": flow_run_id or "",
        "prefect.flow_run_url": flow_run_url or "",
    }
    return {name: value for name, value in tags.items() if value}  # outside Prefect there is no run to name
