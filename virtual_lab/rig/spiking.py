"""Extracellular spiking: activations -> firing rates -> spike counts, and spike-sorting errors.

Forward model (one probe presentation = one trial of ``window_s`` seconds):

1. **Rate.** Each unit has a maximum rate ``r_max`` drawn log-normal across units (median
   ``max_rate_median_hz``, log-SD ``max_rate_log_sd``; firing rates are log-normal / heavy-tailed across
   neurons, Buzsaki & Mizuseki 2014). A unit's rate for activation ``a`` is the saturating rectifier
   ``r = r0 + (r_max - r0) * (1 - exp(-max(a, 0) / (gain * s)))`` with ``r0 = baseline_rate_hz`` and ``s`` the
   standard deviation of the layer's ground-truth activations (one fixed scale per layer, so the transfer
   function does not change over learning).
2. **Counts.** Poisson counts with mean ``r * window_s``, or the count of an equilibrium gamma renewal
   process of integer shape ``k`` (every k-th event of a Poisson process of rate ``k*r`` with a uniform
   random phase: ``floor((Poisson(k*r*T) + J) / k)``, ``J`` uniform on ``0..k-1``; exact). Gamma shape 2 is
   the MEArec / SpikeInterface generator option.
3. **Sorting** (:func:`sort_spikes`). Each unit has an SNR drawn log-normal; it is recalled with probability
   ``1 / (1 + exp(-(snr - snr_half_recall) / snr_recall_width))``; a recalled unit picks up a fraction
   ``contamination`` of its probe neighbour's spikes (neighbour = next unit index, as on a probe); with
   probability ``merge_probability`` it is merged with that neighbour (their spikes summed, the neighbour
   disappears); with probability ``split_probability`` it is split and only the larger cluster, holding
   ``split_kept_fraction`` of the spikes on average, passes quality control.

Randomness is drawn per (seed, layer, checkpoint) over the whole layer, so any slice of the recording reads
the same counts. References: SpikeForest (Magland et al. 2020, doi:10.7554/eLife.55167) for accuracy vs
SNR; Allen Visual Coding Neuropixels for quality-control thresholds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from virtual_lab.rig.recording import Recording, StepContext
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import check_choice, check_int, check_real

logger = logging.getLogger(__name__)

SPIKE_PROCESSES = ("poisson", "gamma")
_RATE_CODE, _COUNT_CODE, _SORT_UNIT_CODE, _SORT_CODE = 101, 102, 201, 202


def _layer_scale(context: StepContext) -> float:
    scale = float(np.std(context.source.activations[context.layer]))
    return scale if scale > 0 else 1.0


@dataclass(frozen=True)
class SpikingStep:
    """Activation -> rate -> spike count per presentation (see the module docstring)."""

    max_rate_median_hz: float
    max_rate_log_sd: float
    baseline_rate_hz: float
    gain: float
    window_s: float
    process: str
    gamma_shape: int
    seed: int

    def max_rates(self, n_units: int, layer_index: int) -> np.ndarray:
        """Maximum rate of every unit of a layer (Hz), shape (U,)."""
        rng = np.random.default_rng((self.seed, layer_index, _RATE_CODE))
        return self.max_rate_median_hz * np.exp(self.max_rate_log_sd * rng.standard_normal(n_units))

    def rates(self, values: np.ndarray, context: StepContext) -> np.ndarray:
        """Firing rates (Hz) for activations ``values`` of shape (T, S, U_layer)."""
        r_max = self.max_rates(values.shape[2], context.layer_index)
        drive = 1.0 - np.exp(-np.maximum(values, 0.0) / (self.gain * _layer_scale(context)))
        return self.baseline_rate_hz + np.maximum(r_max - self.baseline_rate_hz, 0.0) * drive

    def apply_activity(self, values: np.ndarray, context: StepContext) -> np.ndarray:
        expected = self.rates(values, context) * self.window_s
        out = np.empty(values.shape, dtype=np.float32)
        for row, t in enumerate(context.checkpoint_indices):
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), _COUNT_CODE))
            if self.process == "poisson":
                out[row] = rng.poisson(expected[row])
            else:
                k = self.gamma_shape
                events = rng.poisson(k * expected[row])
                phase = rng.integers(0, k, size=events.shape)
                out[row] = (events + phase) // k
        return out


def spike_counts(recording: Recording, *, max_rate_median_hz: float = 20.0, max_rate_log_sd: float = 1.0,
                 baseline_rate_hz: float = 0.5, gain: float = 1.0, window_s: float = 0.5,
                 process: str = "poisson", gamma_shape: int = 2, seed: int | None = None) -> Recording:
    """Observe spike counts per probe presentation instead of activations.

    Parameters
    ----------
    recording : Recording
        Must still hold activations (no other activity model applied).
    max_rate_median_hz : float, default=20.0
        Median over units of the maximum firing rate (Hz).
    max_rate_log_sd : float, default=1.0
        SD of the natural log of the maximum rate across units (log-normal spread).
    baseline_rate_hz : float, default=0.5
        Rate at zero activation (Hz).
    gain : float, default=1.0
        Activation, in units of the layer's activation SD, at which the rate reaches 63% of its maximum.
    window_s : float, default=0.5
        Counting window per presentation (s).
    process : {"poisson", "gamma"}, default="poisson"
    gamma_shape : int, default=2
        Shape of the gamma renewal process (integer >= 1; 1 is Poisson).
    seed : int, optional

    Returns
    -------
    Recording
        ``activations(layer)`` gives spike counts, shape (T, S, U), float32; ``measures`` is ``("act",)``.
    """
    if recording.activity_kind != "activation":
        raise ValueError(f"spike_counts needs layer activations, but this recording already holds "
                         f"{recording.activity_kind!r} values")
    step = SpikingStep(
        check_real("max_rate_median_hz", max_rate_median_hz, low=0, low_open=True),
        check_real("max_rate_log_sd", max_rate_log_sd, low=0),
        check_real("baseline_rate_hz", baseline_rate_hz, low=0),
        check_real("gain", gain, low=0, low_open=True),
        check_real("window_s", window_s, low=0, low_open=True),
        check_choice("process", process, SPIKE_PROCESSES),
        check_int("gamma_shape", gamma_shape, low=1),
        resolve_seed(seed),
    )
    record = {"step": "spike_counts", **{k: getattr(step, k) for k in step.__dataclass_fields__}}
    return recording.with_(activity_steps=recording.activity_steps + (step,), activity_kind="spike_count",
                           measures=("act",), provenance=recording.provenance + (record,))


@dataclass(frozen=True)
class SortingStep:
    """Spike-sorting errors on spike counts: contamination, merges and splits (recall acts on unit ids)."""

    snr_median: float
    snr_log_sd: float
    snr_half_recall: float
    snr_recall_width: float
    contamination: float
    merge_probability: float
    split_probability: float
    split_kept_fraction: float
    seed: int

    def unit_draws(self, n_units: int, layer_index: int) -> dict[str, np.ndarray]:
        """Per-unit SNR and recall / merge / split decisions of a layer, each shape (U,)."""
        rng = np.random.default_rng((self.seed, layer_index, _SORT_UNIT_CODE))
        snr = self.snr_median * np.exp(self.snr_log_sd * rng.standard_normal(n_units))
        recall = 1.0 / (1.0 + np.exp(-(snr - self.snr_half_recall) / self.snr_recall_width))
        recalled = rng.random(n_units) < recall
        merged = rng.random(n_units) < self.merge_probability
        split = rng.random(n_units) < self.split_probability
        return {"snr": snr, "recall_probability": recall, "recalled": recalled, "merged": merged, "split": split}

    def apply_activity(self, values: np.ndarray, context: StepContext) -> np.ndarray:
        n_units = values.shape[2]
        draws = self.unit_draws(n_units, context.layer_index)
        neighbour = (np.arange(n_units) + 1) % n_units
        counts = np.rint(values).astype(np.int64)
        out = counts.copy()
        out[:, :, draws["merged"]] += counts[:, :, neighbour[draws["merged"]]]
        for row, t in enumerate(context.checkpoint_indices):
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), _SORT_CODE))
            out[row] += rng.binomial(counts[row][:, neighbour], self.contamination)
            kept = rng.binomial(out[row], self.split_kept_fraction)
            out[row] = np.where(draws["split"][None, :], kept, out[row])
        return out.astype(np.float32)


def sort_spikes(recording: Recording, *, snr_median: float = 6.0, snr_log_sd: float = 0.5,
                snr_half_recall: float = 5.0, snr_recall_width: float = 1.0, contamination: float = 0.02,
                merge_probability: float = 0.05, split_probability: float = 0.05,
                split_kept_fraction: float = 0.7, seed: int | None = None) -> Recording:
    """Spike-sorting errors: units lost at low SNR, contamination, merges and splits.

    Parameters
    ----------
    recording : Recording
        Must hold spike counts (apply :func:`spike_counts` first).
    snr_median, snr_log_sd : float
        Log-normal distribution of unit SNR (peak amplitude / noise SD, dimensionless).
    snr_half_recall : float, default=5.0
        SNR at which half the units are recalled.
    snr_recall_width : float, default=1.0
        Width of the logistic recall curve (SNR units).
    contamination : float, default=0.02
        Fraction of the neighbouring unit's spikes wrongly assigned to each unit (0..1).
    merge_probability, split_probability : float
        Probability that a unit is merged with its neighbour / split (0..1).
    split_kept_fraction : float, default=0.7
        Mean fraction of a split unit's spikes in the cluster that is kept.
    seed : int, optional

    Returns
    -------
    Recording
        Fewer units (not recalled, or absorbed by a merge; a layer may be left with none, which is logged);
        their counts include the sorting errors.
    """
    if recording.activity_kind != "spike_count":
        raise ValueError(f"sort_spikes needs spike counts (apply spike_counts first); this recording holds "
                         f"{recording.activity_kind!r} values")
    probability = {"low": 0, "high": 1}
    step = SortingStep(
        check_real("snr_median", snr_median, low=0, low_open=True),
        check_real("snr_log_sd", snr_log_sd, low=0),
        check_real("snr_half_recall", snr_half_recall, low=0),
        check_real("snr_recall_width", snr_recall_width, low=0, low_open=True),
        check_real("contamination", contamination, **probability),
        check_real("merge_probability", merge_probability, **probability),
        check_real("split_probability", split_probability, **probability),
        check_real("split_kept_fraction", split_kept_fraction, **probability),
        resolve_seed(seed),
    )
    kept = {}
    for layer_index, layer in enumerate(recording.layer_names):
        n_all = recording.source.activations[layer].shape[2]
        draws = step.unit_draws(n_all, layer_index)
        neighbour = (np.arange(n_all) + 1) % n_all
        absorbed = np.zeros(n_all, dtype=bool)
        merging = draws["merged"] & draws["recalled"]
        absorbed[neighbour[merging]] = True
        absorbed[merging] = False  # a unit that absorbs its neighbour stays, even if absorbed itself
        current = recording.unit_indices[layer]
        kept[layer] = current[draws["recalled"][current] & ~absorbed[current]]
        if len(kept[layer]) == 0:
            logger.warning("spike sorting recalled no unit of layer %r of run %s", layer, recording.run_id)
    record = {"step": "sort_spikes", **{k: getattr(step, k) for k in step.__dataclass_fields__}}
    return recording.with_(unit_indices=kept, activity_steps=recording.activity_steps + (step,),
                           provenance=recording.provenance + (record,))
