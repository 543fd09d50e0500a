# %% [markdown]
# # 06 · Power analysis: how many neurons, sessions and animals?
#
# **Question.** How many neurons, in how many sessions, to tell the rules apart at 90% -- confirmed on
# networks that took no part in choosing -- and how often is the verdict over M animals right?
#
# **Time.** About 2 minutes on a 2-core laptop CPU (training 4 rules x 2 learning rates x 4 seeds, a
# 4 x 3 x 3 grid with 5 splits and 2 rig seeds plus one binary grid per pair of rules, and a 3 x 2 x 2
# two-photon grid); about 30 seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`.
#
# You plan a chronic two-photon experiment: the same field of view imaged over several sessions while the
# animal learns. Before building it you want to know how many cells per area to track, how clean the traces
# must be, how many imaging sessions to spread over learning, and how many animals to record.
# `power_analysis` simulates exactly that on virtual networks: every recorded network is one "animal", the
# rig keeps `units` neurons per layer, adds noise of SD `noise` (relative to each measure's SD), observes
# `sessions` evenly spaced checkpoints, and a decoder cross-validated *by animal* names the rule.
#
# **Two kinds of rig.** The paper-equivalent rigs (`paper`, `paper-absolute`, `paper-quarter-synapses`,
# `paper-gaussian`) subsample units and add Gaussian noise; the grid shares their work and is fast. The
# modality presets of `protocols/rigs/` (`2p-gcamp6s`: spikes, indicator kinetics and saturation, shot noise,
# neuropil, ROI tracking; `neuropixels-chronic`: spike sorting and unit tracking; `em-snapshot`...) are applied
# as they are at every grid point: slower, and they measure only what the modality measures (activity, or
# weights for EM). Section 5 runs one.

# %%
import shutil

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, REPO, TINY
from virtual_lab.protocol import parse_protocol

# %% [markdown]
# ## 1. Train a population of "animals" and record them
#
# Each network is one animal. Four rules (SGD with momentum, Adam, feedback alignment, information
# alignment), two learning rates (half and twice each rule's base rate), several seeds per rule and rate,
# checkpoints over learning = candidate imaging sessions.

# %%
protocol = parse_protocol({
    "name": "power-tutorial",
    "output_dir": (OUTPUT / "recordings").as_posix(),
    "seed": 6,
    "network": {"hidden_sizes": [16] if TINY else [64, 64]},
    "training": {"n_epochs": 2 if TINY else 10, "n_checkpoints": 4 if TINY else 11},
    "sweep": {"rules": ["sgdm", "adam", "fa", "ia"], "learning_rate_scales": [0.5, 2.0], "n_seeds": 2 if TINY else 4},
})

from virtual_lab.pipeline import train_and_record

ground_truths, paths, counts = train_and_record(protocol, progress=False)
recordings = paths[0].parent.parent
print(counts, "->", recordings)
print(sorted({g.rule for g in ground_truths}), "layers:", ground_truths[0].layer_names)

# %% [markdown]
# ## 2. Which rigs can the power analysis simulate?

# %%
from virtual_lab.analysis.power import RIG_PRESETS, power_analysis

from virtual_lab.rig.presets import available_presets, load_preset

for name, preset in RIG_PRESETS.items():
    print(f"{name:>24}: {preset['description']}")
for name in available_presets():
    print(f"{name:>24}: {load_preset(name).description}")

# %% [markdown]
# ## 3. Run the grid
#
# units per layer x noise SD x sessions. `cap_units=True` lets a layer smaller than a units value record all
# its cells (otherwise that value is skipped with a message). The decoder is a linear SVM; accuracy is per
# animal with a bootstrap interval over animals.
#
# **Chosen on some animals, confirmed on others.** Picking the smallest grid point whose cross-validated
# accuracy reaches the target, and quoting that accuracy, is optimistic: among many points, the one that
# looks best is partly the one whose estimate was lucky. So the networks are split once (half of each
# rule's, `confirm_fraction=0.5`): the grid is cross-validated on the *selection* half and the protocol
# chosen there; a decoder trained on that half then decodes the *confirmation* half, which took no part in
# the choice. That accuracy, with a Wilson interval over the confirmation animals, is the answer.
#
# **A condition you did not simulate.** Your animal's learning rate is not one of the simulated ones.
# `holdout="learning_rate_scale"` leaves each simulated rate out of training in turn and tests the
# recommended protocol on that rate's confirmation networks: the accuracy for an unsimulated condition.

# %%
if TINY:
    grid = dict(units=[4, 16], noise=[0.0, 1.0], sessions=[2, 4], n_splits=2, rig_seeds=1)
else:
    grid = dict(units=[5, 10, 30, 60], noise=[0.0, 1.0, 2.0], sessions=[3, 6, 11], n_splits=5, rig_seeds=2)
result = power_analysis(recordings, rig="paper", target=0.9, cap_units=True, seed=0, holdout="learning_rate_scale",
                        n_jobs=1 if TINY else -1, **grid)
for entry in result.skipped:
    print(f"skipped {entry['parameter']}={entry['value']}: {entry['reason']}")
print("chance:", {k: round(v, 3) for k, v in result.chance.items()})
print(len(result.selection_networks), "selection and", len(result.confirmation_networks), "confirmation networks")
print()
print(result.answer_text())

# %% [markdown]
# ## 4. The report
#
# `write_power_report` writes a tidy table (one row per grid point x rig seed x split), a JSON summary,
# the heatmap (selection accuracies, the recommended cell boxed), accuracy-vs-units and accuracy-vs-sessions
# curves (the confirmed accuracy as a star), the confirmation networks' confusion, the M-animals curve, the
# pairs and the held-out levels, and the same answers as one HTML page and as Markdown.
# `virtual-lab power RECORDINGS --units ... --noise ... --sessions ... --holdout learning_rate_scale` does the same.

# %%
from virtual_lab.analysis.power_report import write_power_report

report = write_power_report(result, OUTPUT / "power")
for key, path in report.items():
    print(f"{key:>10}: {path}")
shutil.copy(report["heatmap"], OUTPUT / "06_power_heatmap.png")

# Accuracy versus units at the lowest noise, one line per number of sessions
fig, ax = plt.subplots(figsize=(4.5, 3))
for k, n_sessions in enumerate(result.sessions):
    acc = result.accuracy[:, 0, k]
    low, high = result.ci_low[:, 0, k], result.ci_high[:, 0, k]
    ax.errorbar(result.units, acc, yerr=[acc - low, high - acc], marker="o", capsize=3,
                label=f"{n_sessions} sessions")
ax.axhline(result.target, color="k", ls="--", lw=0.8, label="target")
ax.axhline(1 / len(result.classes), color="grey", ls=":", lw=0.8, label="chance")
ax.set_xscale("log")
ax.set_xlabel("neurons recorded per layer")
ax.set_ylabel("rule accuracy (per animal)")
ax.set_title(f"noise SD {result.noise[0]:g}", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUTPUT / "06_accuracy_vs_units.png", dpi=100)

# %% [markdown]
# ## 5. Pairs of rules, and M animals
#
# Often the question is narrower: two candidate rules. The pairwise table above answers it for every pair at
# once -- a decoder trained on the two rules only, its own smallest protocol, confirmed -- and says which pairs
# are easy and which are not. `rules=["fa", "ia"]` (`--pair fa,ia`) asks one pair alone and gives the same
# answer on the same networks.
#
# And the experiment records several animals. If M animals share one rule, each one's prediction is combined
# through the confirmation networks' confusion matrix (the likelihood of each predicted rule under each true
# rule) into a posterior over rules; the table gives the probability that its highest rule is the right one.

# %%
for p in result.pairs:
    print(f"{p['label']:>8}: {p['units']:>3} neurons, {p['sessions']} sessions, noise {p['noise']:g} -> "
          f"confirmed {p['confirmed']['accuracy']:.2f} ({p['category']})")
for row in result.animals["table"]:
    print(f"{row['animals']:>2} animals: P(verdict right) = {row['p_correct']:.3f} "
          f"[{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")

# %% [markdown]
# ## 6. Through a two-photon rig
#
# The same question through `2p-gcamp6s`: each network's units fire Poisson spikes, GCaMP6s turns them into
# dF/F with its kinetics and saturation, the ROIs are tracked across imaging sessions (some lost, some
# swapped), and shot noise at the CASCADE noise level is added. Here the noise axis sets that noise level
# (`noise_param="calcium.noise_level"`, %/sqrt(s): about 1 excellent, 3-4 decent, > 5 poor). Only the
# activity observables remain: a calcium rig does not see weights.

# %%
if TINY:
    grid_2p = dict(units=[4, 16], noise=[2.0], sessions=[2], n_splits=2, rig_seeds=1)
else:
    grid_2p = dict(units=[10, 30, 60], noise=[1.0, 4.0], sessions=[3, 6], n_splits=5, rig_seeds=1)
imaging = power_analysis(recordings, rig="2p-gcamp6s", noise_param="calcium.noise_level", target=0.9,
                         cap_units=True, seed=0, n_jobs=1 if TINY else -1, pairs=False, **grid_2p)
print("observables:", imaging.provenance["observables"])
print(imaging.sentence)

# %% [markdown]
# **Reading it for your experiment.** The recommendation names the smallest grid point whose accuracy
# reaches the target on the selection networks, and gives the accuracy there on networks that took no part
# in choosing it; the held-out answer says what to expect when your animal's condition was not simulated,
# the pairs table which rules are easy to tell apart, and the M-animals table how many animals make the
# verdict reliable. Every sentence names its assumptions. With `TINY` the networks are barely trained and
# the numbers mean nothing; run it untiny, then widen the grid around the recommendation.
