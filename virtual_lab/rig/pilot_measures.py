"""What one pilot session shows: the CASCADE noise level, trial-aligned responses, split-half reliability.

The per-session measurements behind :func:`virtual_lab.rig.calibrate.calibrate`, which combines them over
sessions and maps them onto a rig preset; the definitions and their sources are in that module's docstring.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from virtual_lab.sessions.pilot import PilotSession, TrialTable

__all__ = ["F0_PERCENTILE", "as_dff", "cascade_noise_level", "ecephys_session", "median_of", "ophys_session",
           "split_half_reliability", "trial_means", "trial_spike_counts"]

#: Fluorescence traces (not dF/F) are turned into dF/F with F0 = this percentile of each ROI's trace.
F0_PERCENTILE = 10.0

def cascade_noise_level(dff: np.ndarray, frame_rate_hz: float) -> np.ndarray:
    """CASCADE's standardized noise level of each ROI, in %/sqrt(s).

    ``nu = 100 * median_t |dF/F_{t+1} - dF/F_t| / sqrt(frame_rate)`` (NaN frames ignored), as
    ``cascade2p.utils.calculate_noise_levels`` computes it (Rupprecht et al. 2021).

    Parameters
    ----------
    dff : ndarray, shape (n_frames, n_rois)
        dF/F as a fraction (0.1 is 10%).
    frame_rate_hz : float

    Returns
    -------
    ndarray of float64, shape (n_rois,)

    Examples
    --------
    >>> x = np.array([[0.0], [0.1], [0.0], [0.1]])
    >>> round(float(cascade_noise_level(x, 25.0)[0]), 6)
    2.0
    """
    with np.errstate(all="ignore"):
        return 100.0 * np.nanmedian(np.abs(np.diff(np.asarray(dff, dtype=np.float64), axis=0)), axis=0) \
            / math.sqrt(frame_rate_hz)


def trial_means(data: np.ndarray, times_s: np.ndarray, start_s: np.ndarray, stop_s: np.ndarray) -> np.ndarray:
    """Mean of the frames of each trial, ``start <= t < stop``: shape (n_trials, n_rois), NaN for a trial
    without frames."""
    data = np.asarray(data, dtype=np.float64)
    first = np.searchsorted(times_s, start_s, side="left")
    last = np.searchsorted(times_s, stop_s, side="left")
    cumulative = np.vstack([np.zeros((1, data.shape[1])), np.cumsum(data, axis=0)])
    n = (last - first)[:, None]
    with np.errstate(all="ignore"):
        return np.where(n > 0, (cumulative[last] - cumulative[first]) / n, np.nan)


def trial_spike_counts(spike_times: Sequence[np.ndarray], start_s: np.ndarray, stop_s: np.ndarray) -> np.ndarray:
    """Spikes of each unit in each trial, ``start <= t < stop``: shape (n_trials, n_units), float64."""
    out = np.empty((len(start_s), len(spike_times)))
    for u, times in enumerate(spike_times):
        out[:, u] = np.searchsorted(times, stop_s, side="left") - np.searchsorted(times, start_s, side="left")
    return out


def split_half_reliability(responses: np.ndarray, stimulus: np.ndarray) -> np.ndarray:
    """Split-half reliability of each cell's mean response per stimulus, Spearman-Brown corrected.

    The repeats of each stimulus (in time order) go alternately to two halves; the reliability is the
    Pearson correlation, over stimuli, of the two halves' mean responses, corrected to the full number of
    repeats (``2r / (1 + |r|)``: Spearman-Brown for ``r >= 0``, kept within [-1, 1] below). For responses
    ``mu_s + noise`` with ``m`` repeats per stimulus its expected value is about ``var(mu) / (var(mu) + var(noise) / m)``.

    Parameters
    ----------
    responses : ndarray, shape (n_trials, n_cells)
    stimulus : ndarray, shape (n_trials,)

    Returns
    -------
    ndarray of float64, shape (n_cells,)
        NaN for every cell when fewer than 3 stimuli are repeated, and for a cell without variance.
    """
    stimulus = np.asarray(stimulus)
    halves: list[tuple[np.ndarray, np.ndarray]] = []
    for value in np.unique(stimulus):
        rows = np.flatnonzero(stimulus == value)
        if len(rows) >= 2:
            halves.append((np.nanmean(responses[rows[0::2]], axis=0), np.nanmean(responses[rows[1::2]], axis=0)))
    if len(halves) < 3:
        return np.full(responses.shape[1], np.nan)
    a = np.array([h[0] for h in halves])
    b = np.array([h[1] for h in halves])
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    with np.errstate(all="ignore"):
        r = (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
        return 2 * r / (1 + np.abs(r))


def as_dff(series) -> tuple[np.ndarray, str]:
    """dF/F (fraction) of a series, and how it was obtained."""
    data = np.asarray(series.data, dtype=np.float64)
    if series.container == "Fluorescence":
        f0 = np.percentile(data, F0_PERCENTILE, axis=0)
        with np.errstate(all="ignore"):
            dff = np.where(f0 > 0, data / f0 - 1.0, np.nan)
        return dff, f"dF/F = F/F0 - 1 with F0 = the {F0_PERCENTILE:g}th percentile of each ROI's Fluorescence trace"
    if "%" in series.unit or "percent" in series.unit.lower():
        return data / 100.0, f"DfOverF in percent (unit {series.unit!r}), divided by 100"
    return data, "DfOverF"


def _trials(session: PilotSession, stimulus: bool) -> TrialTable | None:
    """The first trials / presentations table naming its stimulus (or, unless ``stimulus``, any)."""
    named = next((t for t in session.trials if t.stimulus is not None and t.n_trials), None)
    return named if named is not None or stimulus else next((t for t in session.trials if t.n_trials), None)


def median_of(values: Iterable[float]) -> float:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def _log_sd(values: np.ndarray | None) -> float:
    values = np.asarray(values if values is not None else [], dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.std(np.log(values), ddof=1)) if len(values) > 2 else float("nan")


def _session_summary(session: PilotSession) -> dict[str, Any]:
    trials = _trials(session, stimulus=False)
    return {"file": session.path, "subject_id": session.subject_id,
            "session_start_time": session.session_start_time.isoformat(), "trials": "" if trials is None else trials.path,
            "n_trials": 0 if trials is None else trials.n_trials, "stimulus_column": "" if trials is None
            else trials.stimulus_column, "trial_duration_s": float("nan") if trials is None
            else median_of(trials.stop_s - trials.start_s)}


def ophys_session(session: PilotSession) -> dict[str, Any]:
    """Per-file measurements of an imaging session (noise NaN when the series are not frame by frame)."""
    noise, notes, reliability = [], set(), []
    trials = _trials(session, stimulus=True)
    for series in session.roi_series:
        dff, how = as_dff(series)
        notes.add(how)
        noise.append(cascade_noise_level(dff, series.rate_hz))
        if trials is not None:
            means = trial_means(dff, series.times_s, trials.start_s, trials.stop_s)
            reliability.append(split_half_reliability(means, trials.stimulus))
    first, nu = session.roi_series[0], np.concatenate(noise)
    rate = median_of(s.rate_hz for s in session.roi_series)
    imaging = first.imaging_rate_hz or float("nan")
    frames = not rate < 0.5 * imaging  # one value per trial, say, is no frame-by-frame dF/F
    quartiles = np.nanpercentile(nu, [25, 75]).tolist() if np.isfinite(nu).any() else None
    return {**_session_summary(session), "n_cells": int(sum(s.n_rois for s in session.roi_series)),
            "n_frames": int(max(s.data.shape[0] for s in session.roi_series)), "series_rate_hz": rate,
            "imaging_rate_hz": imaging, "frame_rate_hz": rate if frames else imaging,
            "noise_level": median_of(nu) if frames else float("nan"), "noise_level_quartiles": quartiles,
            "indicator": first.indicator, "series": [s.path for s in session.roi_series], "dff": sorted(notes),
            "reliability": median_of(np.concatenate(reliability)) if reliability else float("nan")}


def ecephys_session(session: PilotSession) -> dict[str, Any]:
    """Per-file measurements of a spike-sorted session."""
    units = session.units
    counts = np.array([len(s) for s in units.spike_times], dtype=np.float64)
    with np.errstate(all="ignore"):
        rates = np.where(units.observed_s > 0, counts / units.observed_s, np.nan)
    out = {**_session_summary(session), "n_cells": units.n_units, "n_electrodes": units.n_electrodes,
           "observed_from": units.observed_source, "firing_rate_median_hz": median_of(rates),
           "firing_rate_log_sd": _log_sd(rates), "snr_median": median_of(units.snr if units.snr is not None else []),
           "snr_log_sd": _log_sd(units.snr), "driven_rate_median_hz": float("nan"),
           "driven_rate_log_sd": float("nan"), "baseline_rate_hz": float("nan"), "reliability": float("nan")}
    trials = _trials(session, stimulus=True)
    if trials is not None:
        duration = trials.stop_s - trials.start_s
        spikes = trial_spike_counts(units.spike_times, trials.start_s, trials.stop_s)
        with np.errstate(all="ignore"):
            per_trial = spikes / duration[:, None]
            driven = np.nanmax([np.nanmean(per_trial[trials.stimulus == s], axis=0)
                                for s in np.unique(trials.stimulus)], axis=0)
            outside = units.observed_s - float(np.sum(duration))
            if np.median(outside) > 0.1 * np.median(units.observed_s):
                out["baseline_rate_hz"] = median_of((counts - spikes.sum(axis=0)) / outside)
        out.update(driven_rate_median_hz=median_of(driven), driven_rate_log_sd=_log_sd(driven),
                   reliability=median_of(split_half_reliability(spikes, trials.stimulus)))
    return out
