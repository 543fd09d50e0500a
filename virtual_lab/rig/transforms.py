"""Paper-equivalent rig steps (Nayebi et al. 2020, ``obfuscate_tensor``) as pure, seeded functions.

Each function takes a :class:`~virtual_lab.rig.recording.Recording` and returns a new one; the input is
never modified. Each appends ``{"step", parameters..., "seed"}`` to the recording's provenance, with
``None`` seeds resolved to concrete integers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from virtual_lab.rig.recording import MEASURES, NoiseStep, Recording
from virtual_lab.rig.seeds import rig_stage_seeds
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import check_fraction, check_int, check_real


def keep_units(recording: Recording, n_units: int | None = None, fraction: float | None = None,
               seed: int | None = None, layers: Sequence[str] | None = None, cap: bool = False) -> Recording:
    """Keep a random subset of each layer's units, the same units at every checkpoint.

    Parameters
    ----------
    recording : Recording
    n_units : int, optional
        Units to keep per layer. A layer with fewer units than ``n_units`` is an error.
    fraction : float, optional
        Fraction of each layer's units to keep, rounded up (at least one unit), as in the paper.
    seed : int, optional
        Sampling seed; unit choice depends only on (seed, layer index), never on noise settings.
    layers : sequence of str, optional
        Only subsample these layers (the others keep their current units). Default: every layer.
    cap : bool, default=False
        With ``n_units``: a layer with fewer units keeps all of them instead of being an error.

    Returns
    -------
    Recording
    """
    if (n_units is None) == (fraction is None):
        raise ValueError("keep_units needs exactly one of n_units or fraction")
    seed = resolve_seed(seed)
    if layers is not None:
        unknown = [name for name in layers if name not in recording.layer_names]
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; recorded layers: {', '.join(recording.layer_names)}")
    kept = dict(recording.unit_indices)
    for layer_index, layer in enumerate(recording.layer_names):
        if layers is not None and layer not in layers:
            continue
        current = recording.unit_indices[layer]
        if n_units is not None:
            check_int("n_units", n_units, low=1)
            if n_units > len(current) and not cap:
                raise ValueError(f"n_units={n_units} is more than layer {layer!r} has "
                                 f"({len(current)} units available); cap=True keeps all of a smaller layer")
            count = min(int(n_units), len(current))
        else:
            count = int(np.ceil(check_fraction("fraction", fraction, include_one=True) * len(current)))
        order = np.random.default_rng((seed, layer_index)).permutation(len(current))
        kept[layer] = np.sort(current[order[:count]])
    step = {"step": "keep_units", "n_units": n_units, "fraction": fraction, "seed": seed,
            "layers": None if layers is None else list(layers), "cap": bool(cap)}
    return recording.with_(unit_indices=kept, provenance=recording.provenance + (step,))


def keep_synapses(recording: Recording, fraction: float, seed: int | None = None) -> Recording:
    """Keep a random fraction of each layer's synapses (the same synapses at every checkpoint).

    Parameters
    ----------
    recording : Recording
    fraction : float
        Fraction in (0, 1], rounded up to at least one synapse.
    seed : int, optional

    Returns
    -------
    Recording
    """
    fraction = check_fraction("fraction", fraction, include_one=True)
    seed = resolve_seed(seed)
    kept = {}
    for layer_index, layer in enumerate(recording.layer_names):
        current = recording.synapse_indices[layer]
        count = int(np.ceil(fraction * len(current)))
        order = np.random.default_rng((seed, layer_index, 1)).permutation(len(current))
        kept[layer] = np.sort(current[order[:count]])
    step = {"step": "keep_synapses", "fraction": fraction, "seed": seed}
    return recording.with_(synapse_indices=kept, provenance=recording.provenance + (step,))


def add_noise(recording: Recording, sd: float, relative: bool = False,
              measures: Sequence[str] = MEASURES, seed: int | None = None) -> Recording:
    """Add Gaussian measurement noise N(0, sd) to the chosen measures.

    Parameters
    ----------
    recording : Recording
    sd : float
        Noise standard deviation (>= 0). With ``relative=True``, in units of each measure's ground-truth
        standard deviation for that layer.
    relative : bool, default=False
    measures : sequence of {"weight", "act", "gradavg"}, default=all three
    seed : int, optional

    Returns
    -------
    Recording
    """
    check_real("sd", sd, low=0)
    measures = tuple(measures)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure {unknown[0]!r}; allowed: {', '.join(MEASURES)}")
    seed = resolve_seed(seed)
    step = NoiseStep(float(sd), bool(relative), measures, seed)
    record = {"step": "add_noise", "sd": float(sd), "relative": bool(relative),
              "measures": list(measures), "seed": seed}
    return recording.with_(noise=recording.noise + (step,), provenance=recording.provenance + (record,))


CHECKPOINT_SPACINGS = ("even", "random", "early", "late")


def checkpoint_positions(n_available: int, n_checkpoints: int, spacing: str = "even", seed: int = 0) -> np.ndarray:
    """Positions (sorted, int64) among ``n_available`` checkpoints that :func:`keep_checkpoints` keeps.

    ``"even"`` spaces ``n_checkpoints`` evenly, first and last included (rounded, so fewer when two round to
    the same checkpoint); ``"random"`` draws them with ``seed``; ``"early"`` / ``"late"`` take the first / last.

    Examples
    --------
    >>> checkpoint_positions(21, 3).tolist()
    [0, 10, 20]
    """
    if spacing == "even":
        return np.unique(np.round(np.linspace(0, n_available - 1, n_checkpoints)).astype(np.int64))
    if spacing == "random":
        return np.sort(np.random.default_rng((seed, 2)).choice(n_available, n_checkpoints, replace=False))
    if spacing == "early":
        return np.arange(n_checkpoints)
    return np.arange(n_available - n_checkpoints, n_available)


def keep_checkpoints(recording: Recording, n_checkpoints: int | None = None, spacing: str = "even",
                     steps: Sequence[int] | None = None, seed: int | None = None) -> Recording:
    """Keep a subset of checkpoints (sparse sessions over learning).

    Parameters
    ----------
    recording : Recording
    n_checkpoints : int, optional
        How many to keep, chosen by ``spacing``; the first and last are always kept for ``"even"``.
    spacing : {"even", "random", "early", "late"}, default="even"
    steps : sequence of int, optional
        Explicit training steps to keep instead (each must be a recorded checkpoint).
    seed : int, optional
        Used by ``spacing="random"``.

    Returns
    -------
    Recording
    """
    available = recording.checkpoint_indices
    all_steps = recording.checkpoint_steps
    seed = resolve_seed(seed)
    if steps is not None:
        missing = [s for s in steps if s not in set(all_steps.tolist())]
        if missing:
            raise ValueError(f"checkpoint step {missing[0]} was not recorded; recorded steps: "
                             f"{all_steps.tolist()}")
        positions = np.array(sorted({int(np.flatnonzero(all_steps == s)[0]) for s in steps}), dtype=np.int64)
    else:
        check_int("n_checkpoints", n_checkpoints, low=1)
        if n_checkpoints > len(available):
            raise ValueError(f"n_checkpoints={n_checkpoints} is more than were recorded "
                             f"({len(available)} available)")
        if spacing not in CHECKPOINT_SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(CHECKPOINT_SPACINGS)}; got {spacing!r}")
        positions = checkpoint_positions(len(available), int(n_checkpoints), spacing, seed)
    record = {"step": "keep_checkpoints", "n_checkpoints": n_checkpoints, "spacing": spacing,
              "steps": None if steps is None else [int(s) for s in steps], "seed": seed}
    return recording.with_(checkpoint_indices=available[positions],
                           provenance=recording.provenance + (record,))


def observe(ground_truth, *, unit_fraction: float | None = None, n_units: int | None = None,
            synapse_fraction: float | None = None, noise_sd: float = 0.0, noise_relative: bool = False,
            n_checkpoints: int | None = None, checkpoint_spacing: str = "even",
            seed: int | None = None) -> Recording:
    """Observe a ground-truth session through the paper-equivalent rig in one call.

    Sub-seeds for units, synapses, noise and checkpoints are derived from one ``seed`` by
    :func:`virtual_lab.rig.seeds.rig_stage_seeds` (as :func:`virtual_lab.rig.apply_preset` derives them), so
    changing ``noise_sd`` never changes which units are kept.

    Returns
    -------
    Recording
    """
    seeds = rig_stage_seeds(seed, ("units", "synapses", "noise", "checkpoints"))
    rec = Recording.from_ground_truth(ground_truth)
    if unit_fraction is not None or n_units is not None:
        rec = keep_units(rec, n_units=n_units, fraction=unit_fraction, seed=seeds["units"])
    if synapse_fraction is not None:
        rec = keep_synapses(rec, synapse_fraction, seed=seeds["synapses"])
    if n_checkpoints is not None:
        rec = keep_checkpoints(rec, n_checkpoints, spacing=checkpoint_spacing, seed=seeds["checkpoints"])
    if noise_sd:
        rec = add_noise(rec, noise_sd, relative=noise_relative, seed=seeds["noise"])
    return rec
