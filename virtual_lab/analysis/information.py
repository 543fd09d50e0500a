"""How much each stage of a rig degrades the learning signal in one session's observables.

For a preset with stages ``s1, s2, ...`` the session is observed through the growing prefixes
``s1``, ``s1+s2``, ... each ``n_repeats`` times with different rig seeds. For every observable of every layer
(its trajectory over the kept checkpoints), the *feature SNR* is the variance over checkpoints of the
across-seed mean trajectory divided by the mean over checkpoints of the across-seed variance: how large the
change over learning is compared with what the rig's randomness (which units, which spikes, which noise) adds.
A deterministic prefix has infinite SNR. Observables are those the stage prefix still measures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from virtual_lab.analysis.observables import ALL_OBSERVABLES, compute_observables
from virtual_lab.rig.presets import STAGES, RigPreset, apply_preset, load_preset
from virtual_lab.seeding import derive_seed
from virtual_lab.validation import check_int


def information_loss(ground_truth, preset: RigPreset | str, *, n_repeats: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Feature SNR of the observables after each cumulative stage of a preset.

    Parameters
    ----------
    ground_truth : GroundTruth
    preset : RigPreset or str
    n_repeats : int, default=5
        Rig seeds per stage prefix (>= 2).
    seed : int, default=0

    Returns
    -------
    list of dict
        One row per stage prefix, in order: ``stage`` (the stage added), ``n_features``, ``median_snr``,
        ``fraction_snr_above_1`` (over observables x layers with a finite, non-constant trajectory).
    """
    n_repeats = check_int("n_repeats", n_repeats, low=2)
    preset = load_preset(preset)
    stages = [s for s in STAGES if s in preset.stages]
    rows = []
    for k, stage in enumerate(stages, start=1):
        partial = RigPreset(preset.name, preset.description, {s: preset.stages[s] for s in stages[:k]}, preset.path)
        runs = []
        for r in range(n_repeats):
            rec = apply_preset(ground_truth, partial, seed=derive_seed(seed, r))
            observables = [o for o in ALL_OBSERVABLES if o.measure in rec.measures]
            values = compute_observables(rec, observables)
            runs.append(np.concatenate([values[layer] for layer in rec.layer_names], axis=1))  # (T, F)
        stack = np.stack(runs)                                    # (R, T, F)
        signal = np.nanvar(np.nanmean(stack, axis=0), axis=0)     # (F,)
        noise = np.nanmean(np.nanvar(stack, axis=0), axis=0)      # (F,)
        ok = np.isfinite(signal) & np.isfinite(noise) & (signal > 0)
        random = noise[ok] > 1e-10 * signal[ok]  # below that, the spread is float rounding: deterministic
        snr = np.full(int(ok.sum()), np.inf)
        snr[random] = signal[ok][random] / noise[ok][random]
        rows.append({"stage": stage, "n_features": int(ok.sum()),
                     "median_snr": float(np.median(snr)) if snr.size else float("nan"),
                     "fraction_snr_above_1": float(np.mean(snr > 1)) if snr.size else float("nan")})
    return rows
