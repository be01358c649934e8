"""Is there a Ray cluster at train.ray_address? Asked before training starts, in a second or two.

Ray's own `ray.init` waits for an address nobody answers for minutes (measured here: still waiting after
120 s for 127.0.0.1:1), so a dead cluster is found here first, by a TCP connection to its address.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from pathlib import Path

CURRENT_CLUSTER = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"  # `ray start` writes it


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def resolved_address(address: str) -> str | None:
    """HOST:PORT that `ray.init(address)` would talk to; None when `auto` finds no cluster on this node."""
    if address != "auto":
        return address.removeprefix("ray://")
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"].removeprefix("ray://")
    try:
        return CURRENT_CLUSTER.read_text().strip() or None
    except OSError:
        return None


def answers(host_port: str, within_s: float = 3.0) -> bool:
    """Does something accept connections at HOST:PORT within `within_s` (a restarting head gets a few tries)?"""
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return False
    deadline = time.monotonic() + within_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


def cluster_problem(address: str) -> str | None:
    """One line saying why training cannot start on the Ray cluster at `address`; None when it can."""
    if not ray_installed():
        return "train.launcher='ray' needs Ray: pip install 'lmpipe[ray]'"
    host_port = resolved_address(address)
    if host_port is None:
        return (
            "train.ray_address='auto': no Ray cluster on this node (no RAY_ADDRESS, nothing started with "
            "`ray start`); set train.ray_address to the cluster's HOST:PORT"
        )
    if not answers(host_port):
        return f"train.ray_address={address!r}: no Ray cluster answers at {host_port}"
    return None
