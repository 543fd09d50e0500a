"""Synapse measurement: an EM snapshot (one timepoint, magnitude only) and chronic spine imaging.

**EM snapshot** (:func:`em_snapshot`). One timepoint (by default the last kept checkpoint). A volume holds a
random fraction of the layer's presynaptic and postsynaptic units; every synapse between them is detected
with probability ``recall`` (SynEM: ~97%, Staffler et al. 2017), and false detections are added so that the
precision is ``precision``. A detected synapse's size is ``|w| * exp(N(0, size_log_sd))``: PSD area is linear
in strength (Holler et al. 2021), synapse sizes carry log-normal variability unrelated to history (Dorkenwald
et al. 2022, eLife 76120), and no sign is visible. A false detection gets the size of a random synapse of the
layer. Only weights are measured.

**Spine imaging** (:func:`spine_imaging`). Several timepoints. A fraction of the postsynaptic units has an
imaged dendrite holding a fraction of its inputs. Only excitatory (positive) synapses have spines: a
synapse's measured size is ``max(w, 0) * exp(N(0, size_log_sd))`` at every session (spine sizes fluctuate
substantially even for stable spines). Only weights are measured.

Draws come from ``(seed, layer[, checkpoint])`` over the whole layer, so any slice reads the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from virtual_lab.rig.recording import Recording, StepContext
from virtual_lab.rig.transforms import keep_checkpoints
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import check_real

_VOLUME_CODE, _DETECT_CODE, _SIZE_CODE, _FALSE_CODE = 501, 502, 503, 504


def _block(recording: Recording, layer_index: int, layer: str, pre_fraction: float, post_fraction: float,
           seed: int) -> np.ndarray:
    """Flat indices of the synapses between a random subset of post (rows) and pre (columns) units."""
    n_out, n_in = recording.source.weights[layer].shape[1:]
    rng = np.random.default_rng((seed, layer_index, _VOLUME_CODE))
    post = np.sort(rng.permutation(n_out)[:max(1, int(np.ceil(post_fraction * n_out)))])
    pre = np.sort(rng.permutation(n_in)[:max(1, int(np.ceil(pre_fraction * n_in)))])
    return (post[:, None] * n_in + pre[None, :]).ravel()


@dataclass(frozen=True)
class EMSizeStep:
    """Magnitude with log-normal size error, plus false detections appended as extra synapses."""

    size_log_sd: float
    precision: float
    seed: int

    def apply_synapses(self, values: np.ndarray, synapse_indices: np.ndarray, context: StepContext) -> np.ndarray:
        full = context.source.weights[context.layer].reshape(context.source.n_checkpoints, -1)
        n_all = full.shape[1]
        n_false = int(round(len(synapse_indices) * (1.0 - self.precision) / self.precision))
        out = np.empty((values.shape[0], values.shape[1] + n_false), dtype=np.float32)
        for row, t in enumerate(context.checkpoint_indices):
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), _SIZE_CODE))
            error = np.exp(self.size_log_sd * rng.standard_normal(n_all))[synapse_indices]
            out[row, :values.shape[1]] = np.abs(values[row]) * error
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), _FALSE_CODE))
            source = rng.integers(0, n_all, n_false)
            out[row, values.shape[1]:] = np.abs(full[t, source]) * np.exp(self.size_log_sd * rng.standard_normal(n_false))
        return out


def em_snapshot(recording: Recording, *, training_step: int | None = None, pre_fraction: float = 0.5,
                post_fraction: float = 0.5, recall: float = 0.97, precision: float = 0.97,
                size_log_sd: float = 0.3, seed: int | None = None) -> Recording:
    """A terminal EM volume: one timepoint, synapse sizes without sign, detection errors.

    Parameters
    ----------
    recording : Recording
    training_step : int, optional
        Training step of the snapshot (a recorded checkpoint); default: the last kept checkpoint.
    pre_fraction, post_fraction : float, default=0.5
        Fractions of the layer's input and output units inside the volume (0..1].
    recall, precision : float, default=0.97
        Synapse detection recall and precision (0..1].
    size_log_sd : float, default=0.3
        SD of the natural log of the multiplicative size error.
    seed : int, optional

    Returns
    -------
    Recording
        One checkpoint; ``measures == ("weight",)``; ``weights(layer)`` has shape (1, n_detected + n_false).
    """
    seed = resolve_seed(seed)
    pre_fraction = check_real("pre_fraction", pre_fraction, low=0, high=1, low_open=True)
    post_fraction = check_real("post_fraction", post_fraction, low=0, high=1, low_open=True)
    recall = check_real("recall", recall, low=0, high=1, low_open=True)
    precision = check_real("precision", precision, low=0, high=1, low_open=True)
    size_log_sd = check_real("size_log_sd", size_log_sd, low=0)
    step = int(recording.checkpoint_steps[-1]) if training_step is None else training_step
    rec = keep_checkpoints(recording, steps=[step], seed=seed)
    kept = {}
    for layer_index, layer in enumerate(rec.layer_names):
        volume = _block(rec, layer_index, layer, pre_fraction, post_fraction, seed)
        n_all = int(np.prod(rec.source.weights[layer].shape[1:]))
        detected = np.random.default_rng((seed, layer_index, _DETECT_CODE)).random(n_all) < recall
        current = rec.synapse_indices[layer]
        inside = np.intersect1d(current, volume, assume_unique=True)
        kept[layer] = inside[detected[inside]]
        if len(kept[layer]) == 0:
            raise ValueError(f"the EM volume holds no detected synapse of layer {layer!r}; raise pre_fraction, "
                             f"post_fraction or recall")
    measure = EMSizeStep(size_log_sd, precision, seed)
    record = {"step": "em_snapshot", "training_step": step, "pre_fraction": pre_fraction,
              "post_fraction": post_fraction, "recall": recall, "precision": precision,
              "size_log_sd": size_log_sd, "seed": seed}
    return rec.with_(synapse_indices=kept, synapse_steps=rec.synapse_steps + (measure,), measures=("weight",),
                     provenance=rec.provenance[:-1] + (record,))


@dataclass(frozen=True)
class SpineSizeStep:
    """Positive part of the weight with multiplicative log-normal noise per session."""

    size_log_sd: float
    seed: int

    def apply_synapses(self, values: np.ndarray, synapse_indices: np.ndarray, context: StepContext) -> np.ndarray:
        n_all = int(np.prod(context.source.weights[context.layer].shape[1:]))
        out = np.empty(values.shape, dtype=np.float32)
        for row, t in enumerate(context.checkpoint_indices):
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), _SIZE_CODE))
            error = np.exp(self.size_log_sd * rng.standard_normal(n_all))[synapse_indices]
            out[row] = np.maximum(values[row], 0.0) * error
        return out


def spine_imaging(recording: Recording, *, dendrite_fraction: float = 0.1, spine_fraction: float = 0.3,
                  size_log_sd: float = 0.2, seed: int | None = None) -> Recording:
    """Chronic in vivo spine imaging: positive weights only, multiplicative noise, every kept session.

    Parameters
    ----------
    recording : Recording
    dendrite_fraction : float, default=0.1
        Fraction of postsynaptic units with an imaged dendrite (0..1].
    spine_fraction : float, default=0.3
        Fraction of an imaged unit's inputs on the imaged dendrite (0..1].
    size_log_sd : float, default=0.2
        SD of the natural log of the multiplicative size noise per session.
    seed : int, optional

    Returns
    -------
    Recording
        ``measures == ("weight",)``; ``weights(layer)`` has shape (T, n_imaged), values >= 0.
    """
    seed = resolve_seed(seed)
    dendrite_fraction = check_real("dendrite_fraction", dendrite_fraction, low=0, high=1, low_open=True)
    spine_fraction = check_real("spine_fraction", spine_fraction, low=0, high=1, low_open=True)
    size_log_sd = check_real("size_log_sd", size_log_sd, low=0)
    kept = {}
    for layer_index, layer in enumerate(recording.layer_names):
        imaged = _block(recording, layer_index, layer, spine_fraction, dendrite_fraction, seed)
        kept[layer] = np.intersect1d(recording.synapse_indices[layer], imaged, assume_unique=True)
        if len(kept[layer]) == 0:
            raise ValueError(f"no imaged synapse left in layer {layer!r}; raise dendrite_fraction or spine_fraction")
    record = {"step": "spine_imaging", "dendrite_fraction": dendrite_fraction, "spine_fraction": spine_fraction,
              "size_log_sd": size_log_sd, "seed": seed}
    return recording.with_(synapse_indices=kept, synapse_steps=recording.synapse_steps + (SpineSizeStep(size_log_sd, seed),),
                           measures=("weight",), provenance=recording.provenance + (record,))
