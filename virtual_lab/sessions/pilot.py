"""Read pilot recordings written by other tools (two-photon imaging or spike-sorted units) from NWB.

:func:`read_pilot` reads the standard NWB types a pilot recording of another lab holds, whatever tool wrote
it, and nothing of the virtual_lab layout:

* **ophys**: every ``RoiResponseSeries`` of a ``DfOverF`` container (or, when a file has none, of a
  ``Fluorescence`` container) in any processing module (``processing/ophys`` by convention), with its frame
  times (``rate`` and ``starting_time``, or ``timestamps``), the ``PlaneSegmentation`` its ROIs come from and
  that plane's ``ImagingPlane`` (imaging rate, indicator);
* **ecephys**: the ``units`` table (``spike_times``, ``obs_intervals`` and an ``snr`` column when present)
  and the size of the ``electrodes`` table;
* **trials / stimulus presentations**: ``intervals/trials``, every ``intervals/*_presentations`` table (the
  Allen Brain Observatory convention) and every ``IndexSeries`` under ``stimulus/presentation``, each with
  the column that names the stimulus of a row (:data:`STIMULUS_COLUMNS`, first match) when there is one.

A file it cannot use -- not HDF5, not NWB, an NWB schema newer than the installed pynwb reads, a file pynwb
fails on, or one with neither ophys nor ecephys data -- raises :class:`UnusablePilot`, whose message is one
line naming the file and the reason. :func:`read_pilots` reads many and collects those lines.

Arrays are read eagerly (one float32 array per series: a one-hour, 30 Hz, 500-ROI plane is ~200 MB).
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

__all__ = ["PILOT_MODALITIES", "STIMULUS_COLUMNS", "PilotSession", "RoiSeries", "TrialTable", "UnitTable",
           "UnusablePilot", "read_pilot", "read_pilots"]

#: Modalities a pilot recording can hold.
PILOT_MODALITIES = ("ophys", "ecephys")
#: Columns of a trials / presentations table that name the stimulus of a row, in the order they are looked for.
STIMULUS_COLUMNS = ("stimulus", "stimulus_index", "stimulus_id", "stim_id", "stimulus_name", "image_index",
                    "image_name", "image_id", "frame", "condition", "orientation")


class UnusablePilot(ValueError):
    """A pilot file that cannot be used: ``str(err)`` is one line, ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class RoiSeries:
    """One ``RoiResponseSeries``: ROI traces and their frame times.

    Attributes
    ----------
    path : str
        HDF5 path of the series, e.g. ``processing/ophys/DfOverF/RoiResponseSeries``.
    container : str
        ``"DfOverF"`` or ``"Fluorescence"``.
    data : ndarray of float32, shape (n_frames, n_rois)
        The values in the series' unit (``conversion`` and ``offset`` applied).
    times_s : ndarray of float64, shape (n_frames,)
        Frame times (s, session clock).
    rate_hz : float
        Frames per second: the series' ``rate``, or 1 / median interval of its ``timestamps``.
    rate_source : str
        ``"rate"`` or ``"timestamps"``.
    roi_ids : ndarray, shape (n_rois,)
        Identity of each ROI: the segmentation's ``id`` (or the ``id_column`` asked for).
    segmentation : str
        Name of the ``PlaneSegmentation`` the ROIs belong to.
    imaging_rate_hz : float or None
        ``imaging_rate`` of the segmentation's ``ImagingPlane``.
    indicator : str
        ``indicator`` of that plane ("" when not written).
    unit : str
        The series' ``unit`` (e.g. ``"%"`` for dF/F in percent).
    """

    path: str
    container: str
    data: np.ndarray
    times_s: np.ndarray
    rate_hz: float
    rate_source: str
    roi_ids: np.ndarray
    segmentation: str
    imaging_rate_hz: float | None
    indicator: str
    unit: str

    @property
    def n_rois(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class UnitTable:
    """The ``units`` table of a file.

    Attributes
    ----------
    spike_times : tuple of ndarray of float64
        Spike times (s) of each unit.
    unit_ids : ndarray, shape (n_units,)
        Identity of each unit: the table's ``id`` (or the ``id_column`` asked for).
    observed_s : ndarray of float64, shape (n_units,)
        Time each unit was observed (s): the total length of its ``obs_intervals`` when the table has them,
        else the span from the file's first to its last spike (every unit alike).
    observed_source : str
        ``"units/obs_intervals"`` or ``"span of all spike times"``.
    intervals : tuple of ndarray, or None
        Each unit's ``obs_intervals`` (shape (k, 2), s) when present.
    snr : ndarray of float64 or None
        The table's ``snr`` column when present.
    n_electrodes : int
        Rows of the file's ``electrodes`` table (0 when absent).
    """

    spike_times: tuple[np.ndarray, ...]
    unit_ids: np.ndarray
    observed_s: np.ndarray
    observed_source: str
    intervals: tuple[np.ndarray, ...] | None
    snr: np.ndarray | None
    n_electrodes: int

    @property
    def n_units(self) -> int:
        return len(self.spike_times)


@dataclass(frozen=True)
class TrialTable:
    """Trials or stimulus presentations: one row per presentation.

    Attributes
    ----------
    path : str
        Where they came from, e.g. ``intervals/trials`` or ``stimulus/presentation/images``.
    start_s, stop_s : ndarray of float64, shape (n_trials,)
    stimulus : ndarray or None, shape (n_trials,)
        The stimulus of each row (the values of :attr:`stimulus_column`), None when no column names it.
    stimulus_column : str
        The column (or ``"data"`` of an ``IndexSeries``); "" when none.
    """

    path: str
    start_s: np.ndarray
    stop_s: np.ndarray
    stimulus: np.ndarray | None
    stimulus_column: str

    @property
    def n_trials(self) -> int:
        return len(self.start_s)


@dataclass(frozen=True)
class PilotSession:
    """What one pilot NWB file holds that a rig can be calibrated from.

    Attributes
    ----------
    path : str
        The file (absolute).
    identifier, session_id, subject_id : str
        NWB ``identifier``, ``session_id`` and ``subject.subject_id`` ("" when not written).
    session_start_time : datetime.datetime
        Timezone-aware (a file's naive time is taken as UTC).
    nwb_version : str
    roi_series : tuple of RoiSeries
    units : UnitTable or None
    trials : tuple of TrialTable
    """

    path: str
    identifier: str
    session_id: str
    subject_id: str
    session_start_time: _dt.datetime
    nwb_version: str
    roi_series: tuple[RoiSeries, ...]
    units: UnitTable | None
    trials: tuple[TrialTable, ...]

    @property
    def modalities(self) -> tuple[str, ...]:
        """``"ophys"`` and/or ``"ecephys"``, those the file holds data of."""
        return tuple(m for m, present in (("ophys", bool(self.roi_series)),
                                           ("ecephys", self.units is not None and self.units.n_units > 0))
                     if present)


def _supported_version() -> tuple[str, tuple[int, ...]]:
    import pynwb

    text = str(pynwb.get_type_map().namespace_catalog.get_namespace(pynwb.CORE_NAMESPACE)["version"])
    return text, _numeric(text)


def _numeric(version: Any) -> tuple[int, ...]:
    parts = []
    for part in (version if isinstance(version, tuple) else str(version).replace("-", ".").split(".")):
        if isinstance(part, (int, np.integer)) or (isinstance(part, str) and part.isdigit()):
            parts.append(int(part))
        else:
            break
    return tuple(parts)


def _check_file(path: Path) -> str:
    """The file's NWB version, or :class:`UnusablePilot` (h5py only: missing, not HDF5, not NWB, too new)."""
    import pynwb

    if not path.is_file():
        raise UnusablePilot(path, "no such file")
    try:
        with h5py.File(path, "r") as f:
            text, parsed = pynwb.get_nwbfile_version(f)
    except OSError as err:
        raise UnusablePilot(path, f"unreadable: not an HDF5 file, or damaged ({str(err).splitlines()[0]})") from None
    if text is None:
        raise UnusablePilot(path, "not an NWB file (HDF5 without an nwb_version attribute)")
    supported, numbers = _supported_version()
    if _numeric(parsed)[:2] > numbers[:2]:
        raise UnusablePilot(path, f"written with NWB schema {text}, newer than the {supported} that the installed "
                                  f"pynwb reads; upgrade pynwb (pip install -U pynwb)")
    return str(text)


def _frame_times(series, n: int) -> tuple[np.ndarray, float, str]:
    if series.timestamps is not None:
        times = np.asarray(series.timestamps[:], dtype=np.float64)
        steps = np.diff(times)
        rate = 1.0 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else float("nan")
        return times, rate, "timestamps"
    rate = float(series.rate)
    start = float(series.starting_time or 0.0)
    return start + np.arange(n, dtype=np.float64) / rate, rate, "rate"


def _ids(table, id_column: str, rows: np.ndarray | None = None) -> np.ndarray:
    if id_column == "id":
        values = np.asarray(table.id[:])
    elif id_column in table.colnames:
        values = np.asarray(table[id_column][:])
    else:
        raise KeyError(f"{table.name} has no column {id_column!r} (columns: id, {', '.join(table.colnames)})")
    return values if rows is None else values[rows]


def _roi_series(nwbfile, id_column: str) -> tuple[RoiSeries, ...]:
    from pynwb.ophys import DfOverF, Fluorescence

    found: dict[str, list[RoiSeries]] = {"DfOverF": [], "Fluorescence": []}
    for module_name, module in nwbfile.processing.items():
        for container_name, container in module.data_interfaces.items():
            kind = "DfOverF" if isinstance(container, DfOverF) else (
                "Fluorescence" if isinstance(container, Fluorescence) else None)
            if kind is None:
                continue
            for name, series in container.roi_response_series.items():
                rows = np.asarray(series.rois.data[:], dtype=np.int64)
                data = np.asarray(series.data[:], dtype=np.float64)
                data = data.reshape(-1, 1) if data.ndim == 1 else data
                if data.shape[1] != len(rows) and data.shape[0] == len(rows):
                    data = data.T  # written (rois, frames) instead of NWB's (frames, rois)
                data = data * float(series.conversion) + float(getattr(series, "offset", 0.0) or 0.0)
                times, rate, source = _frame_times(series, data.shape[0])
                table = series.rois.table
                plane = getattr(table, "imaging_plane", None)
                found[kind].append(RoiSeries(
                    path=f"processing/{module_name}/{container_name}/{name}", container=kind,
                    data=data.astype(np.float32), times_s=times, rate_hz=rate, rate_source=source,
                    roi_ids=_ids(table, id_column, rows), segmentation=str(table.name),
                    imaging_rate_hz=None if plane is None or plane.imaging_rate is None else float(plane.imaging_rate),
                    indicator="" if plane is None else str(plane.indicator or ""), unit=str(series.unit or "")))
    return tuple(found["DfOverF"] or found["Fluorescence"])


def _unit_table(nwbfile, id_column: str) -> UnitTable | None:
    units = nwbfile.units
    if units is None or len(units) == 0 or "spike_times" not in units.colnames:
        return None
    bounds = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    flat = np.asarray(units.spike_times.data[:], dtype=np.float64)
    spikes = tuple(np.sort(part) for part in np.split(flat, bounds[:-1]))
    intervals = None
    if "obs_intervals" in units.colnames:
        intervals = tuple(np.asarray(units["obs_intervals"][i], dtype=np.float64).reshape(-1, 2)
                          for i in range(len(units)))
        observed = np.array([float(np.sum(iv[:, 1] - iv[:, 0])) for iv in intervals])
        source = "units/obs_intervals"
    else:
        spiking = [s for s in spikes if len(s)]
        span = (max(s[-1] for s in spiking) - min(s[0] for s in spiking)) if spiking else 0.0
        observed, source = np.full(len(spikes), float(span)), "span of all spike times"
    snr = np.asarray(units["snr"][:], dtype=np.float64) if "snr" in units.colnames else None
    electrodes = nwbfile.electrodes
    return UnitTable(spike_times=spikes, unit_ids=_ids(units, id_column), observed_s=observed,
                     observed_source=source, intervals=intervals, snr=snr,
                     n_electrodes=0 if electrodes is None else len(electrodes))


def _stimulus_column(table) -> tuple[np.ndarray | None, str]:
    for column in STIMULUS_COLUMNS:
        if column in table.colnames:
            values = np.asarray(table[column][:])
            if values.ndim == 1:
                return values, column
    return None, ""


def _trial_tables(nwbfile) -> tuple[TrialTable, ...]:
    from pynwb.image import IndexSeries

    tables = []
    for name, table in (nwbfile.intervals or {}).items():
        if name != "trials" and not name.endswith("presentations"):
            continue
        stimulus, column = _stimulus_column(table)
        tables.append(TrialTable(f"intervals/{name}", np.asarray(table["start_time"][:], dtype=np.float64),
                                 np.asarray(table["stop_time"][:], dtype=np.float64), stimulus, column))
    for name, series in nwbfile.stimulus.items():
        if not isinstance(series, IndexSeries):
            continue
        values = np.asarray(series.data[:]).reshape(-1)
        if series.timestamps is not None:
            start = np.asarray(series.timestamps[:], dtype=np.float64)
        else:
            start = float(series.starting_time or 0.0) + np.arange(len(values)) / float(series.rate)
        step = float(np.median(np.diff(start))) if len(start) > 1 else 0.0
        stop = np.append(start[1:], start[-1] + step) if len(start) else start
        tables.append(TrialTable(f"stimulus/presentation/{name}", start, stop, values, "data"))
    return tuple(tables)


def read_pilot(path: str | os.PathLike, *, id_column: str = "id") -> PilotSession:
    """Read what a rig can be calibrated from in one pilot NWB file written by any tool.

    Parameters
    ----------
    path : str or path-like
    id_column : str, default="id"
        Column of the ``PlaneSegmentation`` and ``units`` tables that identifies the same cell or unit
        across sessions (files); ``"id"`` is the tables' own ids.

    Returns
    -------
    PilotSession

    Raises
    ------
    UnusablePilot
        One line: no such file, not HDF5 or damaged, not NWB, a schema newer than pynwb reads, pynwb fails
        to read it, ``id_column`` missing, or neither ophys nor ecephys data in it.

    Examples
    --------
    >>> read_pilot("no-such-file.nwb")
    Traceback (most recent call last):
    ...
    virtual_lab.sessions.pilot.UnusablePilot: no-such-file.nwb: no such file
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    version = _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # foreign files warn about their cached namespaces, dtypes ...
            with NWBHDF5IO(str(path), "r") as io:
                nwbfile = io.read()
                roi_series = _roi_series(nwbfile, id_column)
                units = _unit_table(nwbfile, id_column)
                trials = _trial_tables(nwbfile)
                subject = nwbfile.subject
                start = nwbfile.session_start_time
                start = start if start.tzinfo is not None else start.replace(tzinfo=_dt.timezone.utc)
                session = PilotSession(
                    path=str(path.resolve()), identifier=str(nwbfile.identifier), session_id=str(nwbfile.session_id or ""),
                    subject_id="" if subject is None else str(subject.subject_id or ""),
                    session_start_time=start, nwb_version=version, roi_series=roi_series,
                    units=units, trials=trials)
    except KeyError as err:
        raise UnusablePilot(path, str(err.args[0]) if err.args else "missing key") from None
    except Exception as err:  # noqa: BLE001 -- foreign files fail inside pynwb/hdmf in many ways; one line each
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnusablePilot(path, f"pynwb cannot read it ({type(err).__name__}: {message})") from None
    if not session.modalities:
        raise UnusablePilot(path, "no ophys data (RoiResponseSeries in a DfOverF or Fluorescence container) and "
                                  "no ecephys data (a units table with spike times): nothing to calibrate from")
    return session


def read_pilots(paths: Iterable[str | os.PathLike], *, id_column: str = "id"
                ) -> tuple[list[PilotSession], list[UnusablePilot]]:
    """Read many pilot files: the usable sessions, and one :class:`UnusablePilot` per file that is not.

    Parameters
    ----------
    paths : iterable of path-like
    id_column : str, default="id"
        As in :func:`read_pilot`.

    Returns
    -------
    sessions : list of PilotSession
        In the order given.
    unusable : list of UnusablePilot
    """
    sessions, unusable = [], []
    for path in paths:
        try:
            sessions.append(read_pilot(path, id_column=id_column))
        except UnusablePilot as err:
            unusable.append(err)
    return sessions, unusable
