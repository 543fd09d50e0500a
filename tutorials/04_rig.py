# %% [markdown]
# # 04 · The virtual rig: what does a recording do to a unit's responses?
#
# **Question.** What does a real recording rig do to a unit's responses, stage by stage, and what
# survives?
#
# **Time.** About 15 seconds on a 2-core laptop CPU (a few seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`).
#
# A ground-truth session holds every unit, every synapse, every checkpoint, without noise. A rig sees
# less: a *view* (`Recording`) narrowed by pure, seeded transforms. We follow one unit of one network
# through the paper's transforms (`keep_units`, `add_noise`, `keep_checkpoints`) and then through the
# modality presets in `protocols/rigs` (Neuropixels spike counts, two-photon dF/F, an EM snapshot).

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, REPO, TINY  # noqa: F401 (REPO: the presets live in REPO / 'protocols' / 'rigs')
from virtual_lab.lab.tasks import load_digits_task
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population

n_probe = 60 if TINY else 200
task = load_digits_task(n_probe=n_probe)
spec = RunSpec(rule="sgdm", learning_rate=0.02, batch_size=64, n_epochs=2 if TINY else 20, seed=3,
               layer_sizes=(64, 32, 32, 10) if TINY else (64, 128, 128, 10), n_probe=n_probe,
               n_checkpoints=8 if TINY else 21)
(gt,) = train_population([spec], task)
print(gt.rule, gt.layer_names, "checkpoints at steps", gt.checkpoint_steps.tolist())

# %% [markdown]
# ## 1. The ground truth: one unit, every checkpoint
#
# `Recording.from_ground_truth` is the full observation. We pick the unit of `fc1` whose tuning changes
# most over training and plot its response to each probe stimulus (sorted by digit class) at the first
# and last checkpoint.

# %%
from virtual_lab.rig import Recording, add_noise, keep_checkpoints, keep_units

layer = "fc1"
full = Recording.from_ground_truth(gt)
act = full.activations(layer)  # (T, S, U)
unit = int(np.argmax(np.abs(act[-1] - act[0]).mean(axis=0)))
order = np.argsort(gt.probe_labels, kind="stable")  # probe stimuli grouped by digit class
print(f"following {layer} unit {unit}; full recording: {act.shape[0]} checkpoints x {act.shape[1]} probes x "
      f"{act.shape[2]} units")


def unit_trace(rec, unit=unit, layer=layer):
    """Responses of one source unit in a recording, or None if the rig did not keep it."""
    kept = rec.unit_indices[layer]
    if unit not in kept:
        return None
    return rec.activations(layer)[:, :, int(np.flatnonzero(kept == unit)[0])]


def panel(ax, rec, title):
    trace = unit_trace(rec)
    if trace is None:
        ax.text(0.5, 0.5, "unit not recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        steps = rec.checkpoint_steps
        ax.plot(trace[0][order], lw=0.8, label=f"step {steps[0]}")
        ax.plot(trace[-1][order], lw=0.8, label=f"step {steps[-1]}")
        ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("probe stimulus (by class)", fontsize=7)


# %% [markdown]
# ## 2. The paper's transforms, one at a time
#
# Each transform returns a new view and appends a provenance entry (its parameters and resolved seed).
# `keep_units` chooses units by (seed, layer) only, so changing the noise later never changes which units
# are kept; `add_noise(relative=True)` adds Gaussian noise in units of the measure's SD; `keep_checkpoints`
# keeps a few sessions over learning (first and last included with `"even"`).

# %%
# keep the followed unit: search for a seed whose 25% sample contains it (rigs do not choose, tutorials may)
sampled = next(keep_units(full, fraction=0.25, seed=s) for s in range(200)
               if unit in keep_units(full, fraction=0.25, seed=s).unit_indices[layer])
noisy = add_noise(sampled, 0.5, relative=True, seed=1)
sparse = keep_checkpoints(noisy, min(7, gt.n_checkpoints - 2))
stages = [("ground truth", full), ("keep_units(fraction=0.25)", sampled),
          ("+ add_noise(0.5 SD, relative)", noisy), (f"+ keep_checkpoints({sparse.n_checkpoints})", sparse)]

fig, axes = plt.subplots(1, len(stages), figsize=(3 * len(stages), 2.8), sharey=True)
for ax, (title, rec) in zip(axes, stages):
    panel(ax, rec, title)
axes[0].set_ylabel(f"{layer} unit {unit} response")
fig.tight_layout()
fig.savefig(OUTPUT / "04_paper_transforms.png", dpi=100)
for step in sparse.provenance:
    print(step)

# %% [markdown]
# What survives: the unit's tuning (which stimuli drive it) and its change over learning, blurred by noise
# and seen at fewer sessions; most units of the layer are simply gone (only 25% are kept).
#
# ## 3. Modality presets
#
# A preset is a commented TOML recipe (`protocols/rigs/<name>.toml`) applied in a fixed stage order:
# checkpoints -> units -> spiking -> sorting -> tracking -> calcium -> synapses -> em -> spines -> noise.
# Every stage gets its own seed derived from one rig seed. `apply_preset` accepts overrides (here fewer
# checkpoints when the session has fewer than the preset asks for).

# %%
from virtual_lab.rig import apply_preset, available_presets, load_preset

print("bundled presets:", available_presets())
for name in ("neuropixels-acute", "2p-gcamp6s", "em-snapshot"):
    preset = load_preset(name)
    print(f"\n{name}: {preset.description}")
    print("   stages:", list(preset.stages))

n_sessions = min(7, gt.n_checkpoints)
ephys = apply_preset(gt, "neuropixels-acute", seed=0, n_checkpoints=n_sessions)
imaging = apply_preset(gt, "2p-gcamp6s", seed=0, n_checkpoints=n_sessions)
em = apply_preset(gt, "em-snapshot", seed=0)
for rec in (ephys, imaging, em):
    print(f"{rec.provenance[0]['name']:>18}: kind={rec.activity_kind!r} measures={rec.measures} "
          f"checkpoints={rec.n_checkpoints} units kept in {layer}={rec.n_units(layer)}")

# %% [markdown]
# One figure per modality: the same unit as spike counts (acute Neuropixels: every session is a new
# insertion, so a "unit slot" holds a different neuron at each session), as mean dF/F (two-photon,
# GCaMP6s: slow, saturating, noisy), and the layer's synapses as an EM volume sees them at the last
# checkpoint (sizes without sign, detection errors) against the true weights.

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 2.9))
for ax, rec, title, ylabel in ((axes[0], ephys, "neuropixels-acute", "spike count / presentation"),
                               (axes[1], imaging, "2p-gcamp6s", "mean dF/F")):
    trace = unit_trace(rec)
    slot = 0 if trace is None else None
    if trace is None:  # the unit was not kept by this rig: show the first recorded slot instead
        trace = rec.activations(layer)[:, :, slot]
    for t in (0, rec.n_checkpoints - 1):
        ax.plot(trace[t][order], lw=0.8, label=f"step {rec.checkpoint_steps[t]}")
    ax.set_title(title if slot is None else f"{title} (slot {slot})", fontsize=8)
    ax.set_xlabel("probe stimulus (by class)", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.legend(fontsize=6)

true_w = full.weights(layer)[-1][em.synapse_indices[layer]]
seen = em.weights(layer)[0][: len(true_w)]  # detected synapses first, then false positives
axes[2].scatter(true_w, seen, s=3, alpha=0.5)
axes[2].set_xlabel("true weight (last checkpoint)", fontsize=7)
axes[2].set_ylabel("EM synapse size", fontsize=7)
axes[2].set_title(f"em-snapshot ({em.weights(layer).shape[1]} synapses seen)", fontsize=8)
fig.tight_layout()
fig.savefig(OUTPUT / "04_modalities.png", dpi=100)

# %% [markdown]
# ## 4. Provenance: what exactly was done
#
# Every recording carries its provenance: the preset header (name, seed, every parameter with defaults
# filled in) and one entry per applied stage with its resolved seed. It is written into exported NWB files.

# %%
for rec in (ephys, imaging, em):
    header, *steps = rec.provenance
    print(f"\n{header['name']} (rig seed {header['seed']}):")
    for step in steps:
        shown = {k: v for k, v in step.items() if k != "step"}
        print(f"  {step['step']:<16} {shown}")

# %% [markdown]
# **Export.** The same observation, written as NWB in each modality's standard types (units table for
# spikes, `RoiResponseSeries` for dF/F, a synapse table for EM), from the command line:
#
# ```
# virtual-lab record SESSIONS --rig neuropixels-acute --blind
# ```
#
# `--blind` gives subjects opaque ids and removes the rule from the files (the key goes to a separate file),
# so someone else can try to decode the rule. **Try next:** `information_loss(gt, "2p-gcamp6s")` from
# `virtual_lab.analysis.information`, or raise `calcium__noise_level` in `apply_preset`.
