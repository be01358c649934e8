"""Both models, sharing the data stages:

    download -> flatten -> tokenize -> group -> train-clm -> evaluate -> register
                              \\-> tokenize -> group -> train-mlm -> evaluate -> register

The second tokenize and group are cache hits whenever both models use the same tokenizer, so
the tokenized dataset and the blocks are shared. This is the default flow of `make run`:

    python flows/both.py --config configs/default.yaml
"""

from prefect import flow, get_run_logger

from lmpipe.config.schema import PipelineConfig
from lmpipe.orchestration.preflight import preflight
from lmpipe.orchestration.reports import publish_registrations_table
from lmpipe.orchestration.review_wait import reviewed
from lmpipe.store.keys import located
from tasks.download import download
from tasks.evaluate import evaluate
from tasks.flatten import flatten
from tasks.group import group
from tasks.register import register
from tasks.tokenize import tokenize
from tasks.train import train_clm, train_mlm


@flow(name="both")
def both_flow(config: PipelineConfig = PipelineConfig()) -> list[str]:
    """Train and register a causal LM and a masked LM. Returns the registration directories."""
    preflight(config, ("clm", "mlm"), get_run_logger())  # before any stage: what can fail up front fails now
    raw = download(config)
    flat = flatten(raw, config)

    clm_tokens = tokenize(flat, config, "clm")
    clm_blocks = group(clm_tokens, config)
    clm_model = train_clm(clm_blocks, clm_tokens, config)
    clm_metrics = evaluate(clm_model, clm_blocks, config, "clm")

    mlm_tokens = tokenize(flat, config, "mlm")
    mlm_blocks = group(mlm_tokens, config)
    mlm_model = train_mlm(mlm_blocks, mlm_tokens, config)
    mlm_metrics = evaluate(mlm_model, mlm_blocks, config, "mlm")

    # Register last, so a failure anywhere above leaves the registry untouched.
    registrations = located(
        config.artifacts.root,
        [register(clm_model, clm_metrics, config, "clm"), register(mlm_model, mlm_metrics, config, "mlm")],
    )
    publish_registrations_table(registrations, "both")
    return reviewed(registrations, config)  # registry.approval=reviewer: waits for a person's decision


if __name__ == "__main__":
    from lmpipe.cli.main import run_from_script

    run_from_script("both")
