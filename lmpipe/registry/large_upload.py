"""Large model files through a proxying MLflow server: multipart upload, switched on only when a file needs it.

A server run with --serve-artifacts receives each artifact as one HTTP PUT of the whole file, spools it to its
own disk and only then writes it to the store. For a file over 5 GB (S3's limit for a single PUT) that is the
upload most likely to fail: ingress body limits and timeouts, the server's temporary disk. With
MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true (MLflow's default: false) the client asks the server for presigned
part URLs and sends the file to the store in parts of MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE bytes (default 10 MiB),
for every file of at least MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE (default 500 MiB). A server whose store
cannot do multipart (a local directory) answers so, and the client falls back to the single PUT.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

MULTIPART_THRESHOLD_BYTES = 5 * 1024**3  # S3's largest single PUT
PROXY_MULTIPART = "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"
CHUNK_SIZE = "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE"
DEFAULT_CHUNK_BYTES = 10 * 1024**2  # MLflow's default for CHUNK_SIZE
MAX_PARTS = 10_000  # S3 refuses a multipart upload of more parts


def largest_file(model_dir: Path) -> tuple[Path, int] | None:
    """The biggest file under model_dir and its size; symlinks are followed, as MLflow copies what they point at."""
    sizes = [
        (path, path.stat().st_size)
        for folder, _, names in os.walk(model_dir, followlinks=True)  # Path.rglob skips linked folders (3.11)
        for path in (Path(folder) / name for name in names)
    ]
    return max(sizes, key=lambda item: item[1]) if sizes else None


def multipart_environment(model_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment updates a proxied upload of model_dir needs; {} when no file is over the threshold,
    or when the user has set the variable themselves (an explicit 'false' is respected)."""
    largest = largest_file(model_dir)
    if largest is None or largest[1] <= MULTIPART_THRESHOLD_BYTES or PROXY_MULTIPART in environ:
        return {}
    updates = {PROXY_MULTIPART: "true"}
    # 10 MiB parts cover files up to ~97 GiB; a bigger file needs bigger parts to stay within S3's part count.
    if CHUNK_SIZE not in environ and largest[1] > DEFAULT_CHUNK_BYTES * MAX_PARTS:
        mib = 1024**2
        updates[CHUNK_SIZE] = str(math.ceil(largest[1] / MAX_PARTS / mib) * mib)
    return updates


@contextmanager
def multipart_upload_if_needed(model_dir: Path, log: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """Within the block, os.environ carries multipart_environment(model_dir); restored on the way out.

    MLflow reads these variables from os.environ at upload time, so they are process-wide: fine here, as a
    process registers one model at a time (the flows call register in sequence)."""
    updates, largest = multipart_environment(model_dir, os.environ), largest_file(model_dir)
    if not updates or largest is None:
        yield
        return
    settings = " ".join(f"{name}={value}" for name, value in updates.items())
    log.info(
        f"register: {largest[0].name} is {largest[1] / 1024**3:.1f} GiB, over S3's 5 GiB single-upload limit; "
        f"MLflow sends it to the artifact store in parts ({settings})"
    )
    saved = {name: os.environ.get(name) for name in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
