"""lmpipe.data.file_formats: compressed local files are read by format: auto, and a file `datasets`
cannot read is named in one line with its line, as an input error (never retried)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pyarrow as pa
import pytest
from datasets import Dataset

from lmpipe.config.schema import DataConfig
from lmpipe.data.download import source_batches
from lmpipe.data.file_formats import builder_for, format_suffix
from lmpipe.data.sources import local_files
from lmpipe.errors import PipelineInputError, is_input_error

ROWS = [{"text": f"answer number {i} is here"} for i in range(300)]
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def load_source(data, cache) -> Dataset:
    """The whole source as one Dataset, read through the download stage's batches."""
    return Dataset(pa.concat_tables(list(source_batches(data, cache))))


def local(path: Path | str, **fields) -> DataConfig:
    return DataConfig(source="local", path=str(path), **fields)


def jsonl_lines(rows: list[dict]) -> list[str]:
    return [json.dumps(row) + "\n" for row in rows]


@pytest.mark.parametrize(
    "name, expected",
    [("a.jsonl.gz", (".jsonl", ".gz")), ("a.CSV.BZ2", (".csv", ".bz2")), ("a.txt", (".txt", None)), ("a", ("", None))],
)
def test_format_suffix_sees_through_compression(name, expected):
    assert format_suffix(Path(name)) == expected


@pytest.mark.parametrize("compression", sorted(OPENERS))
def test_compressed_jsonl_and_csv_are_read_with_format_auto(tmp_path, compression):
    jsonl = tmp_path / f"rows.jsonl{compression}"
    with OPENERS[compression](jsonl, "wt") as stream:
        stream.writelines(jsonl_lines(ROWS))
    csv = tmp_path / f"rows.csv{compression}"
    with OPENERS[compression](csv, "wt") as stream:
        stream.write("text\n" + "".join(f"row {i}\n" for i in range(5)))

    assert builder_for([jsonl], "auto") == "json" and builder_for([csv], "auto") == "csv"
    assert load_source(local(jsonl), tmp_path / "cache").to_list() == ROWS
    assert load_source(local(csv), tmp_path / "cache")["text"] == [f"row {i}" for i in range(5)]


def test_compressed_parquet_is_refused_naming_the_file():
    with pytest.raises(PipelineInputError, match=r"data.path: rows.parquet.gz: parquet files are compressed inside"):
        builder_for([Path("rows.parquet.gz")], "auto")


def test_a_directory_gets_a_hint_to_use_a_glob(tmp_path):
    (tmp_path / "rows.jsonl").write_text("")
    with pytest.raises(PipelineInputError) as caught:
        local_files(local(tmp_path))
    assert str(caught.value) == (
        f"data.path: {str(tmp_path)!r} is a directory; name its files with a glob, e.g. '{tmp_path / '*.jsonl'}'"
    )


@pytest.mark.parametrize("compression", ["", ".gz"])
def test_a_malformed_json_line_is_named_by_file_and_line(tmp_path, compression):
    lines = jsonl_lines(ROWS)
    lines[199] = '{"text": "an answer cut off\n'  # line 200
    good, bad = tmp_path / "a.jsonl", tmp_path / f"b.jsonl{compression}"
    good.write_text("".join(jsonl_lines(ROWS)))
    with gzip.open(bad, "wt") if compression else bad.open("w") as stream:
        stream.writelines(lines)

    with pytest.raises(PipelineInputError) as caught:
        load_source(local(tmp_path / "*.jsonl*"), tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"data.path: {bad} line 200 is not valid JSON: Unterminated string"), message
    assert message.endswith("; fix or remove that line") and "\n" not in message
    assert is_input_error(caught.value)


def test_a_binary_txt_file_is_named_with_the_line_and_byte(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a first line of text\n" + bytes(range(128, 256)))  # no newline among them
    with pytest.raises(PipelineInputError) as caught:
        load_source(local(path), tmp_path / "cache")
    assert (
        str(caught.value)
        == f"data.path: {path} line 2 is not UTF-8 text (byte 0x80 at column 1); fix or remove that line"
    )


def test_a_pretty_printed_json_document_with_an_error_is_named_by_its_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "one"},\n  {"text" "two"}\n]\n')
    with pytest.raises(PipelineInputError) as caught:
        load_source(local(path), tmp_path / "cache")
    assert str(caught.value).startswith(
        f"data.path: {path} line 3 is not valid JSON: Expecting ':' delimiter (column 11)"
    ), str(caught.value)


def test_permission_errors_are_input_errors():
    assert is_input_error(PermissionError(13, "Permission denied", "/artifacts"))
    assert not is_input_error(ConnectionError("reset by peer"))


def test_zstd_without_the_zstandard_package_says_what_to_install(monkeypatch):
    from lmpipe.data import file_formats

    monkeypatch.setattr(file_formats.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PipelineInputError) as caught:
        builder_for([Path("rows.jsonl.zst")], "auto")
    assert str(caught.value) == (
        "data.path: rows.jsonl.zst is zstd-compressed and the zstandard package is not installed "
        "(pip install zstandard), or decompress it"
    )


def test_a_corrupt_parquet_file_gets_the_librarys_cause_not_a_line(tmp_path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"\n\xff\xfe not a footer")
    with pytest.raises(PipelineInputError) as caught:
        load_source(local(path), tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith("data.path: cannot read ") and str(path) in message, message
    assert " line " not in message and "\n" not in message


def test_a_truncated_gzip_file_is_named(tmp_path):
    whole = gzip.compress("".join(jsonl_lines(ROWS)).encode())
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PipelineInputError) as caught:
        load_source(local(path), tmp_path / "cache")
    assert str(caught.value).startswith(f"data.path: cannot read {path}: EOFError: "), str(caught.value)
    assert is_input_error(caught.value)
