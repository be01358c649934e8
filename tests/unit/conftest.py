"""Shared fixtures for the unit tier: small English texts and one tiny trained tokenizer.

Everything here is built offline and in-process; the tokenizer is trained once per session.
"""

from __future__ import annotations

import argparse
import collections
import functools
import heapq
import inspect
import json
import logging
import os
import pathlib
import textwrap
from pathlib import Path

import pytest

from lmpipe.data.tokenizers import train_bpe_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_VOCAB = 400

# Standard-library modules whose docstrings are plain English prose: the same kind of text the
# builtin corpus uses, without scanning the whole stdlib for every test.
_PROSE_MODULES = (argparse, collections, functools, heapq, inspect, json, logging, os, pathlib, textwrap)


def _paragraphs(module) -> list[str]:
    doc = inspect.getdoc(module) or ""
    members = [inspect.getdoc(obj) or "" for _, obj in sorted(vars(module).items()) if callable(obj)]
    return [p.strip() for text in (doc, *members) for p in text.split("\n\n") if len(p.strip()) > 40]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """A few hundred English paragraphs (deterministic for a given Python version)."""
    texts = [p for module in _PROSE_MODULES for p in _paragraphs(module)]
    assert len(texts) > 200, "expected plenty of stdlib docstring paragraphs"
    return texts


@pytest.fixture(scope="session")
def tiny_vocab_size() -> int:
    return TINY_VOCAB


@pytest.fixture(scope="session")
def tiny_tokenizer(sample_texts):
    """Byte-level BPE (vocab <= 400) with the pipeline's specials, trained once per session."""
    return train_bpe_tokenizer([sample_texts], vocab_size=TINY_VOCAB, min_frequency=2)


@pytest.fixture()
def clean_offline_env(monkeypatch):
    """Let a test call code that os.environ.setdefault()s the CLI's offline variables, then undo it.

    setenv records each variable's original state and delenv removes it for the test, so
    monkeypatch restores exactly what was there before (including 'not set').
    """
    from lmpipe.cli.offline import OFFLINE_DEFAULTS

    for key in OFFLINE_DEFAULTS:
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    return OFFLINE_DEFAULTS
