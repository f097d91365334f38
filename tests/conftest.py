"""Shared pytest setup: tests import helpers from this folder and never touch the user's cache."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NEXLIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nexlify-cache"))
