"""Calibrate a rig preset from pilot recordings: measure what the files show, keep published numbers for the rest.

:func:`calibrate` reads pilot NWB files of another tool (:func:`virtual_lab.sessions.pilot.read_pilots`),
measures, per session (file) and then over sessions (medians):

* cells per session (ROIs of the ``RoiResponseSeries``, or units of the ``units`` table), the number of
  sessions per subject and the days between them (``session_start_time`` differences);
* two-photon: the frame rate and the **CASCADE noise level** of every ROI, ``nu = 100 *
  median(|dF/F_{t+1} - dF/F_t|) / sqrt(frame_rate)`` in %/sqrt(s) (Rupprecht et al. 2021, Nat. Neurosci.
  24:1324, doi:10.1038/s41593-021-00895-5; ``cascade2p.utils.calculate_noise_levels``), the median over
  ROIs per session; for iid Gaussian frame noise of SD ``s`` its expected value is ``100 * sqrt(2) *
  0.6745 * s / sqrt(frame_rate)`` (0.6745: the normal's 75th percentile);
* spikes: firing rates (spikes / observed time), driven rates per stimulus and the rate between trials when
  trials name their stimulus, and the unit SNR when the table has an ``snr`` column;
* the fraction of the first session's cells found again at each later session, when the ids identify
  cells across sessions (``id_column``);
* response reliability across repeated stimuli (split-half correlation of the mean response per stimulus,
  Spearman-Brown corrected), when a trials or presentations table names the stimulus.

These map onto the keys of a modality preset (``2p-*`` for imaging, ``neuropixels-chronic`` for units by
default); a value that cannot be measured keeps the base preset's published number, and says why. Every
value records where it came from in the written TOML: an inline comment and a ``[provenance]`` table
(files, object, method), which :func:`virtual_lab.rig.presets.load_preset` keeps as
:attr:`~virtual_lab.rig.presets.RigPreset.provenance`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.rig.calcium import INDICATORS
from virtual_lab.rig.presets import STAGES, RigPreset, available_presets, load_preset, preset_file
from virtual_lab.rig.pilot_measures import (cascade_noise_level, ecephys_session, median_of, ophys_session,
                                            split_half_reliability, trial_means,
                                            trial_spike_counts)
from virtual_lab.sessions.pilot import PILOT_MODALITIES, STIMULUS_COLUMNS, PilotSession, read_pilots
from virtual_lab.validation import check_choice

__all__ = ["BASE_PRESETS", "CalibratedValue", "Calibration", "calibrate", "cascade_noise_level",
           "split_half_reliability", "trial_means", "trial_spike_counts", "write_calibrated_preset"]

#: Base preset of each modality when ``base`` is not given (imaging: the preset of the file's indicator).
BASE_PRESETS = {"ophys": "2p-gcamp6s", "ecephys": "neuropixels-chronic"}


@dataclass(frozen=True)
class CalibratedValue:
    """One value of a calibrated preset and where it came from.

    Attributes
    ----------
    key : str
        ``"stage.key"`` of a preset parameter, or the name of a measured quantity that is not one.
    value : bool, int, float, str or list
    origin : str
        ``"measured"`` (from the pilot files), ``"derived"`` (set by calibrate because of a measured value)
        or ``"published"`` (the base preset's value).
    method : str
        How it was measured, or why the published value was kept.
    source : str
        NWB objects read (e.g. ``processing/ophys/DfOverF/RoiResponseSeries``); "" for published values.
    files : tuple of str
        Pilot files it was measured from.
    """

    key: str
    value: Any
    origin: str
    method: str
    source: str = ""
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """The outcome of :func:`calibrate`.

    Attributes
    ----------
    name, description : str
        Of the preset written.
    modality : str
        ``"ophys"`` or ``"ecephys"``.
    base : str
        Base preset (name or path) whose published numbers fill what was not measured.
    stages : dict
        Stage -> parameters of the calibrated preset.
    values : dict of str to CalibratedValue
        Every parameter of ``stages`` (``"stage.key"``), in stage order.
    measured : dict of str to CalibratedValue
        Measured quantities that are no preset parameter (firing rates, reliability, session spacing ...).
    sessions : tuple of dict
        One summary per usable pilot file.
    unusable : tuple of str
        One line per pilot file that could not be used.
    id_column : str
    """

    name: str
    description: str
    modality: str
    base: str
    stages: Mapping[str, Mapping[str, Any]]
    values: Mapping[str, CalibratedValue]
    measured: Mapping[str, CalibratedValue]
    sessions: tuple[Mapping[str, Any], ...]
    unusable: tuple[str, ...] = ()
    id_column: str = "id"
    pilot_files: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """The ``[provenance]`` table of the preset file (what :attr:`RigPreset.provenance` holds)."""
        from virtual_lab import __version__

        def entry(v: CalibratedValue) -> dict[str, Any]:
            out = {"value": v.value, "origin": v.origin, "method": v.method}
            return {**out, "source": v.source, "files": list(v.files)} if v.files else out

        return {"tool": "virtual-lab calibrate", "version": __version__, "modality": self.modality,
                "base_preset": self.base, "id_column": self.id_column, "pilot_files": list(self.pilot_files),
                "unusable_files": list(self.unusable),
                "values": {k: entry(v) for k, v in self.values.items()},
                "measured": {k: entry(v) for k, v in self.measured.items()},
                "sessions": [dict(s) for s in self.sessions]}

    def preset(self) -> RigPreset:
        """The calibrated preset (validated like a preset file)."""
        return RigPreset(self.name, self.description, {s: dict(p) for s, p in self.stages.items()}, "",
                         self.provenance())

    def summary_lines(self) -> list[str]:
        """One line per measured value and one for the published ones (what the command prints)."""
        lines = []
        for value in list(self.values.values()) + list(self.measured.values()):
            if value.origin != "published":
                lines.append(f"{value.key} = {_short(value.value)}  ({value.origin}: {value.method})")
        kept = [v.key for v in self.values.values() if v.origin == "published"]
        if kept:
            lines.append(f"published values of {self.base} kept for: {', '.join(kept)}")
        return lines


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------ measurements
def _cell_ids(session: PilotSession) -> list[tuple[str, Any]]:
    if session.roi_series:
        return [(s.segmentation, i.item() if hasattr(i, "item") else i) for s in session.roi_series for i in s.roi_ids]
    return [("units", i.item() if hasattr(i, "item") else i) for i in session.units.unit_ids]


def _by_subject(sessions: Sequence[PilotSession]) -> list[list[PilotSession]]:
    groups: dict[str, list[PilotSession]] = {}
    for session in sessions:
        groups.setdefault(session.subject_id, []).append(session)
    return [sorted(g, key=lambda s: s.session_start_time) for g in groups.values()]


# ------------------------------------------------------------------------------------------------ mapping
def _measured(key: str, value: Any, method: str, source: str, files: Sequence[str]) -> CalibratedValue:
    return CalibratedValue(key, value, "measured", method, source, tuple(files))


def _kept(key: str, reason: str) -> CalibratedValue:
    """A parameter calibrate tried to measure and could not: the base value stays, with the reason."""
    return CalibratedValue(key, None, "published", reason)


def _over_sessions(key: str, summaries: list[dict], column: str, method: str, source: str, reason: str
                   ) -> CalibratedValue:
    """The median of a per-session value over the sessions that have it, or the published value and why not."""
    have = [s for s in summaries if np.isfinite(s[column])]
    if not have:
        return _kept(key, reason)
    return _measured(key, round(median_of(s[column] for s in have), 4), f"{method}, median over {len(have)} "
                     f"session(s)", source, [s["file"] for s in have])


def _tracking(groups: list[list[PilotSession]], id_column: str) -> tuple[float, float, str] | str:
    """(mean fraction found again per later session, fraction found at every session, method) or the reason
    it cannot be measured."""
    chronic = [g for g in groups if len(g) >= 2]
    if not chronic:
        return "needs >= 2 sessions (files) of one subject"
    ids = [[_cell_ids(s) for s in g] for g in chronic]
    default = all(sorted(i for t, i in cells if t == table) == list(range(sum(t == table for t, _ in cells)))
                  for group in ids for cells in group for table in {t for t, _ in cells})
    if id_column == "id" and default:
        return ("every file numbers its cells 0..n-1 (the default ids), which does not say which cells are the "
                "same across sessions; name the column that does with --id-column")
    found, every = [], []
    for group in ids:
        reference = set(group[0])
        found += [len(reference & set(cells)) / len(reference) for cells in group[1:]]
        every.append(len(reference.intersection(*map(set, group[1:]))) / len(reference))
    method = (f"fraction of the first session's cells (matched by {id_column!r}) present at each later session, "
              f"mean over {len(found)} later session(s) of {len(chronic)} subject(s)")
    return float(np.mean(found)), float(np.mean(every)), method


def _common(sessions: list[PilotSession], summaries: list[dict], base: RigPreset, id_column: str, table: str
            ) -> tuple[dict[str, CalibratedValue], dict[str, CalibratedValue]]:
    """Sessions, their spacing, cells per session, tracking, trial windows and reliability (every modality)."""
    files = [s.path for s in sessions]
    groups = _by_subject(sessions)
    n_sessions = int(round(float(np.median([len(g) for g in groups]))))
    up = {"checkpoints.n_checkpoints": _measured(
        "checkpoints.n_checkpoints", n_sessions, f"pilot files (sessions) per subject, median over {len(groups)} "
        "subject(s)", "general/subject/subject_id, session_start_time", files) if n_sessions >= 2 else _kept(
        "checkpoints.n_checkpoints", "one session per subject: the number of sessions of the study is not measured"),
          "checkpoints.spacing": _kept("checkpoints.spacing", "simulated sessions are spread over learning, not "
                                       "over days (the pilot spacing is under provenance.measured)"),
          "units.n_units": _measured("units.n_units", int(round(median_of(s["n_cells"] for s in summaries))),
                                     f"cells per session ({table} rows), median over {len(summaries)} session(s)",
                                     table, files),
          "units.cap": CalibratedValue("units.cap", True, "derived", "a simulated layer with fewer units than "
                                       "units.n_units records all of them")}
    gaps = [round((b.session_start_time - a.session_start_time).total_seconds() / 86400.0, 4)
            for g in groups for a, b in zip(g, g[1:])]
    extra = {"session_spacing_days": _measured("session_spacing_days", gaps, "days between consecutive "
                                               "session_start_times of each subject", "session_start_time", files)
             } if gaps else {}
    if "tracking" in base.stages and base.parameters().get("tracking.swap_probability", 0.0) < 1.0:
        tracked = _tracking(groups, id_column)
        if isinstance(tracked, str):
            up["tracking.found_probability"] = _kept("tracking.found_probability", tracked)
        else:
            up["tracking.found_probability"] = _measured("tracking.found_probability", round(tracked[0], 4),
                                                         tracked[2], f"{table} ids", files)
            extra["fraction_present_all_sessions"] = _measured(
                "fraction_present_all_sessions", round(tracked[1], 4), "fraction of the first session's cells "
                "present at every session of the subject, mean over subjects", f"{table} ids", files)
    window = "calcium.response_window_s" if "calcium" in base.stages else "spiking.window_s"
    up[window] = _over_sessions(window, summaries, "trial_duration_s", "median trial duration (stop_time - "
                                "start_time)", ", ".join(sorted({s["trials"] for s in summaries} - {""})),
                                "no trials or stimulus presentations in the pilot files")
    what = "dF/F" if "calcium" in base.stages else "spike count"
    named = ", ".join(sorted({f"{s['trials']}[{s['stimulus_column']}]" for s in summaries if s["stimulus_column"]}))
    reliability = _over_sessions("response_reliability", summaries, "reliability", "split-half correlation "
                                 f"(Spearman-Brown corrected) over stimuli of each cell's mean {what} per stimulus, "
                                 "median over cells", named, "")
    if reliability.origin == "measured":
        extra["response_reliability"] = replace(reliability, method=f"{reliability.method}; not a preset parameter")
    return up, extra


def _ophys_values(summaries: list[dict]) -> tuple[dict[str, CalibratedValue], dict[str, CalibratedValue]]:
    files = [s["file"] for s in summaries]
    series = ", ".join(sorted({p for s in summaries for p in s["series"]}))
    how = "; ".join(sorted({d for s in summaries for d in s["dff"]}))
    slow = (f"the series are sampled at {median_of(s['series_rate_hz'] for s in summaries):.3g} Hz, below half the "
            "imaging rate: not frame-by-frame dF/F")
    up = {"calcium.frame_rate_hz": _over_sessions(
        "calcium.frame_rate_hz", summaries, "frame_rate_hz", "frames per second of the RoiResponseSeries (rate, "
        "or 1 / median timestamp interval; the ImagingPlane's imaging_rate when the series is not frame by frame)",
        series, "no rate"),
          "calcium.noise_level": _over_sessions(
        "calcium.noise_level", summaries, "noise_level", "CASCADE noise level nu = 100 * median |dF/F(t+1) - "
        f"dF/F(t)| / sqrt(frame rate), %/sqrt(s) (Rupprecht et al. 2021), median over ROIs; {how}", series, slow)}
    names = {s["indicator"] for s in summaries}
    matched = {name for name in INDICATORS if any(name.lower() in text.lower() for text in names)}
    up["calcium.indicator"] = _measured(
        "calcium.indicator", next(iter(matched)), f"ImagingPlane.indicator ({', '.join(sorted(names))}) matched "
        "to a modelled indicator", "general/optophysiology/*/indicator", files) if len(matched) == 1 else _kept(
        "calcium.indicator", f"ImagingPlane.indicator {sorted(names)} names {'several' if matched else 'none'} of "
        f"the modelled indicators ({', '.join(INDICATORS)})")
    noise = [s for s in summaries if np.isfinite(s["noise_level"])]
    extra = {"noise_level_per_session": _measured(
        "noise_level_per_session", [round(s["noise_level"], 4) for s in noise], "CASCADE noise level of each "
        "session (median over its ROIs), %/sqrt(s)", series, [s["file"] for s in noise])} if noise else {}
    return up, extra


def _ecephys_values(summaries: list[dict]) -> tuple[dict[str, CalibratedValue], dict[str, CalibratedValue]]:
    files = [s["file"] for s in summaries]
    observed = "; ".join(sorted({s["observed_from"] for s in summaries}))
    driven = ", ".join(sorted({f"units/spike_times, {s['trials']}[{s['stimulus_column']}]" for s in summaries
                               if s["stimulus_column"]}))
    no_stimulus = f"driven rates need trials or presentations with a stimulus column ({STIMULUS_COLUMNS[0]}, ...)"
    up = {"spiking.max_rate_median_hz": _over_sessions(
        "spiking.max_rate_median_hz", summaries, "driven_rate_median_hz", "each unit's highest mean rate over "
        "stimuli (spikes in the trial / trial duration), median over units", driven, no_stimulus),
          "spiking.max_rate_log_sd": _over_sessions(
        "spiking.max_rate_log_sd", summaries, "driven_rate_log_sd", "SD over units of the log of that highest "
        "rate", driven, no_stimulus),
          "spiking.baseline_rate_hz": _over_sessions(
        "spiking.baseline_rate_hz", summaries, "baseline_rate_hz", f"spikes outside the trials / time outside the "
        f"trials ({observed}), median over units", "units/spike_times, intervals", "needs stimulus trials and "
        "> 10% of the observed time outside them")}
    for key, column in (("sorting.snr_median", "snr_median"), ("sorting.snr_log_sd", "snr_log_sd")):
        up[key] = _over_sessions(key, summaries, column, f"{column.replace('_', ' ')} over units of the units "
                                 "table's snr column", "units/snr", "the units table has no snr column")
    extra = {key: _measured(key, round(median_of(s[key] for s in summaries), 4), f"{what}, median over "
                            f"{len(summaries)} session(s); not a preset parameter (the preset's rates are driven "
                            "maxima)", "units/spike_times", files)
             for key, what in (("firing_rate_median_hz", f"spikes / observed time ({observed}) of each unit, median "
                                "over units"), ("firing_rate_log_sd", "SD over units of the log firing rate"))}
    return up, extra


# ------------------------------------------------------------------------------------------------ assembly
def _base_comments(base: str) -> dict[str, str]:
    """``"stage.key"`` -> the inline comment of the base preset file (its published source)."""
    comments, stage = {}, ""
    for line in preset_file(base).read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\s*\[([A-Za-z_]+)\]", line)
        if header:
            stage = header.group(1)
            continue
        match = re.match(r'^\s*(\w+)\s*=\s*("[^"]*"|\[[^\]]*\]|[^#]*?)\s*#\s*(.*)$', line)
        if match and stage:
            comments[f"{stage}.{match.group(1)}"] = match.group(3).strip()
    return comments


def _assemble(base_name: str, base: RigPreset, updates: Mapping[str, CalibratedValue]
              ) -> tuple[dict[str, dict[str, Any]], dict[str, CalibratedValue]]:
    """The calibrated stages and one :class:`CalibratedValue` per parameter they set."""
    stages = {stage: dict(params) for stage, params in base.stages.items()}
    updates = {key: _kept(key, f"no finite value ({value.method})")
               if isinstance(value.value, float) and not math.isfinite(value.value) else value
               for key, value in updates.items()}
    for key, value in updates.items():
        stage, name = key.split(".", 1)
        if value.origin != "published" and stage in stages:
            stages[stage][name] = value.value
    if "n_units" in stages.get("units", {}):
        stages["units"].pop("fraction", None)  # n_units decides; a fraction would be ignored
    comments = _base_comments(base_name)
    values = {}
    for stage in (s for s in STAGES if s in stages):
        for name, current in stages[stage].items():
            key = f"{stage}.{name}"
            update = updates.get(key)
            published = f"published value of {base.name}" + (f": {comments[key]}" if key in comments else "")
            if update is None:
                values[key] = CalibratedValue(key, current, "published", published)
            elif update.origin == "published":
                values[key] = CalibratedValue(key, current, "published", f"not measured ({update.method}); {published}")
            else:
                values[key] = update
    return stages, values


def _choose_modality(sessions: list[PilotSession], modality: str | None) -> str:
    if modality is not None:
        return check_choice("modality", modality, PILOT_MODALITIES)
    kinds = {m for s in sessions for m in s.modalities}
    if len(kinds) == 1:
        return kinds.pop()
    both = [s for s in sessions if len(s.modalities) == 2]
    if both:
        raise ValueError(f"{both[0].path} holds both ophys and ecephys data; choose one with modality= "
                         f"(--modality ophys or --modality ecephys)")
    raise ValueError("the pilot files mix ophys and ecephys recordings; calibrate one modality at a time "
                     "(--modality ophys or --modality ecephys)")


def _base_for(modality: str, sessions: list[PilotSession], base: str | None) -> str:
    if base is None:
        base = BASE_PRESETS[modality]
        if modality == "ophys":
            names = {series.indicator.lower() for s in sessions for series in s.roi_series}
            matched = [n for n in INDICATORS if any(n.lower() in text for text in names)]
            if len(matched) == 1 and f"2p-{matched[0].lower()}" in available_presets():
                base = f"2p-{matched[0].lower()}"
    stages = load_preset(base).stages
    fits = "calcium" in stages if modality == "ophys" else ("spiking" in stages and "calcium" not in stages)
    if not fits:
        kind = "an imaging preset (with a [calcium] stage)" if modality == "ophys" else \
            "a spiking preset (a [spiking] stage, no [calcium])"
        raise ValueError(f"base preset {base!r} does not fit {modality} pilot files: it must be {kind}")
    return base


def calibrate(paths: Iterable[str | os.PathLike], *, base: str | None = None, modality: str | None = None,
              id_column: str = "id", name: str = "calibrated-rig") -> Calibration:
    """Calibrate a rig preset from pilot NWB recordings (see the module docstring for what is measured).

    Parameters
    ----------
    paths : iterable of path-like
        Pilot NWB files (one session each; sessions of one subject share ``subject.subject_id``).
    base : str, optional
        Preset (name or path) whose published numbers fill what cannot be measured. Default: the imaging
        preset of the files' indicator (``2p-gcamp6s`` if none matches), or ``neuropixels-chronic``.
    modality : {"ophys", "ecephys"}, optional
        Needed only when files hold both.
    id_column : str, default="id"
        Column identifying the same cell across sessions (see :func:`~virtual_lab.sessions.pilot.read_pilot`).
    name : str, default="calibrated-rig"
        Name of the preset.

    Returns
    -------
    Calibration
        :meth:`Calibration.preset` is the preset; files that could not be used are in ``unusable``.

    Raises
    ------
    ValueError
        No usable file (every file's reason, one line), files of two modalities without ``modality``, or a
        base preset of another modality.
    """
    paths = [str(p) for p in paths]
    sessions, unusable = read_pilots(paths, id_column=id_column)
    if sessions:
        modality = _choose_modality(sessions, modality)
        unusable += [_not_modality(s, modality) for s in sessions if modality not in s.modalities]
        sessions = [s for s in sessions if modality in s.modalities]
    if not sessions:
        reasons = "; ".join(str(err) for err in unusable)
        raise ValueError(f"no usable pilot recording among the {len(paths)} file(s): {reasons}")
    base = _base_for(modality, sessions, base)
    base_preset = load_preset(base)
    if modality == "ophys":
        summaries = [ophys_session(s) for s in sessions]
        updates, extra = _ophys_values(summaries)
        table = "PlaneSegmentation"
    else:
        summaries = [ecephys_session(s) for s in sessions]
        updates, extra = _ecephys_values(summaries)
        table = "units"
    common, common_extra = _common(sessions, summaries, base_preset, id_column, table)
    stages, values = _assemble(base, base_preset, {**common, **updates})
    return Calibration(name=name, description=_description(modality, base, values, summaries), modality=modality,
                       base=base, stages=stages, values=values, measured={**common_extra, **extra},
                       sessions=tuple(_clean(s) for s in summaries), unusable=tuple(str(e) for e in unusable),
                       id_column=id_column, pilot_files=tuple(s.path for s in sessions))


def _not_modality(session: PilotSession, modality: str):
    from virtual_lab.sessions.pilot import UnusablePilot

    return UnusablePilot(session.path, f"no {modality} data (it holds {', '.join(session.modalities)})")


def _clean(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A session summary as TOML values (no NaN-only fields, no None)."""
    return {k: v for k, v in summary.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def _description(modality: str, base: str, values: Mapping[str, CalibratedValue], summaries: list[dict]) -> str:
    def get(key: str) -> Any:
        return values[key].value if key in values else None

    files = ", ".join(Path(s["file"]).name for s in summaries[:3]) + (" ..." if len(summaries) > 3 else "")
    cells = "ROIs" if modality == "ophys" else "units"
    text = f"Calibrated from {len(summaries)} pilot recording(s) ({files}) on {base}: {get('units.n_units')} {cells} " \
           f"per session"
    if modality == "ophys":
        text += f", CASCADE noise level {_short(get('calcium.noise_level'))} at {_short(get('calcium.frame_rate_hz'))} Hz"
    if get("checkpoints.n_checkpoints") is not None:
        text += f", {get('checkpoints.n_checkpoints')} sessions"
    return text + "."


def write_calibrated_preset(calibration: Calibration, path: str | os.PathLike) -> Path:
    """Write the calibrated preset as TOML (values commented with their origin, and a ``[provenance]`` table).

    The file is written next to its destination under a temporary name, read back with
    :func:`~virtual_lab.rig.presets.load_preset`, and only then renamed: nothing half-written is left.

    Returns
    -------
    Path
    """
    from virtual_lab.rig.presets import preset_toml

    path = Path(path)
    comments = {key: f"{v.origin}: {v.method}" for key, v in calibration.values.items()}
    header = [f"Rig preset calibrated by `virtual-lab calibrate` from {len(calibration.pilot_files)} pilot "
              f"{calibration.modality} recording(s),",
              f"on the published numbers of preset {calibration.base}. Each value's comment says where it came "
              "from: measured",
              "(file, object, method), derived, or published (the base preset's value and source); the same "
              "in [provenance]."]
    text = preset_toml(calibration.preset(), comments=comments, header=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.toml")
    try:
        temporary.write_text(text, encoding="utf-8")
        load_preset(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
