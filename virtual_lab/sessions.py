"""Ground-truth recording sessions as NWB files: write, read, check, inspect, and read through neo.

One training run is one *session*: one NWB file holding every unit of every recorded layer at every
checkpoint, the weights, the layer-wise activity change, the probe stimuli and the task performance.
Only core NWB types are used, so the file passes ``nwbinspector`` (default and ``dandi`` configs) and
``pynwb`` validation and reads in ``neo``.

Layout (``<col>`` is the layer name made safe for HDF5, see :func:`layer_column_name`)::

    general/                          session metadata (experimenter, institution and lab when given),
                                      Subject (the network), Device "virtual probe"
    acquisition/activations_<col>     TimeSeries (T*S, U_layer) float32, gzip-1, one chunk per checkpoint
    intervals/epochs                  one row per checkpoint: tags ["checkpoint_07"], checkpoint_index,
                                      training_step
    intervals/trials                  one row per probe presentation: checkpoint_index, stimulus_index, label
    stimulus/templates/probe_stimuli  ImageSeries (S, H, W) float32 of the probe set ((S, H, W, 3) for colour)
    processing/misc/layers            DynamicTable: layer, column_name, depth_position, n_units (forward order)
    processing/misc/units             DynamicTable: layer, depth_position, unit_index
    processing/misc/weights           DynamicTable, one row per checkpoint, one column per layer (T, out, in)
    processing/misc/activity_change   DynamicTable, one row per checkpoint, one column per layer (T, S)
    processing/misc/training          DynamicTable key / value / dtype: the resolved run metadata
    processing/behavior/performance   DynamicTable, one row per checkpoint: checkpoint_index,
                                      training_step, train_loss, test_accuracy

The network-state module is :data:`NETWORK_MODULE` (``"misc"``): nwbinspector suggests naming processing
modules after an NWB modality (ophys, ecephys, icephys, behavior, misc, ogen, retinotopy) and the network's
layers, weights and run spec are none of the others. Sessions written before used ``processing/network``;
every reader here still accepts them.

Metadata and neo (0.14.6)
-------------------------
Activations and probe stimuli are ``"dimensionless"`` (outputs and inputs of an artificial network have no
physical unit). neo reads every session, with two known neo defects that shape the file:

* ``general/keywords`` is not written. pynwb returns keywords as a lazy ``StrDataset`` and neo puts that
  object, unconverted, into the Block's annotations, which neo then rejects (``ValueError: Invalid
  annotation``): any file with keywords cannot be read by ``neo.io.NWBIO``. Experimenter, institution, lab
  and related publications are safe (pynwb returns tuples or strings).
* neo strips a trailing ``s`` from every unit name before looking it up in ``quantities`` (meant for
  ``"volts"``), so ``"dimensionless"`` becomes ``"dimensionles"`` and neo logs "Can't handle unit
  'dimensionles'. Returning dimensionless" once per activation series: the result is right (dimensionless),
  the message is not. No ``quantities`` name for a pure number survives that stripping (the dimensionless
  ones that do are ``count``, ``lsb``, ``radian`` and ``steradian``, each of which would misstate the data).
  :func:`read_neo` drops exactly that message.

The virtual clock
-----------------
Time in the file is a *virtual* clock, not wall-clock time: every probe presentation is one sample at
:data:`CLOCK_RATE_HZ` (10 Hz). Checkpoint ``k`` of ``T`` with ``S`` probe stimuli covers samples
``k*S ... (k+1)*S - 1``, i.e. the interval ``[k*S/10, (k+1)*S/10)`` seconds, and presentation ``(k, s)``
starts at ``(k*S + s)/10`` seconds. ``session_start_time`` is the fixed date :data:`SESSION_START_TIME`
(2020-01-01 UTC), so identical inputs give identical files.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np
import pynwb
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject
from pynwb.image import ImageSeries

from virtual_lab.types import GroundTruth

logger = logging.getLogger(__name__)

__all__ = [
    "CLOCK_RATE_HZ",
    "GROUND_TRUTH_SESSION_ID",
    "IN_SILICO_EXPERIMENTER",
    "LEGACY_NETWORK_MODULE",
    "NETWORK_MODULE",
    "SESSION_START_TIME",
    "SYNTHETIC_CONSTRUCT_SPECIES",
    "attribution_fields",
    "inspect_sessions",
    "is_complete_session",
    "layer_column_name",
    "read_neo",
    "read_session",
    "read_session_metadata",
    "read_session_attribution",
    "describe_session_file",
    "sanitize_id",
    "session_path",
    "validate_session",
    "write_session",
]

#: Rate of the virtual clock: one probe presentation per sample.
CLOCK_RATE_HZ = 10.0
#: Fixed, timezone-aware start of every ground-truth session (the network's initialization).
SESSION_START_TIME = datetime(2020, 1, 1, tzinfo=timezone.utc)
#: NCBI Taxonomy term for "synthetic construct" (taxid 32630), as the IRI form DANDI and nwbinspector accept.
SYNTHETIC_CONSTRUCT_SPECIES = "http://purl.obolibrary.org/obo/NCBITaxon_32630"
#: Session id of a ground-truth session when none is given (rig recordings use other session ids).
GROUND_TRUTH_SESSION_ID = "groundtruth"

#: Experimenter written when none is given. No person performed the run: the software did, in silico. In the
#: DANDI "Last, First" form nwbinspector checks, so give real names (``experimenter=``, ``[storage]``) to credit people.
IN_SILICO_EXPERIMENTER = "virtual_lab, in silico"
#: Processing module holding the network state (layers, units, weights, activity change, run spec).
NETWORK_MODULE = "misc"
#: Its name in sessions written before the rename (still read).
LEGACY_NETWORK_MODULE = "network"

_REFERENCE = "doi:10.48550/arXiv.2010.11765"
_UNIT = "dimensionless"
#: What neo 0.14.6 logs for every "dimensionless" series (it strips the trailing "s"); the unit it returns is right.
_NEO_DIMENSIONLESS_MESSAGE = "Can't handle unit 'dimensionles'. Returning dimensionless"
_ACTIVATIONS_PREFIX = "activations_"
_DTYPES = ("str", "int", "float", "bool")


# ----------------------------------------------------------------------------------------------- naming


def sanitize_id(text: str) -> str:
    """Map any text to a DANDI-safe id: ASCII letters, digits and ``-`` only.

    Every run of other characters (``/``, ``_``, ``.``, spaces, non-ASCII, ...) becomes one ``-``; leading
    and trailing ``-`` are dropped. The mapping is idempotent; distinct texts can map to the same id
    (``"a_b"`` and ``"a.b"`` both give ``"a-b"``).

    Parameters
    ----------
    text : str
        Any label, e.g. a run id.

    Returns
    -------
    str
        The safe id.

    Raises
    ------
    ValueError
        If nothing safe is left (empty text, or only separators).

    Examples
    --------
    >>> sanitize_id("run_01/sgdm lr.0.1")
    'run-01-sgdm-lr-0-1'
    """
    if not isinstance(text, str):
        raise TypeError(f"The 'text' parameter of sanitize_id must be a str. Got {type(text).__name__} instead.")
    safe = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    if not safe:
        raise ValueError(f"Cannot make a DANDI id from {text!r}: it has no ASCII letters or digits.")
    return safe


def session_path(root: str | os.PathLike, subject_id: str, session_id: str) -> Path:
    """DANDI-style path of a session file: ``root/sub-<subject>/sub-<subject>_ses-<session>.nwb``.

    Parameters
    ----------
    root : str or path-like
        Folder holding all sessions (a dandiset-like tree).
    subject_id : str
        Subject (network) id; passed through :func:`sanitize_id`.
    session_id : str
        Session id; passed through :func:`sanitize_id`.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> session_path("recordings", "mock0sgdm", "groundtruth").as_posix()
    'recordings/sub-mock0sgdm/sub-mock0sgdm_ses-groundtruth.nwb'
    """
    subject = sanitize_id(subject_id)
    session = sanitize_id(session_id)
    return Path(root) / f"sub-{subject}" / f"sub-{subject}_ses-{session}.nwb"


def layer_column_name(layer: str) -> str:
    """Name used for a layer inside the file (series name suffix and table column name).

    Characters other than ASCII letters, digits, ``_`` and ``-`` become ``_`` (``"layer1.0.conv1"`` ->
    ``"layer1_0_conv1"``); the true layer name is kept in ``processing/misc/layers``.

    Parameters
    ----------
    layer : str

    Returns
    -------
    str
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", layer)
    if not name:
        raise ValueError("Layer names must not be empty.")
    return name


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


# ----------------------------------------------------------------------------------------------- metadata


def _encode_value(key: str, value: Any) -> tuple[str, str]:
    """(text, dtype) of one metadata value; the text parses back exactly."""
    if isinstance(value, (bool, np.bool_)):
        return ("True" if value else "False"), "bool"
    if isinstance(value, numbers.Integral):
        return str(int(value)), "int"
    if isinstance(value, numbers.Real):
        return repr(float(value)), "float"
    if isinstance(value, str):
        return value, "str"
    raise TypeError(f"metadata[{key!r}] must be a str, int, float or bool. Got {type(value).__name__} instead.")


def _decode_value(text: str, dtype: str) -> Any:
    if dtype == "bool":
        if text not in ("True", "False"):
            raise ValueError(f"Bad bool value {text!r} in the training table.")
        return text == "True"
    if dtype == "int":
        return int(text)
    if dtype == "float":
        return float(text)
    if dtype == "str":
        return text
    raise ValueError(f"Unknown dtype {dtype!r} in the training table; expected one of {_DTYPES}.")


def _as_str_list(data: Any) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in data[:]]


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
    from virtual_lab import __version__

    meta = gt.metadata
    n_t, n_s = gt.n_checkpoints, gt.n_stimuli
    architecture = str(meta.get("architecture", "unknown"))
    rule = str(meta.get("rule", "unknown"))
    task = str(meta.get("task", "unknown"))
    clock = (f"Virtual clock: one probe presentation per sample at {CLOCK_RATE_HZ:g} Hz; checkpoint k covers "
             f"samples k*{n_s} to (k+1)*{n_s}-1, i.e. [k*{n_s / CLOCK_RATE_HZ:g}, (k+1)*{n_s / CLOCK_RATE_HZ:g}) s.")
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

    # --- acquisition: activations, 2-D (T*S, U), one chunk per checkpoint
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

    # --- intervals: epochs (checkpoints) and trials (probe presentations)
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

    # --- stimulus template: the probe set as one ImageSeries
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

    # --- processing/misc: the network state
    network = nwbfile.create_processing_module(
        name=NETWORK_MODULE,
        description="In silico network state: layers, units, weights, activity change, run spec.")
    network.add(DynamicTable(
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
    ))
    unit_layer, unit_depth, unit_index = [], [], []
    for layer, depth in zip(gt.layer_names, gt.depth_positions):
        n_units = gt.activations[layer].shape[2]
        unit_layer += [layer] * n_units
        unit_depth += [depth] * n_units
        unit_index.append(np.arange(n_units, dtype=np.int64))
    network.add(DynamicTable(
        name="units",
        description="In silico units (not spike-sorted): one row per recorded unit, layers in forward order.",
        columns=[
            VectorData(name="layer", description="Layer of the unit.", data=unit_layer),
            VectorData(name="depth_position", description="Depth position of the unit's layer.", data=unit_depth),
            VectorData(name="unit_index", description="Column of the unit in activations_<layer>.",
                       data=np.concatenate(unit_index)),
        ],
        id=list(range(len(unit_layer))),
    ))
    network.add(_per_checkpoint_table(
        "weights", "Forward weight matrix (out, in) of every layer, no bias, at every checkpoint.",
        gt, gt.weights, "Forward weights", weights_dtype))
    network.add(_per_checkpoint_table(
        "activity_change",
        "Layer-wise activity change per probe stimulus, g_b = (1/n_out) sum_j sum_i dy_bj/dx_bi, per checkpoint.",
        gt, gt.activity_change, "Activity change"))
    keys, values, dtypes = [], [], []
    for key, value in gt.metadata.items():
        text, dtype = _encode_value(str(key), value)
        keys.append(str(key))
        values.append(text)
        dtypes.append(dtype)
    network.add(DynamicTable(
        name="training",
        description="Resolved run spec (rule, hyperparameters, seeds, architecture, task, versions) as key/value.",
        columns=[
            VectorData(name="key", description="Metadata key.", data=keys),
            VectorData(name="value", description="Value as text (floats as repr, so they parse back exactly).",
                       data=values),
            VectorData(name="dtype", description="Python type of the value: str, int, float or bool.", data=dtypes),
        ],
        id=list(range(len(keys))),
    ))

    # --- processing/behavior
    if gt.metadata.get("paradigm") == "contrastive":
        loss_text = ("Contrastive (NT-Xent) loss on a fixed set of augmented view pairs of training images, "
                     "the same for every network of the task.")
        accuracy_text = ("Nearest-class-centroid (cosine) accuracy of the representation layer on the held-out "
                         "probe set (fraction); centroids from the unaugmented training set.")
    else:
        loss_text = "Task loss (cross-entropy) on the training set."
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
    return nwbfile


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


# ----------------------------------------------------------------------------------------------- read


def _network_module(nwbfile: NWBFile) -> Any:
    """The network-state module of a session: ``processing/misc``, or ``processing/network`` in older files."""
    for name in (NETWORK_MODULE, LEGACY_NETWORK_MODULE):
        module = nwbfile.processing.get(name)
        if module is not None and "training" in module.data_interfaces:
            return module
    raise KeyError(f"no processing/{NETWORK_MODULE} (or processing/{LEGACY_NETWORK_MODULE}) module with a "
                   f"training table")


def _layer_table(network: Any) -> tuple[list[str], list[str], list[str], list[int]]:
    layers = network["layers"]
    names = _as_str_list(layers["layer"].data)
    columns = _as_str_list(layers["column_name"].data)
    depths = _as_str_list(layers["depth_position"].data)
    n_units = [int(x) for x in np.asarray(layers["n_units"].data[:])]
    return names, columns, depths, n_units


def read_session(path: str | os.PathLike, *, engine: str = "pynwb") -> GroundTruth:
    """Read a ground-truth session written by :func:`write_session`.

    Everything is read into memory and the file is closed: the result holds numpy arrays only.

    Parameters
    ----------
    path : str or path-like
    engine : {"pynwb", "h5py"}, default="pynwb"
        ``"h5py"`` reads the documented layout directly, without pynwb's object mapping: the same
        result, about 100x faster for small sessions (for scanning and decoding large sweeps).

    Returns
    -------
    GroundTruth
        ``activations[layer]`` has shape (T, S, U_layer), ``weights[layer]`` (T, out, in),
        ``activity_change[layer]`` (T, S); metadata values keep their types (str, int, float, bool).
    """
    path = Path(path)
    if engine == "h5py":
        return _read_session_h5py(path)
    if engine != "pynwb":
        raise ValueError(f"The 'engine' parameter of read_session must be 'pynwb' or 'h5py'. Got {engine!r} instead.")
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        network = _network_module(nwbfile)
        names, columns, depths, _ = _layer_table(network)
        epochs = nwbfile.epochs
        steps = np.asarray(epochs["training_step"].data[:], dtype=np.int64)
        n_t = len(steps)
        trials = nwbfile.trials
        labels_all = np.asarray(trials["label"].data[:], dtype=np.int64)
        if n_t == 0 or len(labels_all) % n_t:
            raise ValueError(f"{path}: {len(labels_all)} trials do not split into {n_t} checkpoints.")
        n_s = len(labels_all) // n_t
        labels = labels_all[:n_s].copy()

        activations, weights, change = {}, {}, {}
        weight_table = network["weights"]
        change_table = network["activity_change"]
        for layer, column in zip(names, columns):
            block = np.asarray(nwbfile.acquisition[_ACTIVATIONS_PREFIX + column].data[()], dtype=np.float32)
            activations[layer] = block.reshape(n_t, n_s, block.shape[1])
            weights[layer] = np.asarray(weight_table[column].data[()], dtype=np.float32)
            change[layer] = np.asarray(change_table[column].data[()], dtype=np.float32)

        probe = nwbfile.stimulus_template["probe_stimuli"]
        stimuli = np.asarray(probe.data[()], dtype=np.float32)
        dimension = None if probe.dimension is None else [int(x) for x in np.asarray(probe.dimension[:])]
        if dimension is not None and len(dimension) == 1:
            stimuli = stimuli.reshape(stimuli.shape[0], dimension[0])

        performance = nwbfile.processing["behavior"]["performance"]
        train_loss = np.asarray(performance["train_loss"].data[:], dtype=np.float32)
        test_accuracy = np.asarray(performance["test_accuracy"].data[:], dtype=np.float32)

        training = network["training"]
        metadata = {
            key: _decode_value(value, dtype)
            for key, value, dtype in zip(_as_str_list(training["key"].data), _as_str_list(training["value"].data),
                                         _as_str_list(training["dtype"].data))
        }
    logger.debug("read session %s", path)
    return GroundTruth(
        layer_names=tuple(names),
        depth_positions=tuple(depths),
        checkpoint_steps=steps,
        activations=activations,
        weights=weights,
        activity_change=change,
        train_loss=train_loss,
        test_accuracy=test_accuracy,
        probe_stimuli=stimuli,
        probe_labels=labels,
        metadata=metadata,
    )


def is_complete_session(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete ground-truth session with the expected layout.

    Checks that the file opens as NWB and that every container of the layout is present with consistent
    shapes (no array data is read). Never raises: a missing, empty, truncated, random or foreign file
    gives ``False``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
    """
    path = Path(path)
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        with NWBHDF5IO(str(path), mode="r") as io:
            nwbfile = io.read()
            network = _network_module(nwbfile)
            names, columns, _, n_units = _layer_table(network)
            n_t = len(nwbfile.epochs)
            n_s = nwbfile.stimulus_template["probe_stimuli"].data.shape[0]
            if not names or n_t < 1 or len(nwbfile.trials) != n_t * n_s:
                return False
            for column, units in zip(columns, n_units):
                if nwbfile.acquisition[_ACTIVATIONS_PREFIX + column].data.shape != (n_t * n_s, units):
                    return False
                if network["weights"][column].data.shape[0] != n_t:
                    return False
                if network["activity_change"][column].data.shape != (n_t, n_s):
                    return False
            if len(network["units"]) != sum(n_units) or len(network["training"]) < 1:
                return False
            return len(nwbfile.processing["behavior"]["performance"]) == n_t
    except Exception as error:  # noqa: BLE001 - any failure means "not a complete session"
        logger.debug("%s is not a complete session: %r", path, error)
        return False


# ----------------------------------------------------------------------------------------------- fast h5py access
# The layout above read with h5py alone: sweeps scan thousands of files, and pynwb's object mapping costs
# ~0.2-0.5 s per file where h5py needs a few ms.

def _h5_network(f: h5py.File) -> str:
    """HDF5 path of the network-state module: ``processing/misc``, or ``processing/network`` in older files.

    The first of the two that holds a training table; ``processing/misc`` when neither does (lookups then
    fail with a ``KeyError`` naming the current layout).
    """
    for name in (NETWORK_MODULE, LEGACY_NETWORK_MODULE):
        if f"processing/{name}/training" in f:
            return f"processing/{name}"
    return f"processing/{NETWORK_MODULE}"


def _h5_layers(f: h5py.File) -> tuple[list[str], list[str], list[str], list[int]]:
    layers = f[f"{_h5_network(f)}/layers"]
    return (_as_str_list(layers["layer"]), _as_str_list(layers["column_name"]),
            _as_str_list(layers["depth_position"]), [int(x) for x in layers["n_units"][:]])


def _h5_metadata(f: h5py.File) -> dict[str, Any]:
    training = f[f"{_h5_network(f)}/training"]
    return {key: _decode_value(value, dtype)
            for key, value, dtype in zip(_as_str_list(training["key"]), _as_str_list(training["value"]),
                                         _as_str_list(training["dtype"]))}


def _read_session_h5py(path: Path) -> GroundTruth:
    with h5py.File(path, "r") as f:
        names, columns, depths, _ = _h5_layers(f)
        steps = np.asarray(f["intervals/epochs/training_step"][:], dtype=np.int64)
        labels_all = np.asarray(f["intervals/trials/label"][:], dtype=np.int64)
        n_t = len(steps)
        if n_t == 0 or len(labels_all) % n_t:
            raise ValueError(f"{path}: {len(labels_all)} trials do not split into {n_t} checkpoints.")
        n_s = len(labels_all) // n_t
        network = _h5_network(f)
        activations, weights, change = {}, {}, {}
        for layer, column in zip(names, columns):
            block = np.asarray(f[f"acquisition/{_ACTIVATIONS_PREFIX}{column}/data"][()], dtype=np.float32)
            activations[layer] = block.reshape(n_t, n_s, block.shape[1])
            weights[layer] = np.asarray(f[f"{network}/weights/{column}"][()], dtype=np.float32)
            change[layer] = np.asarray(f[f"{network}/activity_change/{column}"][()], dtype=np.float32)
        probe = f["stimulus/templates/probe_stimuli"]
        stimuli = np.asarray(probe["data"][()], dtype=np.float32)
        dimension = probe["dimension"][:] if "dimension" in probe else None
        if dimension is not None and len(dimension) == 1:
            stimuli = stimuli.reshape(stimuli.shape[0], int(dimension[0]))
        performance = f["processing/behavior/performance"]
        return GroundTruth(
            layer_names=tuple(names),
            depth_positions=tuple(depths),
            checkpoint_steps=steps,
            activations=activations,
            weights=weights,
            activity_change=change,
            train_loss=np.asarray(performance["train_loss"][:], dtype=np.float32),
            test_accuracy=np.asarray(performance["test_accuracy"][:], dtype=np.float32),
            probe_stimuli=stimuli,
            probe_labels=labels_all[:n_s].copy(),
            metadata=_h5_metadata(f),
        )


def read_session_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resolved run metadata stored in a session (``processing/misc/training``), via h5py only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        Keys and typed values as written (``run_id``, ``rule``, hyperparameters, seeds, ...).

    Raises
    ------
    OSError
        The file cannot be opened as HDF5 (missing, truncated, not HDF5).
    KeyError
        The file has no virtual_lab training table.
    """
    with h5py.File(Path(path), "r") as f:
        return _h5_metadata(f)


def read_session_attribution(path: str | os.PathLike) -> dict[str, Any]:
    """Who ran an NWB file and where (``general/experimenter``, ``institution``, ``lab``), via h5py only.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        ``experimenter`` (tuple of str, empty when none is stored), ``institution`` and ``lab`` (str, empty
        when not stored): the keyword arguments of :func:`write_session` and
        :func:`~virtual_lab.rig.export.export_recording` that write the same attribution again.

    Raises
    ------
    OSError
        The file cannot be opened as HDF5.
    """
    def text(value: Any) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    with h5py.File(Path(path), "r") as f:
        general = f.get("general")
        out: dict[str, Any] = {"experimenter": (), "institution": "", "lab": ""}
        if general is None:
            return out
        if "experimenter" in general:
            stored = general["experimenter"][()]
            out["experimenter"] = tuple(text(x) for x in np.atleast_1d(stored))
        for key in ("institution", "lab"):
            if key in general:
                out[key] = text(general[key][()])
        return out


#: Kinds of file :func:`describe_session_file` tells apart.
SESSION_FILE_KINDS = ("complete", "missing", "not_hdf5", "corrupted", "foreign", "incomplete")


def describe_session_file(path: str | os.PathLike) -> tuple[str, str, dict[str, Any]]:
    """Classify a file that should hold a ground-truth session, without ever raising.

    Checks, with h5py only (a few ms per file), that the file is HDF5, NWB, holds the virtual_lab layout
    and that every container has consistent shapes; truncation is caught by HDF5 when opening.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    kind : str
        One of :data:`SESSION_FILE_KINDS`: ``"complete"``; ``"missing"`` (no file); ``"not_hdf5"`` (e.g. a
        random file named ``.nwb``); ``"corrupted"`` (HDF5 that cannot be read, e.g. truncated);
        ``"foreign"`` (readable HDF5 or NWB that is not a virtual_lab session, e.g. from another tool);
        ``"incomplete"`` (a virtual_lab session with missing or inconsistent parts).
    reason : str
        One line for people; empty when complete.
    metadata : dict
        The run metadata when the kind is ``"complete"``, else empty.
    """
    path = Path(path)
    try:
        if not path.is_file():
            return "missing", "no such file", {}
        size = path.stat().st_size
        if size == 0:
            return "not_hdf5", "empty file (0 bytes)", {}
        if not h5py.is_hdf5(path):
            return "not_hdf5", f"not an HDF5/NWB file ({size} bytes, no HDF5 signature)", {}
    except OSError as error:
        return "corrupted", f"cannot be read: {error}", {}
    try:
        f = h5py.File(path, "r")
    except Exception as error:  # noqa: BLE001 - h5py raises OSError and others for damaged files
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        kind = "truncated" if "truncated" in text else "damaged"
        return "corrupted", f"{kind} HDF5 file ({size} bytes): {text}", {}
    try:
        with f:
            if "nwb_version" not in f.attrs:
                return "foreign", "HDF5 file that is not NWB (no nwb_version attribute)", {}
            network = _h5_network(f)
            if f"{network}/training" not in f or f"{network}/layers" not in f:
                identifier = f["identifier"][()] if "identifier" in f else b"?"
                identifier = identifier.decode("utf-8", "replace") if isinstance(identifier, bytes) else identifier
                return ("foreign", f"NWB file that is not a virtual_lab ground-truth session "
                        f"(identifier {identifier!r}, no {network}/training)", {})
            names, columns, _, n_units = _h5_layers(f)
            n_t = len(f["intervals/epochs/id"])
            n_s = f["stimulus/templates/probe_stimuli/data"].shape[0]
            problems = []
            if not names or n_t < 1:
                problems.append("no layers or no checkpoints")
            if len(f["intervals/trials/id"]) != n_t * n_s:
                problems.append("trials do not cover every checkpoint x stimulus")
            for column, units in zip(columns, n_units):
                if f[f"acquisition/{_ACTIVATIONS_PREFIX}{column}/data"].shape != (n_t * n_s, units):
                    problems.append(f"activations of {column} have the wrong shape")
                if f[f"{network}/weights/{column}"].shape[0] != n_t:
                    problems.append(f"weights of {column} have the wrong number of checkpoints")
                if f[f"{network}/activity_change/{column}"].shape != (n_t, n_s):
                    problems.append(f"activity change of {column} has the wrong shape")
            if len(f[f"{network}/units/id"]) != sum(n_units):
                problems.append("units table does not match the layers")
            if len(f["processing/behavior/performance/id"]) != n_t:
                problems.append("performance table does not match the checkpoints")
            metadata = _h5_metadata(f)
            if not metadata.get("run_id"):
                problems.append("no run_id in the training table")
            if problems:
                return "incomplete", "virtual_lab session with " + "; ".join(problems), {}
            return "complete", "", metadata
    except KeyError as error:
        return "incomplete", f"virtual_lab session missing {error}", {}
    except Exception as error:  # noqa: BLE001 - damaged data inside a file that opened
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return "corrupted", f"damaged HDF5 content: {text}", {}


# ----------------------------------------------------------------------------------------------- checks


def _session_files(paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths_or_folder, (str, os.PathLike)):
        root = Path(paths_or_folder)
        if root.is_dir():
            # temporary files of writes in progress (".<name>.tmp") are hidden and skipped
            return sorted(p for p in root.rglob("*.nwb") if not p.name.startswith("."))
        return [root]
    return [Path(p) for p in paths_or_folder]


def inspect_sessions(
    paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    config: str | Mapping[str, Any] | None = None,
) -> list:
    """Run ``nwbinspector`` (best practices + pynwb validation) on session files.

    Parameters
    ----------
    paths_or_folder : path-like or iterable of path-like
        One file, several files, or a folder searched recursively for ``*.nwb`` (hidden temporary files
        are skipped).
    config : str or dict, optional
        An nwbinspector config: a keyword such as ``"dandi"``, a path to a config file, or a loaded dict.
        ``None`` uses the default importances.

    Returns
    -------
    list of nwbinspector.InspectorMessage
        Every message, all importance levels (``message.importance.name`` is ``"CRITICAL"``,
        ``"BEST_PRACTICE_VIOLATION"``, ...); a file that cannot be read gives an ``ERROR`` message.
    """
    import nwbinspector

    if isinstance(config, (str, os.PathLike)):
        config = nwbinspector.load_config(filepath_or_keyword=config)
    messages = []
    for path in _session_files(paths_or_folder):
        messages.extend(m for m in nwbinspector.inspect_nwbfile(nwbfile_path=path, config=config) if m is not None)
    return messages


def validate_session(path: str | os.PathLike) -> list:
    """Validate a session file against the NWB schema cached in it (``pynwb.validate``).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    list
        Validation errors; empty when the file is valid.
    """
    result = pynwb.validate(path=str(path))
    if isinstance(result, tuple):  # pynwb < 3 returned (errors, status)
        result = result[0]
    return list(result)


def read_neo(path: str | os.PathLike):
    """Read a session through ``neo.io.NWBIO`` and return its first block.

    Activations appear as ``AnalogSignal`` (10 Hz virtual clock, dimensionless) and the checkpoints as
    one ``Epoch``; tables in ``processing`` and ``intervals/trials`` are not read by neo.

    neo 0.14.6 logs "Can't handle unit 'dimensionles'. Returning dimensionless" for every dimensionless
    series (it strips the final "s" of unit names) although the unit it returns is right; this function
    drops exactly that message while it reads. Every other neo message passes through.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    neo.Block
        Fully loaded (not lazy); the NWB file is closed before returning.
    """
    from neo.io import NWBIO

    def not_the_dimensionless_false_alarm(record: logging.LogRecord) -> bool:
        return record.getMessage() != _NEO_DIMENSIONLESS_MESSAGE

    neo_logger = logging.getLogger("Neo")
    neo_logger.addFilter(not_the_dimensionless_false_alarm)
    try:
        reader = NWBIO(str(path), "r")
        try:
            return reader.read()[0]
        finally:
            reader.close()
    finally:
        neo_logger.removeFilter(not_the_dimensionless_false_alarm)


def partition_session_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split candidate files into complete ground-truth sessions and the rest, with a reason for each.

    Used by every command that reads a recordings folder, so that a truncated HDF5 file, an NWB file from
    another tool or a random file named ``.nwb`` is reported and skipped instead of crashing the command.

    Returns
    -------
    complete : list of Path
    skipped : list of (Path, str)
        Each skipped file with its kind and one-line reason.
    """
    complete, skipped = [], []
    for path in map(Path, paths):
        kind, reason, _ = describe_session_file(path)
        if kind == "complete":
            complete.append(path)
        else:
            skipped.append((path, f"{kind}: {reason}"))
            logger.warning("skipping %s (%s: %s)", path, kind, reason)
    return complete, skipped
