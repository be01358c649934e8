"""SharedPatch: the swap both MLflow shims use, installed by the first caller and undone by the last."""

from __future__ import annotations

import json

import pytest

from lmpipe.registry.shared_patch import SharedPatch


def test_nested_callers_share_one_replacement_and_the_last_out_restores_the_original():
    original = json.dumps
    made = []
    patch = SharedPatch("json", "dumps", lambda before: made.append(before) or (lambda *_a, **_k: "patched"))
    with patch.applied():
        with patch.applied():
            assert json.dumps({}) == "patched"
        assert json.dumps({}) == "patched", "the first caller is still inside"
    assert json.dumps is original
    assert made == [original], "installed once, from the original"


def test_an_error_inside_still_restores_the_original():
    original = json.loads
    patch = SharedPatch("json", "loads", lambda before: lambda *_a, **_k: "patched")
    with pytest.raises(RuntimeError), patch.applied():
        raise RuntimeError("register failed")
    assert json.loads is original
    with patch.applied():  # and it can be installed again afterwards
        assert json.loads("1") == "patched"
    assert json.loads is original
