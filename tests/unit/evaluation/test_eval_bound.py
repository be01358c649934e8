"""eval.max_blocks: which test blocks a bounded evaluation reads, and the evaluation set's identity."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from datasets import Dataset, DatasetDict
from hypothesis import given
from hypothesis import strategies as st

from lmpipe.config.loading import load_config
from lmpipe.evaluation.eval_set import SELECTION, count_test_blocks, eval_set_fingerprint, evenly_spaced
from lmpipe.store.keys import fingerprint

BUILTIN_TEST_BLOCKS = 407  # the default run's test split: the builtin corpus at block_size 128


def group_dir(root: Path, test_blocks: int, key: str = "abc123") -> Path:
    """A blocks artifact as the fingerprint sees it: its content key and the group stage's report."""
    directory = root / "group" / key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "group_report.json").write_text(json.dumps({"test": {"blocks": test_blocks, "dropped_tokens": 0}}))
    return directory


def clm_set(blocks: Path, *overrides: str) -> str:
    return eval_set_fingerprint(blocks, load_config(overrides=list(overrides)), "clm")


# ---------------------------------------------------------------------------- which blocks


@given(n=st.integers(2, 100_000), data=st.data())
def test_a_bound_takes_exactly_k_distinct_blocks_spread_from_first_to_last(n, data):
    k = data.draw(st.integers(1, n - 1))
    indices = evenly_spaced(n, k)
    assert len(indices) == k
    assert indices[0] == 0 and indices[-1] < n
    gaps = [b - a for a, b in zip(indices, indices[1:], strict=False)]
    assert all(math.floor(n / k) <= gap <= math.ceil(n / k) for gap in gaps)  # sorted, distinct, even
    assert n - indices[-1] <= math.ceil(n / k)  # reaches the end of the split, not just its start


@given(n=st.integers(0, 10_000), extra=st.integers(0, 10_000))
def test_a_bound_the_split_fits_under_takes_every_block(n, extra):
    assert list(evenly_spaced(n, n + extra)) == list(range(n))
    assert list(evenly_spaced(n, None)) == list(range(n))


def test_evenly_spaced_is_the_documented_rule():
    assert evenly_spaced(10, 4) == [0, 2, 5, 7]  # floor(i * 10 / 4)
    assert evenly_spaced(51_200, 2048)[:3] == [0, 25, 50]


def test_test_blocks_selects_the_evenly_spaced_rows_without_writing_to_the_artifact(tmp_path):
    from lmpipe.evaluation.perplexity import test_blocks  # imports torch

    split = Dataset.from_dict({"input_ids": [[i, i] for i in range(10)], "attention_mask": [[1, 1]] * 10})
    DatasetDict(train=split, test=split).save_to_disk(str(tmp_path / "dataset"))
    files = sorted(tmp_path.rglob("*"))
    bounded = test_blocks(tmp_path, load_config(overrides=["eval.max_blocks=4"]))
    assert [row[0] for row in bounded["input_ids"]] == [0, 2, 5, 7]
    assert sorted(tmp_path.rglob("*")) == files  # the indices mapping stays in memory
    assert len(test_blocks(tmp_path, load_config(overrides=["eval.max_blocks=10"]))) == 10
    assert len(test_blocks(tmp_path, load_config(overrides=["eval.max_blocks=null"]))) == 10
    assert count_test_blocks(tmp_path) == 10  # no group report: counted from the Arrow metadata


# ---------------------------------------------------------------------------- the evaluation set's identity


def test_different_bounds_that_select_are_different_evaluation_sets(tmp_path):
    blocks = group_dir(tmp_path, 51_200)
    sets = {bound: clm_set(blocks, f"eval.max_blocks={bound}") for bound in (1, 2, 2047, 2048, 4096, 51_199)}
    assert len(set(sets.values())) == len(sets)
    assert clm_set(blocks, "eval.max_blocks=51200") not in sets.values()  # the whole split


def test_no_bound_and_a_bound_the_split_fits_under_are_one_set(tmp_path):
    blocks = group_dir(tmp_path, 100)
    whole = clm_set(blocks, "eval.max_blocks=null")
    assert clm_set(blocks, "eval.max_blocks=100") == clm_set(blocks, "eval.max_blocks=5000") == whole
    # The identity a whole split had before bounds were sampled: old champions still compare.
    assert whole == fingerprint({"blocks": "abc123", "max_blocks": None})


def test_a_selecting_bound_names_its_rule_so_the_old_first_k_sets_never_match(tmp_path):
    blocks = group_dir(tmp_path, 100)
    assert clm_set(blocks, "eval.max_blocks=32") != fingerprint({"blocks": "abc123", "max_blocks": 32})
    assert clm_set(blocks, "eval.max_blocks=32") == fingerprint(
        {"blocks": "abc123", "max_blocks": 32, "selection": SELECTION}
    )


def test_the_default_bound_leaves_the_default_run_whole(tmp_path):
    blocks = group_dir(tmp_path, BUILTIN_TEST_BLOCKS)
    assert load_config().eval.max_blocks > BUILTIN_TEST_BLOCKS
    assert clm_set(blocks) == clm_set(blocks, "eval.max_blocks=null")


def test_the_eval_set_module_stays_cheap_to_import():
    # The evaluate stage's cache key uses it: a cached run must not pay for torch or datasets.
    code = "import sys, lmpipe.evaluation.eval_set; print(sorted({'torch', 'datasets'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
