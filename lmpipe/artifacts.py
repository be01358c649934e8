"""Content-addressed artifact directories and the Prefect cache that sits on them.

Each stage writes to `<root>/<stage>/<key>`, where key hashes everything that determines the
output: the stage's config slice, the upstream artifact (whose directory name is already its
fingerprint), and the code version. A stage returns that path, never the data.

Prefect's cache is keyed by that directory. Before every lookup the key function checks the
directory is still there and complete; if it is not (deleted, or a failed build), it expires
Prefect's record, so the stage runs again instead of returning a stale path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "artifact.json"
LOCKS = ".locks"  # beside the stage directories, so a stage directory holds artifacts only

_log = logging.getLogger(__name__)

# Library versions that change what a stage produces; part of every stage's code version.
_OUTPUT_SHAPING_LIBRARIES = ("datasets", "tokenizers", "transformers", "torch")


def fingerprint(value: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able value (dict keys sorted)."""
    canonical = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def code_version(*source_files: str | Path) -> str:
    """Hash of the given source files plus the libraries that shape outputs and the Python version."""
    parts = [Path(f).read_text() for f in source_files]
    parts += [f"{lib}=={_version_of(lib)}" for lib in _OUTPUT_SHAPING_LIBRARIES]
    parts.append(sys.version.split()[0])
    return fingerprint(parts)


def _version_of(library: str) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "absent"


def artifact_dir(root: str | Path, stage: str, inputs: dict[str, Any]) -> Path:
    """Where a stage with these inputs writes; the same inputs always give the same directory."""
    return Path(root).expanduser().resolve() / stage / fingerprint(inputs)


def is_complete(directory: Path) -> bool:
    """Published, whole and unchanged: the manifest (written last) lists every file with its size
    and sha256, and each file still matches. A truncated or corrupted artifact is not complete,
    so its stage runs again rather than hand on wrong data."""
    problem = problem_with(directory)
    if problem is not None and directory.exists():
        _log.warning(f"artifact {directory} is not usable ({problem}); it will be rebuilt")
    return problem is None


def problem_with(directory: Path) -> str | None:
    """None for a complete artifact; else what is wrong with it, in a few words."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "missing" if not directory.exists() else "no manifest"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "manifest unreadable or without checksums"
    return files_problem(directory, files)


def files_problem(directory: Path, files: dict[str, dict[str, Any]]) -> str | None:
    """None when every file of a `file_table` is still there, whole and unchanged; else the first problem."""
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
        if file_digest(path) != expected["sha256"]:  # O(size): read once per check, never trusted from memory
            return f"{name} does not match its checksum"
    return None


def file_table(directory: Path, manifest: str = MANIFEST) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `directory` but its manifest: what a manifest vouches for."""
    return {
        str(f.relative_to(directory)): {"bytes": f.stat().st_size, "sha256": file_digest(f)}
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.name != manifest
    }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST).read_text())


def ensure_built(
    final_dir: Path,
    stage: str,
    inputs: dict[str, Any],
    build: Callable[[Path], object],
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> bool:
    """Publish `final_dir` by running `build(scratch)`, unless a complete copy is already there.

    Returns True when this call built it. Holds the artifact's lock throughout, so two runs that
    need the same artifact at the same moment build it once: the second waits, then reuses it.
    """
    with exclusive(final_dir, log):
        if is_complete(final_dir):
            return False
        with building(final_dir, stage, inputs) as scratch:
            build(scratch)
    return True


@contextmanager
def exclusive(directory: Path, log: logging.Logger | logging.LoggerAdapter = _log) -> Iterator[None]:
    """One holder at a time per artifact, across threads and processes sharing the artifact root.

    An flock on `<root>/.locks/<stage>-<key>.lock`: the kernel drops it when its holder dies (even
    by SIGKILL), so a crashed run never leaves a stale lock behind. The lock file itself stays, as
    deleting it would race with a run that has just opened it.
    """
    locks = directory.parent.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{directory.parent.name}-{directory.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"{directory.parent.name}/{directory.name}: another run is building it; waiting to reuse it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def building(final_dir: Path, stage: str, inputs: dict[str, Any]) -> Iterator[Path]:
    """Yield a scratch directory; on success publish it atomically as `final_dir`.

    On any error the scratch directory is removed, so nothing half-written is ever visible
    under the final name. The manifest, with every file's size and checksum, is written last.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = final_dir.parent / f".{final_dir.name}.building-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        manifest = {"stage": stage, "inputs": inputs, "files": file_table(scratch)}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if final_dir.exists() and is_complete(final_dir):  # a concurrent run finished first: keep its result
            shutil.rmtree(scratch)
            return
        if final_dir.exists():  # truncated or corrupt: move it aside (atomic), then publish ours
            discarded = final_dir.parent / f".{final_dir.name}.discarded-{uuid.uuid4().hex[:8]}"
            final_dir.rename(discarded)
            shutil.rmtree(discarded, ignore_errors=True)
        scratch.rename(final_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def cached_stage(output_dir_of: Callable[..., Path]) -> dict[str, Any]:
    """Task options that key Prefect's cache by the stage's artifact directory.

    `output_dir_of` takes the task's parameters and returns its output directory.
    """

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        out = output_dir_of(**parameters)
        key = cache_key_of(out)
        if not is_complete(out):
            forget_cached_result(getattr(context, "result_store", None), key)
        return key

    return dict(cache_key_fn=cache_key, persist_result=True, result_serializer="json")


def cache_key_of(directory: Path) -> str:
    """Prefect cache key of an artifact directory: stage name plus a hash of its full path."""
    return f"lmpipe-{directory.parent.name}-{fingerprint(str(directory))}"


def forget_cached_result(store: Any, key: str) -> None:
    """Make Prefect's record for `key` miss, whatever storage holds it, by overwriting it expired."""
    if store is None or not store.exists(key):
        return
    expired = store.create_result_record(None, key=key, expiration=datetime.now(timezone.utc) - timedelta(seconds=1))
    store.persist_result_record(expired)
