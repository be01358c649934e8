"""What a corpus is, without reading it: the files a local source names, how to describe a source, and
the identity that goes into the download artifact's key. Cheap to import: a cached run computes keys
without loading `datasets`."""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Any

from lmpipe.config.schema import DataConfig
from lmpipe.data import builtin_corpus
from lmpipe.errors import PipelineInputError
from lmpipe.store.digest_memo import remembered_digest


def local_files(data: DataConfig) -> list[Path]:
    """The files data.path names (a path or a glob), sorted; an error if there are none."""
    pattern = str(Path(data.path or "").expanduser())
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files and Path(pattern).is_dir():
        raise PipelineInputError(
            f"data.path: {data.path!r} is a directory; name its files with a glob, e.g. '{Path(pattern) / '*.jsonl'}'"
        )
    if not files:
        raise PipelineInputError(f"data.path: no file matches {data.path!r}")
    return files


def describe_source(data: DataConfig) -> str:
    if data.source == "builtin":
        return "the builtin stdlib-docstring corpus"
    return f"{data.source} dataset {data.path!r} split {data.split!r}"


def source_identity(data: DataConfig, root: str | Path) -> dict[str, Any]:
    """What determines the raw corpus: file contents for local data (hashed once per version of each file,
    remembered under the artifact `root`), the stdlib for builtin."""
    if data.source == "local":
        return {
            "files": {str(f.resolve()): remembered_digest(f, root) for f in local_files(data)},
            "format": data.format,
            "split": data.split,
        }
    if data.source == "builtin":
        return {
            "documents": data.builtin_documents,
            "stdlib": str(builtin_corpus.stdlib_root()),
            "python": sys.version.split()[0],
        }
    return {"dataset": data.path, "config_name": data.hub_config_name, "split": data.split, "revision": data.revision}
