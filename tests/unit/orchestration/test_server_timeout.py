"""lmpipe.orchestration.temporary_server: how long `lmpipe run` waits for Prefect's temporary server."""

from __future__ import annotations

import pytest

from lmpipe.errors import ConfigError
from lmpipe.orchestration.temporary_server import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, startup_timeout_s


def test_the_wait_is_generous_by_default_and_prefects_own_setting_overrides_it(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert startup_timeout_s() == DEFAULT_TIMEOUT_S >= 120  # Prefect's 20 s is too little on a loaded laptop
    monkeypatch.setenv(TIMEOUT_ENV, "45")
    assert startup_timeout_s() == 45


def test_a_timeout_that_is_not_a_number_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match=rf"\${TIMEOUT_ENV}='soon' is not a whole number of seconds"):
        startup_timeout_s()
