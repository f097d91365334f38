"""Shared pytest setup: tests import helpers from this folder and never touch the user's cache."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NEXLIFY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nexlify-cache"))


@pytest.fixture(autouse=True)
def _restore_threads():
    # Building an agent sets torch's thread count for the process; each test gets back the count it
    # started with. Tests that never load torch have nothing to restore.
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    yield
    if threads is not None:
        torch.set_num_threads(threads)
