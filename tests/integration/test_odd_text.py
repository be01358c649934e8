"""Odd text flows through: emoji, right-to-left scripts, NUL bytes, a 1 MB row, empty answer lists.
Empty texts are dropped and counted."""

from __future__ import annotations

import json

import pytest
from pipeline_probe import registered_versions, tiny_config

from flows.clm import clm_flow

pytestmark = pytest.mark.integration

ODD = [
    "Emoji 🤖🚀 and flags 🇺🇦 inside a sentence about parsers.",
    "نص عربي من اليمين إلى اليسار مع أرقام 123",
    "עברית: טקסט מימין לשמאל",
    "NUL\x00bytes\x00in the middle of the text",
    "Mixed 中文 and 日本語 and Ελληνικά.",
]


def test_odd_text_trains_and_registers_and_empty_texts_are_counted(workspace):
    rows = [{"answers": {"text": [ODD[i % len(ODD)], f"answer {i} explains the parser"]}} for i in range(60)]
    rows += [{"answers": {"text": []}} for _ in range(7)]  # empty answer lists
    rows += [{"answers": {"text": ["   "]}} for _ in range(3)]  # whitespace only
    rows.append({"answers": {"text": ["word " * 200_000]}})  # a single 1 MB row
    data = workspace / "odd.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")

    config = tiny_config(workspace, "data.source=local", f"data.path={data}")
    state = clm_flow(config, return_state=True)
    assert state.is_completed(), state.message
    assert registered_versions(config.registry.tracking_uri) == {"eli5-clm": [1]}
    (report_file,) = (workspace / "artifacts" / "flatten").glob("*/flatten_report.json")
    report = json.loads(report_file.read_text())
    assert report["train"]["dropped_empty_rows"] + report["test"]["dropped_empty_rows"] == 10
    assert report["train"]["rows"] + report["test"]["rows"] == len(rows) - 10
