# %% [markdown]
# # 05 · Decoding and controls: is it really the learning rule the decoder sees?
#
# **Question.** Which rule trained these networks, how sure can I be, and is it really the learning rule
# the decoder sees?
#
# **Time.** About 40 seconds on a 2-core laptop CPU (about 15 seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`).
#
# We train a small sweep (four rules x a few seeds), build the paper's feature table, cross-validate two
# decoders with splits *grouped by network* (no network's layers on both sides of a split), and then ask
# the reviewers' questions: which observables carry the rule, does the order over time matter, could
# task performance alone give it away, and how much do the paper's layer-level splits flatter the result?

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, REPO, TINY  # noqa: F401
from virtual_lab.protocol import parse_protocol

protocol = parse_protocol({
    "name": "tutorial05",
    "output_dir": str(OUTPUT / "recordings"),
    "seed": 5,
    "task": {"name": "digits", "n_probe": 60 if TINY else 200},
    "network": {"hidden_sizes": [16] if TINY else [64, 64]},
    "training": {"n_epochs": 2 if TINY else 10, "n_checkpoints": 5 if TINY else 11},
    "sweep": {"rules": ["sgdm", "adam", "feedback_alignment", "information_alignment"],
              "n_seeds": 3 if TINY else 8},
})
N_SPLITS = 2 if TINY else 10
print(f"{len(protocol.sweep.rules)} rules x {protocol.sweep.n_seeds} seeds; {N_SPLITS} grouped splits")

# %% [markdown]
# ## 1. Train and record, then build the feature table
#
# One example per layer of each network: the 24 admissible observables (statistics of weights,
# activations and layer-wise activity change) at every checkpoint, flattened timepoint-major, plus a
# one-hot depth position.

# %%
from virtual_lab.analysis.observables import build_feature_table
from virtual_lab.pipeline import train_and_record
from virtual_lab.rig import Recording

ground_truths, paths, counts = train_and_record(protocol, progress=False)
print(counts)
recordings = [Recording.from_ground_truth(gt) for gt in ground_truths]
table = build_feature_table(recordings)
print(f"{table.n_examples} examples (layers) from {len(np.unique(table.network_id))} networks, "
      f"{table.X.shape[1]} features")

# %% [markdown]
# ## 2. Decode with grouped splits
#
# `evaluate` reports layer-level and network-level accuracy per split (a network's layers vote through
# their mean class probabilities) and the chance level. With so few networks per rule the spread over
# splits is large: read the SEM, not only the mean.

# %%
from virtual_lab.analysis.evaluation import evaluate

results = {}
for decoder in ("random_forest", "linear_svm"):
    result = evaluate(table, decoder, n_splits=N_SPLITS, seed=0)
    results[decoder] = result
    s = result.summary()
    print(f"{decoder:>14}: network accuracy {s['network_accuracy_mean']:.2f} +/- {s['network_accuracy_sem'] or 0:.2f}"
          f", layer accuracy {s['layer_accuracy_mean']:.2f} (chance {s['chance']:.2f})")

# %%
from virtual_lab.analysis.report import plot_confusion

fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.4))
for ax, (decoder, result) in zip(axes, results.items()):
    s = result.summary()
    plot_confusion(np.array(s["network_confusion"]), s["classes"], decoder, ax)
fig.tight_layout()
fig.savefig(OUTPUT / "05_confusion.png", dpi=100)

# %% [markdown]
# ## 3. Controls: is it the rule?
#
# `run_control(name, table, decoder, recordings=...)` runs one control by name and returns labelled
# results. We use the fast linear SVM:
#
# - `weights` / `activations` / `activity_change`: one observable class alone;
# - `time_average`: the trajectory collapsed to its mean (is the *dynamics* informative?);
# - `performance_only`: loss and accuracy curves alone (could the decoder just read off how fast or how
#   well a rule learns?);
# - `family`: decode the rule family instead of the rule;
# - `layer_splits`: the paper's layer-level splits next to grouped ones (leakage of network identity).
#
# A control the data cannot support (for example too few networks) is reported and skipped.

# %%
from virtual_lab.analysis.controls import run_control

rows = [("all observables (grouped)", results["linear_svm"].summary())]
for name in ("weights", "activations", "activity_change", "time_average", "performance_only", "family",
             "layer_splits"):
    try:
        for label, result in run_control(name, table, "linear_svm", recordings=recordings, n_splits=N_SPLITS):
            if label != "grouped splits":  # the same as the first row
                rows.append((label, result.summary()))
    except ValueError as error:
        print(f"control {name} skipped: {error}")

print(f"\n{'control':<28} {'network acc':>11} {'layer acc':>9} {'chance':>7}")
for label, s in rows:
    print(f"{label:<28} {s['network_accuracy_mean']:>11.2f} {s['layer_accuracy_mean']:>9.2f} {s['chance']:>7.2f}")

fig, ax = plt.subplots(figsize=(6, 3))
labels = [label for label, _ in rows]
ax.barh(labels, [s["network_accuracy_mean"] for _, s in rows], xerr=[s["network_accuracy_sem"] or 0 for _, s in rows])
ax.axvline(rows[0][1]["chance"], color="k", ls="--", lw=0.8, label="chance (rules)")
ax.set_xlabel("network-level accuracy (linear SVM)")
ax.invert_yaxis()
ax.tick_params(axis="y", labelsize=7)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUTPUT / "05_controls.png", dpi=100)

# %% [markdown]
# ## 4. How sure? A network-level permutation test
#
# Rule labels are shuffled *across networks* (every layer of a network keeps one label) and the whole
# cross-validation is re-run per shuffle; `p = (b + 1) / (m + 1)`. With `m` permutations the smallest
# possible p is `1 / (m + 1)`, so use at least 19 for p < 0.05 (99+ for a paper).

# %%
from virtual_lab.analysis.permutation import permutation_test

test = permutation_test(table, "linear_svm", 5 if TINY else 19, n_splits=N_SPLITS, seed=0)
print(f"observed network accuracy {test.observed:.2f}; null mean {test.null_mean:.2f} "
      f"over {test.n_permutations} shuffles; p = {test.p_value:.3f}")

# %% [markdown]
# **Reading the table.** If one observable class alone matches "all observables", that is where the rule
# shows. If the time average decodes as well as the trajectory, the rule is in *where* the statistics end
# up, not in how they move. If performance alone decodes well, the decoder may be reading learning speed
# rather than the rule — compare with `performance_matched`. A large gain of layer-level over grouped
# splits is leakage. `virtual-lab decode SESSIONS --control NAME` runs the same controls from the command
# line; `decode_sessions` runs them all (plus clustering) for a protocol's report.
