"""Environment shared by the test suite (tests/) and the package's doctests (virtual_lab/).

Set here, before any test module or doctest imports pynwb, matplotlib or torch.
"""
import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# one BLAS/OpenMP thread per test process: far more robust when another process competes for a core
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "virtual_lab_test_cache"))
