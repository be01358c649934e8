"""The text of each row: nested columns flattened to dotted names, the text field joined into one string.

Shared by download, which splits rows by a hash of this text, and flatten, which stores it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lmpipe.errors import PipelineInputError


def join_text(value: Any, field: str) -> str:
    """A string stays as is; a list of strings is joined with spaces (the guide's ' '.join)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) or item is None for item in value):
        return " ".join(item for item in value if item)
    raise PipelineInputError(
        f"data.text_field={field!r} holds {type(value).__name__} values; it must be a string or a list of strings"
    )


def flat_table(table: pa.Table) -> pa.Table:
    """Struct columns become dotted columns, at every depth, as Dataset.flatten names them."""
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    return table


def texts_of(table: pa.Table, field: str) -> list[str]:
    """The text field of every row of a (possibly nested) table, joined into one string per row."""
    flat = flat_table(table)
    if field not in flat.column_names:
        raise PipelineInputError(
            f"data.text_field={field!r} is not a column after flatten; columns are: {', '.join(flat.column_names)}"
        )
    column = flat.column(field)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [value or "" for value in column.to_pylist()]
    return [join_text(value, field) for value in column.to_pylist()]
