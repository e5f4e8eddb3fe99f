"""What every test shares: decoded-image caches go to a temporary folder, never the user's."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """``$NCOLLAPSE_CACHE`` for the whole session (a test that needs another sets its own)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NCOLLAPSE_CACHE", str(tmp_path_factory.mktemp("ncollapse-cache")))
    yield
    mp.undo()
