# %% [markdown]
# # 01 · Quickstart: can a decoder name the learning rule from a recording?
#
# **Question.** If 96 small networks learn the same task under four different learning rules, can a
# decoder tell which rule trained a network from what a recording rig would see of it?
#
# **Time.** About 3 minutes on a 2-core laptop CPU (a few seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`).
#
# This is `virtual-lab run protocols/quickstart.toml`, done in Python so that every stage is visible:
# protocol -> training (written as NWB sessions) -> rig -> observables -> grouped cross-validation.

# %%
import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, REPO, TINY
from virtual_lab.protocol import load_protocol

protocol = load_protocol(REPO / "protocols" / "quickstart.toml")
protocol = dataclasses.replace(protocol, output_dir=str(OUTPUT / "recordings"))
if TINY:  # a few networks, two epochs: the same code path in seconds
    protocol = dataclasses.replace(
        protocol,
        network=dataclasses.replace(protocol.network, hidden_sizes=(16, 16)),
        training=dataclasses.replace(protocol.training, n_epochs=2, n_checkpoints=5),
        sweep=dataclasses.replace(protocol.sweep, learning_rate_scales=(1.0,), n_seeds=3),
        rig=tuple(dataclasses.replace(r, n_checkpoints=min(r.n_checkpoints, 3)) for r in protocol.rig),
        decoder=dataclasses.replace(protocol.decoder, n_splits=3, models=("logistic",)),
    )
print(f"{len(protocol.sweep.rules)} rules x {len(protocol.sweep.learning_rate_scales)} learning rates x "
      f"{protocol.sweep.n_seeds} seeds")

# %% [markdown]
# ## 1. Train the networks and record them
#
# `train_and_record` trains the sweep in batched populations (many networks per computation) and writes one NWB session
# per run. Run it twice: the second time every complete session is reused.

# %%
from virtual_lab.pipeline import train_and_record

ground_truths, paths, counts = train_and_record(protocol, progress=False)
print(counts, "->", paths[0].parent.parent)
gt = ground_truths[0]
print(gt.rule, gt.layer_names, {k: v.shape for k, v in gt.activations.items()})

# %% [markdown]
# ## 2. Look at what was recorded
#
# Each session holds, at every checkpoint, every unit's response to the same probe images. Here: the mean
# response of the first hidden layer over training, for one network of each rule.

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for rule in protocol.sweep.rules:
    g = next(g for g in ground_truths if g.rule == rule)
    ax.plot(g.checkpoint_steps, g.activations["fc1"].mean(axis=(1, 2)), label=rule)
ax.set_xlabel("training step")
ax.set_ylabel("mean fc1 response")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUTPUT / "01_mean_response.png", dpi=100)

# %% [markdown]
# ## 3. Observe, extract observables, decode
#
# `decode_sessions` observes every session through each rig setting of the protocol, computes the paper's
# 24 admissible observables per layer and checkpoint, and cross-validates the decoders with splits grouped
# by network. It also runs the *initialization only* control, which must sit at chance.

# %%
from virtual_lab.pipeline import decode_sessions

evaluations, tables = decode_sessions(protocol, ground_truths, progress=False)
for e in evaluations:
    s = e["summary"]
    print(f"{e['rig']:>13} {e['decoder']:>14} {e['control'] or '':>20}  network accuracy "
          f"{s['network_accuracy_mean']:.2f} +/- {s['network_accuracy_sem'] or 0:.2f} (chance {s['chance']:.2f})")

# %% [markdown]
# ## 4. Which rules are confused?

# %%
from virtual_lab.analysis.report import plot_confusion

first = evaluations[0]["summary"]
fig, ax = plt.subplots(figsize=(3.6, 3.4))
plot_confusion(np.array(first["network_confusion"]), first["classes"], "network-level confusion", ax)
fig.tight_layout()
fig.savefig(OUTPUT / "01_confusion.png", dpi=100)
print("figures in", OUTPUT)

# %% [markdown]
# **Try next:** lower `unit_fraction` or raise `noise_sd` in the `sparse-noisy` rig of the protocol and
# rerun — training is reused, only the rig and the decoder run again.
