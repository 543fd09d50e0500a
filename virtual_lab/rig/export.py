"""Write an observed rig recording as NWB, in its modality's standard types, optionally blind.

Layout of a rig recording file (``sub-<subject>/sub-<subject>_ses-<preset>.nwb``)::

    general                      Subject (the network), Device (the virtual rig), session metadata
                                 (experimenter, institution, lab: those of the observed session)
    intervals/epochs             one row per recorded session (kept checkpoint): tags, training_step
    intervals/trials             one row per probe presentation: start/stop on the rig clock,
                                 checkpoint_index, training_step, stimulus_index, label
    units                        spiking rigs: one row per sorted unit, spike_times, obs_intervals, layer
    processing/ophys             calcium rigs: ImagingPlane + PlaneSegmentation per layer, and
                                 DfOverF/RoiResponseSeries_<layer> (one sample per presentation: mean dF/F in
                                 the response window)
    acquisition/response_<layer> other activity rigs (paper-gaussian): TimeSeries (presentations, units),
                                 dimensionless
    processing/misc/units        those rigs: layer and unit index of every response column
    processing/misc/synapse_measurements   one row per (synapse, session): layer, post/pre unit
                                 index (-1 for a false detection), checkpoint_index, training_step, value
    processing/misc/activity_change   when measured: one row per session, one (S,) column per layer
    processing/misc/provenance   the rig recipe: one row per (step, parameter), with every resolved seed

Everything that is not a modality's standard type lives in one ``misc`` module: nwbinspector suggests
naming processing modules after an NWB modality (ophys, ecephys, icephys, behavior, misc, ogen, retinotopy).
No ``general/keywords`` are written and series are ``"dimensionless"``, for the neo reasons given in
:mod:`virtual_lab.sessions`.

The rig clock: presentation ``p`` (over all kept sessions, checkpoint-major) starts at
``p * PRESENTATION_PERIOD_S``; spikes of a presentation lie in ``[start, start + window_s)``. The rig models
spike *counts* per presentation; the written spike times place a presentation's spikes uniformly at random
within the window (exact for Poisson trains, an approximation for gamma trains), from a seed stored in the
provenance table.

Blind mode replaces the run id and subject id by an opaque id, writes no training metadata, no rule, no
learning rate and no run id anywhere, and returns the key (opaque id -> run id, rule) for a separate file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.rig.recording import Recording
from virtual_lab.seeding import derive_seed, stable_hash

logger = logging.getLogger(__name__)

#: Time between the onsets of two probe presentations on the rig clock (s).
PRESENTATION_PERIOD_S = 2.0
#: Spike times are written on a 30 kHz sample grid (Neuropixels AP band, Jun et al. 2017).
SPIKE_SAMPLING_HZ = 30_000.0


def opaque_id(run_id: str, key_seed: int) -> str:
    """A blind subject id for a run: ``"n"`` + 12 hex digits of a hash of (key_seed, run_id)."""
    return "n" + stable_hash(f"{key_seed}:{run_id}")


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, ",".join(str(v) for v in value)))
    else:
        out.append((prefix, "" if value is None else str(value)))


def provenance_rows(recording: Recording) -> list[tuple[int, str, str, str]]:
    """``(step_index, step, parameter, value)`` rows of a recording's provenance, values as text."""
    rows = []
    for index, entry in enumerate(recording.provenance):
        items: list[tuple[str, str]] = []
        _flatten("", {k: v for k, v in entry.items() if k != "step"}, items)
        rows += [(index, str(entry.get("step", "")), key, value) for key, value in items]
    return rows


def _rig_description(recording: Recording) -> str:
    steps = [entry.get("step", "") for entry in recording.provenance]
    preset = next((e.get("name") for e in recording.provenance if e.get("step") == "preset"), None)
    what = {"spike_count": "spike counts per probe presentation",
            "dff": "mean dF/F per probe presentation (two-photon calcium imaging)",
            "activation": "layer outputs per probe presentation"}[recording.activity_kind]
    measured = ", ".join(recording.measures)
    head = f"rig preset {preset!r}: " if preset else ""
    return (f"In silico virtual recording rig (virtual_lab), {head}steps {', '.join(steps) or 'none'}; "
            f"measures {measured}" + (f"; activity as {what}" if "act" in recording.measures else "") + ".")


def _misc(nwbfile) -> Any:
    """The file's ``misc`` processing module (created on first use)."""
    return nwbfile.processing.get("misc") or nwbfile.create_processing_module(
        name="misc", description="In silico rig measurements and recipe that have no modality-specific NWB type.")


def _build(recording: Recording, *, identifier: str, subject_id: str, session_id: str, blind: bool,
           export_seed: int, attribution: Mapping[str, Any]) -> Any:
    """The in-memory NWB file of one rig recording: file and subject, sessions and presentations, the
    modality's data, and the rig's provenance."""
    nwbfile, device = _new_file(recording, identifier=identifier, subject_id=subject_id, session_id=session_id,
                                blind=blind, attribution=attribution)
    start, window = _add_intervals(nwbfile, recording)
    _add_measures(nwbfile, recording, device, start, window, export_seed)
    _add_provenance(nwbfile, recording, export_seed)
    return nwbfile


def _new_file(recording: Recording, *, identifier: str, subject_id: str, session_id: str, blind: bool,
              attribution: Mapping[str, Any]) -> tuple[Any, Any]:
    """The NWB file with its description, subject and the virtual rig's device."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    from virtual_lab import __version__
    from virtual_lab.sessions import SESSION_START_TIME, SYNTHETIC_CONSTRUCT_SPECIES

    n_t, n_s = recording.n_checkpoints, recording.source.n_stimuli
    architecture = str(recording.metadata.get("architecture", "unknown"))
    rig = _rig_description(recording)
    if blind:
        description = (f"In silico recording of a network (blind: the learning rule is withheld) through a virtual "
                       f"rig; {n_t} session(s), {n_s} probe stimuli per session. {rig}")
    else:
        description = (f"In silico recording of training run {recording.run_id} ({architecture}, learning rule "
                       f"{recording.rule}) through a virtual rig; {n_t} session(s), {n_s} probe stimuli per "
                       f"session. {rig}")
    nwbfile = NWBFile(
        session_description=description,
        identifier=identifier,
        session_start_time=SESSION_START_TIME,
        file_create_date=SESSION_START_TIME,
        experiment_description=(
            "In silico experiment (virtual_lab): artificial neural networks trained under known learning rules, "
            "observed through a simulated recording rig (after Nayebi, Srivastava, Ganguli & Yamins, NeurIPS "
            "2020, arXiv:2010.11765)."),
        session_id=session_id,
        related_publications=["doi:10.48550/arXiv.2010.11765"],
        was_generated_by=[["virtual_lab", __version__]],
        **attribution,
    )
    nwbfile.subject = Subject(
        subject_id=subject_id, sex="O", species=SYNTHETIC_CONSTRUCT_SPECIES, date_of_birth=SESSION_START_TIME,
        strain=architecture,
        description=f"In silico subject: an artificial neural network ({architecture}), not an animal.")
    device = nwbfile.create_device(name="virtual rig", description=rig)
    return nwbfile, device


def _add_intervals(nwbfile, recording: Recording) -> tuple[np.ndarray, float]:
    """Sessions as epochs and probe presentations as trials; returns the presentations' onsets (s) and the
    response window (s)."""
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    source = recording.source
    n_t, n_s = recording.n_checkpoints, source.n_stimuli
    period = PRESENTATION_PERIOD_S
    steps = np.asarray(recording.checkpoint_steps, dtype=np.int64)
    width = max(2, len(str(max(n_t - 1, 0))))
    nwbfile.add_epoch_column(name="checkpoint_index", description="Position of the checkpoint in the source session.")
    nwbfile.add_epoch_column(name="training_step", description="Training step of the recorded session.")
    for k, (index, step) in enumerate(zip(recording.checkpoint_indices, steps)):
        nwbfile.add_epoch(start_time=k * n_s * period, stop_time=(k + 1) * n_s * period,
                          tags=[f"session_{k:0{width}d}"], checkpoint_index=int(index), training_step=int(step))
    presentation = np.arange(n_t * n_s, dtype=np.int64)
    start = presentation * period
    window = next((float(s.window_s) for s in recording.activity_steps if hasattr(s, "window_s")), period / 2)
    nwbfile.trials = TimeIntervals(
        name="trials",
        description="In silico probe presentations: one row per (session, probe stimulus), session-major.",
        columns=[
            VectorData(name="start_time", description="Onset of the presentation (rig clock, s).", data=start),
            VectorData(name="stop_time", description="End of the response window (rig clock, s).",
                       data=start + min(window, period)),
            VectorData(name="checkpoint_index", description="Checkpoint (session) of the presentation.",
                       data=np.asarray(recording.checkpoint_indices, dtype=np.int64)[presentation // n_s]),
            VectorData(name="training_step", description="Training step of the session.", data=steps[presentation // n_s]),
            VectorData(name="stimulus_index", description="Index of the probe stimulus.", data=presentation % n_s),
            VectorData(name="label", description="Class label of the probe stimulus.",
                       data=np.tile(np.asarray(source.probe_labels, dtype=np.int64), n_t)),
        ],
        id=list(range(n_t * n_s)),
    )
    return start, window


def _add_measures(nwbfile, recording: Recording, device, start: np.ndarray, window: float,
                  export_seed: int) -> None:
    """The modality's data: spike trains, fluorescence or responses, synapses, and the activity change."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries

    from virtual_lab.sessions import layer_column_name

    n_t, n_s, period = recording.n_checkpoints, recording.source.n_stimuli, PRESENTATION_PERIOD_S
    layers = [(i, layer, depth) for i, (layer, depth) in enumerate(zip(recording.layer_names, recording.depth_positions))]
    if "act" in recording.measures:
        if recording.activity_kind == "spike_count":
            _add_units(nwbfile, recording, layers, start, window, export_seed)
        elif recording.activity_kind == "dff":
            _add_ophys(nwbfile, recording, layers, device, period)
        else:
            for _, layer, depth in layers:
                values = recording.activations(layer)
                if values.shape[2] == 0:
                    continue
                nwbfile.add_acquisition(TimeSeries(
                    name="response_" + layer_column_name(layer), data=values.reshape(n_t * n_s, -1),
                    unit="dimensionless", rate=1.0 / period, starting_time=0.0,
                    description=(f"In silico observed responses of {values.shape[2]} units of layer {layer!r} ({depth}) "
                                 f"per probe presentation, dimensionless (network outputs as the rig measured them, "
                                 f"no physical unit); rows session-major (reshape to "
                                 f"({n_t}, {n_s}, {values.shape[2]})); unit indices in processing/misc/units.")))
            _add_unit_index_table(nwbfile, recording, layers)
    if "weight" in recording.measures:
        _add_synapses(nwbfile, recording, layers)
    if "gradavg" in recording.measures:
        _misc(nwbfile).add(DynamicTable(
            name="activity_change",
            description="Observed layer-wise activity change g_b per probe stimulus, one row per session.",
            columns=[VectorData(name=layer_column_name(layer), description=f"Activity change of layer {layer!r}, (S,) per row.",
                                data=recording.activity_change(layer)) for _, layer, _ in layers],
            id=list(range(n_t))))


def _add_provenance(nwbfile, recording: Recording, export_seed: int) -> None:
    """The rig recipe, one row per (step, parameter), with the export's own spike-time seed."""
    from hdmf.common import DynamicTable, VectorData

    rows = provenance_rows(recording) + [(len(recording.provenance), "export", "spike_time_seed", str(export_seed))]
    _misc(nwbfile).add(DynamicTable(
        name="provenance",
        description="Rig recipe: one row per (step, parameter), in the order applied, with every resolved seed.",
        columns=[VectorData(name="step_index", description="Order of the step.", data=np.array([r[0] for r in rows], dtype=np.int64)),
                 VectorData(name="step", description="Rig step.", data=[r[1] for r in rows]),
                 VectorData(name="parameter", description="Parameter name (dotted for nested values).", data=[r[2] for r in rows]),
                 VectorData(name="value", description="Parameter value as text.", data=[r[3] for r in rows])],
        id=list(range(len(rows)))))


def _add_unit_index_table(nwbfile, recording: Recording, layers) -> None:
    from hdmf.common import DynamicTable, VectorData

    module = _misc(nwbfile)
    names, index = [], []
    for _, layer, _ in layers:
        names += [layer] * recording.n_units(layer)
        index.append(np.asarray(recording.unit_indices[layer], dtype=np.int64))
    module.add(DynamicTable(
        name="units", description="Observed units in column order: layer and unit index in the network.",
        columns=[VectorData(name="layer", description="Layer of the unit.", data=names),
                 VectorData(name="unit_index", description="Index of the unit in its layer.",
                            data=np.concatenate(index) if index else np.zeros(0, np.int64))],
        id=list(range(len(names)))))


def _add_units(nwbfile, recording: Recording, layers, start: np.ndarray, window: float, export_seed: int) -> None:
    from hdmf.common import VectorData, VectorIndex
    from pynwb.misc import Units

    end = float(start[-1] + PRESENTATION_PERIOD_S)
    spike_times, layer_names, depths, unit_index = [], [], [], []
    for layer_index, layer, depth in layers:
        if recording.n_units(layer) == 0:
            continue
        counts = np.rint(recording.activations(layer)).astype(np.int64)     # (T, S, U)
        flat = counts.reshape(-1, counts.shape[2])
        rng = np.random.default_rng((export_seed, layer_index))
        for column, unit in enumerate(recording.unit_indices[layer]):
            n = flat[:, column]
            offsets = np.floor(rng.random(int(n.sum())) * window * SPIKE_SAMPLING_HZ) / SPIKE_SAMPLING_HZ
            spike_times.append(np.sort(np.repeat(start, n) + offsets))
            layer_names.append(layer)
            depths.append(depth)
            unit_index.append(int(unit))
    if not spike_times:
        logger.warning("run %s: no unit left to write in the Units table", recording.run_id)
        return
    times = VectorData(name="spike_times", description="Spike times (rig clock, s).",
                       data=np.concatenate(spike_times))
    n_units = len(spike_times)
    intervals = VectorData(name="obs_intervals", description="Observation interval of the unit (rig clock, s).",
                           data=np.tile([[0.0, end]], (n_units, 1)))
    nwbfile.units = Units(
        name="units", resolution=1.0 / SPIKE_SAMPLING_HZ, id=list(range(n_units)),
        description=("In silico spike-sorted units (virtual rig): spike times on the rig clock; spikes of presentation "
                     f"p lie in [p*{PRESENTATION_PERIOD_S:g}, p*{PRESENTATION_PERIOD_S:g} + {window:g}) s."),
        columns=[times, VectorIndex(name="spike_times_index", target=times,
                                    data=np.cumsum([len(t) for t in spike_times]).astype(np.int64)),
                 intervals, VectorIndex(name="obs_intervals_index", target=intervals,
                                        data=np.arange(1, n_units + 1, dtype=np.int64)),
                 VectorData(name="layer", description="Layer of the unit.", data=layer_names),
                 VectorData(name="depth_position", description="Depth position of the unit's layer.", data=depths),
                 VectorData(name="unit_index", description="Index of the unit's main source neuron in its layer.",
                            data=np.array(unit_index, dtype=np.int64))])


def _add_ophys(nwbfile, recording: Recording, layers, device, period: float) -> None:
    from pynwb.ophys import DfOverF, ImageSegmentation, OpticalChannel, RoiResponseSeries

    from virtual_lab.sessions import layer_column_name

    step = [s for s in recording.activity_steps if hasattr(s, "indicator")][-1]
    ophys = nwbfile.create_processing_module(name="ophys", description="In silico two-photon imaging (virtual rig).")
    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    dff = DfOverF(name="DfOverF")
    ophys.add(dff)
    n_t, n_s = recording.n_checkpoints, recording.source.n_stimuli
    for _, layer, depth in layers:
        values = recording.activations(layer)
        n_rois = values.shape[2]
        if n_rois == 0:
            continue
        column = layer_column_name(layer)
        channel = OpticalChannel(name="green", description=f"{step.indicator} emission (in silico).", emission_lambda=510.0)
        plane = nwbfile.create_imaging_plane(
            name=f"plane_{column}", optical_channel=channel, device=device, excitation_lambda=920.0,
            imaging_rate=float(step.frame_rate_hz), indicator=step.indicator,
            location=f"in silico layer {layer} ({depth})",
            description=f"Virtual imaging plane holding the units of layer {layer!r}.")
        seg = segmentation.create_plane_segmentation(
            name=f"rois_{column}", description=f"One ROI per imaged unit of layer {layer!r} (virtual pixels).",
            imaging_plane=plane)
        seg.add_column(name="unit_index", description="Index of the unit in its layer.")
        side = int(np.ceil(np.sqrt(n_rois)))
        for k, unit in enumerate(recording.unit_indices[layer]):
            seg.add_roi(pixel_mask=[(k % side, k // side, 1.0)], unit_index=int(unit))
        rois = seg.create_roi_table_region(region=list(range(n_rois)), description=f"All ROIs of layer {layer!r}.")
        dff.add_roi_response_series(RoiResponseSeries(
            name=f"RoiResponseSeries_{column}", data=values.reshape(n_t * n_s, n_rois), rois=rois, unit="dimensionless",
            rate=1.0 / period, starting_time=0.0,
            description=(f"In silico mean dF/F (dimensionless) over {step.response_window_s:g} s from each "
                         f"presentation onset ({step.indicator}, {step.frame_rate_hz:g} Hz frames, neuropil-subtracted "
                         f"with r = {step.neuropil_r_subtract:g}); one sample per probe presentation, session-major.")))


def _add_synapses(nwbfile, recording: Recording, layers) -> None:
    from hdmf.common import DynamicTable, VectorData

    kind = ("size" if recording.synapse_steps else "weight")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("layer", "post", "pre", "ckpt", "step", "value")}
    steps = np.asarray(recording.checkpoint_steps, dtype=np.int64)
    for _, layer, _ in layers:
        values = recording.weights(layer)                       # (T, n)
        n_in = recording.source.weights[layer].shape[2]
        syn = np.asarray(recording.synapse_indices[layer], dtype=np.int64)
        n_false = values.shape[1] - len(syn)
        post = np.concatenate([syn // n_in, np.full(n_false, -1)])
        pre = np.concatenate([syn % n_in, np.full(n_false, -1)])
        n_t, n = values.shape
        columns["layer"].append(np.repeat(np.array([layer], dtype=object), n_t * n))
        columns["post"].append(np.tile(post, n_t))
        columns["pre"].append(np.tile(pre, n_t))
        columns["ckpt"].append(np.repeat(np.asarray(recording.checkpoint_indices, dtype=np.int64), n))
        columns["step"].append(np.repeat(steps, n))
        columns["value"].append(values.reshape(-1))
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in columns.items()}
    _misc(nwbfile).add(DynamicTable(
        name="synapse_measurements",
        description=(f"One row per (measured synapse, session). value is the measured {kind}"
                     + (" (magnitude only, arbitrary units)" if kind == "size" else " (signed, arbitrary units)")
                     + "; post/pre index -1 marks a false detection."),
        columns=[VectorData(name="layer", description="Layer of the synapse.", data=[str(x) for x in joined["layer"]]),
                 VectorData(name="post_unit_index", description="Postsynaptic unit (row of the weight matrix).",
                            data=joined["post"].astype(np.int64)),
                 VectorData(name="pre_unit_index", description="Presynaptic unit (column of the weight matrix).",
                            data=joined["pre"].astype(np.int64)),
                 VectorData(name="checkpoint_index", description="Checkpoint (session) of the measurement.",
                            data=joined["ckpt"].astype(np.int64)),
                 VectorData(name="training_step", description="Training step of the session.", data=joined["step"].astype(np.int64)),
                 VectorData(name="value", description=f"Measured {kind}.", data=joined["value"].astype(np.float32))],
        id=list(range(len(joined["value"])))))


def export_recording(recording: Recording, path: str | os.PathLike, *, blind: bool = False,
                     subject_id: str | None = None, session_id: str = "rig", seed: int | None = None,
                     experimenter: str | Sequence[str] | None = None, institution: str | None = None,
                     lab: str | None = None) -> Path:
    """Write an observed recording as an NWB file, atomically and deterministically.

    Parameters
    ----------
    recording : Recording
    path : str or path-like
    blind : bool, default=False
        Write no rule, run id or training metadata; ``subject_id`` must then be given (an opaque id).
    subject_id : str, optional
        Defaults to the sanitized run id (not allowed in blind mode).
    session_id : str, default="rig"
    seed : int, optional
        Seed of the spike-time placement; default derived from the run id. Stored in the file.
    experimenter, institution, lab : optional
        As in :func:`virtual_lab.sessions.write_session` (default experimenter
        :data:`~virtual_lab.sessions.IN_SILICO_EXPERIMENTER`); :func:`record_sessions` passes those of the
        observed session. They name no rule or run, so blind files may carry them.

    Returns
    -------
    pathlib.Path
    """

    from virtual_lab.sessions import attribution_fields, sanitize_id, write_nwb_atomically
    from virtual_lab.sessions.write import _set_deterministic_object_ids

    if blind and subject_id is None:
        raise ValueError("blind export needs an opaque subject_id (see opaque_id)")
    subject = sanitize_id(subject_id if subject_id is not None else recording.run_id)
    session = sanitize_id(session_id)
    export_seed = derive_seed("export", recording.run_id) if seed is None else int(seed)
    identifier = f"{subject}-{session}" if blind else f"{recording.run_id}-{session}"
    nwbfile = _build(recording, identifier=identifier, subject_id=subject, session_id=session, blind=blind,
                     export_seed=export_seed, attribution=attribution_fields(experimenter, institution, lab))
    _set_deterministic_object_ids(nwbfile)
    path = Path(path)
    write_nwb_atomically(nwbfile, path)
    return path


def record_sessions(session_paths: Iterable[str | os.PathLike], preset, out_dir: str | os.PathLike, *,
                    seed: int = 0, blind: bool = False, key_path: str | os.PathLike | None = None,
                    overrides: Mapping[str, Any] | None = None,
                    on_unreadable: Callable[[Path, OSError], None] | None = None) -> tuple[list[Path], Path | None]:
    """Observe ground-truth session files through a preset and export each as a rig recording.

    Parameters
    ----------
    session_paths : iterable of path-like
        Ground-truth NWB sessions.
    preset : RigPreset or str
    out_dir : path-like
        Recordings go to ``out_dir/sub-<subject>/sub-<subject>_ses-<preset>.nwb``.
    seed : int, default=0
        Rig seed; each session is observed with ``derive_seed(seed, run_id)`` (its own units and noise).
    blind : bool, default=False
        Opaque subject ids; the key goes to ``key_path``.
    key_path : path-like, optional
        Default: ``<out_dir>-blind-key.json`` next to (not inside) ``out_dir``.
    overrides : mapping, optional
        Parameter changes passed to :func:`~virtual_lab.rig.presets.apply_preset`.
    on_unreadable : callable, optional
        Called with the path and the error (a :class:`~virtual_lab.sessions.SessionReadError` naming the
        file) of a session that fails to read, e.g. damaged in the middle of an array; that session is
        skipped and the others recorded. Without it the error is raised.

    Each recording carries the experimenter, institution and lab of its session (the in-silico experimenter
    when the session names none).

    Returns
    -------
    paths : list of Path
    key_path : Path or None
    """
    from virtual_lab.rig.presets import apply_preset, load_preset
    from virtual_lab.sessions import (SessionReadError, read_session, read_session_attribution, sanitize_id,
                                      session_path)
    from virtual_lab.progress import progress_bar

    preset = load_preset(preset)
    out_dir = Path(out_dir)
    key_seed = derive_seed("blind-key", seed, preset.name)
    key: dict[str, Any] = {}
    written = []
    for source in progress_bar(session_paths, desc=f"recording (rig {preset.name})", unit="sessions"):
        try:
            ground_truth = read_session(source)
            attribution = read_session_attribution(source)  # the rig recording credits who ran the session
        except SessionReadError as error:
            if on_unreadable is None:
                raise
            on_unreadable(Path(source), error)
            continue
        recording = apply_preset(ground_truth, preset, seed=derive_seed(seed, ground_truth.run_id), **(overrides or {}))
        subject = opaque_id(ground_truth.run_id, key_seed) if blind else sanitize_id(ground_truth.run_id)
        path = session_path(out_dir, subject, preset.name)
        export_recording(recording, path, blind=blind, subject_id=subject, session_id=preset.name,
                         experimenter=attribution["experimenter"] or None, institution=attribution["institution"],
                         lab=attribution["lab"])
        written.append(path)
        if blind:
            key[subject] = {"run_id": ground_truth.run_id, "rule": ground_truth.rule, "source": str(source),
                            "file": str(path)}
    if not blind:
        return written, None
    key_file = Path(key_path) if key_path is not None else out_dir.parent / f"{out_dir.name}-blind-key.json"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_name(f".{key_file.name}.tmp")
    tmp.write_text(json.dumps({"preset": preset.name, "seed": seed, "subjects": key}, indent=1, sort_keys=True))
    os.replace(tmp, key_file)
    return written, key_file
