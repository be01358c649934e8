"""What a corpus is, without reading it: the files a local source names, how to describe a source, and
the identity that goes into the download artifact's key. Cheap to import: a cached run computes keys
without loading `datasets`."""

from __future__ import annotations

import glob
import itertools
import re
import sys
from pathlib import Path
from typing import Any

from lmpipe.config.schema import DataConfig
from lmpipe.data import builtin_corpus
from lmpipe.data.hub_revision import hub_revision_identity
from lmpipe.errors import PipelineInputError
from lmpipe.store.digest_memo import remembered_digest

GLOB_CHARACTERS = re.compile(r"[*?[]")


def local_pattern(data: DataConfig) -> Path:
    return Path(data.path or "").expanduser()


def glob_base(pattern: Path) -> Path:
    """The directory a path or glob names its files from: the parts before the first glob character, or a plain
    file path's parent. `data/**/*.jsonl` -> `data`, `/mnt/c/part-*.csv` -> `/mnt/c`, `rows.jsonl` -> `.`."""
    literal = list(itertools.takewhile(lambda part: not GLOB_CHARACTERS.search(part), pattern.parts))
    return pattern.parent if len(literal) == len(pattern.parts) else Path(*literal)


def local_files(data: DataConfig) -> list[Path]:
    """The files data.path names (a path or a glob), sorted; an error if there are none."""
    pattern = str(local_pattern(data))
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
    """What determines the raw corpus: for local data each file's name under the glob's base and its contents
    (hashed once per version of each file, remembered under the artifact `root`); the stdlib for builtin; for
    the Hub the commit it serves now (see hub_revision)."""
    if data.source == "local":
        base = glob_base(local_pattern(data))
        # Names relative to the base, never absolute: the same corpus at ./data on a laptop and at /data in a pod
        # keys the same. A symlink counts by its own name, with the contents it points at. A rename changes the
        # key: files are read in name order, and that order is the order group concatenates rows in (the
        # train/test side of a row is its text's hash, so only the order moves), and "the same names and bytes"
        # is a rule anyone can check with `sha256sum`.
        return {
            "files": {f.relative_to(base).as_posix(): remembered_digest(f, root) for f in local_files(data)},
            "format": data.format,
            "split": data.split,
        }
    if data.source == "builtin":
        return {
            "documents": data.builtin_documents,
            "stdlib": str(builtin_corpus.stdlib_root()),
            "python": sys.version.split()[0],
        }
    return {
        "dataset": data.path,
        "config_name": data.hub_config_name,
        "split": data.split,
        **hub_revision_identity(data),
    }
