# the environment (PYNWB_NO_CACHE_DIR, MPLBACKEND, one BLAS thread, XDG_CACHE_HOME) is set by the root conftest.py
import pytest


@pytest.fixture(scope="session")
def digits():
    from virtual_lab.lab.tasks import load_digits_task

    return load_digits_task(n_probe=50, seed=0)
