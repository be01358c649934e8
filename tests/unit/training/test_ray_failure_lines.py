"""How a failed Ray Train run is told in one line (the cluster itself is in tests/integration/test_ray_train.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="the Ray tests need the project's test install (ray[train])")
from ray.train import WorkerGroupError  # noqa: E402

from lmpipe.errors import PipelineInputError  # noqa: E402
from lmpipe.training import events  # noqa: E402
from lmpipe.training.ray_train import one_line, why_it_failed  # noqa: E402


def test_a_workers_input_error_stays_the_users_one_line():
    error = WorkerGroupError("rank 0 failed", {0: PipelineInputError("training diverged: loss is nan at step 3")})
    assert why_it_failed(error, 2, placement=[]) == ("training diverged: loss is nan at step 3", True)


def test_a_workers_crash_names_the_lowest_failed_rank_and_its_first_line():
    error = WorkerGroupError("", {1: RuntimeError("gloo: Connection reset by peer\n  more"), 0: KeyError("x")})
    message, input_error = why_it_failed(error, 4, placement=[])
    assert (message, input_error) == ("Ray Train worker rank 0 of 4 failed: KeyError: 'x'", False)


def test_one_line_keeps_the_type_and_the_first_line_that_says_something():
    assert one_line(RuntimeError("\n\n  first words\nsecond")) == "RuntimeError: first words"
    assert one_line(TimeoutError()) == "TimeoutError"


def test_the_placement_reads_as_one_log_line():
    ranks = [
        {"rank": 0, "node": "a" * 40, "ip": "10.0.0.1", "device": "cuda (H100), bf16"},
        {"rank": 1, "node": "b" * 40, "ip": "10.0.0.2", "device": "cuda (H100), bf16"},
    ]
    level, line = events.log_line({"event": "ranks", "ranks": ranks})
    assert line == (
        "2 Ray Train workers on 2 nodes: rank 0 on node aaaaaaaaaaaa (10.0.0.1): cuda (H100), bf16; "
        "rank 1 on node bbbbbbbbbbbb (10.0.0.2): cuda (H100), bf16"
    )
