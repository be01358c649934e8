"""A cache hit costs the same whatever the corpus: lookups read manifests and file stats, never the data.

The tiny config against a local corpus 100x its size, each built once, then re-run all cached,
alternately, in one test run: the larger corpus's cached runs take no longer, within noise. At this
size hashing everything would still be quick, so the test also counts what the cached runs hashed:
nothing at all.
"""

from __future__ import annotations

import json
import time

from pipeline_probe import ONE_MODEL_TASK_RUNS, task_states, tiny_config

from flows.clm import clm_flow
from lmpipe.data.builtin_corpus import builtin_documents
from lmpipe.data.text_field import join_text
from lmpipe.store import digest_memo, manifest

REPEATS = 3
NOISE = 1.5  # ratio allowed: a loaded 2-core machine varies a cached run by tens of percent


def cached_seconds(config, hashed: list) -> float:
    started = time.perf_counter()
    state = clm_flow(config, return_state=True)
    seconds = time.perf_counter() - started
    assert state.is_completed(), state.message
    states = task_states(state.state_details.flow_run_id, runs=ONE_MODEL_TASK_RUNS)
    assert set(states) == {"download", "flatten", "tokenize", "group", "train-clm", "evaluate", "register"}
    assert all(s == ["Cached"] for name, s in states.items() if name != "register"), states
    assert hashed == [], f"a cached run hashed {hashed}"
    return seconds


def test_a_cached_run_on_a_corpus_100x_the_tiny_one_takes_no_longer(workspace, monkeypatch):
    tiny = tiny_config(workspace / "tiny")
    texts = [join_text(d["answers"]["text"], "answers.text") for d in builtin_documents(60, seed=tiny.data.seed)]
    corpus = workspace / "corpus-100x.jsonl"
    with corpus.open("w") as handle:
        for copy in range(100):  # distinct rows: each copy numbered
            for n, text in enumerate(texts):
                handle.write(json.dumps({"text": f"{text} (copy {copy}, text {n})"}) + "\n")
    tiny_bytes = sum(len(t.encode()) for t in texts)
    assert corpus.stat().st_size > 100 * tiny_bytes
    large = tiny_config(
        workspace / "large", "data.source=local", f"data.path={corpus}", "data.text_field=text", "eval.max_blocks=32"
    )

    for config in (tiny, large):  # cold: builds every artifact and registers
        assert clm_flow(config, return_state=True).is_completed()
    hashed: list = []
    for module in (manifest, digest_memo):  # every file hash a cache lookup could make
        real = module.file_digest
        monkeypatch.setattr(module, "file_digest", lambda path, real=real: hashed.append(path) or real(path))
    seconds: dict[str, list[float]] = {"tiny": [], "large": []}
    for _ in range(REPEATS):  # alternately, so a slow minute on the machine hits both
        seconds["tiny"].append(cached_seconds(tiny, hashed))
        seconds["large"].append(cached_seconds(large, hashed))
    ratio = min(seconds["large"]) / min(seconds["tiny"])
    print(f"cached re-run, best of {REPEATS}: tiny {seconds['tiny']}, 100x {seconds['large']}, ratio {ratio:.2f}")
    assert ratio <= NOISE, f"a cached run on 100x the corpus took {ratio:.2f}x the tiny one's: {seconds}"
