"""The one config tree: pydantic models (loaded from YAML with overrides by lmpipe.config.loading).

Flows take `PipelineConfig` as their only parameter, so a Prefect deployment draws it as a
typed form with every field's description and default. Every default serves the offline demo.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmpipe.config.pretrained import local_config_of, max_positions_of, objective_problem
from lmpipe.objectives import MASK_PLACEHOLDER, OBJECTIVES


class _Section(BaseModel):
    # Unknown keys are typos, never silently ignored. A number given for a text field
    # (--set registry.experiment=2024) is meant as text.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------- data


# A split a stream can slice: a name, then at most [start:stop] in rows from the start.
STREAMED_SPLIT = r"\s*([\w.-]+)\s*(?:\[\s*(\d*)\s*:\s*(\d*)\s*\])?\s*"


class DataConfig(_Section):
    source: Literal["builtin", "local", "hub"] = Field(
        "builtin",
        description="Where the corpus comes from: 'builtin' (offline, generated from the Python "
        "standard library's docstrings), 'local' (json/jsonl/csv/parquet/txt files) or 'hub' "
        "(a Hugging Face Hub dataset id).",
    )
    path: str | None = Field(
        None,
        description="For source=hub: the dataset id (e.g. 'eli5_category'). For source=local: a file "
        "path or glob (e.g. 'data/*.jsonl'). Unused for builtin.",
    )
    hub_config_name: str | None = Field(None, description="Hub dataset config name, if it has several.")
    revision: str | None = Field(None, description="Hub dataset revision (branch, tag or commit sha).")
    split: str = Field(
        "train",
        description="Split to load, with slicing: 'train', 'train[:5000]', 'train[:10%]'. "
        "Local files load as split 'train'.",
    )
    streaming: bool = Field(
        False,
        description="Read the source as a stream (load_dataset(streaming=True)), writing the corpus shard by shard: "
        "no full copy in a cache first, and a slice such as 'train[:5000]' reads only its rows. Same rows as "
        "without it.",
    )
    format: Literal["auto", "json", "jsonl", "csv", "parquet", "txt"] = Field(
        "auto",
        description="Local file format; 'auto' picks it from the file suffix (also under .gz, .bz2, .xz, .zst).",
    )
    builtin_documents: int = Field(
        1000,
        gt=0,
        description="How many ELI5-shaped documents the builtin corpus holds (at most; the stdlib gives ~900).",
    )
    text_field: str = Field(
        "answers.text",
        description="Column holding the text after flatten (dotted for nested fields). A list of "
        "strings is joined with spaces into one string per row, as the guide does.",
    )
    test_size: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Fraction held out for evaluation (0.2 as in the guide), chosen by a hash of each row's text: "
        "duplicates of a text stay on one side.",
    )
    seed: int = Field(42, description="Salt of the train/test hash: another seed holds out other rows.")
    block_size: int = Field(128, gt=1, description="Tokens per training block (128 as in the guide).")
    remainder: Literal["drop", "pad"] = Field(
        "drop",
        description="What to do with the tail shorter than block_size: 'drop' it (as the guide "
        "does) or 'pad' it into a last block whose padding is ignored by the loss.",
    )
    num_proc: int | None = Field(
        None, ge=1, description="Processes for tokenize; None uses the cores this run was given (at most 4)."
    )

    @model_validator(mode="after")
    def _streamed_slice_counts_rows(self) -> DataConfig:
        match = re.fullmatch(STREAMED_SPLIT, self.split)
        if self.streaming and match is not None and match[2] and match[3] and int(match[2]) > int(match[3]):
            raise ValueError(f"data.split={self.split!r}: the slice starts after it ends")
        if self.streaming and match is None:
            raise ValueError(
                f"data.split={self.split!r}: with data.streaming=true a slice counts rows from the start, "
                "e.g. 'train[:5000]' or 'train[1000:2000]' (percent and negative slices need the split's length: "
                "set data.streaming=false for them)"
            )
        return self


# ---------------------------------------------------------------------------- tokenizer


class TrainSample(_Section):
    """How much of the train split the BPE learns from (lmpipe.data.tokenizer_sample): both budgets None is
    the whole split; a split under budget is used whole."""

    bytes: int | None = Field(
        100_000_000,
        ge=1,
        description="UTF-8 bytes of train text the BPE trains on, a deterministic sample spread over the "
        "whole split; None: no byte budget. 100 MB (vocab 4096) trains in ~20-30 s on 2 CPU cores, ~35 s "
        "with the pass over a 5 GB split; a split under budget is used whole.",
    )
    rows: int | None = Field(
        None, ge=1, description="Train rows the BPE trains on, sampled alike; None: no row budget."
    )


class TokenizerConfig(_Section):
    pretrained: str | None = Field(
        None,
        description="Pretrained tokenizer name or path for every model that names none of its own. "
        "None trains a byte-level BPE on the train split.",
    )
    vocab_size: int = Field(
        4096, ge=300, description="Vocabulary size of the trained BPE (byte-level needs >= 256 + specials)."
    )
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a BPE merge.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit sha) of `pretrained`.")
    train_sample: TrainSample = Field(
        TrainSample(),  # an instance, so the run form shows the budget; pydantic copies it per config
        description="Budget of the trained BPE's sample of the train split (ignored by a pretrained tokenizer).",
    )


# ---------------------------------------------------------------------------- model


class ModelConfig(_Section):
    pretrained: str | None = Field(
        None,
        description="Pretrained model name or path to fine-tune (e.g. 'distilgpt2'). "
        "None trains a small model from scratch with the sizes below.",
    )
    tokenizer: str | None = Field(
        None,
        description="Tokenizer for this model. None: the pretrained model's own, else the shared one.",
    )
    revision: str | None = Field(
        None,
        description="Hub revision (branch, tag or commit sha) of `pretrained` and of its own tokenizer; "
        "pin a commit sha for a reproducible run. Unused for local paths.",
    )
    tokenizer_revision: str | None = Field(
        None, description="Hub revision of `tokenizer`, when that names a Hub repository of its own."
    )
    n_layers: int = Field(2, ge=1, description="Transformer layers (from scratch only).")
    hidden_size: int = Field(128, ge=8, description="Hidden size (from scratch only).")
    n_heads: int = Field(4, ge=1, description="Attention heads; must divide hidden_size (from scratch only).")
    intermediate_size: int = Field(512, ge=8, description="Feed-forward size (from scratch only).")
    max_positions: int = Field(256, ge=2, description="Position embeddings; block_size may not exceed it.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability (from scratch only).")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden_size % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide hidden_size={self.hidden_size}")
        return self


class ModelsConfig(_Section):
    clm: ModelConfig = Field(default_factory=ModelConfig, description="Causal LM (GPT-2 family).")
    mlm: ModelConfig = Field(default_factory=ModelConfig, description="Masked LM (RoBERTa family).")


# ---------------------------------------------------------------------------- train / eval


class TrainConfig(_Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training blocks.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(
        1e-3,
        gt=0,
        description="Peak learning rate. 1e-3 suits tiny from-scratch models; the guide "
        "fine-tunes pretrained ones with 2e-5.",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (0.01 as in the guide).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up the learning rate.")
    batch_size: int = Field(16, ge=1, description="Blocks per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    mlm_probability: float = Field(
        0.15, gt=0, lt=1, description="Share of tokens masked for MLM (0.15 as in the guide)."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': bf16 on CUDA where supported, else fp16; on a CPU bf16 where it computes bf16 "
        "natively (AVX-512 BF16, AMX), else fp32. Evaluation is always fp32.",
    )
    seed: int = Field(42, description="Seed of weight init, shuffling and masking.")
    logging_steps: int = Field(10, ge=1, description="Report progress (loss, tokens/s) every this many steps.")
    checkpoint_steps: int | None = Field(
        200,
        ge=1,
        description="Write a resumable checkpoint (model, optimizer, scheduler, RNG, trainer state) every this "
        "many steps; a killed or pre-empted run resumes from the latest one. None: no checkpoints.",
    )
    checkpoints_kept: int = Field(2, ge=1, description="How many of the newest checkpoints to keep while training.")
    dataloader_workers: int | None = Field(
        None,
        ge=0,
        description="Processes preparing batches while the device computes. None: 0 on CPU (they would take its "
        "cores), min(4, cores - 1) on CUDA.",
    )
    pin_memory: bool | None = Field(
        None, description="Page-locked host batches for faster, asynchronous copies to the GPU. None: on CUDA only."
    )
    compile: bool = Field(
        False, description="torch.compile the model (GPU pools; compiling costs minutes, so only long runs gain)."
    )
    processes: int | Literal["auto"] = Field(
        "auto",
        description="Training processes on this node, launched by torch's elastic launcher (torchrun) and trained "
        "with DDP: 'auto' is one per visible GPU on CUDA and 1 on a CPU; N > 1 launches N ranks (NCCL on GPUs, "
        "gloo on a CPU). The global batch is batch_size x grad_accum x processes.",
    )
    fsdp: str = Field(
        "",
        description="The Hugging Face Trainer's fsdp setting, for models that do not fit on one GPU, e.g. "
        "'full_shard auto_wrap' (with processes > 1). Empty: DDP, every rank holding the whole model.",
    )
    launcher: Literal["local", "ray"] = Field(
        "local",
        description="Where the training ranks run. 'local': on the task's node (train.processes, torchrun). "
        "'ray': on an existing Ray cluster through Ray Train (ray_workers workers, DDP across nodes); needs "
        "pip install 'lmpipe[ray]' and an artifact root every node mounts at the same path.",
    )
    ray_address: str = Field(
        "auto",
        description="The Ray cluster (train.launcher=ray): 'auto' (the cluster this node belongs to, or "
        "RAY_ADDRESS), 'HOST:PORT' of its GCS, or 'ray://HOST:10001' (Ray Client).",
    )
    ray_workers: int = Field(
        2, ge=1, description="Ray Train workers, one rank each (train.launcher=ray); the world size there."
    )
    ray_cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker (launcher=ray).")
    ray_gpus_per_worker: float = Field(
        0.0,
        ge=0,
        description="GPUs Ray reserves for each worker (launcher=ray): 0 trains on CPUs with gloo, 1 on a GPU each "
        "with NCCL.",
    )

    @field_validator("processes", mode="before")
    @classmethod
    def _whole_processes(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if isinstance(value, str) and value.isdigit() and int(value) >= 1:
            return int(value)
        raise ValueError("must be 'auto' or a whole number of processes, 1 or more")


class EvalConfig(_Section):
    batch_size: int = Field(32, ge=1, description="Blocks per evaluation batch.")
    mlm_seed: int = Field(1234, description="Seed of the MLM evaluation masking, so one model always gets one number.")
    max_blocks: int | None = Field(
        4096,
        ge=1,
        description="Evaluate on at most this many test blocks, evenly spaced over the test split (None: all; a "
        "split of at most this many is evaluated whole). 4096 blocks are 524k tokens at block_size 128 and 4.2M "
        "at 1024, scored twice (trained and base model); a 1% test split of 100 GB is ~250M tokens, hours per model.",
    )
    max_ratio_to_base: float = Field(
        1.0,
        gt=0,
        description="Block registration when the trained perplexity exceeds the base model's times this "
        "factor (1.0: a model worse than where it started is never handed to review).",
    )


# ---------------------------------------------------------------------------- registry / artifacts


# Registered model names: see RegistryConfig._registrable_name for where each limit comes from.
REFUSED_IN_MODEL_NAMES = "/:'\"\\`%&<>?#"
MAX_MODEL_NAME_LENGTH = 256


class RegistryConfig(_Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. None: $MLFLOW_TRACKING_URI if set, else a SQLite store "
        "'mlflow.db' in the working directory.",
    )
    experiment: str = Field("lm-pipeline", description="MLflow experiment that holds the training runs.")
    clm_model_name: str = Field(
        "eli5-clm",
        min_length=1,
        description=f"Registered model name of the causal LM: at most {MAX_MODEL_NAME_LENGTH} characters, "
        "without quotes, backslashes, backticks, control characters or any of / : % & < > ? #.",
    )
    mlm_model_name: str = Field(
        "eli5-mlm",
        min_length=1,
        description="Registered model name of the masked LM (same rules as clm_model_name).",
    )

    @field_validator("clm_model_name", "mlm_model_name")
    @classmethod
    def _registrable_name(cls, name: str) -> str:
        # Each refusal here would otherwise surface only at register, after training:
        #   / :         MLflow refuses them when the version is created;
        #   ' " \ `     would break the MLflow filter strings that find a model's versions;
        #   % & < >     Prefect 3.8 refuses them in the concurrency limit `lmpipe-register-<name>`
        #               (prefect.types.names.BANNED_CHARACTERS, with '/');
        #   ? #         its client puts that name unescaped into a URL path (reads by name would break).
        refused = sorted({c for c in name if c in REFUSED_IN_MODEL_NAMES})
        if refused:
            raise ValueError(f"a registered model name cannot contain {' '.join(refused)}")
        # Control characters, newlines, tabs and other invisible ones; repr() keeps the message on one line.
        unprintable = sorted({c for c in name if not c.isprintable()})
        if unprintable:
            shown = " ".join(repr(c) for c in unprintable)
            raise ValueError(f"a registered model name must be printable: it contains {shown}")
        if not name.strip():
            raise ValueError("a registered model name cannot be empty or only spaces")
        if name != name.strip() or name in (".", ".."):
            raise ValueError("a registered model name cannot be '.' or '..', or start or end with a space")
        # MLflow's SQL stores keep the name in a VARCHAR(256) (PostgreSQL and MySQL enforce it); Prefect's
        # concurrency limit names have no length limit, so MLflow's is the stricter.
        if len(name) > MAX_MODEL_NAME_LENGTH:
            raise ValueError(f"a registered model name is at most {MAX_MODEL_NAME_LENGTH} characters, not {len(name)}")
        return name

    promote: bool = Field(
        True,
        description="Give each new version an alias: 'champion' when it beats the current champion "
        "by champion_margin on the same evaluation set, else 'challenger' with the reason in its "
        "description. False: register only, no alias.",
    )
    champion_margin: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Relative perplexity improvement a new version needs to take 'champion' "
        "(0.01: at least 1% lower than the champion's).",
    )
    on_other_eval_set: Literal["reevaluate", "refuse"] = Field(
        "reevaluate",
        description="When the champion was evaluated on a different evaluation set: 'reevaluate' "
        "it on the new set before comparing, or 'refuse' to promote (the new version becomes "
        "challenger). Numbers from different sets are never compared.",
    )
    approval: Literal["automatic", "reviewer"] = Field(
        "automatic",
        description="Who gives 'champion': 'automatic', the gate (champion_margin); 'reviewer', a person. With "
        "'reviewer' each new version is registered as 'challenger' with the gate's numbers on its card, and the "
        "flow run waits (suspended, holding no worker) for an approve/reject form in the Prefect UI or "
        "`lmpipe review MODEL VERSION --approve|--reject`.",
    )
    review_timeout: int = Field(
        7 * 24 * 3600,
        ge=10,
        le=365 * 24 * 3600,
        description="Seconds a version waits for a reviewer (registry.approval=reviewer). After it the version "
        "stays 'challenger' and the flow run ends Completed, saying nobody decided.",
    )
    ui_url: str | None = Field(
        None,
        description="Base URL of the MLflow UI, for links in Prefect artifacts. None: the tracking "
        "URI when it is http(s), else no links.",
    )


class CardConfig(_Section):
    clm_prompts: list[str] = Field(
        default_factory=lambda: ["Somatic hypermutation allows the immune system to", "The json module"],
        description="Prompts the model card shows CLM generations for (seeded sampling).",
    )
    mlm_sentences: list[str] = Field(
        default_factory=lambda: ["The Milky Way is a <mask> galaxy.", "Return a <mask> of the list."],
        description="Sentences with one '<mask>' each; the model card shows the MLM's top-3 fillings.",
    )
    max_new_tokens: int = Field(24, ge=1, le=512, description="Tokens generated per CLM prompt.")
    seed: int = Field(0, description="Seed of the sampled CLM generations, so a model always shows the same text.")

    @field_validator("mlm_sentences")
    @classmethod
    def _one_mask_per_sentence(cls, sentences: list[str]) -> list[str]:
        for sentence in sentences:
            if sentence.count(MASK_PLACEHOLDER) != 1:
                raise ValueError(f"{sentence!r} must hold exactly one {MASK_PLACEHOLDER}")
        return sentences


class ArtifactsConfig(_Section):
    root: str = Field(
        "artifacts",
        description="Root of the content-addressed artifact cache (relative paths resolve against "
        "the working directory). Use shared storage when workers run on several machines.",
    )


# ---------------------------------------------------------------------------- root


class PipelineConfig(_Section):
    """Everything one pipeline run needs; the Prefect UI draws it as the run form."""

    data: DataConfig = Field(default_factory=DataConfig, description="Corpus, split and blocks.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Shared tokenizer.")
    model: ModelsConfig = Field(default_factory=ModelsConfig, description="The two models.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Perplexity evaluation.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="MLflow registry and promotion.")
    card: CardConfig = Field(
        default_factory=CardConfig,
        description="Model card samples, generated by evaluate from the trained model and shown in the card.",
    )
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig, description="Artifact cache.")

    @model_validator(mode="after")
    def _cross_field_checks(self) -> PipelineConfig:
        if self.data.source in ("local", "hub") and not self.data.path:
            raise ValueError(f"data.path is required when data.source={self.data.source!r}")
        for name in OBJECTIVES:
            model = getattr(self.model, name)
            try:
                local_config = local_config_of(model.pretrained)
            except ValueError as error:
                raise ValueError(f"model.{name}.pretrained={model.pretrained!r}: {error}") from None
            problem = objective_problem(name, local_config) if local_config is not None else None
            if problem is not None:
                raise ValueError(f"model.{name}.pretrained={model.pretrained!r}: {problem}")
            limit = max_positions_of(model.pretrained, model.max_positions)
            if limit is not None and self.data.block_size > limit:
                raise ValueError(
                    f"data.block_size={self.data.block_size} is larger than model.{name}'s {limit} positions"
                )
        return self
