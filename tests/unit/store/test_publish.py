"""lmpipe.store: fingerprints, artifact directories, manifests, atomic publishing and one builder per artifact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lmpipe.store import manifest
from lmpipe.store.keys import artifact_dir, file_digest, fingerprint
from lmpipe.store.locks import exclusive
from lmpipe.store.manifest import MANIFEST, is_complete, problem_with, read_manifest, verify
from lmpipe.store.publish import building, ensure_built

# ---------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_a_short_sha256_of_canonical_json():
    expected = hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()[:16]
    assert fingerprint({"b": [1, 2], "a": 1}) == expected


def test_fingerprint_ignores_dict_key_order_at_every_level():
    one = {"stage": "group", "inputs": {"block_size": 128, "remainder": "drop"}, "code": "abc"}
    other = {"code": "abc", "inputs": {"remainder": "drop", "block_size": 128}, "stage": "group"}
    assert fingerprint(one) == fingerprint(other)


def test_fingerprint_changes_with_any_value():
    base = {"block_size": 128, "remainder": "drop"}
    assert fingerprint(base) != fingerprint({**base, "block_size": 64})
    assert fingerprint(base) != fingerprint({**base, "remainder": "pad"})
    assert fingerprint([1, 2]) != fingerprint([2, 1])  # list order is meaningful


def test_fingerprint_length_and_non_json_values():
    assert len(fingerprint("x")) == 16
    assert len(fingerprint("x", length=8)) == 8
    assert fingerprint({"path": Path("/a/b")}) == fingerprint({"path": "/a/b"})  # default=str


def test_file_digest_is_sha256_of_the_contents(tmp_path):
    path = tmp_path / "data.bin"
    payload = bytes(range(256)) * 10_000  # spans several read chunks with a small chunk size
    path.write_bytes(payload)
    assert file_digest(path, chunk_bytes=4096) == hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------- artifact directories


def test_artifact_dir_is_deterministic_and_content_addressed(tmp_path):
    inputs = {"upstream": "abc", "block_size": 128}
    first = artifact_dir(tmp_path, "group", inputs)
    assert first == artifact_dir(tmp_path, "group", {"block_size": 128, "upstream": "abc"})
    assert first == tmp_path.resolve() / "group" / fingerprint(inputs)


def test_artifact_dir_differs_when_inputs_or_stage_differ(tmp_path):
    inputs = {"upstream": "abc", "block_size": 128}
    base = artifact_dir(tmp_path, "group", inputs)
    assert artifact_dir(tmp_path, "group", {**inputs, "block_size": 64}) != base
    assert artifact_dir(tmp_path, "group", {**inputs, "upstream": "abd"}) != base
    assert artifact_dir(tmp_path, "tokenize", inputs).name == base.name  # same key, other stage folder
    assert artifact_dir(tmp_path, "tokenize", inputs) != base


def test_relative_root_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = artifact_dir("artifacts", "download", {"x": 1})
    assert directory.is_absolute()
    assert directory.parent.parent == tmp_path.resolve() / "artifacts"


# ---------------------------------------------------------------------------- atomic publishing


def test_building_publishes_the_scratch_dir_with_a_manifest(tmp_path):
    final = tmp_path / "stage" / "key"
    with building(final, "stage", {"upstream": "u", "n": 1}) as scratch:
        assert scratch.parent == final.parent and scratch != final
        assert not final.exists()  # nothing visible under the final name while building
        (scratch / "out.txt").write_text("result")
    assert (final / "out.txt").read_text() == "result"
    assert is_complete(final)
    assert read_manifest(final) == {
        "stage": "stage",
        "inputs": {"upstream": "u", "n": 1},
        "files": {
            "out.txt": {
                "bytes": 6,
                "mtime_ns": (final / "out.txt").stat().st_mtime_ns,
                "sha256": hashlib.sha256(b"result").hexdigest(),
            }
        },
    }
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]  # no scratch left behind


def test_building_leaves_nothing_behind_on_error(tmp_path):
    final = tmp_path / "stage" / "key"
    with pytest.raises(RuntimeError, match="boom"):
        with building(final, "stage", {}) as scratch:
            (scratch / "half-written.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not final.exists()
    assert not is_complete(final)
    assert list(final.parent.iterdir()) == []


KILLED_BUILDER = """
import sys, time
from pathlib import Path
from lmpipe.store.publish import ensure_built

def build(scratch):
    (scratch / "half-written.txt").write_text("partial")
    (Path(sys.argv[2])).write_text(str(scratch))  # tell the test the scratch directory exists
    time.sleep(600)

ensure_built(Path(sys.argv[1]), "stage", {}, build)
"""


def test_a_killed_builds_scratch_directory_is_removed_by_the_next_build_of_its_key(tmp_path):
    final = tmp_path / "stage" / "key"
    ready = tmp_path / "scratch-path.txt"
    builder = subprocess.Popen([sys.executable, "-c", KILLED_BUILDER, str(final), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert builder.poll() is None, "the builder exited before it began building"
            assert time.monotonic() < deadline, "the builder never started building"
            time.sleep(0.1)
    finally:
        builder.send_signal(signal.SIGKILL)
        builder.wait(timeout=60)
    left = Path(ready.read_text())
    assert left.is_dir() and left.name.startswith(".key.building-"), "SIGKILL leaves the scratch directory"

    assert ensure_built(final, "stage", {}, lambda scratch: (scratch / "out.txt").write_text("whole"))
    assert (final / "out.txt").read_text() == "whole" and is_complete(final)
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"], "the killed build's scratch is gone"


def test_building_cleans_up_on_keyboard_interrupt(tmp_path):
    final = tmp_path / "stage" / "key"
    with pytest.raises(KeyboardInterrupt):
        with building(final, "stage", {}):
            raise KeyboardInterrupt
    assert list(final.parent.iterdir()) == []


def test_building_keeps_an_artifact_that_was_published_first(tmp_path):
    final = tmp_path / "stage" / "key"
    with building(final, "stage", {"run": 1}) as scratch:
        (scratch / "out.txt").write_text("first")
    with building(final, "stage", {"run": 2}) as scratch:
        (scratch / "out.txt").write_text("second")
    assert (final / "out.txt").read_text() == "first"
    assert read_manifest(final)["inputs"] == {"run": 1}
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]


def test_a_directory_without_manifest_is_not_complete(tmp_path):
    (tmp_path / "half").mkdir()
    assert not is_complete(tmp_path / "half")
    assert not is_complete(tmp_path / "missing")
    (tmp_path / "half" / MANIFEST).write_text(json.dumps({"stage": "s", "inputs": {}}))
    assert not is_complete(tmp_path / "half"), "a manifest without checksums cannot vouch for the files"
    (tmp_path / "half" / MANIFEST).write_text(json.dumps({"stage": "s", "inputs": {}, "files": {}}))
    assert is_complete(tmp_path / "half")


def published(tmp_path: Path, content: bytes = b"0123456789") -> Path:
    final = tmp_path / "stage" / "key"
    with building(final, "stage", {}) as scratch:
        (scratch / "data").mkdir()
        (scratch / "data" / "part.arrow").write_bytes(content)
    return final


def test_a_truncated_or_corrupted_artifact_is_not_complete(tmp_path):
    final = published(tmp_path)
    assert problem_with(final) is None
    (final / "data" / "part.arrow").write_bytes(b"01234")
    assert problem_with(final) == "data/part.arrow has 5 bytes, expected 10"
    (final / "data" / "part.arrow").write_bytes(b"0123456780")  # same size, one byte changed
    assert problem_with(final) == "data/part.arrow does not match its checksum (it was written after publishing)"
    (final / "data" / "part.arrow").unlink()
    assert problem_with(final) == "data/part.arrow is missing"
    assert not is_complete(final)


def restore_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_lookup_reads_no_data_unless_a_file_was_written_after_publishing(tmp_path, monkeypatch):
    final = published(tmp_path)
    part = final / "data" / "part.arrow"
    hashed: list[Path] = []
    real_digest = manifest.file_digest
    monkeypatch.setattr(manifest, "file_digest", lambda path: hashed.append(path) or real_digest(path))
    assert is_complete(final) and hashed == [], "an untouched artifact is confirmed from sizes and times alone"

    part.touch()  # a copy without its times: same bytes, so still good, at the price of hashing this file
    assert is_complete(final) and hashed == [part]

    hashed.clear()
    part.write_bytes(b"0123456780")  # a bit flipped with size and time kept: a lookup cannot see it...
    restore_mtime(part, read_manifest(final)["files"]["data/part.arrow"]["mtime_ns"])
    assert is_complete(final) and hashed == []
    # ...the full check does, and so does a stage streaming through it (tests/unit/store/test_arrow_stream.py)
    assert verify(final) == "data/part.arrow does not match its checksum"


def test_rebuilding_replaces_a_corrupt_artifact_but_keeps_a_good_one(tmp_path):
    final = published(tmp_path)
    (final / "data" / "part.arrow").write_bytes(b"garbage")
    rebuilt = published(tmp_path, b"0123456789")
    assert rebuilt == final and is_complete(final)
    assert (final / "data" / "part.arrow").read_bytes() == b"0123456789"
    published(tmp_path, b"another result")  # a concurrent build finishing second
    assert (final / "data" / "part.arrow").read_bytes() == b"0123456789", "the complete one stays"
    assert sorted(p.name for p in final.parent.iterdir()) == ["key"]  # nothing discarded is left


# ---------------------------------------------------------------------------- one builder per artifact


def test_two_threads_needing_one_artifact_build_it_once(tmp_path, caplog):
    final = tmp_path / "group" / "abc"
    builds: list[str] = []
    start = threading.Barrier(2)
    outcomes: dict[str, bool] = {}

    def slow_build(scratch: Path) -> None:
        builds.append(threading.current_thread().name)
        time.sleep(0.5)  # long enough for the other thread to arrive while this one builds
        (scratch / "blocks.txt").write_text("built once")

    def run() -> None:
        start.wait()
        outcomes[threading.current_thread().name] = ensure_built(final, "group", {}, slow_build)

    threads = [threading.Thread(target=run, name=f"run-{i}") for i in range(2)]
    with caplog.at_level(logging.INFO, logger="lmpipe.store"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(builds) == 1, builds
    assert sorted(outcomes.values()) == [False, True], outcomes
    assert is_complete(final) and (final / "blocks.txt").read_text() == "built once"
    assert "another run is building it; waiting to reuse it" in caplog.text


_BUILDER = """
import sys, time
from pathlib import Path
from lmpipe.store.publish import ensure_built

final, counter = Path(sys.argv[1]), Path(sys.argv[2])

def build(scratch):
    with open(counter, "a") as log:
        log.write("built\\n")
    time.sleep(0.5)
    (scratch / "model.bin").write_bytes(b"weights")

print(ensure_built(final, "train-clm", {}, build))
"""


def test_processes_needing_one_artifact_build_it_once(tmp_path, repo_root):
    final, counter = tmp_path / "train-clm" / "abc", tmp_path / "builds.log"
    script = tmp_path / "builder.py"
    script.write_text(_BUILDER)
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(final), str(counter)],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(repo_root)},
        )
        for _ in range(3)
    ]
    printed = sorted(child.communicate(timeout=60)[0].strip() for child in children)
    assert [child.returncode for child in children] == [0, 0, 0]
    assert counter.read_text() == "built\n", "exactly one process built the artifact"
    assert printed == ["False", "False", "True"]
    assert is_complete(final)


_HOLDER = """
import sys, time
from pathlib import Path
from lmpipe.store.locks import exclusive

with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_holder_killed_by_sigkill_leaves_no_stale_lock(tmp_path, repo_root):
    final = tmp_path / "download" / "abc"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(final)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(repo_root)},
    )
    assert holder.stdout.readline().strip() == "held"
    waiting = threading.Event()
    acquired = threading.Event()

    def take() -> None:
        waiting.set()
        with exclusive(final):
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    waiting.wait(5)
    assert not acquired.wait(0.5), "the lock is held while its holder lives"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert acquired.wait(5), "the kernel releases a dead holder's lock"
