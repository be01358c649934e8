"""The text of each row: nested columns flattened to dotted names, the text field joined into one string.

Shared by download, which splits rows by a hash of this text, and flatten, which stores it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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
    column = flat.column(field).combine_chunks()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.fill_null("").to_pylist()
    if _plain_string_lists(column):  # joined in Arrow: what join_text gives, without a Python call per row
        return pc.binary_join(column, " ").fill_null("").to_pylist()
    return [join_text(value, field) for value in column.to_pylist()]


def _plain_string_lists(column: pa.Array) -> bool:
    """Lists of strings with no null or empty item, the only ones ' '.join and join_text agree on."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return False
    if not pa.types.is_string(column.type.value_type):
        return False
    items = pc.list_flatten(column)
    return items.null_count == 0 and not pc.any(pc.equal(pc.binary_length(items), 0)).as_py()
