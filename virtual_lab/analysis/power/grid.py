"""The reduction of the built-in rig path: one session -> features at every (rig seed, units, noise) point."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, Observable, _as_observables, compute_observables
from virtual_lab.rig.recording import Recording
from virtual_lab.rig.seeds import rig_stage_seeds
from virtual_lab.rig.transforms import checkpoint_positions, keep_synapses, keep_units
from virtual_lab.seeding import derive_seed
from virtual_lab.types import GroundTruth

logger = logging.getLogger(__name__)


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


def compute_grid_features(ground_truth: GroundTruth, *, unit_counts: Sequence[Sequence[int] | None],
                          noise_sds: Sequence[float], checkpoint_indices: Sequence[int], rig_seeds: Sequence[int],
                          layers: Sequence[str] | None = None, noise_relative: bool = True,
                          synapse_fraction: float | None = None,
                          observables: Sequence[Observable | str] = ADMISSIBLE_OBSERVABLES,
                          noise_measures: Sequence[str] = ("weight", "act", "gradavg")) -> np.ndarray:
    """Observables of one session at every (rig seed, units, noise) grid point, for the given checkpoints.

    Each value is exactly what ``compute_observables(observe(ground_truth, n_units=n, noise_sd=sd,
    noise_relative=noise_relative, synapse_fraction=synapse_fraction, n_checkpoints=K,
    seed=derive_seed(rig_seed, run_id)))`` gives at the same checkpoints (and what
    :func:`virtual_lab.rig.apply_preset` gives for a preset of the same paper steps), because it is made by
    the same functions: the stage seeds of :func:`virtual_lab.rig.seeds.rig_stage_seeds`, the units of
    :func:`virtual_lab.rig.keep_units`, the synapses of :func:`virtual_lab.rig.keep_synapses` and the noise
    of :meth:`virtual_lab.rig.Recording.noise_draws`. Only the work is shared: one noise draw per (rig seed,
    layer, checkpoint, measure) is scaled to every noise level, and weight observables are computed once per
    noise level (they do not depend on the units kept).

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

    Returns
    -------
    ndarray of float32, shape (n_rig_seeds, n_units, n_noise, n_layers, n_checkpoints, n_observables)
    """
    observables = _as_observables(observables)
    layers = tuple(ground_truth.layer_names if layers is None else layers)
    checkpoints = np.asarray(checkpoint_indices, dtype=np.int64)
    out = np.full((len(rig_seeds), len(unit_counts), len(noise_sds), len(layers), len(checkpoints),
                   len(observables)), np.nan, dtype=np.float32)
    base = Recording.from_ground_truth(ground_truth).with_(checkpoint_indices=checkpoints)
    noise = _NoiseAxis(tuple(float(sd) for sd in noise_sds), bool(noise_relative), frozenset(noise_measures))
    for r, rig_seed in enumerate(rig_seeds):
        seeds = rig_stage_seeds(derive_seed(int(rig_seed), ground_truth.run_id), ("units", "synapses", "noise"))
        view = base if synapse_fraction is None else keep_synapses(base, synapse_fraction, seed=seeds["synapses"])
        for li, layer in enumerate(layers):
            counts = [None if c is None else int(c[li]) for c in unit_counts]
            out[r, :, :, li] = _layer_features(view, layer, counts, noise, observables, seeds)
    return out


@dataclass(frozen=True)
class _NoiseAxis:
    """The noise levels of the grid and how they apply (relative to each measure's SD; which measures)."""

    sds: tuple[float, ...]
    relative: bool
    measures: frozenset[str]

    def noisy(self, measure: str, sd: float) -> bool:
        return sd > 0 and measure in self.measures


def _layer_features(view: Recording, layer: str, counts: Sequence[int | None], noise: _NoiseAxis,
                    observables: Sequence[Observable], seeds: Mapping[str, int]) -> np.ndarray:
    """Observables of one layer at every (units, noise) point, shape (n_units, n_noise, T, n_observables).

    ``counts`` holds the units kept at each units value (None: every unit); the noise added at a level is
    ``view.noise_scale(...) * view.noise_draws(seeds["noise"], ...)``, indexed like the rig's accessors.
    """
    n_t = view.n_checkpoints
    out = np.full((len(counts), len(noise.sds), n_t, len(observables)), np.nan, dtype=np.float32)
    weight_columns = [k for k, obs in enumerate(observables) if obs.measure == "weight"]
    other_columns = [k for k, obs in enumerate(observables) if obs.measure != "weight"]
    measures = {observables[k].measure for k in other_columns}
    if weight_columns:
        clean = view.weights(layer)
        if any(noise.noisy("weight", sd) for sd in noise.sds):
            draws = view.noise_draws(seeds["noise"], "weight", layer).reshape(n_t, -1)[:, view.synapse_indices[layer]]
        for ni, sd in enumerate(noise.sds):
            values = clean + view.noise_scale("weight", layer, sd, noise.relative) * draws if noise.noisy(
                "weight", sd) else clean
            stats = compute_observables(_LayerView(layer, n_t, weights=values),
                                        [observables[k] for k in weight_columns])[layer]
            out[:, ni][..., weight_columns] = stats.astype(np.float32)[None]
    if not other_columns:
        return out
    draws = {m: view.noise_draws(seeds["noise"], m, layer) for m in measures
             if any(noise.noisy(m, sd) for sd in noise.sds)}
    for ui, count in enumerate(counts):
        kept = view if count is None else keep_units(view, n_units=count, seed=seeds["units"], layers=[layer])
        units = kept.unit_indices[layer]
        act = kept.activations(layer) if "act" in measures else None
        change = kept.activity_change(layer) if "gradavg" in measures else None
        for ni, sd in enumerate(noise.sds):
            a, g = act, change
            if act is not None and noise.noisy("act", sd):
                a = act + kept.noise_scale("act", layer, sd, noise.relative) * draws["act"][:, :, units]
            if change is not None and noise.noisy("gradavg", sd):
                g = change + kept.noise_scale("gradavg", layer, sd, noise.relative) * draws["gradavg"]
            stats = compute_observables(_LayerView(layer, n_t, activations=a, activity_change=g),
                                        [observables[k] for k in other_columns])[layer]
            out[ui, ni][..., other_columns] = stats.astype(np.float32)
    return out


@dataclass(frozen=True)
class _Grid:
    """The grid of one analysis: the values asked for, those the recordings support, and the layout they need.

    ``unit_counts`` holds, per supported units value, the units kept in each layer (None: every unit);
    ``positions`` the checkpoint positions of each supported session count and ``checkpoints`` their union
    (the columns of the features of the built-in rig path).
    """

    units: tuple[int, ...]
    noise: tuple[float, ...]
    sessions: tuple[int, ...]
    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    depth: tuple[str, ...]
    n_checkpoints: int
    unit_values: tuple[int, ...]
    unit_counts: tuple[tuple[int, ...] | None, ...]
    session_values: tuple[int, ...]
    skipped: tuple[dict[str, Any], ...]
    positions: Mapping[int, np.ndarray]
    checkpoints: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.units), len(self.noise), len(self.sessions)

    def columns(self, k: int) -> list[int]:
        """Columns of ``checkpoints`` observed at ``k`` sessions."""
        column_of = {int(t): i for i, t in enumerate(self.checkpoints.tolist())}
        return [column_of[int(t)] for t in self.positions[k]]


def _supported_units(units: Sequence[int], layers: Sequence[str], sizes: Sequence[int], cap_units: bool,
                     skipped: list[dict[str, Any]]) -> tuple[list[int], list[tuple[int, ...] | None]]:
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
                                      f"sizes {tuple(sizes)}"})
            continue
        seen[counts] = n
        unit_values.append(n)
        unit_counts.append(None if counts == tuple(sizes) and n >= max(sizes) else counts)
    return unit_values, unit_counts


def _supported_grid(units: Sequence[int], noise: Sequence[float], sessions: Sequence[int],
                    layout: Mapping[str, Any], layers: Sequence[str], cap_units: bool) -> _Grid:
    """The grid values the recordings support (the others skipped with a warning naming why)."""
    all_layers = layout["layer_names"]
    sizes = tuple(layout["layer_sizes_all"][all_layers.index(l)] for l in layers)
    depth = tuple(layout["depth_positions"][all_layers.index(l)] for l in layers)
    n_t = layout["n_checkpoints"]
    skipped: list[dict[str, Any]] = []
    unit_values, unit_counts = _supported_units(units, layers, sizes, cap_units, skipped)
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
    positions = {k: checkpoint_positions(n_t, k, "even") for k in session_values}
    needed = np.unique(np.concatenate(list(positions.values())))
    return _Grid(tuple(units), tuple(noise), tuple(sessions), tuple(layers), sizes, depth, n_t, tuple(unit_values),
                 tuple(unit_counts), tuple(session_values), tuple(skipped), positions, needed)
