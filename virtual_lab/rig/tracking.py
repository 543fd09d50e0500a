"""Chronic tracking of units across recording sessions (checkpoints): units lost, identities swapped.

Every kept checkpoint is one recording session. At each session after the first (the reference session),
every unit of a layer is found again with probability ``found_probability``, independently per session
(CellReg / UnitMatch-style matching to the reference); the analysis keeps the units found at *every*
session, so a fraction ``1 - found_probability`` of the units is lost at each session. Independently, a
matched unit's identity is wrong with probability ``swap_probability`` at that session: its values come
from another unit of the layer (drawn from a per-session random permutation of all the layer's units, so
the impostor is often a unit that was never recorded before: a new unit taken for an old one).
``found_probability=1, swap_probability=1`` models acute recordings: every session a fresh random sample.

Draws come from ``(seed, layer, checkpoint)`` over the whole layer. The set of units found at every session
depends on which sessions are kept, so apply :func:`track_units` after :func:`keep_checkpoints`.
References: Sheintuch et al. 2017 (CellReg, < 5% errors); Yuan et al. 2024, eLife 92495 (84% of units
recovered across days, Neuropixels 2.0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from virtual_lab.rig.recording import Recording, StepContext
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import check_real

logger = logging.getLogger(__name__)

_TRACK_CODE = 401


@dataclass(frozen=True)
class TrackingStep:
    """Identity swaps of tracked units (losses act on the unit ids at transform time)."""

    found_probability: float
    swap_probability: float
    reference_checkpoint: int
    seed: int

    def session_draws(self, n_units: int, layer_index: int, checkpoint_index: int) -> dict[str, np.ndarray]:
        """``found`` (bool), ``swapped`` (bool) and ``partner`` (int) per unit at one checkpoint, shape (U,)."""
        rng = np.random.default_rng((self.seed, layer_index, int(checkpoint_index), _TRACK_CODE))
        found = rng.random(n_units) < self.found_probability
        swapped = rng.random(n_units) < self.swap_probability
        partner = rng.permutation(n_units)
        if checkpoint_index == self.reference_checkpoint:
            found[:] = True
            swapped[:] = False
        return {"found": found, "swapped": swapped, "partner": partner}

    def apply_activity(self, values: np.ndarray, context: StepContext) -> np.ndarray:
        out = values.copy()
        for row, t in enumerate(context.checkpoint_indices):
            draws = self.session_draws(values.shape[2], context.layer_index, int(t))
            swapped = draws["swapped"]
            out[row][:, swapped] = values[row][:, draws["partner"][swapped]]
        return out


def track_units(recording: Recording, *, found_probability: float = 0.84, swap_probability: float = 0.0,
                seed: int | None = None) -> Recording:
    """Keep the units tracked across all kept sessions, with identity swaps.

    Parameters
    ----------
    recording : Recording
    found_probability : float, default=0.84
        Probability that a unit is found again at each session after the first (0..1).
    swap_probability : float, default=0.0
        Probability that a tracked unit's identity is wrong at a session (0..1).
    seed : int, optional

    Returns
    -------
    Recording
        Only the units found at every kept session (a layer may be left with none, which is logged).
    """
    step = TrackingStep(check_real("found_probability", found_probability, low=0, high=1),
                        check_real("swap_probability", swap_probability, low=0, high=1),
                        int(recording.checkpoint_indices[0]), resolve_seed(seed))
    kept = {}
    for layer_index, layer in enumerate(recording.layer_names):
        n_all = recording.source.activations[layer].shape[2]
        found = np.ones(n_all, dtype=bool)
        for t in recording.checkpoint_indices:
            found &= step.session_draws(n_all, layer_index, int(t))["found"]
        current = recording.unit_indices[layer]
        kept[layer] = current[found[current]]
        if len(kept[layer]) == 0:
            logger.warning("no unit of layer %r of run %s was tracked across all %d sessions", layer,
                           recording.run_id, recording.n_checkpoints)
    record = {"step": "track_units", "found_probability": step.found_probability,
              "swap_probability": step.swap_probability, "reference_checkpoint": step.reference_checkpoint,
              "seed": step.seed}
    activity_steps = recording.activity_steps + ((step,) if step.swap_probability > 0 else ())
    return recording.with_(unit_indices=kept, activity_steps=activity_steps,
                           provenance=recording.provenance + (record,))
