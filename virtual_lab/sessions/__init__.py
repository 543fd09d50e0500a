"""Ground-truth recording sessions as NWB files: write, read, find, check, inspect, and read through neo.

One training run is one *session*: one NWB file holding every unit of every recorded layer at every
checkpoint, the weights, the layer-wise activity change, the probe stimuli and the task performance.
Only core NWB types are used, so the file passes ``nwbinspector`` (default and ``dandi`` configs) and
``pynwb`` validation and reads in ``neo``.

Modules: :mod:`~virtual_lab.sessions.layout` (names, ids, paths, constants), :mod:`~virtual_lab.sessions.write`
(:func:`write_session`), :mod:`~virtual_lab.sessions.read` (:func:`read_session`, the one reader: eager by
default, partial when asked, h5py or pynwb engine), :mod:`~virtual_lab.sessions.discover`
(:func:`find_sessions`, the one search of session files, and :func:`describe_session_file`),
:mod:`~virtual_lab.sessions.checks` (nwbinspector, pynwb validation, neo). Everything public is imported
here: ``from virtual_lab.sessions import write_session, read_session, find_sessions``.

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

from virtual_lab.sessions.checks import check_session_data, inspect_sessions, read_neo, validate_session
from virtual_lab.sessions.discover import (SESSION_FILE_KINDS, TEMPORARY, SessionFiles, SkippedFile,
                                           describe_session_file, find_sessions, is_complete_session,
                                           partition_session_files, session_candidates)
from virtual_lab.sessions.layout import (CLOCK_RATE_HZ, GROUND_TRUTH_SESSION_ID, IN_SILICO_EXPERIMENTER,
                                         LEGACY_NETWORK_MODULE, NETWORK_MODULE, SESSION_START_TIME,
                                         SYNTHETIC_CONSTRUCT_SPECIES, layer_column_name, sanitize_id, session_path)
from virtual_lab.sessions.read import (ENGINES, SESSION_ARRAYS, SessionReadError, read_session,
                                       read_session_attribution, read_session_metadata)
from virtual_lab.sessions.write import attribution_fields, write_nwb_atomically, write_session

# A private helper another package imports from here (sweeps/storage: _fsync_dir); not part of the public API.
from virtual_lab.sessions.write import _fsync_dir  # noqa: E402,F401  isort: skip

__all__ = [
    "CLOCK_RATE_HZ",
    "ENGINES",
    "GROUND_TRUTH_SESSION_ID",
    "IN_SILICO_EXPERIMENTER",
    "LEGACY_NETWORK_MODULE",
    "NETWORK_MODULE",
    "SESSION_ARRAYS",
    "SESSION_FILE_KINDS",
    "SESSION_START_TIME",
    "SYNTHETIC_CONSTRUCT_SPECIES",
    "SessionFiles",
    "SessionReadError",
    "SkippedFile",
    "TEMPORARY",
    "attribution_fields",
    "check_session_data",
    "describe_session_file",
    "find_sessions",
    "inspect_sessions",
    "is_complete_session",
    "layer_column_name",
    "partition_session_files",
    "read_neo",
    "read_session",
    "read_session_attribution",
    "read_session_metadata",
    "sanitize_id",
    "session_candidates",
    "session_path",
    "validate_session",
    "write_nwb_atomically",
    "write_session",
]
