"""Which evaluation set a perplexity was measured on: two perplexities compare only when this matches.

Cheap to import (no torch): the evaluate stage's cache key uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective, spec_of
from lmpipe.store.keys import fingerprint


def eval_set_fingerprint(blocks_dir: Path, config: PipelineConfig, objective: Objective) -> str:
    """Identifies the exact evaluation set: two perplexities compare only when this matches.

    CLM: the test blocks and the cap. MLM adds what decides the masks: seed, probability and the
    batch size (the collator draws each batch's masks from one generator, in batch order).
    """
    identity: dict[str, Any] = {"blocks": Path(blocks_dir).name, "max_blocks": config.eval.max_blocks}
    if spec_of(objective).masked:
        identity |= {
            "mlm_seed": config.eval.mlm_seed,
            "mlm_probability": config.train.mlm_probability,
            "batch_size": config.eval.batch_size,
        }
    return fingerprint(identity)
