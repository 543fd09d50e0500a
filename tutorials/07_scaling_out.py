# %% [markdown]
# # 07 · Scaling out: thousands of runs overnight, resumable, on a cluster
#
# **Question.** How do I run thousands of training runs overnight without losing work, and on a cluster?
#
# **Time.** About 15 seconds on a 2-core laptop CPU (measured; 4 rules x 2 learning rates x 6 seeds, part of
# them trained twice); about 10 seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`.
#
# A sweep is cut into fixed *populations* of at most `[training] population_size` networks, trained in
# batches. Each population's sessions are staged and committed together, `sweep_manifest.json` records every
# run's status, and `sweep_log.jsonl` is an append-only event log. Kill the sweep at any moment and the same
# command resumes it: complete sessions are reused, only missing or damaged ones are trained again, and the
# resumed sessions are byte-identical to an uninterrupted run.

# %%
import json
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, REPO, TINY
from virtual_lab.protocol import parse_protocol

protocol = parse_protocol({
    "name": "overnight",
    "output_dir": (OUTPUT / "recordings").as_posix(),
    "seed": 7,
    "network": {"hidden_sizes": [16] if TINY else [64, 64]},
    "training": {"n_epochs": 2 if TINY else 10, "n_checkpoints": 3 if TINY else 11,
                 "population_size": 2 if TINY else 8},   # small populations: a crash loses little
    "sweep": {"rules": ["sgdm", "adam", "fa", "ia"], "learning_rate_scales": [1.0] if TINY else [0.5, 2.0],
              "n_seeds": 2 if TINY else 6},
})
print("population_size:", protocol.training.population_size, "->", protocol.recordings_dir)

# %% [markdown]
# ## 1. Train only (what `virtual-lab run protocol.toml --train-only` does)
#
# `run_protocol(..., train_only=True)` stops after training and recording; `train_sweep` is the bare
# training step and returns a `SweepResult`. `n_workers=0` trains in this process (the tutorial stays
# light); by default one single-threaded process per core is used.

# %%
from virtual_lab.pipeline import run_protocol

result = run_protocol(protocol, progress=False, train_only=True, n_workers=0 if TINY else None)
print(result.sweep.summary_text())

# %% [markdown]
# ## 2. The manifest and the log

# %%
from virtual_lab.sweeps.status import sweep_status
from virtual_lab.sweeps.storage import read_log

root = protocol.recordings_dir
manifest = json.loads((root / "sweep_manifest.json").read_text())
print(sorted(manifest))
for run in manifest["runs"][:3]:
    print({k: run[k] for k in ("run_id", "rule", "status", "population", "path") if k in run})
events = read_log(root / "sweep_log.jsonl")
print(len(events), "log events:", Counter(e.get("event", "?") for e in events))

# %% [markdown]
# ## 3. Simulate a crash: one session file lost or truncated
#
# We truncate one session (as a full disk or a killed copy would) and rerun the *same* call. The scan finds
# it damaged; only its population is trained again, and only the missing session is written.

# %%
victim = result.sweep.session_paths[0]
victim.write_bytes(victim.read_bytes()[:1000])   # truncated HDF5
print("damaged:", victim.name)
print(sweep_status(root).summary_text())          # what `virtual-lab status RECORDINGS` prints

again = run_protocol(protocol, progress=False, train_only=True, n_workers=0 if TINY else None)
s = again.sweep
print(f"written now {s.n_trained}, reused {s.n_reused}, recomputed (same population, not rewritten) "
      f"{s.n_recomputed}")
for problem in s.problems:
    print("  replaced", problem)
status = sweep_status(root)
print(status.summary_text())
assert status.ok and s.n_trained == 1

# %% [markdown]
# ## 4. A figure: run status by rule

# %%
rules = sorted({rule for rule, _ in status.groups})
states = ["complete", "diverged", "failed", "missing"]
colors = {"complete": "tab:green", "diverged": "tab:orange", "failed": "tab:red", "missing": "tab:grey"}
fig, ax = plt.subplots(figsize=(5, 3))
bottom = np.zeros(len(rules))
for state in states:
    values = np.array([sum(c[state] for (r, _), c in status.groups.items() if r == rule) for rule in rules])
    ax.bar(rules, values, bottom=bottom, color=colors[state], label=state)
    bottom += values
ax.set_ylabel("runs")
ax.set_title(f"sweep {status.protocol}", fontsize=9)
ax.legend(fontsize=7)
plt.setp(ax.get_xticklabels(), rotation=20, fontsize=7)
fig.tight_layout()
fig.savefig(OUTPUT / "07_run_status.png", dpi=100)

# %% [markdown]
# ## 5. Dask, in this process (optional)
#
# The `"dask"` executor submits one task per population to a `dask.distributed` scheduler; workers write
# the sessions themselves, so the recordings folder must be visible to every worker. Here a thread-based
# `LocalCluster` bound to 127.0.0.1 trains a second, tiny sweep (skipped if dask is not installed).

# %%
import dataclasses

try:
    from distributed import LocalCluster
except ImportError:
    LocalCluster = None
    print("dask.distributed not installed: pip install 'virtual_lab[dask]' to try this cell")
if LocalCluster is not None and TINY:
    small = dataclasses.replace(protocol, name="overnight-dask")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        from virtual_lab.pipeline import train_sweep

        dask_sweep = train_sweep(small, executor="dask", scheduler=cluster.scheduler_address, progress=False)
    print(dask_sweep.summary_text())

# %% [markdown]
# ## 6. On a cluster (not run here)
#
# From the command line, against any running Dask scheduler:
#
# ```bash
# virtual-lab run protocol.toml --executor dask --scheduler tcp://127.0.0.1:8786
# virtual-lab status recordings/overnight        # how far it got; rerun the same command to resume
# ```
#
# On SLURM, install `virtual_lab[dask]` and `dask-jobqueue` in an environment every node sees and keep a
# cluster running (e.g. in tmux on the login node), one single-threaded worker per core:
#
# ```python
# # cluster.py
# from dask_jobqueue import SLURMCluster
# cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="04:00:00",
#                        job_extra_directives=["--partition=cpu"])
# cluster.adapt(minimum_jobs=1, maximum_jobs=20)
# print(cluster.scheduler_address)   # e.g. tcp://10.1.2.3:8786
# input("press enter to stop")
# ```
#
# ```bash
# virtual-lab run study.toml --output-dir /shared/scratch/recordings \
#     --executor dask --scheduler tcp://10.1.2.3:8786
# ```
#
# A node that dies or a job that hits its wall time loses only its populations in flight: Dask reschedules
# them, and a sweep killed as a whole resumes with the same command. Results do not depend on the executor
# or the number of workers, only on `population_size`.
