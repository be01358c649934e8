"""Causal LM flow: download -> flatten -> tokenize -> group -> train-clm -> evaluate -> register.

python flows/clm.py --config configs/default.yaml --set train.epochs=1
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
from tasks.train_clm import train_clm


@flow(name="clm")
def clm_flow(config: PipelineConfig = PipelineConfig()) -> list[str]:
    """Train and register a causal LM (GPT-2 family). Returns the registration directories."""
    require_allowed_paths(config)  # parameters from the UI: paths must stay under the worker's roots
    raw = download(config)
    flat = flatten(raw, config)
    tokens = tokenize(flat, config, "clm")
    blocks = group(tokens, config, "clm")
    model = train_clm(blocks, tokens, config)
    metrics = evaluate(model, blocks, config, "clm")
    registrations = [register(model, metrics, config, "clm")]
    publish_registrations_table(registrations, "clm")
    return registrations


if __name__ == "__main__":
    import sys

    from lmpipe.cli import main

    sys.exit(main(["run", "clm", *sys.argv[1:]]))
