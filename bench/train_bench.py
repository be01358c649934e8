"""train: our CLM training against a plain script written as the guide writes it, side by side, in one run.

    .venv/bin/python bench/train_bench.py              # or: make bench  (CPU, the default model)
    .venv/bin/python bench/train_bench.py --smoke      # seconds: proves the script runs
    .venv/bin/python bench/train_bench.py --shape gpt2-124m --block-size 1024 --batch-size 8  # on a GPU
    .venv/bin/python bench/train_bench.py --processes 2  # ours on 1 and on 2 ranks (torchrun): scaling efficiency

Same model (built by the same code from the same seed), same blocks, same batch, same steps, same
learning rate and thread count. The reference is the guide's script: `TrainingArguments` with the
guide's arguments (learning rate, weight decay; the rest Trainer defaults) and
`DataCollatorForLanguageModeling(mlm=False)`. Ours is `train_model`, the function our
training process runs, with its checkpoints and progress reporting on. Throughput is tokens
per second of `trainer.train()`; the losses after the same steps are printed to show both learned the
same. The Trainer reports a GPT-2 loss divided by block_size tokens where block_size - 1 are scored
(lmpipe.models.loss), so the reference's loss is also shown scaled by block / (block - 1): that is
the number to compare with ours. On a GPU the script also reports MFU, with FLOPs per token = 6N + 12*L*H*Q*T (nanoGPT's
estimate_mfu) and a bf16 matmul peak measured on the same device.
Targets: CPU >= 1.0x the reference's tokens/s at equal loss; GPU >= 2x and >= 35% MFU (GPT-2 124M
shapes, block 1024, H100).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import builtin_texts, parser, record, table, texts_of_size, trained_tokenizer, verdict
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

from lmpipe.compute.cpu import available_cores
from lmpipe.compute.devices import plan_device
from lmpipe.compute.throughput import flops_per_token, measured_peak_flops
from lmpipe.config.schema import ModelConfig, TrainConfig
from lmpipe.data.blocks import group_saved
from lmpipe.data.tokenize import tokenize_saved
from lmpipe.models.base import build_base_model
from lmpipe.training.job import TrainingJob
from lmpipe.training.loop import train_model

SHAPES = {
    "default": ModelConfig(),  # the offline default run's GPT-2: 2 layers, 128 wide
    "gpt2-124m": ModelConfig(n_layers=12, hidden_size=768, n_heads=12, intermediate_size=3072, max_positions=1024),
    "tiny": ModelConfig(n_layers=1, hidden_size=32, n_heads=2, intermediate_size=64, max_positions=128),
}
CPU_TARGET, GPU_TARGET, MFU_TARGET = 1.0, 2.0, 0.35


def prepare_blocks(work: Path, block_size: int, megabytes: float) -> Path:
    """Tokenize and group the builtin corpus with our stages: the blocks both trainers read."""
    distinct = builtin_texts()
    texts = texts_of_size(megabytes, distinct)
    tokenizer = trained_tokenizer(distinct)
    tokenizer.save_pretrained(str(work / "tokenize" / "tokenizer"))
    DatasetDict(train=Dataset.from_dict({"text": texts}), test=Dataset.from_dict({"text": texts[:64]})).save_to_disk(
        str(work / "flat")
    )
    tokenize_saved(work / "flat", tokenizer, 1, work / "tokenize" / "dataset")
    group_saved(work / "tokenize" / "dataset", work / "blocks" / "dataset", block_size, "drop", 0)
    return work


class LossRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def reference_run(
    work: Path, model_config: ModelConfig, train: TrainConfig, block_size: int, run: int
) -> dict[str, Any]:
    """The guide's training script, on our blocks and model: Trainer defaults (fp32 on a GPU too)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(work / "tokenize" / "tokenizer"))
    model = build_base_model("clm", model_config, tokenizer, train.seed, block_size)
    training_args = TrainingArguments(
        output_dir=str(work / f"reference-{run}"),
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size,
        max_steps=train.max_steps,
        seed=train.seed,
        logging_steps=train.logging_steps,  # so the losses can be compared; the guide logs every 500
        report_to=[],
    )
    recorder = LossRecorder()
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=load_from_disk(str(work / "blocks" / "dataset"))["train"],
        data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False),
        callbacks=[recorder],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "losses": recorder.losses}


def bench_job(
    work: Path, model_config: ModelConfig, train: TrainConfig, block_size: int, processes: int, checkpoints: str
) -> TrainingJob:
    """The causal-LM job the train task would build for the bench's blocks and tokenizer."""
    return TrainingJob(
        objective="clm",
        blocks_dir=str(work / "blocks"),
        tokenizer_dir=str(work / "tokenize" / "tokenizer"),
        model=model_config,
        train=train,
        block_size=block_size,
        world_size=processes,
        checkpoint_dir=str(work / checkpoints),
    )


def ours_run(work: Path, model_config: ModelConfig, train: TrainConfig, block_size: int, run: int) -> dict[str, Any]:
    out = work / f"ours-{run}"
    out.mkdir()
    job = bench_job(work, model_config, train, block_size, 1, f"ck-{run}")
    metrics = train_model(job, out)
    history = json.loads((out / "train_history.json").read_text())
    return {"seconds": metrics["train_runtime_s"], "losses": [entry["loss"] for entry in history], "metrics": metrics}


def ranks_run(
    work: Path, model_config: ModelConfig, train: TrainConfig, block_size: int, processes: int, run: int
) -> dict[str, Any]:
    """Ours as the train task runs it: through the launcher, on `processes` ranks (torchrun when > 1)."""
    import logging

    from lmpipe.training.job import job_file_content
    from lmpipe.training.launcher import run_training_process

    out = work / f"ranks-{processes}-{run}"
    out.mkdir()
    job = bench_job(work, model_config, train, block_size, processes, f"ck-ranks-{processes}-{run}")
    log = logging.getLogger("bench.train")
    run_training_process("lmpipe.training.worker", job_file_content(job, out), work / "job.json", log, "bench")
    return json.loads((out / "train_metrics.json").read_text())


def scaling(args: Any, model_config: ModelConfig, train: TrainConfig) -> None:
    """Tokens/s on 1 rank and on N, at the same batch per rank (so N ranks train N times the tokens per
    step): scaling efficiency = tokens/s on N / (N x tokens/s on 1)."""
    plan = plan_device(train.precision)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        work = prepare_blocks(Path(scratch), args.block_size, args.megabytes)
        runs = [
            (ranks_run(work, model_config, train, args.block_size, 1, run),
             ranks_run(work, model_config, train, args.block_size, args.processes, run))
            for run in range(args.repeats)
        ]  # fmt: skip
    one = statistics.median(r["train_tokens_per_s"] for r, _ in runs)
    many = statistics.median(m["train_tokens_per_s"] for _, m in runs)
    efficiency = many / (args.processes * one)
    rows = [
        ["1 rank", runs[0][0]["device"], one, runs[0][0]["train_loss"]],
        [f"{args.processes} ranks (torchrun, DDP)", runs[0][1]["device"], many, runs[0][1]["train_loss"]],
    ]
    print(
        table(
            f"\ntrain scaling: {args.shape} GPT-2, block {args.block_size}, batch {args.batch_size} per rank, "
            f"{args.steps} steps, median of {args.repeats} alternated runs",
            ["ranks", "devices", "tokens/s", "train loss"],
            rows,
        )
    )
    expected = "(>= 0.9 expected on GPUs)" if plan.device == "cuda" else "(below 1 expected: the ranks share the cores)"
    print(f"scaling efficiency ({args.processes} ranks / {args.processes} x 1 rank): {efficiency:.2f} {expected}")
    record(
        "train-scaling",
        args,
        {
            "device": plan.describe(args.processes),
            "processes": args.processes,
            "one_rank_tokens_per_s": round(one),
            "ranks_tokens_per_s": round(many),
            "scaling_efficiency": round(efficiency, 3),
        },
    )


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--shape", choices=sorted(SHAPES), default="default")
    cli.add_argument("--block-size", type=int, default=128)
    cli.add_argument("--batch-size", type=int, default=16)
    cli.add_argument("--steps", type=int, default=300)
    cli.add_argument("--megabytes", type=float, default=4.0, help="builtin-corpus text to make blocks from")
    cli.add_argument("--repeats", type=int, default=3, help="runs of each, alternated; medians are reported")
    cli.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="ours only")
    cli.add_argument("--processes", type=int, default=1, help="> 1: ours on 1 and on N ranks (scaling efficiency)")
    args = cli.parse_args()
    if args.smoke:
        args.shape, args.steps, args.megabytes, args.block_size, args.repeats = "tiny", 6, 0.2, 64, 1
    model_config = SHAPES[args.shape]
    train = TrainConfig(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=1e-3,
        warmup_ratio=0.0,  # the reference has no warmup: same schedule, same losses
        logging_steps=max(1, args.steps // 10),
        precision=args.precision,
    )
    if args.processes > 1:
        scaling(args, model_config, train)
        return
    plan = plan_device(train.precision)
    torch.set_num_threads(available_cores())
    tokens = args.steps * args.batch_size * args.block_size
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        work = prepare_blocks(Path(scratch), args.block_size, args.megabytes)
        runs = []  # alternated, so drifts in the machine's speed fall on both alike
        for run in range(args.repeats):
            runs.append(
                (
                    reference_run(work, model_config, train, args.block_size, run),
                    ours_run(work, model_config, train, args.block_size, run),
                )
            )
        reference = {"seconds": statistics.median(r["seconds"] for r, _ in runs), "losses": runs[0][0]["losses"]}
        ours = {"seconds": statistics.median(o["seconds"] for _, o in runs), "losses": runs[0][1]["losses"]}
        if plan.device == "cuda":
            model = build_base_model("clm", model_config, _tokenizer(work), train.seed, args.block_size)
            per_token, peak = flops_per_token(model, args.block_size), measured_peak_flops(torch.bfloat16)

    ref_tps, ours_tps = tokens / reference["seconds"], tokens / ours["seconds"]
    ratio = ours_tps / ref_tps
    ref_loss, ours_loss = reference["losses"][-1], ours["losses"][-1]
    ref_true_loss = ref_loss * args.block_size / (args.block_size - 1)  # per scored token, as ours
    equal_loss = math.isclose(ref_true_loss, ours_loss, rel_tol=0.02)
    rows = [
        ["guide script (Trainer defaults)", reference["seconds"], ref_tps, ref_loss, ref_true_loss],
        ["ours (train_model)", ours["seconds"], ours_tps, ours_loss, ours_loss],
    ]
    header = ["implementation", "seconds", "tokens/s", f"loss at step {args.steps}", "per scored token"]
    result: dict[str, Any] = {
        "device": plan.describe(),
        "shape": args.shape,
        "block_size": args.block_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "tokens": tokens,
        "reference_s": round(reference["seconds"], 3),
        "ours_s": round(ours["seconds"], 3),
        "reference_tokens_per_s": round(ref_tps),
        "ours_tokens_per_s": round(ours_tps),
        "ratio": round(ratio, 3),
        "reference_loss": ref_loss,
        "reference_loss_per_scored_token": ref_true_loss,
        "ours_loss": ours_loss,
        "equal_loss": equal_loss,
    }
    if plan.device == "cuda":
        header.append("MFU")
        rows[0].append(f"{per_token * ref_tps / peak:.1%}")
        rows[1].append(f"{per_token * ours_tps / peak:.1%}")
        result.update(flops_per_token=per_token, peak_flops=peak, mfu=per_token * ours_tps / peak)
    target = GPU_TARGET if plan.device == "cuda" else CPU_TARGET
    holds = ratio >= target and equal_loss
    print(
        table(
            f"\ntrain: {args.shape} GPT-2, block {args.block_size}, batch {args.batch_size}, {args.steps} steps, "
            f"{plan.describe()}, median of {args.repeats} alternated runs",
            header,
            rows,
        )
    )
    print(f"ratio (ours / guide): {ratio:.2f}x tokens/s   equal loss (within 2%): {equal_loss}")
    print(f"target: >= {target}x at equal loss -> {verdict(holds)}")
    if plan.device == "cuda":
        print(
            f"target: MFU >= {MFU_TARGET:.0%} (GPT-2 124M, block 1024, H100) -> {verdict(result['mfu'] >= MFU_TARGET)}"
        )
    result.update(target_ratio=target, target_holds=holds)
    record("train", args, result)


def _tokenizer(work: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(work / "tokenize" / "tokenizer"))


if __name__ == "__main__":
    main()
