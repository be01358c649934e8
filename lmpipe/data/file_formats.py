"""Local data files: which `datasets` builder reads them (compressed ones too), and, when one cannot
be read, which file and line is at fault.

`datasets` reports an unreadable file as "An error occurred while generating the dataset", naming
neither the file nor the line; the row pyarrow names is counted within the chunk it was parsing. So
on that failure the files are read again here, line by line, to find the first line that is not
UTF-8 text (or not JSON, for JSON lines). That costs a read of the files, on the failure path only,
and is bounded in time: past the budget, the library's own message is what the user gets.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import lzma
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lmpipe.errors import PipelineInputError

# Suffix -> the `datasets` builder that reads it.
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
# Compression suffix -> how to open it here; `datasets` opens the same ones itself (zstd needs `zstandard`).
COMPRESSIONS: dict[str, Callable[[Path], IO[bytes]]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
    ".zst": lambda path: _zstd_open(path),
}
SCAN_BUDGET_S = 30.0
LINE_FORMATS = {"json", "csv", "text"}  # builders whose files are lines of UTF-8 text
# What reading a corrupt or truncated archive raises, and `datasets` lets through. Not every OSError: one from
# a network file system may be transient and deserves its retry.
DECOMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error)


def _zstd_open(path: Path) -> IO[bytes]:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)


def format_suffix(path: Path) -> tuple[str, str | None]:
    """('.jsonl', '.gz') for data.jsonl.gz; ('.csv', None) for data.csv."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def builder_for(files: list[Path], declared: str) -> str:
    """The `datasets` builder for data.format, or for the files' suffixes when it is 'auto'."""
    for path in files:
        fmt, compression = format_suffix(path)
        if compression == ".zst" and importlib.util.find_spec("zstandard") is None:
            raise PipelineInputError(
                f"data.path: {path.name} is zstd-compressed and the zstandard package is not installed "
                "(pip install zstandard), or decompress it"
            )
        if compression and (fmt == ".parquet" or declared == "parquet"):
            raise PipelineInputError(
                f"data.path: {path.name}: parquet files are compressed inside; use the .parquet file as it is"
            )
    if declared != "auto":
        return {"jsonl": "json", "txt": "text"}.get(declared, declared)
    builders = {BUILDERS.get(format_suffix(f)[0]) for f in files}
    if None in builders or len(builders) != 1:
        suffixes = sorted({"".join(f.suffixes[-2:]) or "(none)" for f in files})
        raise PipelineInputError(
            f"data.format: cannot tell the format of {suffixes}; set data.format to one of "
            "json, jsonl, csv, parquet, txt (each may be .gz, .bz2, .xz or .zst compressed)"
        )
    return builders.pop()


def open_data_file(path: Path) -> IO[bytes]:
    _, compression = format_suffix(path)
    return COMPRESSIONS[compression](path) if compression else path.open("rb")


def first_unreadable_line(path: Path, builder: str, deadline: float) -> tuple[int, str] | None:
    """(line number from 1, what is wrong with it) for the first line of `path` that is not UTF-8 text,
    or for JSON lines not JSON; None if every line reads or the deadline passed first."""
    json_lines = builder == "json"
    with open_data_file(path) as stream:
        for number, raw in enumerate(stream, 1):
            if time.monotonic() > deadline:
                return None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            if not json_lines or not text.strip():
                continue
            try:
                json.loads(text.strip())
            except json.JSONDecodeError as error:
                if number == 1:  # not JSON lines but one JSON document, perhaps pretty-printed
                    return _json_document_error(path)
                return number, _json_problem(error)
    return None


def _json_document_error(path: Path) -> tuple[int, str] | None:
    try:
        with open_data_file(path) as stream:
            json.load(stream)
    except json.JSONDecodeError as error:
        return error.lineno, _json_problem(error)
    except UnicodeDecodeError:
        return None
    return None


def _json_problem(error: json.JSONDecodeError) -> str:
    # json's messages end in "at" ("Unterminated string starting at"): the column completes them.
    return f"not valid JSON: {error.msg.removesuffix(' at')} (column {error.colno})"


def unreadable_files_error(files: list[Path], builder: str, error: BaseException) -> PipelineInputError:
    """The one line for a `datasets` failure to read local files: the file and line at fault where they
    can be found within the budget, else the deepest cause the library gave."""
    deadline = time.monotonic() + SCAN_BUDGET_S
    # Only text formats have lines to blame; a binary format (parquet) gets the library's cause.
    for path in files if builder in LINE_FORMATS else ():
        try:
            found = first_unreadable_line(path, builder, deadline)
        except (OSError, *DECOMPRESSION_ERRORS) as read_error:  # a corrupt or truncated archive, a file gone
            return PipelineInputError(f"data.path: cannot read {path}: {type(read_error).__name__}: {read_error}")
        if found is not None:
            line, problem = found
            return PipelineInputError(f"data.path: {path} line {line} is {problem}; fix or remove that line")
    cause = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    where = str(files[0]) if len(files) == 1 else f"one of the {len(files)} files"
    detail = (str(cause).splitlines() or [type(cause).__name__])[0]
    return PipelineInputError(f"data.path: cannot read {where} as {builder}: {type(cause).__name__}: {detail}")
