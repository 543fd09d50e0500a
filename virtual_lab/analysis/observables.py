"""The paper's observables and the feature table a decoder learns from (numpy only).

An *observable* is a statistic of one measured quantity of one layer at one checkpoint (Nayebi et al.
2020, Sec. 3 and their ``tensorflow/Metrics/functions.py``):

- **measure**: ``weight`` (the forward kernel, no bias, over all observed synapses), ``act`` (the layer's
  output, one vector of units per probe stimulus) or ``gradavg`` (the layer-wise activity change
  ``g_b``, one number per probe stimulus);
- **function**, applied element-wise first: ``raw`` (x), ``sq`` (x**2), ``abs`` (|x|);
- **statistic**: ``norm`` (L2), ``mean``, ``median``, ``thirdquartile`` (75th percentile, nearest rank, as
  ``np.percentile(x, 75, method="nearest")``), ``var`` (population), ``skew`` (Pearson's second
  coefficient ``3 (mean - median) / std``, population std) and ``kurtosis`` (non-excess, population:
  ``E[(x - mean)^4] / var^2``). ``gradavg`` has the single statistic ``id``.

``weight`` statistics pool every observed synapse of the layer; ``act`` statistics are computed per
stimulus over units and then averaged over stimuli; ``gradavg`` ``id`` is the function of ``g_b``
averaged over stimuli. For a constant vector (zero spread) skew and kurtosis are undefined (0/0); they
are defined here as 0 rather than NaN, so that e.g. a ReLU layer silent for one stimulus does not turn the
whole observable into NaN. NaN and inf in the data propagate into the statistics. The numerical kernels
(one sort shared by the statistics and the functions) are in :mod:`virtual_lab.analysis.observable_stats`.

That gives 2 x 3 x 7 + 3 = 45 observables per layer (:data:`ALL_OBSERVABLES`), of which the paper fed its
classifiers the 24 "admissible" ones (:data:`ADMISSIBLE_OBSERVABLES`).

References
----------
Nayebi, A., Srivastava, S., Ganguli, S. & Yamins, D. L. K. (2020). Identifying learning rules from neural
network observables. NeurIPS 33. arXiv:2010.11765.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observable_stats import _statistics, _transformed
from virtual_lab.rig.recording import Recording
from virtual_lab.types import DEPTH_POSITIONS
from virtual_lab.validation import check_choice, did_you_mean

logger = logging.getLogger(__name__)

MEASURES = ("weight", "act", "gradavg")
FUNCTIONS = ("raw", "sq", "abs")
STATISTICS = ("norm", "mean", "median", "thirdquartile", "var", "skew", "kurtosis")
GRADAVG_STATISTICS = ("id",)

#: Number of float64 elements processed at once by :func:`compute_observables` (bounds its memory).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Observable:
    """One observable: a statistic of a function of a measure.

    Parameters
    ----------
    measure : {"weight", "act", "gradavg"}
    function : {"raw", "sq", "abs"}
    statistic : {"norm", "mean", "median", "thirdquartile", "var", "skew", "kurtosis"} or "id"
        ``"id"`` for ``gradavg`` (its only statistic), one of the seven others for ``weight``/``act``.

    Examples
    --------
    >>> Observable("weight", "abs", "mean").name
    'weightabs_mean'
    >>> Observable.from_name("gradavgsq_id")
    Observable(measure='gradavg', function='sq', statistic='id')
    """

    measure: str
    function: str
    statistic: str

    def __post_init__(self) -> None:
        check_choice("measure", self.measure, MEASURES)
        check_choice("function", self.function, FUNCTIONS)
        allowed = GRADAVG_STATISTICS if self.measure == "gradavg" else STATISTICS
        check_choice(f"statistic (for measure {self.measure!r})", self.statistic, allowed)

    @property
    def name(self) -> str:
        """Display name as in the paper's code, e.g. ``"weightabs_mean"``."""
        return f"{self.measure}{self.function}_{self.statistic}"

    @classmethod
    def from_name(cls, name: str) -> "Observable":
        """Look up an observable by its paper name (``"actraw_norm"``); unknown names suggest the closest."""
        found = _BY_NAME.get(name)
        if found is None:
            raise ValueError(f"unknown observable {name!r}{did_you_mean(name, list(_BY_NAME))}")
        return found


ALL_OBSERVABLES: tuple[Observable, ...] = tuple(
    Observable(measure, function, statistic)
    for measure in ("weight", "act") for function in FUNCTIONS for statistic in STATISTICS
) + tuple(Observable("gradavg", function, "id") for function in FUNCTIONS)
"""All 45 observables: weight then act (function raw, sq, abs; statistics in :data:`STATISTICS` order),
then gradavg raw, sq, abs."""

_BY_NAME = {obs.name: obs for obs in ALL_OBSERVABLES}

ADMISSIBLE_OBSERVABLES: tuple[Observable, ...] = tuple(_BY_NAME[name] for name in (
    "weightabs_mean", "weightabs_median", "weightabs_norm", "weightabs_thirdquartile", "weightabs_var",
    "weightraw_mean", "weightraw_median", "weightraw_norm", "weightraw_thirdquartile", "weightraw_var",
    "weightsq_mean", "weightsq_median", "weightsq_thirdquartile",
    "actabs_mean", "actabs_median", "actabs_norm", "actabs_thirdquartile",
    "actraw_mean", "actraw_median", "actraw_norm", "actraw_thirdquartile",
    "gradavgabs_id", "gradavgraw_id", "gradavgsq_id",
))
"""The paper's 24 admissible observables (its ``observable_names.ADMISSIBLE_OBS['all']``, in that order):
13 weight, 8 act, 3 gradavg."""


def _as_observables(observables: Iterable[Observable | str]) -> tuple[Observable, ...]:
    result = []
    for item in observables:
        if isinstance(item, str):
            item = Observable.from_name(item)
        elif not isinstance(item, Observable):
            raise TypeError(f"observables must be Observable instances or names, got {type(item).__name__}")
        result.append(item)
    if not result:
        raise ValueError("observables must not be empty")
    if len(set(result)) != len(result):
        duplicated = sorted({obs.name for obs in result if result.count(obs) > 1})
        raise ValueError(f"observables must not repeat; repeated: {', '.join(duplicated)}")
    return tuple(result)


# -- statistics --------------------------------------------------------------------------------------
def _check_statistics(statistics: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(statistics)
    for name in sorted(wanted - set(STATISTICS)):
        check_choice("statistic", name, STATISTICS)
    return wanted


def compute_statistics(values: np.ndarray, statistics: Sequence[str] = STATISTICS) -> dict[str, np.ndarray]:
    """The paper's statistics of ``values`` over its last axis.

    Parameters
    ----------
    values : ndarray, shape (..., n)
        Already transformed by the function (raw/sq/abs); any leading shape, ``n >= 1``.
    statistics : sequence of str, default=STATISTICS
        Which of ``norm, mean, median, thirdquartile, var, skew, kurtosis`` to compute; only these are.

    Returns
    -------
    dict of str to ndarray of float64, each of shape (...)
        ``norm`` = L2 norm; ``mean``; ``median`` (as ``np.median``); ``thirdquartile`` (as
        ``np.percentile(x, 75, method="nearest")``); ``var`` (population); ``skew`` =
        ``3 (mean - median) / std``; ``kurtosis`` = ``E[(x - mean)^4] / var^2`` (non-excess). Skew,
        kurtosis and var are exactly 0 where the vector is constant.

    Notes
    -----
    One sort along the last axis gives median, third quartile and the constant-vector test (NumPy's
    vectorized sort beat ``np.median`` + ``np.percentile`` 3-8x, and ``np.partition`` 2-4x, on these
    shapes); mean and central moments come from the same array. NaN sorts last, so a NaN anywhere makes
    every statistic NaN.

    Examples
    --------
    >>> s = compute_statistics(np.array([1., 2., 3., 4., 10.]), ["mean", "median", "var"])
    >>> float(s["mean"]), float(s["median"]), float(s["var"])
    (4.0, 3.0, 10.0)
    """
    wanted = _check_statistics(statistics)
    return _statistics(np.asarray(values, dtype=np.float64), wanted, is_sorted=False)


# -- per recording -----------------------------------------------------------------------------------
def _plan(observables: tuple[Observable, ...]) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """measure -> function -> [(column, statistic), ...], in first-use order."""
    plan: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for column, obs in enumerate(observables):
        plan.setdefault(obs.measure, {}).setdefault(obs.function, []).append((column, obs.statistic))
    return plan


def _checkpoint_chunks(n_checkpoints: int, elements_per_checkpoint: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, elements_per_checkpoint))
    return [slice(start, min(start + step, n_checkpoints)) for start in range(0, n_checkpoints, step)]


def compute_observables(recording: Recording, observables: Sequence[Observable | str] = ALL_OBSERVABLES
                        ) -> dict[str, np.ndarray]:
    """Observables of every layer of a recording at every kept checkpoint.

    Parameters
    ----------
    recording : virtual_lab.rig.Recording
        What the rig observed (units, synapses, checkpoints and noise already applied).
    observables : sequence of Observable or str, default=ALL_OBSERVABLES
        Which observables, in which column order. Only the statistics asked for are computed.

    Returns
    -------
    dict of str to ndarray of float64, shape (T, n_observables)
        One entry per layer, in ``recording.layer_names`` order; row ``t`` is checkpoint ``t`` of the
        recording, column ``k`` is ``observables[k]``.

    Examples
    --------
    >>> from virtual_lab.rig import Recording
    >>> from virtual_lab.testing import mock_ground_truth
    >>> values = compute_observables(Recording.from_ground_truth(mock_ground_truth()))
    >>> values["fc1"].shape
    (5, 45)
    """
    observables = _as_observables(observables)
    plan = _plan(observables)
    n_t = recording.n_checkpoints
    result = {}
    for layer in recording.layer_names:
        values = np.empty((n_t, len(observables)), dtype=np.float64)
        for measure, by_function in plan.items():
            if measure == "weight":
                raw = recording.weights(layer)            # (T, n_synapses)
            elif measure == "act":
                raw = recording.activations(layer)        # (T, S, U)
            else:
                raw = recording.activity_change(layer)    # (T, S)
            if raw.size == 0:  # no unit or synapse left (e.g. none tracked across sessions): undefined
                for columns in by_function.values():
                    values[:, [column for column, _ in columns]] = np.nan
                continue
            if measure == "gradavg":  # "id": the function of g_b, averaged over stimuli
                transformed = _transformed(raw.astype(np.float64), {f: frozenset() for f in by_function})
                for function, columns in by_function.items():
                    values[:, columns[0][0]] = transformed[function][0].mean(axis=1)
                continue
            functions = {f: frozenset(s for _, s in columns) for f, columns in by_function.items()}
            for chunk in _checkpoint_chunks(n_t, int(np.prod(raw.shape[1:]))):
                transformed = _transformed(raw[chunk].astype(np.float64), functions)
                for function, columns in by_function.items():
                    array, is_sorted = transformed[function]
                    stats = _statistics(array, functions[function], is_sorted)
                    for column, statistic in columns:
                        stat = stats[statistic]
                        # act: statistics per stimulus (over units), then averaged over stimuli
                        values[chunk, column] = stat.mean(axis=1) if measure == "act" else stat
        result[layer] = values
    return result


# -- feature table -----------------------------------------------------------------------------------
FEATURE_NAME_DTYPE = np.dtype([("measure", "U8"), ("function", "U8"), ("statistic", "U16"), ("timepoint", "i8")])
"""Structured record naming one feature. Observable features: (measure, function, statistic, timepoint
index). Depth one-hot features: ("depth", "onehot", <"early"|"middle"|"deep">, -1)."""


def feature_names_for(observables: Sequence[Observable | str], n_timepoints: int) -> np.ndarray:
    """Structured names of the features of :func:`build_feature_table`.

    Parameters
    ----------
    observables : sequence of Observable or str
    n_timepoints : int

    Returns
    -------
    ndarray of FEATURE_NAME_DTYPE, shape (n_timepoints * n_observables + 3,)
        Timepoint-major (feature ``t * n_observables + k`` is observable ``k`` at timepoint ``t``), then the
        three depth one-hot features (early, middle, deep).
    """
    observables = _as_observables(observables)
    records = [(obs.measure, obs.function, obs.statistic, t) for t in range(n_timepoints) for obs in observables]
    records += [("depth", "onehot", position, -1) for position in DEPTH_POSITIONS]
    return np.array(records, dtype=FEATURE_NAME_DTYPE)


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Decoder input: one example per layer of one network.

    Attributes
    ----------
    X : ndarray of float64, shape (n_examples, n_features)
        Features; for a table from :func:`build_feature_table`, ``T * n_observables + 3`` columns,
        timepoint-major, the 3 depth one-hot columns last.
    rule : ndarray of str, shape (n_examples,)
        Learning-rule label of each example's network.
    network_id : ndarray of str, shape (n_examples,)
        The network (run id) each example comes from: the grouping unit of cross-validation.
    layer : ndarray of str, shape (n_examples,)
    depth_position : ndarray of str, shape (n_examples,)
        ``"early"``, ``"middle"`` or ``"deep"``.
    metadata : tuple of dict, length n_examples
        A copy of the recording's metadata for each example (architecture, task, hyperparameters...).
    feature_names : ndarray of FEATURE_NAME_DTYPE, shape (n_features,)
        Structured names: fields ``measure``, ``function``, ``statistic``, ``timepoint`` (-1 for depth).
        Select columns with them, e.g. ``table.feature_names["statistic"] == "mean"``.
    """

    X: np.ndarray
    rule: np.ndarray
    network_id: np.ndarray
    layer: np.ndarray
    depth_position: np.ndarray
    metadata: tuple[Mapping[str, Any], ...]
    feature_names: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_examples, n_features), got shape {self.X.shape}")
        n, n_features = self.X.shape
        for name in ("rule", "network_id", "layer", "depth_position"):
            column = getattr(self, name)
            if np.shape(column) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(column)}")
        if len(self.metadata) != n:
            raise ValueError(f"metadata must have {n} entries, got {len(self.metadata)}")
        if self.feature_names.dtype != FEATURE_NAME_DTYPE or self.feature_names.shape != (n_features,):
            raise ValueError(f"feature_names must be a FEATURE_NAME_DTYPE array of shape ({n_features},)")

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def n_examples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def classes(self) -> tuple[str, ...]:
        """Sorted distinct rules."""
        return tuple(np.unique(self.rule).tolist())

    @property
    def feature_labels(self) -> list[str]:
        """Display labels (``"weightabs_mean_t03"``, ``"depth_early"``); never parse these."""
        labels = []
        for record in self.feature_names:
            if record["measure"] == "depth":
                labels.append(f"depth_{record['statistic']}")
            else:
                labels.append(f"{record['measure']}{record['function']}_{record['statistic']}"
                              f"_t{int(record['timepoint']):02d}")
        return labels

    @property
    def observables(self) -> tuple[Observable, ...]:
        """The observables of timepoint 0, in column order."""
        first = self.feature_names[self.feature_names["timepoint"] == 0]
        return tuple(Observable(str(r["measure"]), str(r["function"]), str(r["statistic"])) for r in first)

    @property
    def n_timepoints(self) -> int:
        timepoints = self.feature_names["timepoint"]
        return int(timepoints.max()) + 1 if timepoints.size and timepoints.max() >= 0 else 0

    def metadata_column(self, key: str, default: Any = None) -> np.ndarray:
        """One metadata value per example, shape (n_examples,) (object dtype; ``default`` where missing)."""
        column = np.empty(self.n_examples, dtype=object)
        column[:] = [meta.get(key, default) for meta in self.metadata]
        return column

    def subset(self, mask: np.ndarray | Sequence[int] | Sequence[bool]) -> "FeatureTable":
        """A new table with the chosen examples (rows).

        Parameters
        ----------
        mask : array of bool, shape (n_examples,), or array of int
            Boolean mask over examples, or example positions.

        Returns
        -------
        FeatureTable
        """
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (self.n_examples,):
                raise ValueError(f"boolean mask must have shape ({self.n_examples},), got {mask.shape}")
            indices = np.flatnonzero(mask)
        elif mask.size == 0 or np.issubdtype(mask.dtype, np.integer):
            indices = mask.astype(np.int64).ravel()
            if indices.size and (indices.min() < -self.n_examples or indices.max() >= self.n_examples):
                raise ValueError(f"example positions must lie in [0, {self.n_examples}), got "
                                 f"{indices.min()}..{indices.max()}")
        else:
            raise TypeError(f"mask must be boolean or integer, got dtype {mask.dtype}")
        return FeatureTable(
            X=self.X[indices], rule=self.rule[indices], network_id=self.network_id[indices],
            layer=self.layer[indices], depth_position=self.depth_position[indices],
            metadata=tuple(self.metadata[i] for i in indices), feature_names=self.feature_names,
        )

    def as_sequence(self) -> np.ndarray:
        """Features as a time series, for time-series decoders (the paper's Conv1D input).

        Returns
        -------
        ndarray of float64, shape (n_examples, T, n_observables + 3)
            ``[..., :n_observables]`` the observables at each timepoint, ``[..., n_observables:]`` the
            depth one-hot, repeated at every timepoint.
        """
        names = self.feature_names
        n_obs, n_t = len(self.observables), self.n_timepoints
        expected = feature_names_for(self.observables, n_t) if n_obs and n_t else None
        if expected is None or names.shape != expected.shape or not np.array_equal(names, expected):
            raise ValueError("as_sequence needs the timepoint-major layout of build_feature_table "
                             "(T * n_observables features, then 3 depth one-hot features)")
        n = self.n_examples
        series = self.X[:, : n_t * n_obs].reshape(n, n_t, n_obs)
        depth = np.broadcast_to(self.X[:, None, n_t * n_obs:], (n, n_t, len(DEPTH_POSITIONS)))
        return np.concatenate([series, depth], axis=2)


def select(table: FeatureTable, mask: np.ndarray | Sequence[int] | Sequence[bool]) -> FeatureTable:
    """Functional form of :meth:`FeatureTable.subset`."""
    return table.subset(mask)


def build_feature_table(recordings: Iterable[Recording],
                        observables: Sequence[Observable | str] = ADMISSIBLE_OBSERVABLES,
                        progress: bool = False) -> FeatureTable:
    """Feature table over many recordings: one example per layer of each network.

    Parameters
    ----------
    recordings : iterable of virtual_lab.rig.Recording
        All with the same number of kept checkpoints T. Each recording's ``run_id`` is its network id.
    observables : sequence of Observable or str, default=ADMISSIBLE_OBSERVABLES
    progress : bool, default=False
        Show a progress bar over recordings.

    Returns
    -------
    FeatureTable
        ``X`` has shape (n_examples, T * n_observables + 3): the (T, n_observables) observables of
        :func:`compute_observables` flattened timepoint-major (feature ``t * n_observables + k``), then
        the one-hot depth position (early, middle, deep). 24 x 21 + 3 = 507 features for the paper
        default.

    Notes
    -----
    Networks whose metadata marks them ``diverged`` are dropped, and so is every example with a
    non-finite feature; how many (and which networks) is logged as a warning.

    Raises
    ------
    ValueError
        No recordings, recordings with different numbers of checkpoints, or nothing left after dropping.
    """
    observables = _as_observables(observables)
    # one pass over the recordings: each is reduced to its feature rows and then released, so an iterable
    # that reads sessions lazily keeps only one session in memory at a time
    rows, rules, ids, layers, depths, metas = [], [], [], [], [], []
    diverged_ids = []
    by_count: dict[int, list[str]] = {}
    from virtual_lab.progress import progress_bar

    for recording in progress_bar(recordings, desc="observables", unit="sessions", enabled=progress):
        _check_recording(recording, by_count)
        if bool(recording.metadata.get("diverged", False)):
            diverged_ids.append(recording.run_id)
            continue
        for row, layer, position in zip(_layer_rows(recording, observables), recording.layer_names,
                                        recording.depth_positions):
            rows.append(row)
            rules.append(recording.rule)
            ids.append(recording.run_id)
            layers.append(layer)
            depths.append(position)
            metas.append(dict(recording.metadata))
    if not by_count:
        raise ValueError("build_feature_table needs at least one recording")
    n_t = next(iter(by_count))
    if diverged_ids:
        logger.warning("dropped %d diverged network(s): %s", len(diverged_ids), ", ".join(diverged_ids))
    if not rows:
        raise ValueError("no examples left: every recording is marked diverged")

    X = np.vstack(rows)
    keep = _finite_rows(X, ids, layers)
    return FeatureTable(
        X=X[keep],
        rule=np.array(rules, dtype=str)[keep],
        network_id=np.array(ids, dtype=str)[keep],
        layer=np.array(layers, dtype=str)[keep],
        depth_position=np.array(depths, dtype=str)[keep],
        metadata=tuple(metas[i] for i in keep),
        feature_names=feature_names_for(observables, n_t),
    )


def _check_recording(recording: Recording, by_count: dict[int, list[str]]) -> None:
    """Raise unless ``recording`` is a Recording with checkpoints, as many as every one before it; ``by_count``
    (number of checkpoints -> run ids) collects the recordings seen."""
    if not isinstance(recording, Recording):
        raise TypeError(f"recordings must be virtual_lab.rig.Recording objects, got "
                        f"{type(recording).__name__} (wrap a GroundTruth with Recording.from_ground_truth)")
    by_count.setdefault(int(recording.n_checkpoints), []).append(recording.run_id)
    if len(by_count) > 1:
        detail = "; ".join(f"{c} checkpoints: {', '.join(ids_[:3])}{' ...' if len(ids_) > 3 else ''}"
                           for c, ids_ in sorted(by_count.items()))
        raise ValueError(f"all recordings must have the same number of checkpoints, got {detail}. "
                         f"Use virtual_lab.rig.keep_checkpoints to align them.")
    if int(recording.n_checkpoints) < 1:
        raise ValueError("recordings have no checkpoints")


def _layer_rows(recording: Recording, observables: tuple[Observable, ...]) -> list[np.ndarray]:
    """One feature row per layer of ``recording``: its observables flattened timepoint-major, then the
    one-hot depth position."""
    values = compute_observables(recording, observables)
    rows = []
    for layer, position in zip(recording.layer_names, recording.depth_positions):
        onehot = np.zeros(len(DEPTH_POSITIONS))
        onehot[DEPTH_POSITIONS.index(position)] = 1.0
        rows.append(np.concatenate([values[layer].reshape(-1), onehot]))
    return rows


def _finite_rows(X: np.ndarray, ids: Sequence[str], layers: Sequence[str]) -> np.ndarray:
    """Positions of the rows of ``X`` without a non-finite feature; the others are logged as dropped."""
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        logger.warning("dropped %d example(s) with non-finite features (network/layer: %s)", len(bad),
                       ", ".join(f"{ids[i]}/{layers[i]}" for i in bad))
        if not finite.any():
            raise ValueError("no examples left: every example has a non-finite feature")
    return np.flatnonzero(finite)
