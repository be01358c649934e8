"""One model, causal or masked: the flows `clm` and `mlm`.

    download -> flatten -> tokenize -> group -> train-clm | train-mlm -> evaluate -> register [-> review]

python flows/clm.py --config configs/default.yaml --set train.epochs=1
python flows/mlm.py --config configs/default.yaml --set train.mlm_probability=0.2
"""

from prefect import flow, get_run_logger

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective
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
from tasks.train import TRAIN_TASKS


def train_and_register(config: PipelineConfig, objective: Objective) -> list[str]:
    """The whole chain for one objective; returns the registration directories."""
    preflight(config, (objective,), get_run_logger())  # before any stage: what can fail up front fails now
    raw = download(config)
    flat = flatten(raw, config)
    tokens = tokenize(flat, config, objective)
    blocks = group(tokens, config)
    model = TRAIN_TASKS[objective](blocks, tokens, config)
    metrics = evaluate(model, blocks, config, objective)
    registrations = located(config.artifacts.root, [register(model, metrics, config, objective)])
    publish_registrations_table(registrations, objective)
    return reviewed(registrations, config)  # registry.approval=reviewer: waits for a person's decision


@flow(name="clm")
def clm_flow(config: PipelineConfig = PipelineConfig()) -> list[str]:
    """Train and register a causal LM (GPT-2 family). Returns the registration directories."""
    return train_and_register(config, "clm")


@flow(name="mlm")
def mlm_flow(config: PipelineConfig = PipelineConfig()) -> list[str]:
    """Train and register a masked LM (RoBERTa family). Returns the registration directories."""
    return train_and_register(config, "mlm")
