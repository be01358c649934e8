"""Masked LM flow: download -> flatten -> tokenize -> group -> train-mlm -> evaluate -> register.

python flows/mlm.py --config configs/default.yaml --set train.mlm_probability=0.2
"""

from prefect import flow

from lmpipe.config import PipelineConfig
from lmpipe.path_guard import require_allowed_paths
from lmpipe.prefect_reports import publish_registrations_table
from tasks.download import download
from tasks.evaluate import evaluate
from tasks.flatten import flatten
from tasks.group import group
from tasks.register import register
from tasks.tokenize_texts import tokenize
from tasks.train_mlm import train_mlm


@flow(name="mlm")
def mlm_flow(config: PipelineConfig = PipelineConfig()) -> list[str]:
    """Train and register a masked LM (RoBERTa family). Returns the registration directories."""
    require_allowed_paths(config)  # parameters from the UI: paths must stay under the worker's roots
    raw = download(config)
    flat = flatten(raw, config)
    tokens = tokenize(flat, config, "mlm")
    blocks = group(tokens, config, "mlm")
    model = train_mlm(blocks, tokens, config)
    metrics = evaluate(model, blocks, config, "mlm")
    registrations = [register(model, metrics, config, "mlm")]
    publish_registrations_table(registrations, "mlm")
    return registrations


if __name__ == "__main__":
    import sys

    from lmpipe.cli import main

    sys.exit(main(["run", "mlm", *sys.argv[1:]]))
