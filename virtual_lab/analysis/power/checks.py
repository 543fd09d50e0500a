"""Parameter checks of the power analysis: grid values, fractions, rule names."""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence

import numpy as np

from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, _as_observables
from virtual_lab.lab.rules import RULES, canonical_name, short_name
from virtual_lab.seeding import derive_seed, resolve_seed
from virtual_lab.validation import did_you_mean


def _int_list(name: str, values: Iterable[Any], minimum: int) -> tuple[int, ...]:
    values = list(values) if not isinstance(values, (str, bytes)) else None
    if not values:
        raise ValueError(f"{name} must be a non-empty list of integers >= {minimum}, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values}")
    return tuple(sorted(int(v) for v in values))


def _float_list(name: str, values: Iterable[Any]) -> tuple[float, ...]:
    values = list(values) if not isinstance(values, (str, bytes)) else None
    if not values:
        raise ValueError(f"{name} must be a non-empty list of numbers >= 0, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must hold finite numbers >= 0, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values}")
    return tuple(sorted(float(v) for v in values))


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def short_rule(rule: str) -> str:
    """Short lower-case name used in sentences (``feedback_alignment`` -> ``fa``; the rule's registered short
    name, other labels unchanged)."""
    return short_name(rule)


def _resolve_rules(requested: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...]:
    if requested is None:
        return tuple(sorted(available))
    if isinstance(requested, str):
        requested = [part for part in requested.split(",") if part]
    resolved = []
    for name in requested:
        full = canonical_name(name)
        if full not in available:
            names = list(available) + [alias for rule in available if rule in RULES for alias in RULES[rule].aliases]
            raise ValueError(f"rules: {name!r} is not a rule of these recordings; recorded rules: "
                             f"{', '.join(sorted(available))}{did_you_mean(name, names)}")
        if full in resolved:
            raise ValueError(f"rules: {name!r} is given twice")
        resolved.append(full)
    if len(resolved) < 2:
        raise ValueError(f"rules must name at least 2 rules to tell apart, got {list(requested)}")
    return tuple(sorted(resolved))


def _check_counts(n_splits: Any, n_bootstrap: Any, n_jobs: Any) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be an integer >= 100, got {n_bootstrap!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")


def _rig_seed_list(seed: int, rig_seeds: int | Sequence[int]) -> tuple[int, ...]:
    """The rig seeds of the repeats: ``rig_seeds`` derived from ``seed``, or the seeds given."""
    if isinstance(rig_seeds, numbers.Integral) and not isinstance(rig_seeds, bool):
        if rig_seeds < 1:
            raise ValueError(f"rig_seeds must be a count >= 1 or a list of seeds, got {rig_seeds!r}")
        return tuple(derive_seed(seed, "rig", r) for r in range(int(rig_seeds)))
    seeds = tuple(resolve_seed(s) for s in rig_seeds)
    if not seeds:
        raise ValueError("rig_seeds must not be empty")
    return seeds


def _requested_observables(observables: str | Sequence[Any]) -> tuple[bool, tuple[Any, ...]]:
    """``(named, observables)``: named is True for a list given one by one (what the rig cannot measure is then
    an error); ``"admissible"`` and ``"all"`` are the standard sets."""
    named = not isinstance(observables, str)
    if isinstance(observables, str):
        if observables not in ("admissible", "all"):
            raise ValueError(f"observables must be 'admissible', 'all' or a list of observables, got {observables!r}")
        observables = ADMISSIBLE_OBSERVABLES if observables == "admissible" else ALL_OBSERVABLES
    return named, tuple(_as_observables(observables))


def _resolve_layers(requested: Sequence[str] | None, recorded: Sequence[str]) -> tuple[str, ...]:
    """The layers to record (default: all), each checked against the recorded ones."""
    if requested is None:
        return tuple(recorded)
    layers = tuple(requested)
    for name in layers:
        if name not in recorded:
            raise ValueError(f"layers: {name!r} is not a recorded layer; recorded: "
                             f"{', '.join(recorded)}{did_you_mean(name, recorded)}")
    return layers
