"""Settings shared by every test folder (the core's tests/ and each plugin's tests/):
no network hub, and the synthetic-data cache of CLI defaults kept out of the user's home."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the synthetic-data cache of CLI defaults out of the user's home."""
    old = os.environ.get("WENLAN_CACHE")
    os.environ["WENLAN_CACHE"] = str(tmp_path_factory.mktemp("wenlan-cache"))
    yield
    if old is None:
        os.environ.pop("WENLAN_CACHE", None)
    else:
        os.environ["WENLAN_CACHE"] = old
