"""Ask a saved decoder about a recording made elsewhere: the posterior over rules, and whether to believe it.

:func:`read_trial_responses` reads NWB recordings (any tool's: :func:`virtual_lab.sessions.pilot.read_pilot`)
into trial-aligned population responses: for every session, every population (an imaging plane's ROIs, a
layer's units) and every stimulus presented in *every* session, the mean response over that stimulus's
trials (mean dF/F of the frames in the trial window, or spikes in it). Sessions are the epochs of a file
(``intervals/epochs``; a file without epochs is one session), over all the files of one subject in the order
of their ``session_start_time``; files of different subjects are different recordings.

:func:`identify` computes the observables the model expects from those responses (each activity statistic
over units per stimulus, averaged over stimuli, at every session: what
:func:`~virtual_lab.analysis.observables.compute_observables` computes of a simulated recording), one
feature row per population, and reports the model's posterior over rules and the out-of-distribution score
of the recording against the threshold calibrated on held-out simulated networks
(:class:`~virtual_lab.analysis.saved_model.OODModel`).

What a recording lacks (the activity the model was trained on, a trials table naming the stimuli, several
sessions, a stimulus repeated in every session, the model's number of sessions) raises
:class:`MissingForModel`, one line naming what is missing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import FeatureTable, Observable, compute_statistics, feature_names_for
from virtual_lab.analysis.saved_model import SavedModel
from virtual_lab.types import DEPTH_POSITIONS
from virtual_lab.validation import check_choice

__all__ = ["ACTIVITY_SOURCES", "Identification", "MissingForModel", "Population", "TrialResponses", "activity_kind",
           "identify", "recording_features", "read_trial_responses"]

#: What a model's rig measured -> what identify reads of a file.
ACTIVITY_SOURCES = {"dff": "dF/F (RoiResponseSeries of DfOverF or Fluorescence)",
                    "spike_count": "spike counts (a units table with spike times)"}
_DEPTH = re.compile(r"\((early|middle|deep)\)")


class MissingForModel(ValueError):
    """The recording lacks something the model needs; the message (one line) says what."""


@dataclass(frozen=True)
class Population:
    """One recorded population over the sessions of a recording.

    Attributes
    ----------
    name : str
        The ``PlaneSegmentation`` of an imaging plane, or the layer of a group of units (``"units"``).
    depth : str or None
        ``"early"``, ``"middle"`` or ``"deep"`` when the file says (``"(deep)"`` in the imaging plane's
        location, a ``depth_position`` column of the units), else None.
    responses : tuple of ndarray, one per session, shape (n_stimuli, n_units_of_that_session)
        Mean response to each common stimulus.
    """

    name: str
    depth: str | None
    responses: tuple[np.ndarray, ...]

    @property
    def units_per_session(self) -> list[int]:
        return [int(r.shape[1]) for r in self.responses]


@dataclass(frozen=True)
class TrialResponses:
    """Trial-aligned population responses of one subject, session by session.

    Attributes
    ----------
    subject : str
    files : tuple of str
    kind : {"dff", "spike_count"}
    stimuli : tuple of str
        The stimuli presented in every session (the columns of every response array).
    populations : tuple of Population
    notes : tuple of str
    """

    subject: str
    files: tuple[str, ...]
    kind: str
    stimuli: tuple[str, ...]
    populations: tuple[Population, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_sessions(self) -> int:
        return len(self.populations[0].responses) if self.populations else 0


# -- reading -----------------------------------------------------------------------------------------------
def _epochs(path: str) -> np.ndarray | None:
    """``(n_epochs, 2)`` start/stop of the file's epochs, sorted, or None without an epochs table."""
    import h5py

    with h5py.File(path, "r") as f:
        if "intervals/epochs/start_time" not in f:
            return None
        bounds = np.column_stack([f["intervals/epochs/start_time"][:], f["intervals/epochs/stop_time"][:]])
    return bounds[np.argsort(bounds[:, 0], kind="stable")] if len(bounds) else None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _plane_depths(path: str) -> dict[str, str]:
    """PlaneSegmentation name -> depth position, from ``"(early|middle|deep)"`` in its imaging plane's location."""
    import h5py

    depths: dict[str, str] = {}

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Group) and "imaging_plane" in item and name.startswith("processing/"):
            plane = item["imaging_plane"]
            found = _DEPTH.search(_text(plane["location"][()])) if "location" in plane else None
            if found:
                depths[name.rsplit("/", 1)[-1]] = found.group(1)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return depths


def _unit_columns(path: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The units table's ``layer`` and ``depth_position`` columns (None where absent)."""
    import h5py

    with h5py.File(path, "r") as f:
        return tuple(np.array([_text(v) for v in f[f"units/{c}"][:]]) if f"units/{c}" in f else None
                     for c in ("layer", "depth_position"))


def _file_populations(session: Any, kind: str) -> list[tuple[str, str | None, np.ndarray]]:
    """(name, depth, per-trial responses (n_trials, n_units)) of every population of one file."""
    from virtual_lab.rig.pilot_measures import as_dff, trial_means, trial_spike_counts

    trials = next(t for t in session.trials if t.stimulus is not None and t.n_trials)
    if kind == "dff":
        depths = _plane_depths(session.path)
        return [(s.segmentation, depths.get(s.segmentation),
                 trial_means(as_dff(s)[0], s.times_s, trials.start_s, trials.stop_s)) for s in session.roi_series]
    counts = trial_spike_counts(session.units.spike_times, trials.start_s, trials.stop_s)
    layers, depths = _unit_columns(session.path)
    if layers is None or len(layers) != counts.shape[1]:
        return [("units", None, counts)]
    return [(layer, None if depths is None else str(depths[layers == layer][0]), counts[:, layers == layer])
            for layer in dict.fromkeys(layers.tolist())]


def _check_file(session: Any, kind: str, model_rig: str) -> None:
    name = session.path
    if kind == "dff" and not session.roi_series:
        raise MissingForModel(f"{name}: no dF/F (no RoiResponseSeries in a DfOverF or Fluorescence container); "
                              f"the model was trained on {ACTIVITY_SOURCES[kind]} (rig {model_rig})")
    if kind == "spike_count" and (session.units is None or session.units.n_units == 0):
        raise MissingForModel(f"{name}: no units table with spike times; the model was trained on "
                              f"{ACTIVITY_SOURCES[kind]} (rig {model_rig})")
    if not any(t.stimulus is not None and t.n_trials for t in session.trials):
        from virtual_lab.sessions.pilot import STIMULUS_COLUMNS

        what = ("trials have no column naming the stimulus" if session.trials else "no trials table")
        raise MissingForModel(f"{name}: {what} (looked for {', '.join(STIMULUS_COLUMNS)}); identify needs "
                              f"trial-aligned responses to a repeated stimulus set")


def _sessions_of(session: Any, kind: str) -> list[tuple[dict[str, tuple[str | None, np.ndarray]], np.ndarray]]:
    """One entry per session (epoch) of a file: population -> (depth, trial responses), and trial stimuli."""
    trials = next(t for t in session.trials if t.stimulus is not None and t.n_trials)
    populations = _file_populations(session, kind)
    epochs = _epochs(session.path)
    if epochs is None:
        masks = [np.ones(trials.n_trials, dtype=bool)]
    else:
        masks = [(trials.start_s >= start) & (trials.start_s < stop) for start, stop in epochs]
        masks = [m for m in masks if m.any()]
    stimulus = np.array([_text(v) for v in trials.stimulus])
    return [({name: (depth, values[mask]) for name, depth, values in populations}, stimulus[mask]) for mask in masks]


def _stimulus_means(values: np.ndarray, stimulus: np.ndarray, stimuli: Sequence[str]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.array([np.nanmean(values[stimulus == s], axis=0) for s in stimuli]).reshape(len(stimuli), -1)


def _subject_responses(subject: str, sessions: list, kind: str, model_rig: str) -> TrialResponses:
    """Combine the files of one subject (sorted by start time) into its sessions."""
    parts = [part for session in sessions for part in _sessions_of(session, kind)]
    files = tuple(s.path for s in sessions)
    where = files[0] if len(files) == 1 else f"subject {subject!r} ({len(files)} files)"
    if len(parts) < 2:
        raise MissingForModel(f"{where}: one session only; identify needs the same stimuli recorded over several "
                              f"sessions (epochs of a file, or one file per session of a subject)")
    common = set.intersection(*(set(stim.tolist()) for _, stim in parts))
    if not common:
        raise MissingForModel(f"{where}: no stimulus is presented in every one of its {len(parts)} sessions "
                              f"(no repeated stimulus set)")
    stimuli = tuple(sorted(common, key=lambda s: (len(s), s)))
    names = [n for n in parts[0][0] if all(n in p for p, _ in parts)]
    notes = []
    dropped = sorted({n for p, _ in parts for n in p} - set(names))
    if dropped:
        notes.append(f"populations not recorded in every session left out: {', '.join(dropped)}")
    if not names:
        raise MissingForModel(f"{where}: no population (imaging plane or unit group) is recorded in every session")
    means = {name: [_stimulus_means(p[name][1], stim, stimuli) for p, stim in parts] for name in names}
    # a stimulus whose trials hold no frame in some session is left out; then a unit without data in a session
    answered = ~np.any([np.isnan(r).all(axis=1) for rs in means.values() for r in rs], axis=0)
    if not answered.any():
        raise MissingForModel(f"{where}: no stimulus has a trial window holding frames in every session")
    if not answered.all():
        notes.append(f"{int((~answered).sum())} stimuli left out: in some session none of their trial windows "
                     f"holds a frame")
    populations, n_units_dropped = [], 0
    for name in names:
        responses = [r[answered] for r in means[name]]
        n_units_dropped += sum(int(np.isnan(r).any(axis=0).sum()) for r in responses)
        responses = tuple(r[:, ~np.isnan(r).any(axis=0)] for r in responses)
        if any(r.shape[1] == 0 for r in responses):
            raise MissingForModel(f"{where}: population {name!r} has no unit with data in some session")
        populations.append(Population(name, parts[0][0][name][0], responses))
    if n_units_dropped:
        notes.append(f"{n_units_dropped} unit-sessions without data (NaN) left out")
    stimuli = tuple(s for s, keep in zip(stimuli, answered) if keep)
    return TrialResponses(subject, files, kind, stimuli, tuple(populations), tuple(notes))


def read_trial_responses(paths: Sequence[str | os.PathLike], kind: str, *, model_rig: str = "?"
                         ) -> list[TrialResponses]:
    """Trial-aligned responses of every subject among ``paths``.

    Parameters
    ----------
    paths : sequence of path-like
        NWB files; those of one subject (``subject_id``) are its sessions, in ``session_start_time`` order.
    kind : {"dff", "spike_count"}
        What to read: dF/F of imaging planes, or spike counts of units, in each trial's window.
    model_rig : str
        For the messages.

    Returns
    -------
    list of TrialResponses
        One per subject, in the order of their first file.

    Raises
    ------
    virtual_lab.sessions.pilot.UnusablePilot
        A file that cannot be read.
    MissingForModel
        A recording without that activity, without trials naming their stimulus, with one session only, or
        without a stimulus presented in every session.
    """
    from virtual_lab.sessions.pilot import UnusablePilot, read_pilot

    check_choice("activity kind", kind, ACTIVITY_SOURCES)
    sessions = []
    for path in paths:
        try:
            sessions.append(read_pilot(path))
        except UnusablePilot as error:
            if error.reason.startswith("no ophys data"):  # readable NWB, but no activity at all
                raise MissingForModel(f"{error.path}: no recorded activity (no RoiResponseSeries, no units table "
                                      f"with spike times); the model was trained on {ACTIVITY_SOURCES[kind]} "
                                      f"(rig {model_rig})") from None
            raise
    for session in sessions:
        _check_file(session, kind, model_rig)
    by_subject: dict[str, list] = {}
    for session in sessions:
        by_subject.setdefault(session.subject_id or session.path, []).append(session)
    return [_subject_responses(subject, sorted(group, key=lambda s: s.session_start_time), kind, model_rig)
            for subject, group in by_subject.items()]


# -- features and verdict ----------------------------------------------------------------------------------
def _observable_series(responses: Sequence[np.ndarray], observables: Sequence[Observable]) -> np.ndarray:
    """(T, n_observables): each activity statistic over units per stimulus, averaged over stimuli."""
    out = np.empty((len(responses), len(observables)))
    for t, values in enumerate(responses):
        values = np.asarray(values, dtype=np.float64)
        transformed = {"raw": values, "abs": np.abs(values), "sq": np.square(values)}
        for function in dict.fromkeys(o.function for o in observables):
            columns = [(k, o.statistic) for k, o in enumerate(observables) if o.function == function]
            stats = compute_statistics(transformed[function], [s for _, s in columns])
            for k, statistic in columns:
                out[t, k] = float(np.mean(stats[statistic]))
    return out


def recording_features(model: SavedModel, recording: TrialResponses, depth: str | None = None
                       ) -> tuple[FeatureTable, list[str]]:
    """The model's feature rows of a recording: one per population (three, one per depth position, for a
    population whose depth is unknown and no ``depth`` is given).

    Returns
    -------
    table : FeatureTable
        After the model's ``--features`` transform; columns exactly the model's.
    notes : list of str
    """
    from virtual_lab.analysis.feature_variants import feature_set

    observables = [Observable.from_name(name) for name in model.observables]
    if recording.n_sessions != model.n_timepoints:
        raise MissingForModel(f"{recording.files[0] if len(recording.files) == 1 else recording.subject}: "
                              f"{recording.n_sessions} sessions, but the model was trained on "
                              f"{model.n_timepoints} (training steps {model.metadata.get('checkpoint_steps')})")
    rows, names, depths, notes = [], [], [], []
    for population in recording.populations:
        series = _observable_series(population.responses, observables).reshape(-1)
        known = population.depth or depth
        if known is None:
            notes.append(f"population {population.name}: depth unknown, class scores averaged over "
                         f"{', '.join(DEPTH_POSITIONS)} (give --depth)")
        for position in ([known] if known else DEPTH_POSITIONS):
            rows.append(np.concatenate([series, np.eye(len(DEPTH_POSITIONS))[DEPTH_POSITIONS.index(position)]]))
            names.append(population.name)
            depths.append(position)
    n = len(rows)
    table = FeatureTable(X=np.vstack(rows), rule=np.full(n, "unknown"), network_id=np.full(n, recording.subject),
                         layer=np.array(names), depth_position=np.array(depths), metadata=tuple({} for _ in rows),
                         feature_names=feature_names_for(observables, model.n_timepoints))
    table = feature_set(table, model.metadata["features"])
    if not np.array_equal(table.feature_names, model.feature_names):
        raise MissingForModel(f"{recording.subject}: the features computed do not match the model's "
                              f"({table.n_features} columns vs {len(model.feature_names)})")
    return table, notes


@dataclass(frozen=True)
class Identification:
    """What :func:`identify` says of one recording (``summary()`` for JSON)."""

    recording: TrialResponses
    posterior: Mapping[str, float]
    population_posteriors: Mapping[str, Mapping[str, float]]
    score: float
    threshold: float
    quantile: float
    percentile: float
    n_held_out: int
    notes: tuple[str, ...]

    @property
    def in_distribution(self) -> bool:
        return bool(self.score <= self.threshold)

    @property
    def verdict(self) -> str:
        return max(self.posterior, key=self.posterior.get)

    def summary(self) -> dict[str, Any]:
        r = self.recording
        return {"subject": r.subject, "files": list(r.files), "activity": r.kind, "n_sessions": r.n_sessions,
                "n_stimuli": len(r.stimuli),
                "populations": [{"name": p.name, "depth": p.depth, "units_per_session": p.units_per_session}
                                for p in r.populations],
                "out_of_distribution": {"score": self.score, "threshold": self.threshold, "quantile": self.quantile,
                                        "percentile_of_held_out": self.percentile, "n_held_out": self.n_held_out,
                                        "in_distribution": self.in_distribution},
                "posterior": dict(self.posterior), "verdict": self.verdict,
                "population_posteriors": {k: dict(v) for k, v in self.population_posteriors.items()},
                "notes": list(self.notes)}


def identify(model: SavedModel, recording: TrialResponses, depth: str | None = None) -> Identification:
    """Posterior over rules and out-of-distribution score of one recording.

    Parameters
    ----------
    model : SavedModel
    recording : TrialResponses
        From :func:`read_trial_responses` with the model's ``rig["activity_kind"]``.
    depth : {"early", "middle", "deep"}, optional
        Depth position of populations whose file does not say.

    Returns
    -------
    Identification
        The posterior averages the class scores of the recording's rows (as cross-validation combined a
        network's layers); the score is :meth:`OODModel.score` of the same rows.
    """
    if depth is not None:
        check_choice("depth", depth, DEPTH_POSITIONS)
    table, notes = recording_features(model, recording, depth)
    scores = model.class_scores(table.X)
    per_population = {}
    for name in dict.fromkeys(table.layer.tolist()):
        per_population[name] = dict(zip(model.classes, scores[table.layer == name].mean(axis=0).tolist()))
    posterior = {c: float(np.mean([p[c] for p in per_population.values()])) for c in model.classes}
    units = model.rig.get("units_per_layer", {})
    trained = sorted(units.values())
    seen = [n for p in recording.populations for n in p.units_per_session]
    if trained and seen and not (0.5 * min(trained) <= np.median(seen) <= 2 * max(trained)):
        notes.append(f"the recording has a median of {np.median(seen):g} units per population and session; the "
                     f"model was trained on {min(trained)}-{max(trained)} per layer")
    score = model.ood.score(table.X)
    return Identification(recording, posterior, per_population, score, model.ood.threshold, model.ood.quantile,
                          model.ood.percentile(score), int(model.ood.held_out_scores.size),
                          tuple(list(recording.notes) + notes))


def activity_kind(model: SavedModel, path: str | os.PathLike = "model") -> str:
    """What identify must read for ``model``; raises :class:`MissingForModel` for a model that needs more."""
    unreadable = [name for name in model.observables if not name.startswith("act")]
    rig = model.rig.get("name", "?")
    if unreadable:
        raise MissingForModel(f"{Path(path)}: the model uses observables no recording file carries "
                              f"({', '.join(unreadable[:4])}{' ...' if len(unreadable) > 4 else ''}; rig {rig}); "
                              f"identify reads activity: save a model trained under an imaging or "
                              f"electrophysiology rig (decode --rig 2p-gcamp6s --save ...)")
    kind = model.rig.get("activity_kind")
    if kind not in ACTIVITY_SOURCES:
        raise MissingForModel(f"{Path(path)}: the model was trained on activity of kind {kind!r} (rig {rig}); "
                              f"identify reads {' or '.join(ACTIVITY_SOURCES.values())}")
    return kind
