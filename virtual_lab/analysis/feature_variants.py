"""Scale-free variants of the paper's observables, for decoders that must transfer across learning rates.

A learning-rate multiplier changes how far and how fast every statistic moves, so a decoder trained on some
multipliers meets magnitudes it never saw on a held-out one. Two variants remove an overall scale while
keeping each observable's trajectory (both keep the table's layout: T timepoint blocks, then the depth
one-hot):

- ``ratio`` (:func:`ratio_to_initial`): each observable divided by its value at the first checkpoint
  (the initialization), ``x_t / |x_0|``: how many times its initial value it has become;
- ``layer_share`` (:func:`layer_share`): each observable divided by its mean magnitude over the network's
  layers at the same checkpoint, ``x_{l,t} / mean_l' |x_{l',t}|``: the depth profile, with the overall
  level shared by every layer removed.

:func:`feature_set` picks the paper's observables (``"paper"``), a variant, or both side by side
(``"paper+ratio"``), as ``virtual-lab decode --features`` does.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from virtual_lab.analysis.controls import _time_blocks
from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.validation import check_choice

__all__ = ["FEATURE_VARIANTS", "feature_set", "feature_set_names", "layer_share", "ratio_to_initial"]

#: A variant's value may not exceed this many times the largest magnitude its example's trajectory reaches
#: over the denominator's floor (see :func:`ratio_to_initial`).
_FLOOR = 1e-3


def _series(table: FeatureTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(series (n, T, n_obs), static (n, n_static), observable names (T * n_obs,), static names)``."""
    varying_names, static_names, n_obs = _time_blocks(table)
    n_t, n = table.n_timepoints, table.n_examples
    return (table.X[:, : n_t * n_obs].reshape(n, n_t, n_obs), table.X[:, n_t * n_obs:], varying_names,
            static_names)


def _rebuilt(table: FeatureTable, series: np.ndarray, static: np.ndarray, names: np.ndarray,
             static_names: np.ndarray) -> FeatureTable:
    n, n_t, n_obs = series.shape
    return dataclasses.replace(table, X=np.hstack([series.reshape(n, n_t * n_obs), static]),
                               feature_names=np.concatenate([names, static_names]))


def _renamed(names: np.ndarray, suffix: str) -> np.ndarray:
    out = names.copy()
    out["function"] = np.array([f"{f}{suffix}" for f in names["function"].tolist()])
    return out


def ratio_to_initial(table: FeatureTable) -> FeatureTable:
    """Each observable of each example divided by the magnitude of its value at the first timepoint.

    ``x_t / max(|x_0|, 1e-3 * max_t |x_t|)``: the sign is kept, and a statistic that starts at 0 (a ReLU
    layer's median activity, a raw mean weight) is divided by a floor of its example's own trajectory
    instead (so no value exceeds 1000 in magnitude); an all-zero trajectory stays 0. Nothing is computed
    across examples (no statistic of the test side reaches the training side).

    Parameters
    ----------
    table : FeatureTable
        Timepoint-major layout (:func:`~virtual_lab.analysis.observables.build_feature_table`).

    Returns
    -------
    FeatureTable
        Same shape; feature names' ``function`` gets the suffix ``"/t0"`` (``weightabs/t0_mean``).

    Examples
    --------
    >>> from virtual_lab.analysis.observables import feature_names_for
    >>> names = feature_names_for(["weightabs_mean"], 3)
    >>> X = np.array([[2.0, 4.0, 6.0, 0.0, 0.0, 1.0]])
    >>> t = FeatureTable(X=X, rule=np.array(["a"]), network_id=np.array(["n"]), layer=np.array(["fc1"]),
    ...                  depth_position=np.array(["deep"]), metadata=({},), feature_names=names)
    >>> ratio_to_initial(t).X[0, :3].tolist()
    [1.0, 2.0, 3.0]
    """
    series, static, names, static_names = _series(table)
    peak = np.abs(series).max(axis=1, keepdims=True)
    denominator = np.maximum(np.abs(series[:, :1, :]), _FLOOR * peak)
    ratio = np.divide(series, denominator, out=np.zeros_like(series), where=denominator > 0)
    return _rebuilt(table, ratio, static, _renamed(names, "/t0"), static_names)


def layer_share(table: FeatureTable) -> FeatureTable:
    """Each observable divided by its mean magnitude over the layers of the same network at the same timepoint.

    The layers of one network are the examples with the same ``network_id`` and rig (``metadata["rig"]``,
    when tables of several rigs are stacked). A network's layers are its own reference, so nothing is
    computed across networks.

    Returns
    -------
    FeatureTable
        Same shape; ``function`` gets the suffix ``"/lay"``. A network observed in a single layer gets
        ``sign(x)``.

    Examples
    --------
    >>> from virtual_lab.analysis.observables import feature_names_for
    >>> names = feature_names_for(["weightabs_mean"], 1)
    >>> X = np.array([[1.0, 1, 0, 0], [3.0, 0, 0, 1]])
    >>> t = FeatureTable(X=X, rule=np.array(["a", "a"]), network_id=np.array(["n", "n"]),
    ...                  layer=np.array(["fc1", "fc2"]), depth_position=np.array(["early", "deep"]),
    ...                  metadata=({}, {}), feature_names=names)
    >>> layer_share(t).X[:, 0].tolist()
    [0.5, 1.5]
    """
    series, static, names, static_names = _series(table)
    groups = [f"{n}\x00{m.get('rig', '')}" for n, m in zip(table.network_id.tolist(), table.metadata)]
    _, inverse = np.unique(np.array(groups, dtype=object).astype(str), return_inverse=True)
    totals = np.zeros((inverse.max() + 1,) + series.shape[1:])
    np.add.at(totals, inverse, np.abs(series))
    counts = np.bincount(inverse).astype(np.float64)[:, None, None]
    mean = (totals / counts)[inverse]
    share = np.divide(series, mean, out=np.zeros_like(series), where=mean > 0)
    return _rebuilt(table, share, static, _renamed(names, "/lay"), static_names)


#: Variant name -> transform of a feature table.
FEATURE_VARIANTS: dict[str, Callable[[FeatureTable], FeatureTable]] = {"ratio": ratio_to_initial,
                                                                        "layer_share": layer_share}


def feature_set_names() -> tuple[str, ...]:
    """``"paper"``, every variant, and ``"paper+<variant>"`` for each."""
    return ("paper", *FEATURE_VARIANTS, *(f"paper+{v}" for v in FEATURE_VARIANTS))


def feature_set(table: FeatureTable, name: str = "paper") -> FeatureTable:
    """The table's observables as the decoder should see them.

    Parameters
    ----------
    table : FeatureTable
        The paper's observables (timepoint-major layout).
    name : str, default="paper"
        ``"paper"`` (unchanged), a key of :data:`FEATURE_VARIANTS`, or ``"paper+<variant>"``: both side
        by side, the variant's observables after the paper's in every timepoint block (the layout stays
        T blocks, then the depth one-hot, so time-series decoders and the temporal controls still apply).

    Returns
    -------
    FeatureTable
    """
    check_choice("features", name, feature_set_names())
    if name == "paper":
        return table
    variant = FEATURE_VARIANTS[name.split("+")[-1]](table)
    if "+" not in name:
        return variant
    paper, static, names, static_names = _series(table)
    other, _, other_names, _ = _series(variant)
    n_t = paper.shape[1]
    both = np.concatenate([paper, other], axis=2)
    merged = np.concatenate([np.concatenate([names.reshape(n_t, -1), other_names.reshape(n_t, -1)], axis=1)]
                            ).reshape(-1)
    return _rebuilt(table, both, static, merged, static_names)
