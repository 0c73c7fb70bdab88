"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny models run faster that way, and the CPU is shared
    with other test runs. Use it per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """What the app caches (the default Turing test) goes to a temporary folder, never
    to the user's ~/.cache, in every test and in every app the tests start."""
    import os

    old = os.environ.get("COLORIZER_CACHE")
    os.environ["COLORIZER_CACHE"] = str(tmp_path_factory.mktemp("colorizer-cache"))
    yield
    if old is None:
        os.environ.pop("COLORIZER_CACHE", None)
    else:
        os.environ["COLORIZER_CACHE"] = old
