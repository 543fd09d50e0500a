"""Power analysis: how many neurons, at what noise, over how many sessions, in how many animals.

For every point of a grid -- units recorded per layer x measurement noise x number of sessions (checkpoints
observed over learning) -- the sessions are observed through the rig (several rig seeds), the paper's
observables are extracted, the decoder is cross-validated with splits grouped by network, and the accuracy
gets a network-level bootstrap interval. From the grid come the answers an experimentalist asks for: the
smallest number of units that reaches a target accuracy at each noise level and session count (point
estimate, conservative lower-bound estimate, and its own bootstrap interval), the number of independent
test animals needed before that accuracy can be certified at all, and which rule pairs stay confused.

How the work is shared across the grid
--------------------------------------
The rig is the paper-equivalent one of :func:`virtual_lab.rig.observe` (same seeds, same values): for one
rig seed and network, the units kept at ``n`` units are the first ``n`` of one permutation per layer (nested
subsets), the noise is one standard-normal draw per (seed, layer, checkpoint, measure) scaled by each noise
level, and the observables of every checkpoint are computed once and then indexed for every session count.
So each session is read once (in worker processes, a bounded number at a time), reduced to a small
``(rig seeds, units, noise, layers, checkpoints, observables)`` float32 array, and dropped; memory grows
with the number of networks only through those arrays. :func:`compute_grid_features` is that reduction;
``tests/test_power.py`` checks it equals ``build_feature_table(observe(...))`` at every grid point.

Modality presets (spiking, sorting, tracking, calcium imaging, EM, spine imaging) go through the general
path, :func:`compute_preset_grid_features`: at every (rig seed, units, noise, sessions) point the session is
observed with :func:`virtual_lab.rig.presets.apply_preset` itself -- the grid's units replace the preset's
``[units]`` stage, its sessions the ``[checkpoints]`` count, and its noise axis sets one preset parameter
(extra Gaussian noise relative to each measure's SD, ``noise.sd``, by default; or e.g.
``calcium.noise_level``) -- so nothing is shared but nothing is approximated either. It costs one preset
application per grid point and session; the observables are those the modality measures.

Statistics
----------
- **Accuracy** at a grid point: network level (a network's layers are combined into one prediction, see
  :func:`virtual_lab.analysis.evaluation.evaluate`), as the mean over networks of each network's fraction
  of correct predictions over all the splits and rig seeds in which it was a test network.
- **Interval**: percentile bootstrap over networks (resampled with replacement within each rule), the same
  resamples at every grid point, so intervals of derived quantities (the smallest units reaching the target)
  come from the same resamples. Layers, stimuli and samples are never resampled: the network is the
  experimental unit.
- **Chance**: with ``k`` rules and ``n`` networks, the central interval of ``Binomial(n, 1/k) / n`` and the
  one-sided p < .05 threshold (the smallest accuracy a binomial test over ``n`` networks calls better than
  chance).
- **Animals to certify**: the smallest number of independent test networks whose 95% Wilson interval at the
  observed accuracy has a lower bound at or above the target (none when the observed accuracy is not above
  the target).

The coverage of the interval is checked by ``scripts/power_coverage.py`` (fresh networks and fresh rig
seeds; see the README).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import logging
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import (
    ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, Observable, compute_observables, feature_names_for,
)
from virtual_lab.types import DEPTH_POSITIONS, GroundTruth
from virtual_lab.rig.recording import _MEASURE_CODE, Recording
from virtual_lab.seeding import derive_seed, resolve_seed

logger = logging.getLogger(__name__)

__all__ = ["PowerResult", "RIG_PRESETS", "compute_grid_features", "compute_preset_grid_features", "power_analysis",
           "wilson_interval",
           "animals_to_certify", "binomial_chance", "observe_seeds"]

#: Rig settings built into the power analysis (the paper-equivalent rig of :func:`virtual_lab.rig.observe`).
#: ``units``, ``noise`` and ``sessions`` come from the grid; these fix everything else.
RIG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"description": "paper-equivalent rig (Nayebi et al. 2020 obfuscate_tensor): a subset of units, "
                             "every synapse, Gaussian noise relative to each measure's SD, evenly spaced sessions",
              "synapse_fraction": None, "noise_relative": True},
    "paper-absolute": {"description": "as 'paper' but with absolute noise SD (same units as the recordings)",
                       "synapse_fraction": None, "noise_relative": False},
    "paper-quarter-synapses": {"description": "as 'paper' with 25% of synapses measured",
                               "synapse_fraction": 0.25, "noise_relative": True},
}

_SHORT = {"feedback_alignment": "fa", "information_alignment": "ia", "kolen_pollack": "kp",
          "direct_feedback_alignment": "dfa", "sign_symmetry": "ss", "node_perturbation": "np"}


# -- small statistics ------------------------------------------------------------------------------------------------
def wilson_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Parameters
    ----------
    accuracy : float
        Observed proportion in [0, 1].
    n : int
        Number of independent trials (test networks), >= 1.
    confidence : float, default=0.95

    Returns
    -------
    (float, float)

    Examples
    --------
    >>> [round(x, 3) for x in wilson_interval(0.9, 40)]
    [0.769, 0.96]
    """
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    denominator = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denominator
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def animals_to_certify(accuracy: float, target: float, confidence: float = 0.95,
                       max_animals: int = 1_000_000) -> int | None:
    """Smallest number of independent test networks whose Wilson lower bound at ``accuracy`` reaches ``target``.

    Parameters
    ----------
    accuracy : float
        The accuracy expected (observed) at the protocol.
    target : float
    confidence : float, default=0.95
    max_animals : int, default=1_000_000

    Returns
    -------
    int or None
        None when ``accuracy <= target`` (no number of animals certifies it) or more than ``max_animals``.

    Examples
    --------
    >>> animals_to_certify(1.0, 0.9)
    35
    """
    if not accuracy > target:
        return None
    if wilson_interval(accuracy, max_animals, confidence)[0] < target:
        return None
    low, high = 1, max_animals  # the lower bound grows with n at fixed accuracy: bisect
    while low < high:
        middle = (low + high) // 2
        if wilson_interval(accuracy, middle, confidence)[0] >= target:
            high = middle
        else:
            low = middle + 1
    return low


def binomial_chance(n_networks: int, n_classes: int, confidence: float = 0.95) -> dict[str, float]:
    """Chance level of network-level accuracy over ``n_networks`` networks and ``n_classes`` balanced rules.

    Returns
    -------
    dict
        ``chance`` (1/k), ``low`` and ``high`` (central ``confidence`` interval of Binomial(n, 1/k)/n) and
        ``threshold`` (smallest accuracy with one-sided binomial p < 1 - confidence).

    Examples
    --------
    >>> binomial_chance(20, 4)["threshold"]
    0.45
    """
    from scipy.stats import binom

    p0 = 1.0 / n_classes
    alpha = 1 - confidence
    low, high = binom.ppf([alpha / 2, 1 - alpha / 2], n_networks, p0)
    threshold = (binom.isf(alpha, n_networks, p0) + 1) / n_networks
    return {"chance": p0, "low": float(low) / n_networks, "high": float(high) / n_networks,
            "threshold": float(min(threshold, 1.0))}


# -- parameter checks ------------------------------------------------------------------------------------------------
def _int_list(name: str, values: Iterable[Any], minimum: int) -> tuple[int, ...]:
    values = list(values) if not isinstance(values, (str, bytes)) else None
    if not values:
        raise ValueError(f"{name} must be a non-empty list of integers >= {minimum}, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values}")
    return tuple(sorted(int(v) for v in values))


def _float_list(name: str, values: Iterable[Any]) -> tuple[float, ...]:
    values = list(values) if not isinstance(values, (str, bytes)) else None
    if not values:
        raise ValueError(f"{name} must be a non-empty list of numbers >= 0, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must hold finite numbers >= 0, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values}")
    return tuple(sorted(float(v) for v in values))


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def short_rule(rule: str) -> str:
    """Short lower-case name used in sentences (``feedback_alignment`` -> ``fa``)."""
    return _SHORT.get(rule, rule)


def _resolve_rules(requested: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...]:
    from virtual_lab.lab.rules import ALIASES

    if requested is None:
        return tuple(sorted(available))
    if isinstance(requested, str):
        requested = [part for part in requested.split(",") if part]
    resolved = []
    for name in requested:
        full = ALIASES.get(name, name)
        if full not in available:
            names = list(available) + [short for short, full_name in ALIASES.items() if full_name in available]
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"rules: {name!r} is not a rule of these recordings; recorded rules: "
                             f"{', '.join(sorted(available))}.{hint}")
        if full in resolved:
            raise ValueError(f"rules: {name!r} is given twice")
        resolved.append(full)
    if len(resolved) < 2:
        raise ValueError(f"rules must name at least 2 rules to tell apart, got {list(requested)}")
    return tuple(sorted(resolved))


def resolve_rig(rig: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings of a rig preset for the power analysis.

    Parameters
    ----------
    rig : str, dict or None
        A name from :data:`RIG_PRESETS` (or from :mod:`virtual_lab.rig.presets` once that module offers
        ``load_preset``), a dict with ``synapse_fraction`` / ``noise_relative``, or None for ``"paper"``.

    Returns
    -------
    dict
        ``name``, ``description``, ``synapse_fraction`` (None: all), ``noise_relative``.
    """
    if rig is None:
        rig = "paper"
    if isinstance(rig, Mapping):
        unknown = sorted(set(rig) - {"name", "description", "synapse_fraction", "noise_relative", "noise_measures",
                                     "seeding"})
        if unknown:
            raise ValueError(f"rig: unknown setting {unknown[0]!r}; allowed: name, description, synapse_fraction, "
                             f"noise_relative")
        settings = {"name": "custom", "description": "custom rig", "synapse_fraction": None, "noise_relative": True,
                    "noise_measures": ("weight", "act", "gradavg"), "seeding": "observe"}
        settings.update(rig)
        if settings["synapse_fraction"] is not None:
            fraction = settings["synapse_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
                raise ValueError(f"rig synapse_fraction must be a number in (0, 1], got {fraction!r}")
        return settings
    if not isinstance(rig, str):
        raise TypeError(f"rig must be a preset name or a dict, got {type(rig).__name__}")
    if rig in RIG_PRESETS:
        return {"name": rig, "noise_measures": ("weight", "act", "gradavg"), "seeding": "observe", **RIG_PRESETS[rig]}
    available = list(RIG_PRESETS)
    # the rig presets of virtual_lab.rig.presets: those made of paper-equivalent stages take the shared fast
    # path, modality presets the general one (see the module docstring); a preset file path works too
    extra = _external_presets()
    if rig in extra:
        return extra[rig]
    if rig.endswith(".toml") and Path(rig).is_file():
        return general_rig(rig)
    available += list(extra)
    close = difflib.get_close_matches(rig, available, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown rig preset {rig!r}; available for power analysis: {', '.join(available)}.{hint}")


#: Preset stages the power engine reproduces exactly (the grid sets units, noise SD and sessions).
POWER_STAGES = ("checkpoints", "units", "synapses", "noise")


def _external_presets() -> dict[str, dict[str, Any]]:
    """Presets of :mod:`virtual_lab.rig.presets` as power settings (name -> settings, or name -> error text)."""
    try:
        from virtual_lab.rig.presets import available_presets, load_preset
    except ImportError:
        return {}
    found: dict[str, Any] = {}
    for name in available_presets():
        preset = load_preset(name)
        other = [stage for stage in preset.stages if stage not in POWER_STAGES]
        if other:
            found[name] = general_rig(name)
            continue
        synapses = preset.stages.get("synapses", {}).get("fraction", 1.0)
        noise = preset.stages.get("noise", {})
        found[name] = {"name": name, "description": preset.description,
                       "synapse_fraction": None if synapses == 1.0 else float(synapses),
                       "noise_relative": bool(noise.get("relative", False)),
                       "noise_measures": tuple(noise.get("measures", ("weight", "act", "gradavg"))),
                       "seeding": "preset"}
    return found


def general_rig(preset: str) -> dict[str, Any]:
    """Power settings of a rig preset observed through :func:`virtual_lab.rig.presets.apply_preset` at every
    grid point (the general path)."""
    from virtual_lab.rig.presets import load_preset

    loaded = load_preset(preset)
    return {"name": loaded.name, "description": loaded.description, "preset": loaded.path or preset,
            "general": True, "noise_relative": True, "synapse_fraction": None,
            "noise_measures": ("weight", "act", "gradavg"), "seeding": "preset", "stages": list(loaded.stages)}


#: Noise axis of the general path unless ``noise_param`` says otherwise: extra Gaussian measurement noise,
#: relative to each measure's SD, after the modality (the preset's ``[noise]`` stage).
DEFAULT_NOISE_PARAM = "noise.sd"


def _preset_overrides(plan: Mapping[str, Any], units: int, noise_value: float, sessions: int) -> dict[str, Any]:
    """``apply_preset`` overrides of one grid point of the general path."""
    overrides: dict[str, Any] = {"units__n_units": int(units), "units__fraction": 1.0,
                                 "units__cap": bool(plan["cap_units"]), "units__layers": tuple(plan["layers"])}
    if plan["has_checkpoints"]:
        overrides["checkpoints__n_checkpoints"] = int(sessions)
    key = plan["noise_param"]
    if key == DEFAULT_NOISE_PARAM:
        overrides["noise__relative"] = True
    overrides[key.replace(".", "__")] = noise_value
    return overrides


def compute_preset_grid_features(ground_truth: GroundTruth, plan: Mapping[str, Any]) -> list[np.ndarray]:
    """Observables of one session at every grid point of the general path (modality presets).

    Each value is exactly ``compute_observables(apply_preset(ground_truth, preset,
    seed=derive_seed(rig_seed, run_id), **overrides))`` for the grid point's overrides
    (:func:`_preset_overrides`). A grid point whose observation leaves a layer without units (e.g. no unit
    tracked across every session) gives NaN features there, which the decoding step drops with a warning.

    Returns
    -------
    list of ndarray of float32
        One array per session count, shape (n_rig_seeds, n_units, n_noise, n_layers, sessions, n_observables).
    """
    from virtual_lab.rig.presets import apply_preset, load_preset

    preset = load_preset(plan["preset"])  # parsed once, not at every grid point
    layers, observables = tuple(plan["layers"]), plan["observables"]
    out = []
    with _silenced("virtual_lab.rig.tracking"):  # a layer lost at one grid point: NaN, counted when decoding
        for k in plan["sessions"]:
            n_t = k if plan["has_checkpoints"] else 1
            block = np.full((len(plan["rig_seeds"]), len(plan["units"]), len(plan["noise"]), len(layers), n_t,
                             len(observables)), np.nan, dtype=np.float32)
            for r, rig_seed in enumerate(plan["rig_seeds"]):
                network_seed = derive_seed(int(rig_seed), ground_truth.run_id)
                for u_i, units in enumerate(plan["units"]):
                    for z_i, value in enumerate(plan["noise"]):
                        recording = apply_preset(ground_truth, preset, seed=network_seed,
                                                 **_preset_overrides(plan, units, value, k))
                        for l_i, layer in enumerate(layers):
                            stats = compute_observables(_OneLayer(recording, layer), observables)[layer]
                            block[r, u_i, z_i, l_i] = stats.astype(np.float32)
            out.append(block)
    return out


@contextlib.contextmanager
def _silenced(logger_name: str):
    """Drop the records of one logger while the grid runs (restored afterwards)."""
    target = logging.getLogger(logger_name)
    drop = lambda record: False  # noqa: E731
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class _OneLayer:
    """A recording seen through one of its layers (for :func:`compute_observables`)."""

    def __init__(self, recording: Recording, layer: str):
        self._recording, self.layer_names, self.n_checkpoints = recording, (layer,), recording.n_checkpoints
        self.measures = recording.measures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recording, name)


# -- the reduction: one session -> features at every grid point ------------------------------------------------------
def observe_seeds(seed: int) -> tuple[int, int, int, int]:
    """Sub-seeds (units, synapses, noise, checkpoints) exactly as :func:`virtual_lab.rig.observe` derives them."""
    return tuple(int(s.generate_state(1, np.uint64)[0] >> np.uint64(1))
                 for s in np.random.SeedSequence(seed).spawn(4))  # type: ignore[return-value]


class _LayerView:
    """Duck-typed recording of one layer with given arrays, for :func:`compute_observables`."""

    def __init__(self, layer: str, n_checkpoints: int, weights=None, activations=None, activity_change=None):
        self.layer_names = (layer,)
        self.n_checkpoints = n_checkpoints
        self._arrays = {"weights": weights, "activations": activations, "activity_change": activity_change}

    def weights(self, layer: str) -> np.ndarray:
        return self._arrays["weights"]

    def activations(self, layer: str) -> np.ndarray:
        return self._arrays["activations"]

    def activity_change(self, layer: str) -> np.ndarray:
        return self._arrays["activity_change"]


def _noise_draws(noise_seed: int, layer_index: int, checkpoints: np.ndarray, measure: str,
                 shape: tuple[int, ...]) -> np.ndarray:
    # exactly Recording._add_noise's draws: one generator per (seed, layer, checkpoint, measure), full layer
    draws = np.empty((len(checkpoints), *shape), dtype=np.float32)
    for row, t in enumerate(checkpoints):
        rng = np.random.default_rng((noise_seed, layer_index, int(t), _MEASURE_CODE[measure]))
        draws[row] = rng.standard_normal(shape, dtype=np.float32)
    return draws


def compute_grid_features(ground_truth: GroundTruth, *, unit_counts: Sequence[Sequence[int] | None],
                          noise_sds: Sequence[float], checkpoint_indices: Sequence[int], rig_seeds: Sequence[int],
                          layers: Sequence[str] | None = None, noise_relative: bool = True,
                          synapse_fraction: float | None = None,
                          observables: Sequence[Observable | str] = ADMISSIBLE_OBSERVABLES,
                          noise_measures: Sequence[str] = ("weight", "act", "gradavg"),
                          seeding: str = "observe") -> np.ndarray:
    """Observables of one session at every (rig seed, units, noise) grid point, for the given checkpoints.

    Each value equals what ``compute_observables(observe(ground_truth, n_units=n, noise_sd=sd,
    noise_relative=noise_relative, synapse_fraction=synapse_fraction, n_checkpoints=K,
    seed=derive_seed(rig_seed, run_id)))`` gives at the same checkpoints (up to float rounding), but the
    work is shared: one unit permutation per (rig seed, layer) whose prefixes are the nested subsets, one
    noise draw per (rig seed, layer, checkpoint, measure) scaled to every noise level, weight observables
    computed once per noise level.

    Parameters
    ----------
    ground_truth : GroundTruth
    unit_counts : sequence of (sequence of int or None)
        One entry per units grid value: the units kept in each layer of ``layers`` (None: every unit,
        without subsampling).
    noise_sds : sequence of float
        Noise levels (>= 0).
    checkpoint_indices : sequence of int
        Checkpoint positions to compute (the union of every session count's checkpoints).
    rig_seeds : sequence of int
        One repeat of the rig per seed; each network's rig seed is ``derive_seed(rig_seed, run_id)``.
    layers : sequence of str, optional
        Layers observed (default: all, in forward order).
    noise_relative : bool, default=True
    synapse_fraction : float, optional
    observables : sequence of Observable or str, default=ADMISSIBLE_OBSERVABLES
    noise_measures : sequence of str, default=all three
        Measures that receive noise.
    seeding : {"observe", "preset"}, default="observe"
        How a network's rig seed is split into unit, synapse and noise seeds: as
        :func:`virtual_lab.rig.observe` does, or as :func:`virtual_lab.rig.presets.apply_preset` does
        (``derive_seed(seed, stage)``), so that the values equal that function's.

    Returns
    -------
    ndarray of float32, shape (n_rig_seeds, n_units, n_noise, n_layers, n_checkpoints, n_observables)
    """
    from virtual_lab.analysis.observables import _as_observables

    observables = _as_observables(observables)
    layers = tuple(ground_truth.layer_names if layers is None else layers)
    checkpoints = np.asarray(checkpoint_indices, dtype=np.int64)
    n_t = len(checkpoints)
    weight_columns = [k for k, obs in enumerate(observables) if obs.measure == "weight"]
    other_columns = [k for k, obs in enumerate(observables) if obs.measure != "weight"]
    weight_obs = [observables[k] for k in weight_columns]
    other_obs = [observables[k] for k in other_columns]
    measures = {obs.measure for obs in other_obs}
    out = np.full((len(rig_seeds), len(unit_counts), len(noise_sds), len(layers), n_t, len(observables)),
                  np.nan, dtype=np.float32)
    any_noise = any(sd > 0 for sd in noise_sds)
    noisy = set(noise_measures)
    base = Recording.from_ground_truth(ground_truth).with_(checkpoint_indices=checkpoints)
    for r, rig_seed in enumerate(rig_seeds):
        network_seed = derive_seed(int(rig_seed), ground_truth.run_id)
        if seeding == "preset":
            unit_seed, syn_seed, noise_seed = (derive_seed(network_seed, stage) for stage in
                                               ("units", "synapses", "noise"))
        else:
            unit_seed, syn_seed, noise_seed, _ = observe_seeds(network_seed)
        for li, layer in enumerate(layers):
            layer_index = ground_truth.layer_names.index(layer)
            n_all = ground_truth.activations[layer].shape[2]
            order = np.random.default_rng((unit_seed, layer_index)).permutation(n_all)
            n_syn = int(np.prod(ground_truth.weights[layer].shape[1:]))
            synapses = np.arange(n_syn)
            if synapse_fraction is not None:
                count = int(np.ceil(synapse_fraction * n_syn))
                synapses = np.sort(np.random.default_rng((syn_seed, layer_index, 1)).permutation(n_syn)[:count])
            view = base.with_(synapse_indices={**base.synapse_indices, layer: synapses})
            scale = {"act": 1.0, "weight": 1.0, "gradavg": 1.0}
            if noise_relative:
                scale = {"act": float(np.std(ground_truth.activations[layer])),
                         "weight": float(np.std(ground_truth.weights[layer])),
                         "gradavg": float(np.std(ground_truth.activity_change[layer]))}
            draws = {}
            if any_noise:
                if weight_obs:
                    full = _noise_draws(noise_seed, layer_index, checkpoints, "weight",
                                        ground_truth.weights[layer].shape[1:])
                    draws["weight"] = full.reshape(n_t, -1)[:, synapses]
                    del full
                if "act" in measures:
                    draws["act"] = _noise_draws(noise_seed, layer_index, checkpoints, "act",
                                                ground_truth.activations[layer].shape[1:])
                if "gradavg" in measures:
                    draws["gradavg"] = _noise_draws(noise_seed, layer_index, checkpoints, "gradavg",
                                                    ground_truth.activity_change[layer].shape[1:])
            if weight_obs:
                clean = view.weights(layer)
                for ni, sd in enumerate(noise_sds):
                    values = clean if sd == 0 or "weight" not in noisy else (
                        clean + np.float32(sd * scale["weight"]) * draws["weight"])
                    stats = compute_observables(_LayerView(layer, n_t, weights=values), weight_obs)[layer]
                    out[r, :, ni, li][..., weight_columns] = stats.astype(np.float32)[None]
            if not other_obs:
                continue
            for ui, counts in enumerate(unit_counts):
                n_kept = n_all if counts is None else int(counts[li])
                units = np.arange(n_all) if counts is None else np.sort(order[:n_kept])
                kept = view.with_(unit_indices={**view.unit_indices, layer: units})
                act = kept.activations(layer) if "act" in measures else None
                change = kept.activity_change(layer) if "gradavg" in measures else None
                for ni, sd in enumerate(noise_sds):
                    a, g = act, change
                    if sd > 0:
                        if act is not None and "act" in noisy:
                            a = act + np.float32(sd * scale["act"]) * draws["act"][:, :, units]
                        if change is not None and "gradavg" in noisy:
                            g = change + np.float32(sd * scale["gradavg"]) * draws["gradavg"]
                    stats = compute_observables(_LayerView(layer, n_t, activations=a, activity_change=g),
                                                other_obs)[layer]
                    out[r, ui, ni, li][..., other_columns] = stats.astype(np.float32)
    return out


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def read_session_arrays(path: str | os.PathLike) -> GroundTruth:
    """Read only what the rig needs from a ground-truth session (activations, weights, activity change, steps,
    metadata), straight from HDF5 -- about 5x faster than :func:`virtual_lab.sessions.read_session`, which
    maps every NWB container. Falls back to ``read_session`` when the file does not have the documented layout.

    Returns
    -------
    GroundTruth
        Probe stimuli, labels and performance curves are zero placeholders of the right shapes.
    """
    import h5py

    from virtual_lab.sessions import _decode_value, _h5_network, read_session

    try:
        with h5py.File(path, "r") as handle:
            network = handle[_h5_network(handle)]
            names = _text(network["layers/layer"][()])
            columns = _text(network["layers/column_name"][()])
            depths = _text(network["layers/depth_position"][()])
            steps = np.asarray(handle["intervals/epochs/training_step"][()], dtype=np.int64)
            n_t = len(steps)
            training = network["training"]
            metadata = {k: _decode_value(v, d) for k, v, d in zip(
                _text(training["key"][()]), _text(training["value"][()]), _text(training["dtype"][()]))}
            acts, weights, change = {}, {}, {}
            for layer, column in zip(names, columns):
                block = np.asarray(handle[f"acquisition/activations_{column}/data"][()], dtype=np.float32)
                acts[layer] = block.reshape(n_t, -1, block.shape[1])
                weights[layer] = np.asarray(network[f"weights/{column}"][()], dtype=np.float32)
                change[layer] = np.asarray(network[f"activity_change/{column}"][()], dtype=np.float32)
    except (KeyError, ValueError, TypeError) as error:  # not the documented layout: the full reader decides
        logger.debug("%s: fast read failed (%r); using read_session", path, error)
        return read_session(path)
    n_s = acts[names[0]].shape[1]
    zeros_t = np.zeros(n_t, dtype=np.float32)
    return GroundTruth(layer_names=tuple(names), depth_positions=tuple(depths), checkpoint_steps=steps,
                       activations=acts, weights=weights, activity_change=change, train_loss=zeros_t,
                       test_accuracy=zeros_t, probe_stimuli=np.zeros((n_s, 1), dtype=np.float32),
                       probe_labels=np.zeros(n_s, dtype=np.int64), metadata=metadata)


def _reduce_session(source: GroundTruth | str | os.PathLike, plan: dict[str, Any]) -> dict[str, Any]:
    """Read one session (when given a path) and reduce it to its grid features (runs in a worker)."""
    ground_truth = source if isinstance(source, GroundTruth) else read_session_arrays(source)
    info = {"run_id": ground_truth.run_id, "rule": ground_truth.rule, "diverged": ground_truth.diverged,
            "source": "" if isinstance(source, GroundTruth) else str(source), "features": None, "problem": ""}
    if plan["rules"] is not None and ground_truth.rule not in plan["rules"]:
        return info
    problem = _layout_problem(ground_truth, plan)
    if problem:
        info["problem"] = problem
        return info
    if ground_truth.diverged:
        return info
    if plan.get("general"):
        info["features"] = compute_preset_grid_features(ground_truth, plan)
        return info
    info["features"] = compute_grid_features(
        ground_truth, unit_counts=plan["unit_counts"], noise_sds=plan["noise"],
        checkpoint_indices=plan["checkpoints"], rig_seeds=plan["rig_seeds"], layers=plan["layers"],
        noise_relative=plan["noise_relative"], synapse_fraction=plan["synapse_fraction"],
        observables=plan["observables"], noise_measures=plan["noise_measures"], seeding=plan["seeding"])
    return info


def _layout_problem(ground_truth: GroundTruth, plan: Mapping[str, Any]) -> str:
    layout = plan["layout"]
    if ground_truth.n_checkpoints != layout["n_checkpoints"]:
        return (f"{ground_truth.n_checkpoints} checkpoints where the first session has {layout['n_checkpoints']}")
    for layer, size in zip(plan["layers"], layout["layer_sizes"]):
        if layer not in ground_truth.layer_names:
            return f"no layer {layer!r}"
        if ground_truth.activations[layer].shape[2] != size:
            return f"layer {layer!r} has {ground_truth.activations[layer].shape[2]} units, not {size}"
    return ""


def _session_sources(recordings: Any) -> list[GroundTruth | Path]:
    if isinstance(recordings, (str, os.PathLike)):
        root = Path(recordings).resolve()  # absolute: worker processes may run in another directory
        if root.is_dir():
            paths = sorted(p for p in root.rglob("*.nwb") if not p.name.startswith(".")
                           and "_ses-groundtruth" in p.name)
            if not paths:
                paths = sorted(p for p in root.rglob("*.nwb") if not p.name.startswith("."))
            if not paths:
                raise ValueError(f"recordings: no NWB sessions under {str(root)!r}")
            return paths
        if root.is_file():
            return [root]
        raise ValueError(f"recordings: {str(root)!r} does not exist")
    items = list(recordings)
    if not items:
        raise ValueError("recordings must not be empty")
    sources: list[GroundTruth | Path] = []
    for item in items:
        if isinstance(item, GroundTruth):
            sources.append(item)
        elif isinstance(item, (str, os.PathLike)):
            sources.append(Path(item).resolve())
        else:
            raise TypeError(f"recordings must be a folder, session paths or GroundTruth objects, got "
                            f"{type(item).__name__}")
    return sources


def _first_layout(source: GroundTruth | Path) -> tuple[GroundTruth | None, dict[str, Any]]:
    gt = source if isinstance(source, GroundTruth) else read_session_arrays(source)
    return gt, {"layer_names": gt.layer_names, "depth_positions": gt.depth_positions,
                "layer_sizes_all": tuple(gt.activations[l].shape[2] for l in gt.layer_names),
                "n_checkpoints": gt.n_checkpoints, "checkpoint_steps": gt.checkpoint_steps.tolist()}


def _even_positions(n_total: int, n_keep: int) -> np.ndarray:
    # exactly keep_checkpoints(spacing="even")
    return np.unique(np.round(np.linspace(0, n_total - 1, n_keep)).astype(np.int64))


# -- decoding one grid point -----------------------------------------------------------------------------------------
def _decode_point(X: np.ndarray, rule: np.ndarray, network: np.ndarray, layer: np.ndarray, depth: np.ndarray,
                  feature_names: np.ndarray, decoder: Any, n_splits: int, test_fraction: float,
                  split_seed: int) -> dict[str, Any]:
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.observables import FeatureTable

    finite = np.isfinite(X).all(axis=1)
    n_dropped = int((~finite).sum())
    table = FeatureTable(X=X[finite].astype(np.float64), rule=rule[finite], network_id=network[finite],
                         layer=layer[finite], depth_position=depth[finite],
                         metadata=tuple({} for _ in range(int(finite.sum()))), feature_names=feature_names)
    result = evaluate(table, decoder, n_splits=n_splits, test_fraction=test_fraction, seed=split_seed, n_jobs=1)
    test_counts = [sum(1 for p in result.predictions if p["split"] == s) for s in range(result.n_splits)]
    return {"network_accuracy": result.network_accuracy, "network_balanced_accuracy": result.network_balanced_accuracy,
            "layer_accuracy": result.layer_accuracy, "n_test_networks": test_counts,
            "predictions": [(p["network_id"], p["predicted_rule"], bool(p["correct"])) for p in result.predictions],
            "confusion": result.network_confusion_counts, "classes": result.classes, "n_dropped": n_dropped,
            "n_networks": result.n_networks}


# -- the result ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PowerResult:
    """Outcome of :func:`power_analysis`.

    Attributes
    ----------
    classes : tuple of str
        Rules decoded (sorted full names).
    units, noise, sessions : tuple
        The requested grid values (sorted).
    accuracy, ci_low, ci_high : ndarray of float64, shape (n_units, n_noise, n_sessions)
        Network-level accuracy and its bootstrap interval; NaN where the grid value was skipped.
    bootstrap : ndarray of float64, shape (n_units, n_noise, n_sessions, n_bootstrap)
        Bootstrap replicates of the accuracy (the same network resamples at every grid point).
    confusion : ndarray of int64, shape (n_units, n_noise, n_sessions, n_classes, n_classes)
        Network-level confusion counts summed over splits and rig seeds (rows: true rule).
    rows : tuple of dict
        Tidy table: one row per grid point x rig seed (repeat) x split.
    skipped : tuple of dict
        Grid values that the recordings cannot support: ``parameter``, ``value``, ``reason``.
    chance : dict
        :func:`binomial_chance` for the networks used.
    thresholds : tuple of dict
        Per (noise, sessions): ``units_point``, ``units_conservative``, ``units_interval``.
    recommendation : dict
        The operating point and its sentence (see :meth:`sentence`).
    target, confidence : float
    n_networks : int
    networks : tuple of str
        Network ids used, in table order.
    provenance : dict
        Resolved seeds, rig settings, decoder, sources and versions.
    """

    classes: tuple[str, ...]
    units: tuple[int, ...]
    noise: tuple[float, ...]
    sessions: tuple[int, ...]
    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    bootstrap: np.ndarray = field(repr=False)
    confusion: np.ndarray = field(repr=False)
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    skipped: tuple[dict[str, Any], ...]
    chance: dict[str, float]
    thresholds: tuple[dict[str, Any], ...]
    recommendation: dict[str, Any]
    target: float
    confidence: float
    n_networks: int
    networks: tuple[str, ...] = field(repr=False)
    provenance: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def sentence(self) -> str:
        """The recommendation in one sentence."""
        return str(self.recommendation["sentence"])

    def point(self, units: int, noise: float, sessions: int) -> dict[str, Any]:
        """Accuracy, interval and confusion at one grid point."""
        u, n, s = self.units.index(units), self.noise.index(noise), self.sessions.index(sessions)
        return {"units": units, "noise": noise, "sessions": sessions, "accuracy": float(self.accuracy[u, n, s]),
                "ci_low": float(self.ci_low[u, n, s]), "ci_high": float(self.ci_high[u, n, s]),
                "confusion": self.confusion[u, n, s].tolist()}

    def monotonicity_violations(self) -> list[dict[str, Any]]:
        """Grid neighbours where more units, less noise or more sessions *significantly* hurt.

        A violation: the richer protocol's interval lies wholly below the poorer protocol's point estimate.

        Returns
        -------
        list of dict
            ``axis``, ``poorer`` and ``richer`` (units, noise, sessions) and both accuracies.
        """
        found = []
        acc, high = self.accuracy, self.ci_high
        shape = acc.shape
        steps = {"units": (0, 1), "noise": (1, -1), "sessions": (2, 1)}
        for axis_name, (axis, direction) in steps.items():
            for index in np.ndindex(shape):
                other = list(index)
                other[axis] += 1
                if other[axis] >= shape[axis]:
                    continue
                other = tuple(other)
                poorer, richer = (index, other) if direction == 1 else (other, index)
                if np.isnan(acc[poorer]) or np.isnan(acc[richer]):
                    continue
                if high[richer] < acc[poorer]:
                    found.append({"axis": axis_name, "poorer": self._coords(poorer), "richer": self._coords(richer),
                                  "poorer_accuracy": float(acc[poorer]), "richer_accuracy": float(acc[richer])})
        return found

    def _coords(self, index: tuple[int, int, int]) -> dict[str, Any]:
        return {"units": self.units[index[0]], "noise": self.noise[index[1]], "sessions": self.sessions[index[2]]}

    def summary(self) -> dict[str, Any]:
        """JSON-serializable summary: grid, per-point accuracy and interval, answers, chance, provenance."""
        def plain(value: float) -> float | None:
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        points = []
        for index in np.ndindex(self.accuracy.shape):
            if np.isnan(self.accuracy[index]):
                continue
            u, n, s = index
            points.append({**self._coords(index), "accuracy": plain(self.accuracy[index]),
                           "ci_low": plain(self.ci_low[index]), "ci_high": plain(self.ci_high[index]),
                           "above_chance_threshold": bool(self.accuracy[index] >= self.chance["threshold"])})
        return {"classes": list(self.classes), "rules": [short_rule(c) for c in self.classes],
                "mode": "pairwise" if len(self.classes) == 2 else "all rules",
                "target": self.target, "confidence": self.confidence, "n_networks": self.n_networks,
                "grid": {"units": list(self.units), "noise": list(self.noise), "sessions": list(self.sessions)},
                "skipped": list(self.skipped), "chance": dict(self.chance), "points": points,
                "thresholds": list(self.thresholds), "recommendation": self.recommendation,
                "monotonicity_violations": self.monotonicity_violations(), "provenance": self.provenance}

    def write_table(self, path: str | os.PathLike) -> Path:
        """Write the tidy table (one row per grid point x repeat x split) as CSV."""
        path = Path(path)
        columns = list(self.rows[0]) if self.rows else []
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return path


# -- answers ---------------------------------------------------------------------------------------------------------
def _thresholds(units: Sequence[int], noise: Sequence[float], sessions: Sequence[int], accuracy: np.ndarray,
                ci_low: np.ndarray, boot: np.ndarray, target: float, confidence: float) -> list[dict[str, Any]]:
    out = []
    alpha = 1 - confidence
    for n_i, sd in enumerate(noise):
        for s_i, k in enumerate(sessions):
            acc = accuracy[:, n_i, s_i]
            valid = ~np.isnan(acc)
            if not valid.any():
                continue
            point = next((units[u] for u in range(len(units)) if valid[u] and acc[u] >= target), None)
            conservative = next((units[u] for u in range(len(units)) if valid[u] and ci_low[u, n_i, s_i] >= target),
                                None)
            # smallest units reaching the target in each bootstrap replicate (inf: none)
            reach = np.where(valid[:, None], boot[:, n_i, s_i, :] >= target, False)  # (U, B)
            first = np.where(reach.any(axis=0), np.argmax(reach, axis=0), -1)
            values = np.array([units[f] if f >= 0 else np.inf for f in first], dtype=np.float64)
            low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
            out.append({"noise": sd, "sessions": k, "units_point": point, "units_conservative": conservative,
                        "units_interval": [None if np.isinf(low) else int(low), None if np.isinf(high) else int(high)],
                        "fraction_of_bootstraps_reaching": float(np.mean(np.isfinite(values)))})
    return out


def _confused_pairs(confusion: np.ndarray, classes: Sequence[str], target: float) -> list[dict[str, Any]]:
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            total = confusion[i].sum() + confusion[j].sum()
            if total == 0:
                continue
            rate = float((confusion[i, j] + confusion[j, i]) / total)
            if rate > 0:
                pairs.append({"pair": [short_rule(classes[i]), short_rule(classes[j])], "confusion_rate": rate,
                              "confused": bool(1 - rate < target)})
    return sorted(pairs, key=lambda p: -p["confusion_rate"])


def _sessions(k: int) -> str:
    return "1 session" if k == 1 else f"{k} sessions"


def _recommend(units, noise, sessions, accuracy, ci_low, ci_high, confusion, classes, target, confidence, rig_name,
               chance, noise_unit: str = "", noise_name: str | None = None) -> dict[str, Any]:
    rules_text = "{" + ", ".join(short_rule(c) for c in classes) + "}"
    what = (f"To tell {short_rule(classes[0])} from {short_rule(classes[1])}" if len(classes) == 2
            else f"To identify {rules_text}")
    percent = f"{target:.0%}"

    def pick(bound: np.ndarray, n_i: int):
        best = None
        for u_i, u in enumerate(units):
            for s_i, k in enumerate(sessions):
                if np.isnan(accuracy[u_i, n_i, s_i]) or not bound[u_i, n_i, s_i] >= target:
                    continue
                key = (u * k, k, u)
                if best is None or key < best[0]:
                    best = (key, u_i, s_i)
        return best

    per_noise = []
    for n_i, sd in enumerate(noise):
        for kind, bound in (("conservative", ci_low), ("point", accuracy)):
            chosen = pick(bound, n_i)
            if chosen is not None:
                per_noise.append((n_i, kind, chosen[1], chosen[2]))
                break
    conservative = [p for p in per_noise if p[1] == "conservative"]
    choice = max(conservative, key=lambda p: p[0]) if conservative else (
        max(per_noise, key=lambda p: p[0]) if per_noise else None)
    table = [{"noise": noise[n_i], "basis": kind, "units": units[u_i], "sessions": sessions[s_i],
              "accuracy": float(accuracy[u_i, n_i, s_i]), "ci": [float(ci_low[u_i, n_i, s_i]),
                                                                   float(ci_high[u_i, n_i, s_i])]}
             for n_i, kind, u_i, s_i in per_noise]
    if choice is None:
        flat = np.where(np.isnan(accuracy), -np.inf, accuracy)
        u_i, n_i, s_i = np.unravel_index(int(np.argmax(flat)), flat.shape)
        best = float(accuracy[u_i, n_i, s_i])
        sentence = (f"No tested protocol reaches {percent} accuracy {what[0].lower() + what[1:]} "
                    f"using {rig_name}: the best was {best:.2f} [{ci_low[u_i, n_i, s_i]:.2f}, "
                    f"{ci_high[u_i, n_i, s_i]:.2f}] with {units[u_i]} neurons per layer in {_sessions(sessions[s_i])} "
                    f"at {noise_name or 'noise'} {noise[n_i]:g} (chance {chance['chance']:.2f}, significance threshold "
                    f"{chance['threshold']:.2f}).")
        return {"reached": False, "basis": None, "units": None, "sessions": None, "noise": None,
                "best": {"units": units[u_i], "noise": noise[n_i], "sessions": sessions[s_i], "accuracy": best,
                         "ci": [float(ci_low[u_i, n_i, s_i]), float(ci_high[u_i, n_i, s_i])]},
                "animals": None, "confused_pairs": _confused_pairs(confusion[u_i, n_i, s_i], classes, target),
                "per_noise": table, "sentence": sentence}
    n_i, kind, u_i, s_i = choice
    acc = float(accuracy[u_i, n_i, s_i])
    animals = animals_to_certify(acc, target, confidence)
    if noise_name is not None:
        noise_text = f" at {noise_name} = {noise[n_i]:g}"
    else:
        noise_text = (f" at measurement noise up to {noise[n_i]:g}{noise_unit}" if noise[n_i] > 0
                      else " without measurement noise")
    certified = (f"certified with >= {animals} animals" if animals is not None
                 else "not certifiable: the observed accuracy is not above the target")
    caveat = "" if kind == "conservative" else (
        f" (point estimate only: the {confidence:.0%} lower bound {ci_low[u_i, n_i, s_i]:.2f} is below the target "
        f"with these {{n}} networks)")
    sentence = (f"{what} with >= {percent} accuracy using {rig_name}{noise_text}, record >= {units[u_i]} neurons "
                f"per layer in each of >= {_sessions(sessions[s_i])}; {certified}{caveat}. Accuracy there: {acc:.2f} "
                f"[{ci_low[u_i, n_i, s_i]:.2f}, {ci_high[u_i, n_i, s_i]:.2f}].")
    return {"reached": True, "basis": kind, "units": units[u_i], "sessions": sessions[s_i], "noise": noise[n_i],
            "accuracy": acc, "ci": [float(ci_low[u_i, n_i, s_i]), float(ci_high[u_i, n_i, s_i])],
            "animals": animals, "confused_pairs": _confused_pairs(confusion[u_i, n_i, s_i], classes, target),
            "per_noise": table, "sentence": sentence}


def _check_noise_param(settings: Mapping[str, Any], noise: Sequence[float]) -> None:
    """A clear error before any work when the noise axis names a parameter the preset cannot take."""
    from virtual_lab.rig.presets import load_preset

    key = settings["noise_param"]
    stage = key.split(".", 1)[0]
    if "." not in key or stage in ("units", "checkpoints"):
        raise ValueError(f"noise_param must be a preset parameter 'stage.key' other than the units and "
                         f"checkpoints the grid sets (e.g. 'noise.sd', 'calcium.noise_level'), got {key!r}")
    preset = load_preset(settings["preset"])
    try:
        for value in noise:
            preset.with_params({key: value})
    except (TypeError, ValueError) as error:
        raise ValueError(f"noise_param {key!r} for rig preset {settings['name']!r}: {error}") from None


def _measured_observables(ground_truth: GroundTruth, plan: Mapping[str, Any], observables: Sequence[Observable],
                          rig_name: str, explicit: bool = False) -> tuple[Observable, ...]:
    """The observables whose measure the preset records (a calcium rig sees activity, EM sees weights):
    :func:`virtual_lab.rig.presets.measured_observables`, as ``virtual-lab decode`` uses."""
    from virtual_lab.rig.presets import apply_preset, measured_observables

    recording = apply_preset(ground_truth, plan["preset"], seed=0, **_preset_overrides(
        plan, plan["units"][0], plan["noise"][0], plan["sessions"][0]))
    kept, note = measured_observables(observables, recording.measures, rig_name, explicit=explicit)
    if note:
        logger.info("%s", note)
    return kept


# -- the analysis ----------------------------------------------------------------------------------------------------
def _progress(total: int, description: str, enabled: bool):
    from virtual_lab.progress import progress_bar

    return progress_bar(total=total, desc=description, unit="items", enabled=enabled)


def power_analysis(recordings: Any, units: Sequence[int], noise: Sequence[float], sessions: Sequence[int], *,
                   rules: Sequence[str] | str | None = None, target: float = 0.9, n_splits: int = 10,
                   test_fraction: float = 0.25, rig: str | Mapping[str, Any] | None = None,
                   rig_seeds: int | Sequence[int] = 2, decoder: str | Any = "linear_svm", seed: int | None = 0,
                   cap_units: bool = False, layers: Sequence[str] | None = None,
                   observables: str | Sequence[Observable | str] = "admissible", confidence: float = 0.95,
                   n_bootstrap: int = 2000, n_jobs: int = -1, progress: bool = False,
                   noise_param: str | None = None) -> PowerResult:
    """Simulate the experiment over a grid of recording protocols and say which one suffices.

    Parameters
    ----------
    recordings : str, path, sequence of paths or sequence of GroundTruth
        Ground-truth sessions: a folder (every ``*_ses-groundtruth.nwb`` below it), files, or in-memory
        sessions. Sessions are read one at a time in worker processes and reduced to features.
    units : sequence of int
        Units recorded per layer. A value above a layer's size is skipped with a message unless
        ``cap_units`` (then that layer records all its units; values that become identical are skipped).
    noise : sequence of float
        Measurement noise SD (relative to each measure's SD for the rig presets with ``noise_relative``), or
        the values of ``noise_param``.
    sessions : sequence of int
        Checkpoints observed over learning, evenly spaced, first and last included. Values above the
        recorded number of checkpoints are skipped with a message.
    rules : sequence of str or str, optional
        Rules to tell apart (full names or aliases ``fa``, ``ia``...); default all recorded rules. Two rules
        is the pairwise mode ("Hebbian or feedback alignment?").
    target : float, default=0.9
        Accuracy to reach, in (0, 1).
    n_splits : int, default=10
        Grouped cross-validation splits per grid point and rig seed.
    test_fraction : float, default=0.25
    rig : str or dict, optional
        Rig preset (see :func:`resolve_rig`); default ``"paper"``. Modality presets (``"2p-gcamp6s"``,
        ``"neuropixels-chronic"``, ``"em-snapshot"``...) and preset file paths take the general path (module
        docstring): slower, one preset application per grid point and session.
    rig_seeds : int or sequence of int, default=2
        Number of rig repeats (seeds derived from ``seed``) or explicit seeds. Each repeat draws new units
        and new noise for every network; one set serves every noise level.
    decoder : str or estimator, default="linear_svm"
        A name from :data:`virtual_lab.analysis.decoders.DECODERS` or a scikit-learn classifier. The linear
        SVM is the default here because a grid needs thousands of fits: on the quickstart it fits in a small
        fraction of the random forest's time (300 trees) at similar accuracy.
    seed : int or None, default=0
        Master seed (rig seeds, splits, decoders, bootstrap); None draws one, stored in ``provenance``.
    cap_units : bool, default=False
    layers : sequence of str, optional
        Layers recorded (default: all).
    observables : "admissible", "all" or sequence, default="admissible"
        With a rig preset, "admissible" and "all" keep those the preset measures (one line logged); a
        sequence naming one it cannot measure is an error.
    confidence : float, default=0.95
    n_bootstrap : int, default=2000
    n_jobs : int, default=-1
        Worker processes (-1: all cores) for reading sessions and for decoding grid points.
    progress : bool, default=False
    noise_param : str, optional
        The preset parameter the noise axis sets, as ``"stage.key"`` (e.g. ``"calcium.noise_level"``, the
        CASCADE noise level of a two-photon preset, or ``"spiking.window_s"``). Default: ``"noise.sd"``, extra
        Gaussian noise relative to each measure's SD after the modality. Only for rig presets of
        :mod:`virtual_lab.rig.presets`.

    Returns
    -------
    PowerResult

    Raises
    ------
    ValueError
        Invalid grid values, unknown rules or rig preset, or no grid point the recordings can support.
    """
    from joblib import Parallel, delayed

    units = _int_list("units", units, 1)
    noise = _float_list("noise", noise)
    sessions = _int_list("sessions", sessions, 1)
    target = _check_fraction("target", target)
    confidence = _check_fraction("confidence", confidence)
    if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")
    seed = resolve_seed(seed)
    if isinstance(rig_seeds, numbers.Integral) and not isinstance(rig_seeds, bool):
        if rig_seeds < 1:
            raise ValueError(f"rig_seeds must be a count >= 1 or a list of seeds, got {rig_seeds!r}")
        rig_seed_list = tuple(derive_seed(seed, "rig", r) for r in range(int(rig_seeds)))
    else:
        rig_seed_list = tuple(resolve_seed(s) for s in rig_seeds)
        if not rig_seed_list:
            raise ValueError("rig_seeds must not be empty")
    named = not isinstance(observables, str)  # a list given one by one: what the rig cannot measure is an error
    if isinstance(observables, str):
        if observables not in ("admissible", "all"):
            raise ValueError(f"observables must be 'admissible', 'all' or a list of observables, got {observables!r}")
        observables = ADMISSIBLE_OBSERVABLES if observables == "admissible" else ALL_OBSERVABLES
    from virtual_lab.analysis.observables import _as_observables
    observables = _as_observables(observables)
    if isinstance(decoder, str):
        from virtual_lab.analysis.decoders import make_decoder
        make_decoder(decoder)  # did-you-mean on a typo, before any work
    rig_settings = resolve_rig(rig)
    if noise_param is not None and not rig_settings.get("general"):
        if rig_settings.get("seeding") != "preset":
            raise ValueError(f"noise_param ({noise_param!r}) needs a rig preset of virtual_lab.rig.presets "
                             f"(protocols/rigs), not the built-in rig {rig_settings['name']!r}")
        rig_settings = general_rig(rig_settings["name"])
    general = bool(rig_settings.get("general"))
    if general:
        rig_settings = {**rig_settings, "noise_param": noise_param or DEFAULT_NOISE_PARAM}
        _check_noise_param(rig_settings, noise)
    has_checkpoints = not general or "em" not in rig_settings["stages"]
    if not has_checkpoints and tuple(sessions) != (1,):
        raise ValueError(f"rig preset {rig_settings['name']!r} observes one timepoint (an EM snapshot); use "
                         f"sessions=[1] (--sessions 1), got {list(sessions)}")
    n_workers = (os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)

    sources = _session_sources(recordings)
    first_gt, layout = _first_layout(sources[0])
    all_layers = layout["layer_names"]
    if layers is None:
        layers = all_layers
    else:
        layers = tuple(layers)
        for name in layers:
            if name not in all_layers:
                close = difflib.get_close_matches(name, list(all_layers), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"layers: {name!r} is not a recorded layer; recorded: {', '.join(all_layers)}.{hint}")
    sizes = tuple(layout["layer_sizes_all"][all_layers.index(l)] for l in layers)
    depth = tuple(layout["depth_positions"][all_layers.index(l)] for l in layers)
    n_t = layout["n_checkpoints"]

    # which grid values the recordings support
    skipped: list[dict[str, Any]] = []
    unit_counts, unit_values, seen = [], [], {}
    for n in units:
        if n > min(sizes) and not cap_units:
            small = [f"{l!r} ({s} units)" for l, s in zip(layers, sizes) if s < n]
            skipped.append({"parameter": "units", "value": n,
                            "reason": f"more units than recorded in layer {', '.join(small)}; pass cap_units=True "
                                      f"(--cap-units) to record every unit of smaller layers, or choose layers"})
            continue
        counts = tuple(min(n, s) for s in sizes)
        if counts in seen:
            skipped.append({"parameter": "units", "value": n,
                            "reason": f"records the same units as units={seen[counts]} once capped at the layer "
                                      f"sizes {sizes}"})
            continue
        seen[counts] = n
        unit_values.append(n)
        unit_counts.append(None if counts == sizes and n >= max(sizes) else counts)
    session_values = []
    for k in sessions:
        if k > n_t:
            skipped.append({"parameter": "sessions", "value": k,
                            "reason": f"more sessions than the {n_t} checkpoints recorded"})
        else:
            session_values.append(k)
    for entry in skipped:
        logger.warning("skipping %s=%s: %s", entry["parameter"], entry["value"], entry["reason"])
    if not unit_values or not session_values:
        reasons = "; ".join(f"{e['parameter']}={e['value']}: {e['reason']}" for e in skipped)
        raise ValueError(f"no grid point the recordings can support ({reasons})")
    positions = {k: _even_positions(n_t, k) for k in session_values}
    needed = np.unique(np.concatenate(list(positions.values())))
    column_of = {int(t): i for i, t in enumerate(needed.tolist())}

    # rules: from the first session's metadata we do not know all rules yet -> filter after reading
    requested_rules = rules
    plan = {"unit_counts": unit_counts, "noise": noise, "checkpoints": needed, "rig_seeds": rig_seed_list,
            "layers": layers, "noise_relative": bool(rig_settings["noise_relative"]),
            "synapse_fraction": rig_settings["synapse_fraction"], "observables": observables, "rules": None,
            "noise_measures": tuple(rig_settings["noise_measures"]), "seeding": rig_settings["seeding"],
            "layout": {"n_checkpoints": n_t, "layer_sizes": sizes}}
    if general:
        plan.update(general=True, preset=rig_settings["preset"], units=tuple(unit_values), sessions=tuple(
            session_values), cap_units=bool(cap_units), noise_param=rig_settings["noise_param"],
            has_checkpoints=has_checkpoints)
        observables = plan["observables"] = _measured_observables(first_gt, plan, observables, rig_settings["name"],
                                                                  explicit=named)
    if requested_rules is not None and all(isinstance(s, GroundTruth) for s in sources):
        plan["rules"] = _resolve_rules(requested_rules, sorted({s.rule for s in sources}))
    del first_gt

    # stage 1: read every session once (in workers) and reduce it to grid features
    in_memory = isinstance(sources[0], GroundTruth)
    parallel = Parallel(n_jobs=n_workers, return_as="generator", pre_dispatch="2*n_jobs",
                        prefer="threads" if in_memory else "processes")
    reduced = []
    with _progress(len(sources), "power: observing sessions", progress) as bar:
        for info in parallel(delayed(_reduce_session)(source, plan) for source in sources):
            if info["problem"]:
                raise ValueError(f"recordings: session {info['source'] or info['run_id']} does not match the "
                                 f"first session: {info['problem']}")
            reduced.append(info)
            bar.update(1)
    diverged = [i["run_id"] for i in reduced if i["diverged"]]
    if diverged:
        logger.warning("dropped %d diverged network(s): %s", len(diverged), ", ".join(diverged))
    recorded_rules = sorted({i["rule"] for i in reduced})
    chosen_rules = _resolve_rules(requested_rules, recorded_rules) if requested_rules is not None else tuple(
        recorded_rules)
    used = [i for i in reduced if i["features"] is not None and i["rule"] in chosen_rules]
    ids = [i["run_id"] for i in used]
    if len(set(ids)) != len(ids):
        raise ValueError("recordings: two sessions have the same run id; each network must appear once")
    if general:  # one (N, R, U, Z, L, K, O) array per session count
        per_sessions = [np.stack([i["features"][s_i] for i in used]) for s_i in range(len(session_values))]
    else:
        features = np.stack([i["features"] for i in used])  # (N, R, U, Z, L, T, O)
    del reduced
    net_rule = np.array([i["rule"] for i in used], dtype=str)
    net_ids = np.array(ids, dtype=str)
    n_net, n_layers = len(used), len(layers)

    # stage 2: decode every grid point and rig seed (in workers)
    rule_col = np.repeat(net_rule, n_layers)
    net_col = np.repeat(net_ids, n_layers)
    layer_col = np.tile(np.array(layers, dtype=str), n_net)
    depth_col = np.tile(np.array(depth, dtype=str), n_net)
    onehot = np.zeros((n_net * n_layers, len(DEPTH_POSITIONS)))
    onehot[np.arange(n_net * n_layers), [DEPTH_POSITIONS.index(d) for d in depth_col]] = 1.0
    split_seeds = tuple(derive_seed(seed, "splits", r) for r in range(len(rig_seed_list)))
    names = {k: feature_names_for(observables, k) for k in session_values}
    tasks = [(u_i, n_i, s_i, r) for u_i in range(len(unit_values)) for n_i in range(len(noise))
             for s_i in range(len(session_values)) for r in range(len(rig_seed_list))]

    def job(u_i, n_i, s_i, r):
        k = session_values[s_i]
        if general:
            block = per_sessions[s_i][:, r, u_i, n_i]  # (N, L, K, O)
        else:
            cols = [column_of[int(t)] for t in positions[k]]
            block = features[:, r, u_i, n_i][:, :, cols, :]  # (N, L, K, O)
        X = np.hstack([block.reshape(n_net * n_layers, -1).astype(np.float64), onehot])
        return delayed(_decode_point)(X, rule_col, net_col, layer_col, depth_col, names[k], decoder, n_splits,
                                      test_fraction, split_seeds[r])

    outputs = []
    parallel = Parallel(n_jobs=n_workers, return_as="generator", pre_dispatch="2*n_jobs")
    with _progress(len(tasks), "power: decoding grid points", progress) as bar:
        for output in parallel(job(*task) for task in tasks):
            outputs.append(output)
            bar.update(1)
    if general:
        del per_sessions
    else:
        del features

    # collect: tidy rows, per-network correctness, confusion
    classes = tuple(sorted(chosen_rules))
    shape = (len(units), len(noise), len(sessions))
    u_index = {v: units.index(v) for v in unit_values}
    s_index = {v: sessions.index(v) for v in session_values}
    position_of = {n: i for i, n in enumerate(net_ids.tolist())}
    correct = np.zeros((*shape, n_net))
    tested = np.zeros((*shape, n_net))
    confusion = np.zeros((*shape, len(classes), len(classes)), dtype=np.int64)
    rows = []
    for (u_i, n_i, s_i, r), output in zip(tasks, outputs):
        grid = (u_index[unit_values[u_i]], n_i, s_index[session_values[s_i]])
        counts = unit_counts[u_i] or sizes
        for split in range(len(output["network_accuracy"])):
            rows.append({"units": unit_values[u_i], "noise": noise[n_i], "sessions": session_values[s_i],
                         "repeat": r, "rig_seed": rig_seed_list[r], "split": split, "split_seed": split_seeds[r],
                         "units_per_layer": ";".join(map(str, counts)), "decoder": str(
                             decoder if isinstance(decoder, str) else type(decoder).__name__),
                         "n_networks": output["n_networks"], "n_test_networks": output["n_test_networks"][split],
                         "network_accuracy": float(output["network_accuracy"][split]),
                         "network_balanced_accuracy": float(output["network_balanced_accuracy"][split]),
                         "layer_accuracy": float(output["layer_accuracy"][split])})
        for network, _, ok in output["predictions"]:
            position = position_of[network]
            tested[grid + (position,)] += 1
            correct[grid + (position,)] += ok
        confusion[grid] += output["confusion"]
        if output["n_dropped"]:
            logger.warning("units=%s noise=%s sessions=%s repeat %d: dropped %d example(s) with non-finite "
                           "features", unit_values[u_i], noise[n_i], session_values[s_i], r, output["n_dropped"])

    # bootstrap over networks, stratified by rule, the same resamples at every grid point
    rng = np.random.default_rng(derive_seed(seed, "bootstrap"))
    members = [np.flatnonzero(net_rule == c) for c in classes]
    resample = np.concatenate([m[rng.integers(0, len(m), size=(n_bootstrap, len(m)))] for m in members], axis=1)
    accuracy = np.full(shape, np.nan)
    boot = np.full((*shape, n_bootstrap), np.nan)
    for index in np.ndindex(shape):
        seen_n = tested[index]
        if not seen_n.any():
            continue
        per_network = np.divide(correct[index], seen_n, out=np.full(n_net, np.nan), where=seen_n > 0)
        accuracy[index] = float(np.nanmean(per_network))
        with warnings.catch_warnings():  # a resample of only never-tested networks (very few splits): NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            boot[index] = np.nanmean(per_network[resample], axis=1)
    alpha = 1 - confidence
    ci_low, ci_high = np.full(shape, np.nan), np.full(shape, np.nan)
    valid = ~np.isnan(accuracy)
    ci_low[valid], ci_high[valid] = np.nanquantile(boot[valid], [alpha / 2, 1 - alpha / 2], axis=-1)
    chance = binomial_chance(n_net, len(classes), confidence)
    thresholds = _thresholds(units, noise, sessions, accuracy, ci_low, boot, target, confidence)
    noise_param = rig_settings.get("noise_param")
    recommendation = _recommend(units, noise, sessions, accuracy, ci_low, ci_high, confusion, classes, target,
                                confidence, rig_settings["name"], chance,
                                " x signal SD" if rig_settings["noise_relative"] else "",
                                noise_name=None if noise_param in (None, DEFAULT_NOISE_PARAM) else noise_param)
    recommendation["sentence"] = recommendation["sentence"].replace("{n}", str(n_net))

    from virtual_lab import __version__
    provenance = {
        "seed": seed, "rig_seeds": list(rig_seed_list), "split_seeds": list(split_seeds),
        "bootstrap_seed": derive_seed(seed, "bootstrap"), "n_bootstrap": int(n_bootstrap),
        "network_rig_seed": ("derive_seed(rig_seed, run_id), passed to apply_preset (each stage: "
                             "derive_seed(seed, stage))" if general else
                             "derive_seed(rig_seed, run_id), split by observe() into units/synapses/noise/checkpoints"),
        "noise_axis": noise_param or ("noise SD (x signal SD)" if rig_settings["noise_relative"] else "noise SD"),
        "rig": rig_settings, "decoder": decoder if isinstance(decoder, str) else type(decoder).__name__,
        "n_splits": int(n_splits), "test_fraction": float(test_fraction), "cap_units": bool(cap_units),
        "layers": list(layers), "layer_sizes": list(sizes), "observables": [o.name for o in observables],
        "checkpoint_spacing": "even", "n_checkpoints_recorded": n_t, "n_sessions_read": len(sources),
        "diverged_dropped": diverged, "virtual_lab_version": __version__,
        "accuracy": "network level; mean over networks of each network's fraction correct over its test splits "
                    "and rig repeats",
        "interval": f"{confidence:.0%} percentile bootstrap over networks, stratified by rule",
    }
    return PowerResult(classes=classes, units=units, noise=noise, sessions=sessions, accuracy=accuracy,
                       ci_low=ci_low, ci_high=ci_high, bootstrap=boot, confusion=confusion, rows=tuple(rows),
                       skipped=tuple(skipped), chance=chance, thresholds=tuple(thresholds),
                       recommendation=recommendation, target=target, confidence=confidence, n_networks=n_net,
                       networks=tuple(net_ids.tolist()), provenance=provenance)
