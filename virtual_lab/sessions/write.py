"""Write ground-truth sessions: one NWB file per training run, atomically and reproducibly.

:func:`write_session` builds the documented layout (see :mod:`virtual_lab.sessions`) from a
:class:`~virtual_lab.types.GroundTruth` with core NWB types only, replaces hdmf's random object ids by
deterministic ones (identical inputs give byte-identical files) and writes through
:func:`write_nwb_atomically` (a hidden temporary file, fsync, rename), which rig exports share.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject
from pynwb.image import ImageSeries

from virtual_lab.sessions.layout import (_ACTIVATIONS_PREFIX, _REFERENCE, _UNIT, CLOCK_RATE_HZ,
                                         GROUND_TRUTH_SESSION_ID, IN_SILICO_EXPERIMENTER, NETWORK_MODULE,
                                         SESSION_START_TIME, SYNTHETIC_CONSTRUCT_SPECIES, _encode_value,
                                         _temp_path, layer_column_name, sanitize_id)
from virtual_lab.types import GroundTruth

logger = logging.getLogger(__name__)

__all__ = ["attribution_fields", "write_nwb_atomically", "write_session"]

# ----------------------------------------------------------------------------------------------- write


def _check_ground_truth(gt: GroundTruth) -> None:
    if not isinstance(gt, GroundTruth):
        raise TypeError(f"The 'ground_truth' parameter must be a GroundTruth. Got {type(gt).__name__} instead.")
    if not gt.run_id:
        raise ValueError("ground_truth.metadata['run_id'] must be a non-empty string (it is the NWB identifier).")
    n_t, n_s = gt.n_checkpoints, gt.n_stimuli
    if n_t < 1 or n_s < 1:
        raise ValueError(f"A session needs at least one checkpoint and one stimulus; got T={n_t}, S={n_s}.")
    if gt.probe_stimuli.ndim not in (2, 3, 4) or gt.probe_stimuli.shape[0] != n_s:
        raise ValueError(f"probe_stimuli has shape {gt.probe_stimuli.shape}; expected (S, H, W), (S, H, W, C) "
                         f"(channels-last colour) or (S, D) with S={n_s}.")
    for name, arr in (("train_loss", gt.train_loss), ("test_accuracy", gt.test_accuracy)):
        if np.shape(arr) != (n_t,):
            raise ValueError(f"{name} has shape {np.shape(arr)}; expected ({n_t},).")
    columns = [layer_column_name(layer) for layer in gt.layer_names]
    if len(set(columns)) != len(columns):
        raise ValueError(f"Layer names {gt.layer_names} are not unique once made HDF5-safe: {columns}.")
    for layer in gt.layer_names:
        if gt.activations[layer].shape[1] != n_s or gt.activity_change[layer].shape[1] != n_s:
            raise ValueError(f"activations/activity_change of layer {layer!r} do not have S={n_s} stimuli.")


def attribution_fields(experimenter: str | Sequence[str] | None = None, institution: str | None = None,
                       lab: str | None = None) -> dict[str, Any]:
    """The ``NWBFile`` keyword arguments for who ran a session and where (shared by sessions and rig exports).

    Parameters
    ----------
    experimenter : str or sequence of str, optional
        Name(s), DANDI form ``"Last, First"``. ``None`` gives :data:`IN_SILICO_EXPERIMENTER`; an empty
        sequence writes no experimenter.
    institution, lab : str, optional
        Written when non-empty.

    Returns
    -------
    dict
        ``experimenter`` (tuple of str or None), ``institution`` and ``lab`` (str or None).
    """
    if experimenter is None:
        names: tuple[str, ...] = (IN_SILICO_EXPERIMENTER,)
    elif isinstance(experimenter, str):
        names = (experimenter,) if experimenter else ()
    else:
        names = tuple(str(x) for x in experimenter if str(x))
    for key, value in (("institution", institution), ("lab", lab)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"The {key!r} parameter must be a str or None. Got {type(value).__name__} instead.")
    return {"experimenter": names or None, "institution": institution or None, "lab": lab or None}


def _gzip(data: np.ndarray, chunks: tuple[int, ...]) -> H5DataIO:
    return H5DataIO(data=data, compression="gzip", compression_opts=1, chunks=chunks)


def _per_checkpoint_table(name: str, description: str, gt: GroundTruth, arrays: Mapping[str, np.ndarray],
                          what: str, dtype: str = "float32") -> DynamicTable:
    columns = []
    for layer in gt.layer_names:
        data = np.ascontiguousarray(arrays[layer], dtype=dtype)
        stored = "" if dtype == "float32" else f" Stored as {dtype} (rounded from float32)."
        columns.append(VectorData(
            name=layer_column_name(layer),
            description=f"{what} of layer {layer!r}, one row per checkpoint, shape {data.shape[1:]} per row.{stored}",
            data=_gzip(data, (1, *data.shape[1:])),
        ))
    return DynamicTable(name=name, description=description, columns=columns, id=list(range(gt.n_checkpoints)))


def _build_nwbfile(gt: GroundTruth, *, protocol_name: str, session_description: str | None,
                   experimenter: tuple[str, ...] | None, subject_id: str, session_id: str,
                   weights_dtype: str = "float32", institution: str | None = None,
                   lab: str | None = None) -> NWBFile:
    """The whole session in memory, container by container in the documented layout (nothing written yet)."""
    n_s = gt.n_stimuli
    clock = (f"Virtual clock: one probe presentation per sample at {CLOCK_RATE_HZ:g} Hz; checkpoint k covers "
             f"samples k*{n_s} to (k+1)*{n_s}-1, i.e. [k*{n_s / CLOCK_RATE_HZ:g}, (k+1)*{n_s / CLOCK_RATE_HZ:g}) s.")
    nwbfile = _new_nwbfile(gt, clock, protocol_name=protocol_name, session_description=session_description,
                           experimenter=experimenter, subject_id=subject_id, session_id=session_id,
                           institution=institution, lab=lab)
    _add_activations(nwbfile, gt, clock)
    _add_intervals(nwbfile, gt)
    _add_probe_stimuli(nwbfile, gt, clock)
    _add_network_state(nwbfile, gt, weights_dtype)
    _add_performance(nwbfile, gt)
    return nwbfile


def _new_nwbfile(gt: GroundTruth, clock: str, *, protocol_name: str, session_description: str | None,
                 experimenter: tuple[str, ...] | None, subject_id: str, session_id: str,
                 institution: str | None, lab: str | None) -> NWBFile:
    """The file with its general metadata, the Subject (the network) and the Device (the virtual probe)."""
    from virtual_lab import __version__

    meta = gt.metadata
    n_t, n_s = gt.n_checkpoints, gt.n_stimuli
    architecture = str(meta.get("architecture", "unknown"))
    rule = str(meta.get("rule", "unknown"))
    task = str(meta.get("task", "unknown"))
    if session_description is None:
        session_description = (
            f"In silico ground-truth recording of training run {gt.run_id}: a {architecture} network trained "
            f"with the {rule} learning rule on task {task}; every unit of {len(gt.layer_names)} layers at "
            f"{n_t} checkpoints, {n_s} probe stimuli per checkpoint. {clock}")
    nwbfile = NWBFile(
        session_description=session_description,
        identifier=gt.run_id,
        session_start_time=SESSION_START_TIME,
        file_create_date=SESSION_START_TIME,
        experimenter=experimenter,
        institution=institution,
        lab=lab,
        experiment_description=(
            "In silico experiment (virtual_lab): artificial neural networks trained under known learning rules "
            "and recorded like a neural population, to identify the learning rule from neural observables "
            "(after Nayebi, Srivastava, Ganguli & Yamins, NeurIPS 2020, arXiv:2010.11765)."),
        session_id=session_id,
        protocol=protocol_name or None,
        related_publications=[_REFERENCE],
        was_generated_by=[["virtual_lab", __version__]],
    )
    nwbfile.subject = Subject(
        subject_id=subject_id,
        sex="O",
        species=SYNTHETIC_CONSTRUCT_SPECIES,
        date_of_birth=SESSION_START_TIME,
        strain=architecture,
        description=(f"In silico subject: an artificial neural network ({architecture}, "
                     f"layers {', '.join(gt.layer_names)}), not an animal. Born at initialization "
                     f"(training step 0), which is also the session start."),
    )
    nwbfile.create_device(
        name="virtual probe",
        description=("In silico virtual probe (virtual_lab): reads, at every checkpoint, the output of every "
                     "unit for every probe stimulus, every forward weight (no bias), and the layer-wise "
                     "activity change of every layer."),
    )
    return nwbfile


def _add_activations(nwbfile: NWBFile, gt: GroundTruth, clock: str) -> None:
    """acquisition: one 2-D (T*S, U) TimeSeries per layer, one chunk per checkpoint."""
    n_t, n_s = gt.n_checkpoints, gt.n_stimuli
    for layer, depth in zip(gt.layer_names, gt.depth_positions):
        act = np.ascontiguousarray(gt.activations[layer], dtype=np.float32)
        n_units = act.shape[2]
        nwbfile.add_acquisition(TimeSeries(
            name=_ACTIVATIONS_PREFIX + layer_column_name(layer),
            data=_gzip(act.reshape(n_t * n_s, n_units), (n_s, n_units)),
            unit=_UNIT,
            rate=CLOCK_RATE_HZ,
            starting_time=0.0,
            description=(f"In silico activations of layer {layer!r} ({depth}): output of all {n_units} units "
                         f"for each of {n_s} probe stimuli at each of {n_t} checkpoints, dimensionless (the "
                         f"numbers the artificial network computes, no physical unit); rows are checkpoint-major "
                         f"(reshape to ({n_t}, {n_s}, {n_units})). {clock}"),
        ))


def _add_intervals(nwbfile: NWBFile, gt: GroundTruth) -> None:
    """intervals: epochs (one per checkpoint) and trials (one per probe presentation)."""
    n_t, n_s = gt.n_checkpoints, gt.n_stimuli
    width = max(2, len(str(n_t - 1)))
    nwbfile.add_epoch_column(name="checkpoint_index", description="Position of the checkpoint (0 = initialization).")
    nwbfile.add_epoch_column(name="training_step", description="Training step at which the checkpoint was taken.")
    for k, step in enumerate(np.asarray(gt.checkpoint_steps, dtype=np.int64)):
        nwbfile.add_epoch(start_time=k * n_s / CLOCK_RATE_HZ, stop_time=(k + 1) * n_s / CLOCK_RATE_HZ,
                          tags=[f"checkpoint_{k:0{width}d}"], checkpoint_index=k, training_step=int(step))

    sample = np.arange(n_t * n_s, dtype=np.int64)
    start = sample / CLOCK_RATE_HZ
    trials = TimeIntervals(
        name="trials",
        description="In silico probe presentations: one row per (checkpoint, probe stimulus), checkpoint-major.",
        columns=[
            VectorData(name="start_time", description="Start of the presentation (virtual clock, s).", data=start),
            VectorData(name="stop_time", description="End of the presentation (virtual clock, s).",
                       data=start + 1.0 / CLOCK_RATE_HZ),
            VectorData(name="checkpoint_index", description="Checkpoint of the presentation.",
                       data=sample // n_s),
            VectorData(name="stimulus_index", description="Index of the probe stimulus in probe_stimuli.",
                       data=sample % n_s),
            VectorData(name="label", description="Class label of the probe stimulus.",
                       data=np.tile(np.asarray(gt.probe_labels, dtype=np.int64), n_t)),
        ],
        id=list(range(n_t * n_s)),
    )
    nwbfile.trials = trials


def _add_probe_stimuli(nwbfile: NWBFile, gt: GroundTruth, clock: str) -> None:
    """stimulus template: the probe set as one ImageSeries."""
    n_s = gt.n_stimuli
    stimuli = np.ascontiguousarray(gt.probe_stimuli, dtype=np.float32)
    dimension = list(stimuli.shape[1:])
    if stimuli.ndim == 2:  # (S, D) vectors are stored as (S, D, 1) images; dimension [D] marks them
        stimuli = stimuli[:, :, None]
    nwbfile.add_stimulus_template(ImageSeries(
        name="probe_stimuli",
        data=_gzip(stimuli, stimuli.shape),
        unit=_UNIT,
        rate=CLOCK_RATE_HZ,
        starting_time=0.0,
        dimension=dimension,
        description=(f"In silico probe set: the {n_s} stimuli shown, in this order, at every checkpoint, as the "
                     f"dimensionless network inputs (original shape {tuple(gt.probe_stimuli.shape)}"
                     f"{'; channels-last RGB' if gt.probe_stimuli.ndim == 4 else ''}). {clock}"),
    ))


def _add_network_state(nwbfile: NWBFile, gt: GroundTruth, weights_dtype: str) -> None:
    """processing/misc: layers, units, weights, activity change and the run spec."""
    network = nwbfile.create_processing_module(
        name=NETWORK_MODULE,
        description="In silico network state: layers, units, weights, activity change, run spec.")
    network.add(_layers_table(gt))
    network.add(_units_table(gt))
    network.add(_per_checkpoint_table(
        "weights", "Forward weight matrix (out, in) of every layer, no bias, at every checkpoint.",
        gt, gt.weights, "Forward weights", weights_dtype))
    network.add(_per_checkpoint_table(
        "activity_change",
        "Layer-wise activity change per probe stimulus, g_b = (1/n_out) sum_j sum_i dy_bj/dx_bi, per checkpoint.",
        gt, gt.activity_change, "Activity change"))
    network.add(_training_table(gt))


def _layers_table(gt: GroundTruth) -> DynamicTable:
    return DynamicTable(
        name="layers",
        description="Recorded layers in forward order.",
        columns=[
            VectorData(name="layer", description="Layer name in the network.", data=list(gt.layer_names)),
            VectorData(name="column_name", description="Name of the layer inside this file (series, columns).",
                       data=[layer_column_name(x) for x in gt.layer_names]),
            VectorData(name="depth_position", description="early, middle or deep (ordered layer list in thirds).",
                       data=list(gt.depth_positions)),
            VectorData(name="n_units", description="Number of units of the layer.",
                       data=np.array([gt.activations[x].shape[2] for x in gt.layer_names], dtype=np.int64)),
        ],
        id=list(range(len(gt.layer_names))),
    )


def _units_table(gt: GroundTruth) -> DynamicTable:
    unit_layer, unit_depth, unit_index = [], [], []
    for layer, depth in zip(gt.layer_names, gt.depth_positions):
        n_units = gt.activations[layer].shape[2]
        unit_layer += [layer] * n_units
        unit_depth += [depth] * n_units
        unit_index.append(np.arange(n_units, dtype=np.int64))
    return DynamicTable(
        name="units",
        description="In silico units (not spike-sorted): one row per recorded unit, layers in forward order.",
        columns=[
            VectorData(name="layer", description="Layer of the unit.", data=unit_layer),
            VectorData(name="depth_position", description="Depth position of the unit's layer.", data=unit_depth),
            VectorData(name="unit_index", description="Column of the unit in activations_<layer>.",
                       data=np.concatenate(unit_index)),
        ],
        id=list(range(len(unit_layer))),
    )


def _training_table(gt: GroundTruth) -> DynamicTable:
    keys, values, dtypes = [], [], []
    for key, value in gt.metadata.items():
        text, dtype = _encode_value(str(key), value)
        keys.append(str(key))
        values.append(text)
        dtypes.append(dtype)
    return DynamicTable(
        name="training",
        description="Resolved run spec (rule, hyperparameters, seeds, architecture, task, versions) as key/value.",
        columns=[
            VectorData(name="key", description="Metadata key.", data=keys),
            VectorData(name="value", description="Value as text (floats as repr, so they parse back exactly).",
                       data=values),
            VectorData(name="dtype", description="Python type of the value: str, int, float or bool.", data=dtypes),
        ],
        id=list(range(len(keys))),
    )


def _add_performance(nwbfile: NWBFile, gt: GroundTruth) -> None:
    """processing/behavior: train loss and test accuracy per checkpoint."""
    n_t = gt.n_checkpoints
    if gt.metadata.get("paradigm") == "contrastive":
        loss_text = ("Contrastive (NT-Xent) loss on a fixed set of augmented view pairs of training images, "
                     "the same for every network of the task.")
        accuracy_text = ("Nearest-class-centroid (cosine) accuracy of the representation layer on the held-out "
                         "probe set (fraction); centroids from the unaugmented training set.")
    else:
        n_examples = gt.metadata.get("n_loss_examples")
        loss_text = "Task loss (cross-entropy) on the training set." if n_examples is None else (
            f"Task loss (cross-entropy) on {n_examples} training examples (training metadata: eval_subset, "
            f"n_loss_examples, eval_subset_seed; the whole training set when eval_subset is 0 or not smaller).")
        accuracy_text = "Accuracy on the held-out probe set (fraction)."
    behavior = nwbfile.create_processing_module(
        name="behavior", description="In silico task performance of the network at every checkpoint.")
    behavior.add(DynamicTable(
        name="performance",
        description="Task performance per checkpoint (epoch k of intervals/epochs).",
        columns=[
            VectorData(name="checkpoint_index", description="Position of the checkpoint.",
                       data=np.arange(n_t, dtype=np.int64)),
            VectorData(name="training_step", description="Training step of the checkpoint.",
                       data=np.asarray(gt.checkpoint_steps, dtype=np.int64)),
            VectorData(name="train_loss", description=loss_text,
                       data=np.asarray(gt.train_loss, dtype=np.float32)),
            VectorData(name="test_accuracy", description=accuracy_text,
                       data=np.asarray(gt.test_accuracy, dtype=np.float32)),
        ],
        id=list(range(n_t)),
    ))


_OBJECT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "virtual_lab/sessions/object_id")


def _set_deterministic_object_ids(nwbfile: NWBFile) -> None:
    """Replace hdmf's random uuid4 object ids by uuid5(identifier, path) so that files are reproducible.

    Ids stay unique across files as long as identifiers (run ids) are unique. Relies on a private hdmf
    attribute; if it is missing the random ids are kept (the file is then valid but not byte-identical).
    """
    for obj in nwbfile.all_children():
        if not hasattr(obj, "_AbstractContainer__object_id"):
            logger.debug("hdmf has no private object id attribute; object ids stay random")
            return
        parts = []
        node = obj
        while node is not None:
            parts.append(node.name)
            node = node.parent
        key = f"{nwbfile.identifier}/" + "/".join(reversed(parts))
        obj._AbstractContainer__object_id = str(uuid.uuid5(_OBJECT_ID_NAMESPACE, key))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_nwb_atomically(nwbfile: NWBFile, path: Path) -> None:
    """Write an NWB file under a hidden temporary name, fsync it, then rename it to ``path``.

    A file under its final name is therefore always complete; on any error the temporary file is removed
    and the error re-raised. Parent folders are created. (Shared by sessions and rig exports.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with warnings.catch_warnings():
            # the temporary name does not end in ".nwb" on purpose (sweeps and inspectors skip it)
            warnings.filterwarnings("ignore", message=r"The file path provided: .* does not end in '\.nwb'")
            with NWBHDF5IO(str(tmp), mode="w") as io:
                io.write(nwbfile)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_session(
    ground_truth: GroundTruth,
    path: str | os.PathLike,
    *,
    protocol_name: str = "",
    session_description: str | None = None,
    experimenter: str | Sequence[str] | None = None,
    subject_id: str | None = None,
    session_id: str | None = None,
    weights_dtype: str = "float32",
    institution: str | None = None,
    lab: str | None = None,
) -> Path:
    """Write one ground-truth session as an NWB file, atomically.

    The file is written to ``.<name>.tmp`` in the target folder, flushed to disk, then renamed to ``path``;
    on any error the temporary file is removed and the error re-raised, so ``path`` is either absent
    (or left as it was) or a complete session. Parent folders are created. Identical inputs give
    byte-identical files: ``session_start_time`` and ``file_create_date`` are fixed, no wall-clock time is
    stored, and hdmf's random object ids are replaced by ``uuid5(run_id, path in file)``.

    Parameters
    ----------
    ground_truth : GroundTruth
        The run to write; ``metadata["run_id"]`` becomes the NWB ``identifier``.
    path : str or path-like
        Target file, usually from :func:`session_path`.
    protocol_name : str, default=""
        Name of the protocol the run came from (``general/protocol``); omitted when empty.
    session_description : str, optional
        Defaults to an "in silico" description naming the run, architecture, rule and task.
    experimenter : str or sequence of str, optional
        Experimenter name(s), DANDI form ``"Last, First"``. Defaults to :data:`IN_SILICO_EXPERIMENTER`
        (``"virtual_lab, in silico"``: no person performed the run); an empty sequence writes none.
    subject_id : str, optional
        Subject (network) id; defaults to ``sanitize_id(run_id)``. Passed through :func:`sanitize_id`.
    session_id : str, optional
        Session id; defaults to :data:`GROUND_TRUTH_SESSION_ID`. Passed through :func:`sanitize_id`.
    weights_dtype : {"float32", "float16"}, default="float32"
        Precision of the stored weight matrices (they dominate file size). ``"float16"`` rounds them
        (relative error <= 2**-11 for |w| >= 6.1e-5, absolute error <= 3e-8 below); readers return float32.
    institution, lab : str, optional
        ``general/institution`` and ``general/lab``; omitted when empty. None of the attribution fields is
        part of the run id or of the training table, so they never make a stored session look mismatched.

    Returns
    -------
    pathlib.Path
        The final path.

    Raises
    ------
    TypeError, ValueError
        If ``ground_truth`` is inconsistent or its metadata holds other types than str/int/float/bool.
    """
    _check_ground_truth(ground_truth)
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"The 'weights_dtype' parameter of write_session must be 'float32' or 'float16'. "
                         f"Got {weights_dtype!r} instead.")
    path = Path(path)
    nwbfile = _build_nwbfile(
        ground_truth,
        protocol_name=protocol_name,
        session_description=session_description,
        subject_id=sanitize_id(subject_id if subject_id is not None else ground_truth.run_id),
        session_id=sanitize_id(session_id if session_id is not None else GROUND_TRUTH_SESSION_ID),
        weights_dtype=weights_dtype,
        **attribution_fields(experimenter, institution, lab),
    )
    _set_deterministic_object_ids(nwbfile)
    write_nwb_atomically(nwbfile, path)
    _fsync_dir(path.parent)
    logger.debug("wrote session %s (%d bytes)", path, path.stat().st_size)
    return path


