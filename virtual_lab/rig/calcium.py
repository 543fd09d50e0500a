"""Two-photon calcium imaging: spike counts -> indicator kernel with saturation -> dF/F per presentation.

Forward model, per probe presentation (one trial; trials are long enough apart that the indicator returns
to rest, and the spikes of a trial fall uniformly in the spiking window ``[0, window_s)``):

1. **Kernel.** One action potential at time 0 adds calcium ``dca * k(t)`` with the double exponential
   ``k(t) = (exp(-t/tau_decay) - exp(-t/tau_rise)) / peak`` (peak value 1). ``n`` spikes spread over the
   window add ``n * kbar(t)``, ``kbar`` being ``k`` averaged over the spike time (closed form).
2. **Saturation.** Fluorescence follows the Hill curve ``F(Ca) = Ca^h / (Ca^h + Kd^h)`` from a resting
   calcium ``ca_rest_nm``; ``dF/F = F(Ca) / F(ca_rest) - 1``. ``dca`` is solved so that one spike at the
   kernel peak gives the indicator's single-AP amplitude ``dff_1ap``.
3. **Frames.** The trace is sampled at ``frame_rate_hz`` from the trial onset for ``response_window_s``;
   the measured response is the mean dF/F over those frames.
4. **Neuropil.** The ROI also sees the neuropil (modelled as the dF/F of the layer-average spike count) with
   a per-cell true coefficient ``r ~ N(neuropil_r_mean, neuropil_r_sd)``, and ``neuropil_r_subtract`` times
   the neuropil is subtracted (Suite2p's 0.7): the residual ``(r - r_subtract) * neuropil`` remains.
5. **Shot noise.** Per-frame Gaussian noise with SD ``sigma * sqrt(dF/F + 1)`` (CASCADE's training noise
   model), ``sigma = nu * sqrt(frame_rate_hz) / 95.4`` for a CASCADE noise level ``nu`` in %/sqrt(s) (CASCADE's
   ``nu = 100 * median|dF/F[t+1] - dF/F[t]| / sqrt(fps)``, and ``median|x - y| = 0.954 sigma`` for white noise).
   The mean of the frames is then Gaussian with SD ``sigma * sqrt(mean dF/F + 1) / sqrt(n_frames)`` (exact for
   independent frames), so one draw per presentation suffices.

Spike timing within the window enters only through the window-averaged kernel (the response to ``n``
spikes is computed at their expected positions); a trial's response is therefore a deterministic function
of its spike count plus neuropil and shot noise. Parameters and sources: ``/work/shared/rig_facts.md``
(Chen et al. 2013; Zhang et al. 2023; Dana et al. 2019; Rupprecht et al. 2021, doi:10.1038/s41593-021-00895-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from virtual_lab.rig.recording import Recording, StepContext
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import check_choice, check_real

_LN2 = float(np.log(2.0))

#: Indicator parameters. tau_rise_s / tau_decay_s: double-exponential time constants (s); dff_1ap: single-AP
#: peak dF/F (dimensionless); kd_nm: dissociation constant (nM); hill_n: Hill coefficient.
INDICATORS: Mapping[str, Mapping[str, float]] = {
    # Chen et al. 2013 Suppl. Table 3 fit (verify); Kd/Hill: Dana et al. 2019; dff_1ap: assumption (in vivo
    # single-AP amplitudes of tens of percent for 6s), not in rig_facts.md
    "GCaMP6s": {"tau_rise_s": 0.071, "tau_decay_s": 0.686, "dff_1ap": 0.25, "kd_nm": 144.0, "hill_n": 2.9},
    # Chen et al. 2013 fit (verify); Kd/Hill: Dana et al. 2019; dff_1ap: assumption, not in rig_facts.md
    "GCaMP6f": {"tau_rise_s": 0.0175, "tau_decay_s": 0.178, "dff_1ap": 0.15, "kd_nm": 375.0, "hill_n": 2.3},
    # Zhang et al. 2023 (culture): half-rise 7.1 ms, half-decay 118.3 ms -> tau = t_half / ln 2; 1-AP dF/F 0.76
    # in culture (in vivo lower). Kd/Hill not in rig_facts.md: assumption (Kd 100 nM, Hill 2).
    "jGCaMP8m": {"tau_rise_s": 0.0071 / _LN2, "tau_decay_s": 0.1183 / _LN2, "dff_1ap": 0.76, "kd_nm": 100.0,
                 "hill_n": 2.0},
}


def calcium_kernel(t_s: np.ndarray, tau_rise_s: float, tau_decay_s: float) -> np.ndarray:
    """Double-exponential calcium kernel of one spike at time 0, normalized to a peak of 1.

    Parameters
    ----------
    t_s : ndarray
        Times after the spike (s); the kernel is 0 for ``t < 0``.
    tau_rise_s, tau_decay_s : float
        Rise and decay time constants (s), ``tau_rise_s < tau_decay_s``.

    Returns
    -------
    ndarray, same shape as ``t_s``

    Examples
    --------
    >>> float(calcium_kernel(np.array([0.0]), 0.05, 0.5)[0])
    0.0
    """
    t_peak = kernel_peak_time(tau_rise_s, tau_decay_s)
    peak = np.exp(-t_peak / tau_decay_s) - np.exp(-t_peak / tau_rise_s)
    t = np.asarray(t_s, dtype=np.float64)
    value = (np.exp(-np.maximum(t, 0) / tau_decay_s) - np.exp(-np.maximum(t, 0) / tau_rise_s)) / peak
    return np.where(t >= 0, value, 0.0)


def kernel_peak_time(tau_rise_s: float, tau_decay_s: float) -> float:
    """Time (s) at which the double-exponential kernel peaks: ``tr*td/(td-tr) * ln(td/tr)``."""
    return tau_rise_s * tau_decay_s / (tau_decay_s - tau_rise_s) * np.log(tau_decay_s / tau_rise_s)


def _window_kernel(t: np.ndarray, tau_rise_s: float, tau_decay_s: float, window_s: float) -> np.ndarray:
    """``k`` averaged over a spike time uniform in [0, window_s), at times ``t`` (closed form)."""
    t_peak = kernel_peak_time(tau_rise_s, tau_decay_s)
    peak = np.exp(-t_peak / tau_decay_s) - np.exp(-t_peak / tau_rise_s)
    upper = np.minimum(t, window_s)

    def integral(tau: float) -> np.ndarray:  # int_0^upper exp(-(t - u)/tau) du
        return tau * (np.exp(-(t - upper) / tau) - np.exp(-t / tau))

    return np.where(t > 0, (integral(tau_decay_s) - integral(tau_rise_s)) / (peak * window_s), 0.0)


@dataclass(frozen=True)
class CalciumStep:
    """Spike counts -> mean dF/F per presentation (see the module docstring)."""

    indicator: str
    tau_rise_s: float
    tau_decay_s: float
    dff_1ap: float
    kd_nm: float
    hill_n: float
    ca_rest_nm: float
    window_s: float
    frame_rate_hz: float
    response_window_s: float
    noise_level: float
    neuropil_r_mean: float
    neuropil_r_sd: float
    neuropil_r_subtract: float
    seed: int

    @property
    def frame_times_s(self) -> np.ndarray:
        """Frame times from the trial onset (s), shape (F,)."""
        n_frames = max(1, int(round(self.response_window_s * self.frame_rate_hz)))
        return np.arange(n_frames) / self.frame_rate_hz

    @property
    def calcium_per_spike_nm(self) -> float:
        """Calcium added by one spike at the kernel peak (nM), solved from ``dff_1ap``."""
        f_rest = self._hill(self.ca_rest_nm)
        q = (1.0 + self.dff_1ap) * f_rest
        if q >= 1.0:
            raise ValueError(f"dff_1ap={self.dff_1ap} exceeds the dynamic range of indicator {self.indicator!r} "
                             f"at rest (maximum dF/F {1 / f_rest - 1:.3g})")
        return self.kd_nm * (q / (1.0 - q)) ** (1.0 / self.hill_n) - self.ca_rest_nm

    def _hill(self, ca: np.ndarray | float) -> np.ndarray:
        ratio = (np.asarray(ca, dtype=np.float64) / self.kd_nm) ** self.hill_n
        return ratio / (1.0 + ratio)

    def dff(self, spikes_at_peak: np.ndarray) -> np.ndarray:
        """dF/F for a calcium load of ``spikes_at_peak`` single-AP peaks (saturating Hill curve)."""
        ca = self.ca_rest_nm + self.calcium_per_spike_nm * np.asarray(spikes_at_peak, dtype=np.float64)
        return self._hill(ca) / self._hill(self.ca_rest_nm) - 1.0

    def trace(self, spike_times_s: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """Noise-free dF/F at ``times_s`` for spikes at ``spike_times_s`` (exact timing), shape like ``times_s``."""
        load = calcium_kernel(np.subtract.outer(np.asarray(times_s), np.asarray(spike_times_s)),
                              self.tau_rise_s, self.tau_decay_s).sum(axis=-1)
        return self.dff(load)

    def response(self, counts: np.ndarray) -> np.ndarray:
        """Noise-free mean dF/F over the response window for spike counts (any shape, may be non-integer)."""
        profile = _window_kernel(self.frame_times_s, self.tau_rise_s, self.tau_decay_s, self.window_s)
        counts = np.asarray(counts, dtype=np.float64)
        if counts.size and np.all(counts == np.rint(counts)) and counts.max() < 10_000:
            table = self.dff(np.arange(int(counts.max()) + 1)[:, None] * profile[None, :]).mean(axis=1)
            return table[counts.astype(np.int64)]
        return self.dff(counts[..., None] * profile).mean(axis=-1)

    @property
    def frame_noise_sd(self) -> float:
        """Per-frame shot-noise SD at rest (dF/F units) for the CASCADE noise level."""
        return self.noise_level * np.sqrt(self.frame_rate_hz) / 95.39

    def neuropil_coefficients(self, n_units: int, layer_index: int) -> np.ndarray:
        """True neuropil coefficient of every ROI of a layer, shape (U,), clipped to [0, 1]."""
        rng = np.random.default_rng((self.seed, layer_index, 301))
        return np.clip(self.neuropil_r_mean + self.neuropil_r_sd * rng.standard_normal(n_units), 0.0, 1.0)

    def apply_activity(self, values: np.ndarray, context: StepContext) -> np.ndarray:
        cell = self.response(values)                                    # (T, S, U)
        neuropil = self.response(values.mean(axis=2))                   # (T, S)
        r = self.neuropil_coefficients(values.shape[2], context.layer_index)
        measured = cell + (r - self.neuropil_r_subtract)[None, None, :] * neuropil[:, :, None]
        sd = self.frame_noise_sd * np.sqrt(np.maximum(cell + 1.0, 0.0) / len(self.frame_times_s))
        out = np.empty(values.shape, dtype=np.float32)
        for row, t in enumerate(context.checkpoint_indices):
            rng = np.random.default_rng((self.seed, context.layer_index, int(t), 302))
            out[row] = measured[row] + sd[row] * rng.standard_normal(values.shape[1:])
        return out


def calcium_imaging(recording: Recording, *, indicator: str = "GCaMP6s", frame_rate_hz: float = 30.0,
                    response_window_s: float = 1.0, noise_level: float = 2.0, neuropil_r_mean: float = 0.7,
                    neuropil_r_sd: float = 0.15, neuropil_r_subtract: float = 0.7, ca_rest_nm: float = 50.0,
                    tau_rise_s: float | None = None, tau_decay_s: float | None = None,
                    dff_1ap: float | None = None, kd_nm: float | None = None, hill_n: float | None = None,
                    seed: int | None = None) -> Recording:
    """Observe mean dF/F per presentation through a calcium indicator instead of spike counts.

    Parameters
    ----------
    recording : Recording
        Must hold spike counts (apply :func:`virtual_lab.rig.spiking.spike_counts` first); its spiking window
        is the window in which a trial's spikes fall.
    indicator : {"GCaMP6s", "GCaMP6f", "jGCaMP8m"}, default="GCaMP6s"
        Kinetics, single-AP amplitude and saturation from :data:`INDICATORS`; the keyword arguments
        ``tau_rise_s``, ``tau_decay_s``, ``dff_1ap``, ``kd_nm``, ``hill_n`` override single values.
    frame_rate_hz : float, default=30.0
        Imaging frame rate per plane (Hz).
    response_window_s : float, default=1.0
        Frames from the trial onset averaged into the response (s).
    noise_level : float, default=2.0
        CASCADE noise level nu (%/sqrt(s)); about 1 excellent, 3-4 decent, > 5 poor.
    neuropil_r_mean, neuropil_r_sd : float
        Distribution of the true neuropil coefficient across cells.
    neuropil_r_subtract : float, default=0.7
        Coefficient used for neuropil subtraction (Suite2p default).
    ca_rest_nm : float, default=50.0
        Resting calcium concentration (nM).
    seed : int, optional

    Returns
    -------
    Recording
        ``activations(layer)`` gives mean dF/F per presentation, shape (T, S, U), float32.
    """
    if recording.activity_kind != "spike_count":
        raise ValueError(f"calcium_imaging needs spike counts (apply spike_counts first); this recording holds "
                         f"{recording.activity_kind!r} values")
    check_choice("indicator", indicator, INDICATORS)
    params = dict(INDICATORS[indicator])
    for key, value in (("tau_rise_s", tau_rise_s), ("tau_decay_s", tau_decay_s), ("dff_1ap", dff_1ap),
                       ("kd_nm", kd_nm), ("hill_n", hill_n)):
        if value is not None:
            params[key] = value
    for key in params:
        check_real(key, params[key], low=0, low_open=True)
    if params["tau_rise_s"] >= params["tau_decay_s"]:
        raise ValueError(f"tau_rise_s={params['tau_rise_s']} must be shorter than tau_decay_s={params['tau_decay_s']}")
    spiking = [s for s in recording.activity_steps if hasattr(s, "window_s")][-1]
    step = CalciumStep(
        indicator=indicator, **{k: float(v) for k, v in params.items()},
        ca_rest_nm=check_real("ca_rest_nm", ca_rest_nm, low=0, low_open=True),
        window_s=float(spiking.window_s),
        frame_rate_hz=check_real("frame_rate_hz", frame_rate_hz, low=0, low_open=True),
        response_window_s=check_real("response_window_s", response_window_s, low=0, low_open=True),
        noise_level=check_real("noise_level", noise_level, low=0),
        neuropil_r_mean=check_real("neuropil_r_mean", neuropil_r_mean, low=0, high=1),
        neuropil_r_sd=check_real("neuropil_r_sd", neuropil_r_sd, low=0),
        neuropil_r_subtract=check_real("neuropil_r_subtract", neuropil_r_subtract, low=0, high=1),
        seed=resolve_seed(seed),
    )
    step.calcium_per_spike_nm  # validates dff_1ap against the indicator's dynamic range
    record = {"step": "calcium_imaging", **{k: getattr(step, k) for k in step.__dataclass_fields__}}
    return recording.with_(activity_steps=recording.activity_steps + (step,), activity_kind="dff",
                           provenance=recording.provenance + (record,))
