"""The Ray cluster check before training: a cluster that is not there is found in seconds, named by its field."""

from __future__ import annotations

import socket
import time

import pytest

from lmpipe.compute import ray_cluster


@pytest.fixture
def no_local_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_cluster, "CURRENT_CLUSTER", tmp_path / "ray_current_cluster")
    return tmp_path / "ray_current_cluster"


def test_a_listening_address_is_a_cluster(no_local_cluster):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert ray_cluster.cluster_problem(address) is None
        assert ray_cluster.cluster_problem(f"ray://{address}") is None
        no_local_cluster.write_text(address)  # what `ray start --head` leaves on its node
        assert ray_cluster.cluster_problem("auto") is None


def test_nothing_listening_fails_in_seconds_naming_the_field(no_local_cluster):
    started = time.monotonic()
    assert ray_cluster.cluster_problem("127.0.0.1:1") == (
        "train.ray_address='127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1"
    )
    assert time.monotonic() - started < 10


def test_auto_without_a_cluster_on_this_node_says_what_to_set(no_local_cluster):
    problem = ray_cluster.cluster_problem("auto")
    assert problem is not None and problem.startswith("train.ray_address='auto': no Ray cluster on this node")


def test_auto_follows_ray_address(no_local_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    assert ray_cluster.resolved_address("auto") == "head.example:10001"


def test_without_ray_installed_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(ray_cluster, "ray_installed", lambda: False)
    assert ray_cluster.cluster_problem("auto") == "train.launcher='ray' needs Ray: pip install 'lmpipe[ray]'"
