"""register: our register stage against a plain save_pretrained of the same model, side by side, in one run.

    .venv/bin/python bench/register_bench.py            # or: make bench  (GPT-2 124M shapes)
    .venv/bin/python bench/register_bench.py --smoke    # seconds: proves the script runs

The model is real: the clm flow trains one step of a GPT-2 with 124M-parameter shapes (from
scratch, offline) on a real Prefect server (prefect_test_harness), evaluates and registers it.
Then, on the same trained artifact, median of --repeats:
- reference: `model.save_pretrained(dir)` of the loaded model;
- ours: `register_model`, everything the register task does (MLflow run with params, metrics,
  curves and datasets; the model logged in the transformers flavor with its tokenizer; a model
  version with lineage tags; the promotion gate; the model card with its generated samples),
  each time in a fresh copy of a warmed SQLite store (schema and experiment made, no runs), so
  nothing is found already logged.
Target: ours <= 1.5x the reference's time.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
from functools import partial
from pathlib import Path

from benchlib import PROJECT_ROOT, median_seconds, parser, record, table, timed, verdict

TARGET_RATIO = 1.5
SHAPES = {
    "gpt2-124m": ["model.clm.n_layers=12", "model.clm.hidden_size=768", "model.clm.n_heads=12",
                  "model.clm.intermediate_size=3072", "model.clm.max_positions=1024"],
    "tiny": ["model.clm.n_layers=1", "model.clm.hidden_size=32", "model.clm.n_heads=2",
             "model.clm.intermediate_size=64", "model.clm.max_positions=128"],
}  # fmt: skip


def warm_store(directory: Path, experiment: str) -> None:
    """An MLflow SQLite store with its schema and our experiment, and nothing registered yet."""
    from mlflow import MlflowClient

    from lmpipe.mlflow_run import experiment_id_for

    directory.mkdir()
    uri = f"sqlite:///{directory}/mlflow.db"
    experiment_id_for(MlflowClient(uri), experiment, uri)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-124m")
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    if args.smoke:
        args.shape, args.repeats = "tiny", 1

    from prefect.testing.utilities import prefect_test_harness
    from transformers import AutoModelForCausalLM

    from flows.clm import clm_flow
    from lmpipe.config_loading import load_config
    from tasks.register import register_model

    logging.getLogger("prefect").setLevel(logging.WARNING)
    quiet = logging.getLogger("register-bench")
    quiet.setLevel(logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="register-bench-") as scratch,
        prefect_test_harness(server_startup_timeout=120),
    ):
        work = Path(scratch)
        overrides = [
            *SHAPES[args.shape],
            "data.builtin_documents=120",
            "tokenizer.vocab_size=2048",
            "train.max_steps=1",
            "train.batch_size=2",
            "eval.max_blocks=4",
            "eval.max_ratio_to_base=1000",  # one step of a big model from scratch: register it anyway
            f"artifacts.root={work}/artifacts",
            f"registry.tracking_uri=sqlite:///{work}/flow-store/mlflow.db",
        ]
        config = load_config(PROJECT_ROOT / "configs" / "default.yaml", overrides)
        warm_store(work / "store", config.registry.experiment)
        state = clm_flow(config, return_state=True)
        assert state.is_completed(), state.message
        model_dir = next((work / "artifacts" / "train-clm").iterdir())
        eval_dir = next((work / "artifacts" / "evaluate-clm").iterdir())

        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        parameters = sum(p.numel() for p in model.parameters())
        reference_times, ours_times = [], []
        for repeat in range(args.repeats):
            target = work / f"saved-{repeat}"
            reference_times.append(timed(partial(model.save_pretrained, str(target)))[0])
            shutil.rmtree(target)

            store = work / f"store-{repeat}"
            shutil.copytree(work / "store", store)  # schema and experiment, no runs: as a server would be
            repeat_config = load_config(
                PROJECT_ROOT / "configs" / "default.yaml",
                [*overrides[:-1], f"registry.tracking_uri=sqlite:///{store}/mlflow.db",
                 f"registry.clm_model_name=bench-{repeat}"],
            )  # fmt: skip
            ours_times.append(timed(partial(register_model, "clm", model_dir, eval_dir, repeat_config, quiet))[0])
        # The part of ours that is generation, not registration: the card's sampled outputs.
        from transformers import AutoTokenizer

        from lmpipe.model_card import sample_outputs

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        samples_s, _ = median_seconds(lambda: sample_outputs("clm", model, tokenizer, config.card), args.repeats)
        weights_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6

    reference_s, ours_s = statistics.median(reference_times), statistics.median(ours_times)
    ratio = ours_s / reference_s
    print(
        table(
            f"\nregister: GPT-2 {args.shape} ({parameters:,} parameters, {weights_mb:,.0f} MB of safetensors), "
            f"median of {args.repeats}",
            ["implementation", "seconds", "ratio"],
            [
                ["model.save_pretrained", reference_s, "1.00x"],
                ["ours register_model", ours_s, f"{ratio:.2f}x"],
                ["  of which the card's generated samples", samples_s, f"{samples_s / reference_s:.2f}x"],
                [
                    "  the rest (MLflow run, model, version)",
                    ours_s - samples_s,
                    f"{(ours_s - samples_s) / reference_s:.2f}x",
                ],
            ],
        )
    )
    print(f"target: ours <= {TARGET_RATIO}x save_pretrained -> {verdict(ratio <= TARGET_RATIO)}")
    record(
        "register",
        args,
        {
            "shape": args.shape,
            "parameters": parameters,
            "weights_mb": round(weights_mb, 1),
            "repeats": args.repeats,
            "reference_s": round(reference_s, 3),
            "ours_s": round(ours_s, 3),
            "ratio": round(ratio, 2),
            "card_samples_s": round(samples_s, 3),
            "target_ratio": TARGET_RATIO,
            "target_holds": ratio <= TARGET_RATIO,
        },
    )


if __name__ == "__main__":
    main()
