# %% [markdown]
# # 08 · Your own data: calibrate the rig from a pilot, plan the study, ask a saved decoder
#
# **Question.** I have a few pilot imaging sessions of my own. What does *my* rig look like to the
# simulator, how many cells and sessions would my study need with it, and what does a decoder trained in
# silico say about my recording -- and should I believe it?
#
# **Time.** About 1.5 minutes on a 2-core laptop CPU shared with other jobs (training 2 rules x 10 seeds, a
# 2 x 1 x 1 power grid through the calibrated rig, one decoder saved, three recordings identified); about 35
# seconds with `VIRTUAL_LAB_TUTORIAL_TINY=1`.
#
# Three commands close the loop from a pilot recording to an answer about it:
#
# 1. `virtual-lab calibrate PILOT.nwb ... --output my-rig.toml` measures the rig from NWB files any tool
#    wrote: ROIs per session, number of sessions, frame rate, the CASCADE noise level, response reliability;
#    what it cannot measure keeps the modality preset's published number, and every value says where it came
#    from;
# 2. `virtual-lab power RECORDINGS --rig my-rig.toml` plans the study through that rig, and
#    `virtual-lab decode RECORDINGS --rig my-rig.toml --save model.skops` stores a decoder trained through it;
# 3. `virtual-lab identify RECORDING.nwb --model model.skops` asks the saved decoder about a recording: first
#    whether its observables lie inside the simulated population at all, then the posterior over rules.

# %%
import datetime as dt
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from _common import OUTPUT, TINY
from virtual_lab.cli import main

# %% [markdown]
# ## 1. A pilot recording with a known noise level and ROI count
#
# A stand-in for your own files, written with pynwb the way Suite2p or CaImAn exports are: one file per
# imaging session of one mouse (`subject_id`), frame-by-frame dF/F at 30 Hz in a `DfOverF`
# `RoiResponseSeries` with its `PlaneSegmentation`, and a trials table naming the image shown in each trial
# (8 images, 3 repeats each, every session). The frame noise is white Gaussian with the SD that gives a
# CASCADE noise level of 3 %/sqrt(s) ("decent"), so we know what calibration should find.

# %%
N_ROIS, NOISE_LEVEL, N_SESSIONS, FRAME_RATE = 12, 3.0, 4, 30.0


def write_pilot(path, day, rng, n_stimuli=8, n_repeats=3, trial_s=2.0, window_s=1.0):
    """One imaging session: ROI traces = tuned responses in each trial's window + white frame noise."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel, RoiResponseSeries

    sd = NOISE_LEVEL * np.sqrt(FRAME_RATE) / (100 * np.sqrt(2) * 0.6745)  # CASCADE nu of white noise of SD sd
    order = rng.permutation(np.tile(np.arange(n_stimuli), n_repeats))
    t = np.arange(int(len(order) * trial_s * FRAME_RATE)) / FRAME_RATE
    tuning = rng.gamma(1.5, 0.2, size=(n_stimuli, N_ROIS))   # mean dF/F of each ROI to each image
    trace = rng.normal(0.0, sd, size=(len(t), N_ROIS))
    for k, image in enumerate(order):
        trace[(t >= k * trial_s) & (t < k * trial_s + window_s)] += tuning[image]
    nwb = NWBFile(session_description="pilot two-photon session (mock)", identifier=f"pilot-day{day}",
                  session_start_time=dt.datetime(2024, 3, 1, 9, tzinfo=dt.timezone.utc) + dt.timedelta(days=day),
                  subject=Subject(subject_id="mouse1", species="Mus musculus", sex="F", age="P90D"))
    plane = nwb.create_imaging_plane(
        name="plane0", optical_channel=OpticalChannel(name="green", description="GCaMP6s", emission_lambda=510.0),
        device=nwb.create_device(name="two-photon microscope"), excitation_lambda=920.0, imaging_rate=FRAME_RATE,
        indicator="GCaMP6s", location="V1 layer 2/3")
    segmentation = ImageSegmentation()
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="ROIs", imaging_plane=plane)
    for k in range(N_ROIS):
        rois.add_roi(pixel_mask=[(k % 20, k // 20, 1.0)])
    ophys = nwb.create_processing_module(name="ophys", description="processed imaging")
    ophys.add(segmentation)
    dff = DfOverF()
    ophys.add(dff)
    dff.add_roi_response_series(RoiResponseSeries(
        name="RoiResponseSeries", data=trace.astype(np.float32), unit="n.a.", rate=FRAME_RATE, starting_time=0.0,
        rois=rois.create_roi_table_region(region=list(range(N_ROIS)), description="all ROIs")))
    nwb.add_trial_column(name="stimulus", description="image shown")
    for k, image in enumerate(order):
        nwb.add_trial(start_time=k * trial_s, stop_time=k * trial_s + window_s, stimulus=f"image{image}")
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


rng = np.random.default_rng(8)
(OUTPUT / "pilot").mkdir(exist_ok=True)
pilots = [write_pilot(OUTPUT / "pilot" / f"mouse1_day{2 * k}.nwb", 2 * k, rng) for k in range(N_SESSIONS)]
print(len(pilots), "pilot sessions:", ", ".join(p.name for p in pilots))

# %% [markdown]
# ## 2. Calibrate the rig from the pilot
#
# `calibrate` finds the ROI count, the number of sessions and the noise level it was given, and says for
# every value whether it was measured (and from which object, with which method) or kept from `2p-gcamp6s`.

# %%
rig = OUTPUT / "my-rig.toml"
assert main(["calibrate", *map(str, pilots), "--output", str(rig), "-q"]) == 0

from virtual_lab.rig.presets import load_preset

calibrated = load_preset(rig)
settings = calibrated.parameters()
print(f"ROIs per session: {settings['units.n_units']} (truth {N_ROIS}); sessions: "
      f"{settings['checkpoints.n_checkpoints']} (truth {N_SESSIONS}); noise level: "
      f"{settings['calcium.noise_level']:.2f} %/sqrt(s) (truth {NOISE_LEVEL})")

# %% [markdown]
# ## 3. Simulated animals, and the power analysis through the calibrated rig
#
# A small population: two rules (SGD with momentum and feedback alignment), several seeds each. The power
# analysis observes them through `my-rig.toml` -- your ROI count, your noise level, your number of sessions --
# and says how often the rule is named right (on networks that took no part in choosing the protocol).

# %%
from virtual_lab.pipeline import train_and_record
from virtual_lab.protocol import parse_protocol

protocol = parse_protocol({
    "name": "own-data-tutorial", "output_dir": (OUTPUT / "recordings").as_posix(), "seed": 8,
    "network": {"hidden_sizes": [16] if TINY else [32, 32]},
    "training": {"n_epochs": 2 if TINY else 10, "n_checkpoints": 6},
    "sweep": {"rules": ["sgdm", "fa"], "n_seeds": 4 if TINY else 10},
})
ground_truths, paths, counts = train_and_record(protocol, progress=False)
recordings = paths[0].parent.parent
print(counts, "->", recordings)

from virtual_lab.analysis.power import power_analysis

power = power_analysis(recordings, rig=str(rig), noise_param="calcium.noise_level", target=0.9, cap_units=True,
                       units=[4, N_ROIS], noise=[round(settings["calcium.noise_level"], 2)], sessions=[N_SESSIONS],
                       n_splits=2 if TINY else 5, rig_seeds=1, pairs=False, seed=0, n_jobs=1)
print(power.sentence)

# %% [markdown]
# ## 4. Save a decoder trained through the calibrated rig, and ask it about recordings
#
# `decode --save` refits the decoder on every network after the cross-validation and stores it with the
# observables it expects, the rig, the training population, its cross-validated confusion matrix and an
# out-of-distribution threshold: the 99% quantile of held-out simulated networks' distances from the
# training population. The file is skops, not pickle: loading lists its types first and refuses any outside
# a trusted list.
#
# We ask it about three recordings: a simulated animal exported through the same rig (`record`); the same
# file with its dF/F a hundred times too large (as if stored in percent without saying so); and the pilot
# itself -- mock data, not a trained network. Whether a recording's statistics fall inside the simulated range
# is for the out-of-distribution score to say, and identify says it first, before any posterior. The pilot's
# imaging plane does not say which depth of a network it would be, so `--depth` names one (without it, the
# class scores are averaged over early, middle and deep).

# %%
import h5py

model = OUTPUT / "model.skops"
assert main(["decode", str(recordings), "--rig", str(rig), "--decoder", "logistic",
             "--n-splits", "3" if TINY else "10", "--no-behaviour", "--jobs", "1", "-q",
             "--output-dir", str(OUTPUT / "decode"), "--save", str(model)]) == 0
assert main(["record", str(paths[0]), "--rig", str(rig), "--out", str(OUTPUT / "exported"), "-q"]) == 0
[exported] = sorted((OUTPUT / "exported").rglob("*.nwb"))
from virtual_lab.sessions import read_session_metadata

print("the exported animal's rule:", read_session_metadata(paths[0])["rule"])
percent = OUTPUT / "in-percent.nwb"
percent.write_bytes(exported.read_bytes())
with h5py.File(percent, "r+") as f:
    for name in f["processing/ophys/DfOverF"]:
        f[f"processing/ophys/DfOverF/{name}/data"][...] *= 100.0
for name, files, extra in (("simulated", [exported], []), ("in-percent", [percent], []),
                           ("pilot", pilots, ["--depth", "early"])):
    assert main(["identify", *map(str, files), "--model", str(model), *extra,
                 "--output-dir", str(OUTPUT / "identify" / name)]) == 0

# %% [markdown]
# ## 5. Where the recordings lie
#
# The held-out simulated networks' scores set the threshold; a recording beyond it gets a posterior that
# is an extrapolation, and the output says so before anything else. Inside the range is necessary, not
# sufficient: the detector sees only the observables the decoder sees (here 8 activity statistics per
# session), so mock data whose statistics happen to resemble a network's (the pilot, in the full run) passes
# it and gets a posterior that means nothing about learning. The check catches what cannot be a simulated
# animal -- wrong units, far more or fewer cells, another stimulus regime -- not everything that is not one.

# %%
from virtual_lab.analysis.saved_model import load_model

saved = load_model(model)
results = {name: json.loads((OUTPUT / "identify" / name / "identify.json").read_text())["recordings"][0]
           for name in ("simulated", "in-percent", "pilot")}
fig, (ax, bx) = plt.subplots(1, 2, figsize=(8, 3))
scores = saved.ood.held_out_scores
ax.hist(scores, bins=10, color="0.6", label="held-out simulated networks")
ax.axvline(saved.ood.threshold, color="k", ls="--", label=f"threshold ({100 * saved.ood.quantile:g}%)")
for color, (name, result) in zip(("C0", "C1", "C3"), results.items()):
    ax.axvline(result["out_of_distribution"]["score"], color=color, label=f"{name} recording")
ax.set_xscale("log")
ax.set_xlabel("out-of-distribution score")
ax.legend(fontsize=7)
x = np.arange(len(saved.classes))
for offset, (color, (name, result)) in zip((-0.27, 0.0, 0.27), zip(("C0", "C1", "C3"), results.items())):
    bx.bar(x + offset, [result["posterior"][c] for c in saved.classes], width=0.27, color=color, label=name)
bx.set_xticks(x, saved.classes)
bx.set_ylabel("posterior")
bx.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUTPUT / "08_identify.png", dpi=100)
for name, result in results.items():
    ood = result["out_of_distribution"]
    print(f"{name}: score {ood['score']:.1f} (threshold {ood['threshold']:.1f}), in distribution: "
          f"{ood['in_distribution']}, posterior {result['posterior']}")

# %% [markdown]
# **Reading it for your experiment.** The calibrated preset is an ordinary rig file: `power`, `decode` and
# `record` take it like a bundled preset, and its `[provenance]` says which numbers are yours and which are
# published. A recording outside the simulated range is not a verdict: make the simulation look like it
# (the rig, the number of ROIs and sessions, the stimulus set, the network family) until held-out simulated
# networks span it, then ask again. With `TINY` the networks are barely trained and the numbers mean nothing.
