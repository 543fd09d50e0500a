"""Feature-table helpers: tag, stack and filter the examples of a
:class:`~virtual_lab.analysis.observables.FeatureTable`.

:func:`with_metadata` adds values to every example's metadata (e.g. the rig that observed it),
:func:`concat_tables` stacks tables with the same features, and :func:`filter_mask` selects examples by
their metadata.

Metadata filters are strings ``"key=value"``, ``"key=v1,v2"`` (any of), ``"key!=value"``,
``"key>value"``, ``"key<value"`` (numbers); several filters are combined with AND.

:func:`metadata_values` reads one metadata key of every example, computing the keys of
:data:`DERIVED_KEYS` (the learning-rate multiplier, the hidden width and depth) when a session does not store
them; filters and held-out tests accept those keys too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.validation import did_you_mean

__all__ = ["DERIVED_KEYS", "Filter", "concat_tables", "derived_value", "filter_mask", "metadata_values", "parse_filter",
           "with_metadata"]


def _replace(table: FeatureTable, **changes: Any) -> FeatureTable:
    return dataclasses.replace(table, **changes)


def with_metadata(table: FeatureTable, **values: Any) -> FeatureTable:
    """A copy of ``table`` whose every example's metadata also holds ``values`` (e.g. ``rig="full"``)."""
    return _replace(table, metadata=tuple({**meta, **values} for meta in table.metadata))


def concat_tables(tables: Sequence[FeatureTable]) -> FeatureTable:
    """Stack the examples of tables with the same features (e.g. one table per rig preset).

    Parameters
    ----------
    tables : sequence of FeatureTable
        Identical ``feature_names``.

    Returns
    -------
    FeatureTable
        Examples of ``tables[0]``, then ``tables[1]``...; network ids are kept (the same network seen by
        two rigs keeps one id, so grouped splits keep it on one side).
    """
    tables = list(tables)
    if not tables:
        raise ValueError("concat_tables needs at least one table")
    names = tables[0].feature_names
    for index, table in enumerate(tables[1:], start=1):
        if table.feature_names.shape != names.shape or not np.array_equal(table.feature_names, names):
            raise ValueError(f"table {index} has different features ({table.n_features}) from table 0 "
                             f"({len(names)}); align them first (e.g. temporal_features(..., 'time_average'))")
    return FeatureTable(
        X=np.vstack([t.X for t in tables]), rule=np.concatenate([t.rule for t in tables]),
        network_id=np.concatenate([t.network_id for t in tables]), layer=np.concatenate([t.layer for t in tables]),
        depth_position=np.concatenate([t.depth_position for t in tables]),
        metadata=tuple(m for t in tables for m in t.metadata), feature_names=names)


def _columns(table: FeatureTable, keep: np.ndarray) -> FeatureTable:
    return _replace(table, X=table.X[:, keep], feature_names=table.feature_names[keep])


# -- derived metadata --------------------------------------------------------------------------------
#: Metadata keys computed from the others when a session does not store them (:func:`derived_value`).
DERIVED_KEYS = ("learning_rate_scale", "width", "depth")


def _sizes(text: Any) -> list[int]:
    if text is None or text == "":
        return []
    if isinstance(text, str):
        return [int(v) for v in text.split(",") if v.strip()]
    return [int(v) for v in np.atleast_1d(text)]


def _rule_learning_rate(rule: Any) -> float | None:
    from virtual_lab.lab.rules import RULES

    spec = RULES.get(str(rule))
    return None if spec is None else float(spec.default_learning_rate)


def derived_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The value of ``key`` for one example: the stored one when present, else computed from the others.

    Computed keys (:data:`DERIVED_KEYS`):

    - ``learning_rate_scale``: the multiplier of the rule's base rate, ``learning_rate`` divided by the
      rule's ``default_learning_rate`` (:data:`virtual_lab.lab.rules.RULES`), rounded to 6 significant
      digits so that one multiplier is one value across rules; None for a rule this version does not know.
      A stored ``learning_rate_scale`` (the multiplier the sweep applied) is preferred.
    - ``width``: units per hidden layer, from ``layer_sizes`` (inputs, hidden..., outputs) for an MLP; the
      widest hidden layer when they differ; for a convolutional network (``channels`` stored), the widest
      conv layer / stage. None without a hidden layer.
    - ``depth``: number of hidden layers (``len(layer_sizes) - 2``), or of conv layers / stages.

    Parameters
    ----------
    metadata : mapping
        One example's metadata.
    key : str

    Returns
    -------
    object
        None when neither stored nor computable.

    Examples
    --------
    >>> derived_value({"rule": "adam", "learning_rate": 0.002}, "learning_rate_scale")
    2.0
    >>> mlp = {"layer_sizes": "64,128,128,10"}
    >>> derived_value(mlp, "width"), derived_value(mlp, "depth")
    (128, 2)
    """
    stored = metadata.get(key)
    if stored is not None or key not in DERIVED_KEYS:
        return stored
    if key == "learning_rate_scale":
        rate, base = metadata.get("learning_rate"), _rule_learning_rate(metadata.get("rule"))
        if rate is None or base is None:
            return None
        return float(f"{float(rate) / base:.6g}")
    channels = _sizes(metadata.get("channels")) if str(metadata.get("architecture", "mlp")) != "mlp" else []
    hidden = channels or _sizes(metadata.get("layer_sizes"))[1:-1]
    if key == "depth":
        return len(hidden) if (channels or metadata.get("layer_sizes") not in (None, "")) else None
    return max(hidden) if hidden else None


def metadata_values(table: FeatureTable, key: str) -> np.ndarray:
    """One metadata value per example (object array), with the keys of :data:`DERIVED_KEYS` computed when
    not stored (:func:`derived_value`); ``rule``, ``network_id``, ``layer`` and ``depth_position`` are the
    table's columns."""
    if key in ("rule", "network_id", "layer", "depth_position"):
        return getattr(table, key).astype(object)
    if key in DERIVED_KEYS:
        column = np.empty(table.n_examples, dtype=object)
        column[:] = [derived_value(meta, key) for meta in table.metadata]
        return column
    return table.metadata_column(key)


# -- filters -----------------------------------------------------------------------------------------
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Filter:
    """One metadata condition, e.g. ``Filter("architecture", "=", ("mlp",))``."""

    key: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.key}{self.op}{','.join(self.values)}"


def parse_filter(text: str | Filter) -> Filter:
    """Parse ``"key=value"``, ``"key=v1,v2"``, ``"key!=value"``, ``"key>1e-3"``, ``"key<=0.5"``."""
    if isinstance(text, Filter):
        return text
    if not isinstance(text, str):
        raise TypeError(f"a filter must be a string like 'architecture=mlp', got {type(text).__name__}")
    match = _FILTER.match(text)
    if not match or not match.group(3):
        raise ValueError(f"cannot parse filter {text!r}; expected 'key=value', 'key=v1,v2', 'key!=value', "
                         f"'key>number' or 'key<number'")
    key, op, values = match.groups()
    parsed = tuple(v.strip() for v in values.split(",")) if op in ("=", "!=") else (values.strip(),)
    if op not in ("=", "!="):
        try:
            float(parsed[0])
        except ValueError:
            raise ValueError(f"filter {text!r}: {op!r} needs a number, got {parsed[0]!r}") from None
    return Filter(key, op, parsed)


def _equal(value: Any, wanted: str) -> bool:
    if isinstance(value, bool) or value is None:
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def filter_mask(table: FeatureTable, filters: Sequence[str | Filter] | str | None) -> np.ndarray:
    """Boolean mask (n_examples,) of the examples whose metadata match every filter.

    Raises
    ------
    ValueError
        A key no example has (with the closest key), or a filter no example matches (listing the values
        present).
    """
    if filters is None:
        return np.ones(table.n_examples, dtype=bool)
    if isinstance(filters, (str, Filter)):
        filters = [filters]
    mask = np.ones(table.n_examples, dtype=bool)
    keys = sorted({k for meta in table.metadata for k in meta} | {"rule", "network_id", "layer", "depth_position"}
                  | set(DERIVED_KEYS))
    for item in filters:
        f = parse_filter(item)
        if f.key not in keys:
            raise ValueError(f"unknown metadata key {f.key!r} in filter {str(f)!r}{did_you_mean(f.key, keys)} "
                             f"(keys: {', '.join(keys)})")
        column = metadata_values(table, f.key)
        if f.op == "=":
            match = np.array([any(_equal(v, w) for w in f.values) for v in column], dtype=bool)
        elif f.op == "!=":
            match = np.array([not any(_equal(v, w) for w in f.values) for v in column], dtype=bool)
        else:
            bound = float(f.values[0])
            compare = {">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal}[f.op]
            numeric = np.array([float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                else np.nan for v in column])
            match = compare(numeric, bound) & np.isfinite(numeric)
        if not match.any():
            present = sorted({str(v) for v in column})
            shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
            raise ValueError(f"filter {str(f)!r} matches no example; values of {f.key!r} present: {shown}")
        mask &= match
    return mask
