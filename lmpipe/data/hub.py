"""Fail fast, with a way forward, when the Hugging Face Hub cannot be reached.

Without this, `load_dataset` / `from_pretrained` retry and wait on a dead network for minutes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lmpipe.errors import HubUnreachableError

PROBE_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_offline_mode() -> bool:
    """HF_HUB_OFFLINE=1 means: use the local Hugging Face cache and never touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_reachable(endpoint: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Does the Hub answer an HTTP HEAD within `timeout_s`? Proxies from the environment are used."""
    import httpx

    outcome: list[bool] = []

    def probe() -> None:
        try:
            httpx.head(endpoint or hub_endpoint(), timeout=timeout_s, follow_redirects=False)
            outcome.append(True)  # any HTTP answer, even an error status, means the Hub is reachable
        except httpx.HTTPError:
            outcome.append(False)

    # Name lookup has no timeout of its own, so the probe runs in a thread we stop waiting for.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(outcome and outcome[0])


def is_local_reference(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists()


def require_hub(what: str, field: str, alternatives: str) -> None:
    """Raise HubUnreachableError at once if `what` needs the Hub and it is not reachable."""
    if hub_offline_mode():
        return  # the user asked for the local HF cache; the library reports a cache miss itself
    if not hub_reachable():
        raise HubUnreachableError(
            f"{field}: {what} needs the Hugging Face Hub ({hub_endpoint()}), which is not reachable "
            f"from this machine. {alternatives} (or set HF_HUB_OFFLINE=1 to use a copy already in the "
            f"local Hugging Face cache)."
        )
