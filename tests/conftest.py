import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# one BLAS/OpenMP thread per test process: far more robust when another process competes for a core
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "virtual_lab_test_cache"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from virtual_lab.lab.tasks import load_digits_task

    return load_digits_task(n_probe=50, seed=0)
