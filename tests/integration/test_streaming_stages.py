"""tokenize's worker processes inside a real flow run: forked from the flow's process (with Prefect's threads),
on data large enough for several batches, logging their progress, giving what the tokenizer itself gives."""

from __future__ import annotations

import json

from datasets import load_from_disk
from pipeline_probe import tiny_config
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from transformers import AutoTokenizer

from flows.clm import clm_flow


def test_tokenize_runs_two_processes_inside_a_flow_run_and_reports_progress(workspace):
    data = workspace / "many.jsonl"
    rows = [
        {"text": f"Answer {i}: the json module encodes {i % 97} things and decodes them again."} for i in range(3000)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tiny_config(
        workspace, "data.source=local", f"data.path={data}", "data.text_field=text", "data.num_proc=2",
        "train.max_steps=2", "eval.max_blocks=4",
    )  # fmt: skip

    state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        logs = [
            log.message
            for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
            )
        ]
    assert any(m.startswith("tokenize: BPE trained here") and m.endswith("with 2 processes") for m in logs), logs
    (flatten_dir,) = (workspace / "artifacts" / "flatten").iterdir()
    train_rows = json.loads((flatten_dir / "flatten_report.json").read_text())["train"]["rows"]
    assert 2_200 < train_rows < 2_600, "about 80% of 3,000 rows, by the hash of each text"
    assert f"tokenize: train {train_rows:,}/{train_rows:,} rows (100%)" in logs
    assert f"group: train {train_rows:,}/{train_rows:,} rows (100%)" in logs

    (tokenize_dir,) = (workspace / "artifacts" / "tokenize").iterdir()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenize_dir / "tokenizer"))
    flat = load_from_disk(str(next((workspace / "artifacts" / "flatten").iterdir()) / "dataset"))
    tokenized = load_from_disk(str(tokenize_dir / "dataset"))
    assert tokenized["train"]["input_ids"][:] == tokenizer(flat["train"]["text"][:])["input_ids"]
