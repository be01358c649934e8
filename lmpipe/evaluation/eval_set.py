"""Which evaluation set a perplexity was measured on: two perplexities compare only when this matches.

Cheap to import (no torch): the evaluate stage's cache key uses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmpipe.config.schema import PipelineConfig
from lmpipe.objectives import Objective, spec_of
from lmpipe.store.keys import fingerprint

# The rule that picks eval.max_blocks of the test blocks, named in the fingerprint: a new rule is a new set.
SELECTION = "evenly-spaced-v1"


def evenly_spaced(n: int, k: int | None) -> range | list[int]:
    """Indices of k of n blocks spread evenly from first to last: floor(i * n / k), i < k; all n when k is None or >= n.

    The test split is in corpus order, so its first k blocks would be a few neighbouring documents.
    Sorted and distinct: consecutive indices are n / k > 1 apart."""
    if k is None or k >= n:
        return range(n)
    return [i * n // k for i in range(k)]


def count_test_blocks(blocks_dir: Path) -> int:
    """Blocks in the test split, from the group stage's report: no data is opened.

    A blocks directory made another way (a test's) is counted from its Arrow metadata instead."""
    report = Path(blocks_dir) / "group_report.json"
    if report.is_file():
        return int(json.loads(report.read_text())["test"]["blocks"])
    from datasets import load_from_disk  # here: only that fallback pays for the import

    return load_from_disk(str(Path(blocks_dir) / "dataset"))["test"].num_rows  # memory-mapped


def eval_set_fingerprint(blocks_dir: Path, config: PipelineConfig, objective: Objective) -> str:
    """Identifies the exact evaluation set: two perplexities compare only when this matches.

    CLM: the test blocks and which of them are evaluated. A bound the split fits under selects every
    block, as no bound does, so both get the identity they had before bounds were sampled; a bound
    that selects adds the selection rule. MLM adds what decides the masks: seed, probability and the
    batch size (the collator draws each batch's masks from one generator, in batch order).
    """
    max_blocks = config.eval.max_blocks
    if max_blocks is not None and max_blocks >= count_test_blocks(blocks_dir):
        max_blocks = None  # the whole split
    identity: dict[str, Any] = {"blocks": Path(blocks_dir).name, "max_blocks": max_blocks}
    if max_blocks is not None:
        identity["selection"] = SELECTION
    if spec_of(objective).masked:
        identity |= {
            "mlm_seed": config.eval.mlm_seed,
            "mlm_probability": config.train.mlm_probability,
            "batch_size": config.eval.batch_size,
        }
    return fingerprint(identity)
