"""lmpipe.data.hub: fail fast, with the offline alternatives, when the Hub cannot be reached (no network used)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from lmpipe.data import hub
from lmpipe.data.hub import hub_endpoint, hub_offline_mode, hub_reachable, is_local_reference, require_hub
from lmpipe.errors import HubUnreachableError

REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture()
def unreachable_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", REFUSED)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_unreachable_endpoint_is_reported_quickly():
    started = time.monotonic()
    assert hub_reachable(REFUSED, timeout_s=2.0) is False
    assert time.monotonic() - started < 5


def test_reachable_endpoint_is_detected():
    # A loopback HTTP server stands in for the Hub; any HTTP answer counts, even 501 to HEAD.
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub_reachable(f"http://127.0.0.1:{server.server_port}", timeout_s=2.0) is True
    finally:
        server.shutdown()
        server.server_close()


def test_a_listener_that_never_answers_http_is_unreachable_within_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert hub_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.0) is False
        assert time.monotonic() - started < 3


def test_endpoint_comes_from_hf_endpoint(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local:8080")
    assert hub_endpoint() == "http://mirror.local:8080"


@pytest.mark.parametrize(
    "value, offline",
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("", False), ("false", False)],
)
def test_offline_mode_flag(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline_mode() is offline


def test_require_hub_names_the_field_and_the_alternatives(unreachable_hub):
    alternatives = "Use data.source=local with local files, or data.source=builtin for the offline corpus"
    with pytest.raises(HubUnreachableError) as caught:
        require_hub("dataset 'eli5_category'", field="data.path", alternatives=alternatives)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("data.path: dataset 'eli5_category' needs the Hugging Face Hub")
    assert REFUSED in message
    assert "local" in message and "builtin" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_require_hub_does_not_probe_in_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed the network in offline mode"))
    require_hub("model 'distilgpt2'", field="model.clm.pretrained", alternatives="Use a local directory")


def test_require_hub_passes_when_the_hub_answers(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    require_hub("model 'distilgpt2'", field="model.clm.pretrained", alternatives="Use a local directory")


def test_local_reference_is_an_existing_path(tmp_path):
    assert is_local_reference(str(tmp_path))
    assert not is_local_reference(str(tmp_path / "missing"))
    assert not is_local_reference("distilgpt2-surely-not-a-directory-here")
