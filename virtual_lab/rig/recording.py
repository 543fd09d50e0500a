"""A lazy, read-only view of a ground-truth session as a recording rig sees it.

A :class:`Recording` never copies or mutates its source. Rig transforms (:mod:`virtual_lab.rig.transforms`)
return new views that differ only in which units, synapses and checkpoints are kept and which noise
steps are applied. Noise is drawn from ``default_rng((seed, layer_index, checkpoint_index, measure))`` over
the *whole* layer at that checkpoint and then indexed, so any slice reads the same values however it is
requested, and changing a noise level never changes which units were sampled.

Modality models (:mod:`virtual_lab.rig.spiking`, :mod:`~virtual_lab.rig.calcium`,
:mod:`~virtual_lab.rig.tracking`, :mod:`~virtual_lab.rig.synapses`) add *measurement steps*. An activity step
maps the whole layer at the kept checkpoints, shape (T, S, U_layer), to what the rig measures per probe
presentation (e.g. spike counts in a trial window, mean dF/F in a response window); the kept units are
indexed afterwards, so the values of a unit never depend on which other units were kept. A synapse step
maps the kept synapses to their measured sizes. Order of evaluation: activity steps in the order they were
added, then unit selection, then additive noise; for synapses: selection, additive noise, synapse step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from virtual_lab.lab.conv_geometry import conv_input_sums, conv_layers
from virtual_lab.types import GroundTruth

MEASURES = ("weight", "act", "gradavg")
_MEASURE_CODE = {"weight": 0, "act": 1, "gradavg": 2}


@dataclass(frozen=True)
class NoiseStep:
    """Additive Gaussian noise N(0, sd) (``relative``: sd times the measure's ground-truth std)."""

    sd: float
    relative: bool
    measures: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class StepContext:
    """What a measurement step may look at when it is evaluated for one layer.

    Attributes
    ----------
    source : GroundTruth
        The session observed.
    layer : str
    layer_index : int
        Position of ``layer`` in ``source.layer_names`` (part of every noise seed).
    checkpoint_indices : ndarray of int64, shape (T,)
        Positions of the kept checkpoints in the source (part of every noise seed).
    """

    source: GroundTruth
    layer: str
    layer_index: int
    checkpoint_indices: np.ndarray


@dataclass(frozen=True, eq=False)
class Recording:
    """What a rig observes of one session.

    Build one with :meth:`from_ground_truth`; narrow it with the transforms in
    :mod:`virtual_lab.rig.transforms`.

    Attributes
    ----------
    source : GroundTruth
        The session observed (never modified).
    unit_indices : dict of str to ndarray of int64
        Positions of the kept units of each layer (the same units at every checkpoint).
    synapse_indices : dict of str to ndarray of int64
        Flat positions (into ``out * in``) of the kept synapses of each layer.
    checkpoint_indices : ndarray of int64
        Positions of the kept checkpoints in ``source.checkpoint_steps``.
    noise : tuple of NoiseStep
        Noise steps, applied in order.
    provenance : tuple of dict
        One entry per transform: its name, parameters and resolved seed.
    activity_steps : tuple
        Measurement steps on the layer outputs (objects with ``apply_activity(values, context)``), in order.
    synapse_steps : tuple
        Measurement steps on the kept synapses (objects with ``apply_synapses(values, synapse_indices,
        context)``), in order.
    measures : tuple of str
        What this rig measures, a subset of ``("weight", "act", "gradavg")``; asking for another measure
        is an error (a spike rig does not see weights).
    activity_kind : str
        What ``activations`` holds: ``"activation"`` (the layer output), ``"spike_count"`` or ``"dff"``.
    """

    source: GroundTruth
    unit_indices: Mapping[str, np.ndarray]
    synapse_indices: Mapping[str, np.ndarray]
    checkpoint_indices: np.ndarray
    noise: tuple[NoiseStep, ...] = ()
    provenance: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    activity_steps: tuple[Any, ...] = ()
    synapse_steps: tuple[Any, ...] = ()
    measures: tuple[str, ...] = MEASURES
    activity_kind: str = "activation"

    @classmethod
    def from_ground_truth(cls, ground_truth: GroundTruth) -> "Recording":
        """Full observation: every unit, every synapse, every checkpoint, no noise."""
        units = {name: np.arange(ground_truth.activations[name].shape[2]) for name in ground_truth.layer_names}
        synapses = {name: np.arange(int(np.prod(ground_truth.weights[name].shape[1:])))
                    for name in ground_truth.layer_names}
        return cls(ground_truth, units, synapses, np.arange(ground_truth.n_checkpoints))

    # -- descriptive properties -------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.source.layer_names

    @property
    def depth_positions(self) -> tuple[str, ...]:
        return self.source.depth_positions

    @property
    def checkpoint_steps(self) -> np.ndarray:
        """Training step of each kept checkpoint, shape (T,)."""
        return self.source.checkpoint_steps[self.checkpoint_indices]

    @property
    def n_checkpoints(self) -> int:
        return len(self.checkpoint_indices)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.source.metadata

    @property
    def run_id(self) -> str:
        return self.source.run_id

    @property
    def rule(self) -> str:
        return self.source.rule

    def n_units(self, layer: str) -> int:
        return len(self.unit_indices[layer])

    def with_(self, **changes: Any) -> "Recording":
        """A copy with some fields replaced (used by transforms)."""
        return replace(self, **changes)

    def context(self, layer: str) -> StepContext:
        """The :class:`StepContext` of ``layer`` for this view."""
        return StepContext(self.source, layer, self.layer_names.index(layer), self.checkpoint_indices)

    def _require(self, measure: str) -> None:
        if measure not in self.measures:
            raise ValueError(f"this rig does not measure {measure!r} (it measures: {', '.join(self.measures)}); "
                             f"restrict the observables to recording.measures")

    # -- accessors ------------------------------------------------------------------------------
    def activations(self, layer: str) -> np.ndarray:
        """Observed layer outputs, shape (T, S, U) float32 (T kept checkpoints, U kept units)."""
        self._require("act")
        full = self.source.activations[layer]
        units = self.unit_indices[layer]
        if self.activity_steps:
            values = full[self.checkpoint_indices].astype(np.float32, copy=True)
            context = self.context(layer)
            for step in self.activity_steps:
                values = step.apply_activity(values, context)
            out = np.ascontiguousarray(values[:, :, units], dtype=np.float32)
        else:
            out = full[self.checkpoint_indices][:, :, units].astype(np.float32, copy=True)
        return self._add_noise(out, "act", layer, lambda noise: noise[:, :, units])

    def weights(self, layer: str) -> np.ndarray:
        """Observed synapses (forward weights, flattened), shape (T, n_synapses) float32."""
        self._require("weight")
        full = self.source.weights[layer]
        flat = full.reshape(full.shape[0], -1)
        syn = self.synapse_indices[layer]
        out = flat[self.checkpoint_indices][:, syn].astype(np.float32, copy=True)
        out = self._add_noise(out, "weight", layer, lambda noise: noise.reshape(noise.shape[0], -1)[:, syn])
        if self.synapse_steps:
            context = self.context(layer)
            for step in self.synapse_steps:
                out = step.apply_synapses(out, syn, context)
        return out

    def activity_change(self, layer: str) -> np.ndarray:
        """Observed layer-wise activity change per stimulus, shape (T, S) float32.

        With every unit kept this is the recorded ``g_b``. With fewer units it is recomputed over the kept
        output units: ``g_b = mean_{j kept} f'(h_bj) * sum_i W_ji`` (``f'`` from the layer's nonlinearity).
        """
        self._require("gradavg")
        units = self.unit_indices[layer]
        n_all = self.source.activations[layer].shape[2]
        if len(units) == n_all:
            out = self.source.activity_change[layer][self.checkpoint_indices].astype(np.float32, copy=True)
        else:
            out = self._recomputed_activity_change(layer, units)
        return self._add_noise(out, "gradavg", layer, lambda noise: noise)

    # -- internals ------------------------------------------------------------------------------
    def _recomputed_activity_change(self, layer: str, units: np.ndarray) -> np.ndarray:
        """``g_b`` over the given output units: ``mean_j f'(h_bj) * sum_i dh_bj/dx_bi``, shape (T, S)."""
        act = self.source.activations[layer][self.checkpoint_indices][:, :, units]
        w = self.source.weights[layer][self.checkpoint_indices]
        input_sums = self._input_sums(layer, w)[:, units]  # (T, U)
        nonlin = self._nonlinearity(layer)
        deriv = (act > 0).astype(np.float32) if nonlin == "relu" else np.ones_like(act)
        return np.einsum("tsu,tu->ts", deriv, input_sums).astype(np.float32) / len(units)

    def _input_sums(self, layer: str, w: np.ndarray) -> np.ndarray:
        """``sum_i dh_j/dx_i`` for every output unit ``j`` of a layer, shape (T, n_units).

        A dense layer's is the row sum of ``W``; a convolution's is the convolution of an all-ones input
        with the kernel (edge units see fewer inputs through the zero padding), rebuilt from the session's
        architecture metadata.
        """
        meta = self.source.metadata
        architecture = str(meta.get("architecture", "mlp"))
        if architecture == "mlp":
            return w.sum(axis=2)
        channels = tuple(int(c) for c in str(meta.get("channels", "")).split(",") if c)
        input_shape = tuple(int(d) for d in str(meta["input_shape"]).split("x"))
        n_outputs = self.source.weights[self.layer_names[-1]].shape[1]
        spec = {c.name: c for c in conv_layers(architecture, channels, input_shape, n_outputs)}[layer]
        if spec.kind == "fc":
            return w.sum(axis=2)
        return conv_input_sums(spec, w)

    def _nonlinearity(self, layer: str) -> str:
        spec = str(self.source.metadata.get("nonlinearities", ""))
        names = spec.split(",") if spec else []
        index = self.layer_names.index(layer)
        if len(names) == len(self.layer_names):
            return names[index]
        return "linear" if index == len(self.layer_names) - 1 else "relu"

    def _full_shape(self, measure: str, layer: str) -> tuple[int, ...]:
        if measure == "act":
            return self.source.activations[layer].shape[1:]
        if measure == "weight":
            return self.source.weights[layer].shape[1:]
        return self.source.activity_change[layer].shape[1:]

    def _scale(self, measure: str, layer: str) -> float:
        table = {"act": self.source.activations, "weight": self.source.weights,
                 "gradavg": self.source.activity_change}[measure]
        return float(np.std(table[layer]))

    def noise_draws(self, seed: int, measure: str, layer: str) -> np.ndarray:
        """Standard-normal draws of a noise step with ``seed`` on ``measure`` of ``layer``, over the whole layer.

        One generator per (seed, layer index, checkpoint index, measure code), at the kept checkpoints; every
        unit and synapse of the layer is drawn, so a subset indexes the same values (the accessors index these
        by the kept units / synapses).

        Returns
        -------
        ndarray of float32, shape (T, *layer shape of the measure)
        """
        layer_index = self.layer_names.index(layer)
        shape = self._full_shape(measure, layer)
        draws = np.empty((len(self.checkpoint_indices), *shape), dtype=np.float32)
        for row, t in enumerate(self.checkpoint_indices):
            rng = np.random.default_rng((seed, layer_index, int(t), _MEASURE_CODE[measure]))
            draws[row] = rng.standard_normal(shape, dtype=np.float32)
        return draws

    def noise_scale(self, measure: str, layer: str, sd: float, relative: bool) -> np.float32:
        """The factor of :meth:`noise_draws` for noise SD ``sd`` (``relative``: times the ground-truth SD of
        ``measure`` in ``layer``)."""
        return np.float32(sd * (self._scale(measure, layer) if relative else 1.0))

    def _add_noise(self, values: np.ndarray, measure: str, layer: str, index) -> np.ndarray:
        steps = [step for step in self.noise if measure in step.measures and step.sd > 0]
        for step in steps:
            values += self.noise_scale(measure, layer, step.sd, step.relative) * index(
                self.noise_draws(step.seed, measure, layer))
        return values
