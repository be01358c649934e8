"""Keep credentials out of what the pipeline records: MLflow params, tags, cards, Prefect artifacts, logs.

A tracking URI may carry a password (`https://user:pass@mlflow.example`) or a token in its
query string. Wherever such a string is recorded, the credential becomes `***`; the URI itself
is still used, unmasked, to connect. (Better still: MLFLOW_TRACKING_USERNAME / _PASSWORD /
_TOKEN in the worker's environment, which never reach the config at all.)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_SECRET_NAME = re.compile(r"(?i)token|key|secret|passw|pwd|sig|credential|auth")


def mask_url(url: str) -> str:
    """`https://user:pw@host/x?token=t&a=1` -> `https://***@host/x?token=***&a=1`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_NAME.search(k) for k, _ in pairs):
        query = urlencode([(k, MASK if _SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # rebuilding would drop the empty authority of sqlite:////abs/path
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def link(url: str) -> str:
    """A URL fit for a clickable link: no user info at all, secret query values masked."""
    masked_url = mask_url(url)
    parts = urlsplit(masked_url)
    if "@" not in parts.netloc:
        return masked_url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def mask_secrets(text: str) -> str:
    """Every URL inside `text`, masked."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)


def masked(value: Any) -> Any:
    """A JSON-like tree with every string masked."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value
