# %% [markdown]
# # 03 · NWB sessions: what is in a file, and how to read it
#
# **Question.** What exactly does virtual_lab write for one training run, and how do I open it with the
# tools I already use (pynwb, neo, nwbinspector)?
#
# **Time.** About 10 seconds on a 2-core laptop CPU (measured 9 s) (a few seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`).
#
# Every training run becomes one *ground-truth session*: every unit's response to every probe stimulus at
# every checkpoint, every weight, the layer-wise activity change, and the learning curves, laid out with
# core NWB types and named the DANDI way (`sub-<subject>/sub-<subject>_ses-<session>.nwb`).

# %%
import os

os.environ.setdefault("PYNWB_NO_CACHE_DIR", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, TINY
from virtual_lab.lab.tasks import load_digits_task
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population
from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, sanitize_id, session_path, write_session

task = load_digits_task(n_probe=60 if TINY else 200)
spec = RunSpec(rule="feedback_alignment", learning_rate=0.02, batch_size=64, n_epochs=2 if TINY else 20,
               seed=1, layer_sizes=(64, 32, 32, 10) if TINY else (64, 128, 128, 10),
               n_probe=60 if TINY else 200, n_checkpoints=5 if TINY else 21)
(gt,) = train_population([spec], task)
path = session_path(OUTPUT / "sessions", sanitize_id(gt.run_id), GROUND_TRUTH_SESSION_ID)
write_session(gt, path, protocol_name="tutorial")
print(path.relative_to(OUTPUT))

# %% [markdown]
# ## Open it with pynwb
#
# Activations are 2-D `TimeSeries` in `acquisition` (rows: checkpoint x probe presentation, on a documented
# 10 Hz virtual clock; columns: units). Epochs mark checkpoints, trials mark probe presentations, the
# probe images are one `ImageSeries` in `stimulus_template`, and the `misc` processing module holds the
# units table, the weights, the activity change and the resolved training spec (rule, seeds, versions).

# %%
from pynwb import NWBHDF5IO

with NWBHDF5IO(str(path), "r") as io:
    nwb = io.read()
    print("subject:", nwb.subject.subject_id, "| species:", nwb.subject.species)
    print("acquisition:", list(nwb.acquisition))
    print("epochs:", len(nwb.epochs), "| trials:", len(nwb.trials))
    print("network module (processing/misc):", list(nwb.processing["misc"].data_interfaces))
    training = nwb.processing["misc"]["training"].to_dataframe()
    print(training.set_index("key").loc[["rule", "learning_rate", "seed"], "value"].to_dict())
    fc1 = nwb.acquisition["activations_fc1"].data[:]  # read the block, then index in numpy

# %% [markdown]
# ## Or get plain numpy arrays back with `read_session`

# %%
from virtual_lab.sessions import read_session

back = read_session(path)
np.testing.assert_array_equal(back.activations["fc1"].reshape(fc1.shape), fc1)
t, s, u = back.activations["fc1"].shape
print(f"fc1: {t} checkpoints x {s} probes x {u} units; rule = {back.rule}")

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
axes[0].imshow(back.activations["fc1"][-1][:, :30].T, aspect="auto", cmap="viridis")
axes[0].set_xlabel("probe stimulus")
axes[0].set_ylabel("fc1 unit")
axes[0].set_title("responses at the last checkpoint", fontsize=9)
axes[1].plot(back.checkpoint_steps, back.test_accuracy, marker="o")
axes[1].set_xlabel("training step")
axes[1].set_ylabel("probe accuracy")
fig.tight_layout()
fig.savefig(OUTPUT / "03_session.png", dpi=100)

# %% [markdown]
# ## neo reads the activation series and the checkpoint epochs

# %%
from virtual_lab.sessions import read_neo

block = read_neo(path)
segment = block.segments[0]
print([signal.shape for signal in segment.analogsignals], "|", len(segment.epochs), "epoch array(s)")

# %% [markdown]
# ## Validate: nwbinspector (DANDI configuration) and the pynwb validator

# %%
from virtual_lab.sessions import inspect_sessions, validate_session

messages = inspect_sessions(path, config="dandi")
for m in messages:
    print(m.importance.name, "-", m.message)
print("pynwb validation errors:", validate_session(path))
