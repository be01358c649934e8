"""group_splits for tests: in-memory splits through the group stage's own disk-to-disk path."""

from __future__ import annotations

import tempfile
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from lmpipe.data.blocks import group_saved, plan_blocks


def group_splits(tokenized: DatasetDict, size: int, remainder: str, pad_id: int) -> tuple[DatasetDict, dict[str, int]]:
    """The stage's path: tokenized splits saved, planned, streamed through group_saved, loaded back."""
    with tempfile.TemporaryDirectory() as scratch:
        tokenized.save_to_disk(f"{scratch}/tokenized")
        plan = plan_blocks(Path(scratch) / "tokenized", size, remainder)
        written = group_saved(Path(scratch) / "tokenized", Path(scratch) / "blocks", size, remainder, pad_id)
        grouped = load_from_disk(f"{scratch}/blocks", keep_in_memory=True)
    assert written == {split: plan[split]["blocks"] for split in plan} == {s: len(grouped[s]) for s in grouped}
    return grouped, {split: plan[split]["dropped_tokens"] for split in plan}
