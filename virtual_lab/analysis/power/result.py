"""The outcome of :func:`virtual_lab.analysis.power.power_analysis`."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virtual_lab.analysis.power.checks import short_rule


@dataclass(frozen=True, eq=False)
class PowerResult:
    """Outcome of :func:`power_analysis`.

    Attributes
    ----------
    classes : tuple of str
        Rules decoded (sorted full names).
    units, noise, sessions : tuple
        The requested grid values (sorted).
    accuracy, ci_low, ci_high : ndarray of float64, shape (n_units, n_noise, n_sessions)
        Network-level accuracy cross-validated on the *selection* networks (the estimates the protocol is
        chosen from, hence optimistic at the chosen point) and its bootstrap interval; NaN where the grid
        value was skipped.
    bootstrap : ndarray of float64, shape (n_units, n_noise, n_sessions, n_bootstrap)
        Bootstrap replicates of the accuracy (the same network resamples at every grid point).
    confusion : ndarray of int64, shape (n_units, n_noise, n_sessions, n_classes, n_classes)
        Network-level confusion counts of the selection networks, summed over splits and rig seeds (rows:
        true rule).
    rows : tuple of dict
        Tidy table: one row per grid point x rig seed (repeat) x split.
    skipped : tuple of dict
        Grid values that the recordings cannot support: ``parameter``, ``value``, ``reason``.
    chance : dict
        :func:`binomial_chance` for the networks used.
    thresholds : tuple of dict
        Per (noise, sessions): ``units_point``, ``units_conservative``, ``units_interval``.
    recommendation : dict
        The operating point (chosen on the selection networks), its ``selected`` and ``confirmed`` accuracy
        and its sentence (see :meth:`sentence`); ``accuracy`` and ``ci`` are the confirmed ones.
    target, confidence : float
    n_networks : int
    networks : tuple of str
        Network ids used, in table order.
    provenance : dict
        Resolved seeds, rig settings, decoder, sources and versions.
    selection_networks, confirmation_networks : tuple of str
        The two disjoint parts of the networks: the grid is cross-validated and the protocol chosen on the
        first; every answer is measured on the second.
    confirmation : dict
        At the recommended (or best) point: the confirmation networks' ``accuracy``, ``wilson`` and
        ``bootstrap`` intervals, ``confusion`` (k x k, networks weighted by the fraction of rig repeats
        naming each rule), ``per_network`` fractions, ``networks`` and ``rules``, ``per_rule`` accuracy.
    holdout : dict or None
        The held-out-condition answer (``levels``, ``pooled``, ``worst``; see
        :func:`virtual_lab.analysis.power.answers._holdout_answer`).
    pairs : tuple of dict
        One per pair of rules (3 or more rules): protocol, selected and confirmed accuracy, ``category``.
    animals : dict
        ``table``: per number of animals, ``p_correct`` of the posterior verdict and its ``ci``.
    answers : dict
        One sentence per question (``recommendation``, ``holdout``, ``pairs``, ``animals``) and the
        ``assumptions`` they rest on.
    """

    classes: tuple[str, ...]
    units: tuple[int, ...]
    noise: tuple[float, ...]
    sessions: tuple[int, ...]
    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    bootstrap: np.ndarray = field(repr=False)
    confusion: np.ndarray = field(repr=False)
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    skipped: tuple[dict[str, Any], ...]
    chance: dict[str, float]
    thresholds: tuple[dict[str, Any], ...]
    recommendation: dict[str, Any]
    target: float
    confidence: float
    n_networks: int
    networks: tuple[str, ...] = field(repr=False)
    provenance: dict[str, Any] = field(repr=False, default_factory=dict)
    selection_networks: tuple[str, ...] = field(repr=False, default=())
    confirmation_networks: tuple[str, ...] = field(repr=False, default=())
    confirmation: dict[str, Any] = field(repr=False, default_factory=dict)
    holdout: dict[str, Any] | None = field(repr=False, default=None)
    pairs: tuple[dict[str, Any], ...] = field(repr=False, default=())
    animals: dict[str, Any] = field(repr=False, default_factory=dict)
    answers: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def sentence(self) -> str:
        """The recommendation in one sentence."""
        return str(self.recommendation["sentence"])

    def answer_text(self) -> str:
        """Every answer as plain text: the recommendation, the held-out condition, the pairs table, the
        M-animals table and the assumptions (what ``virtual-lab power`` prints)."""
        from virtual_lab.analysis.power.answers import format_answers

        return format_answers(self)

    def point(self, units: int, noise: float, sessions: int) -> dict[str, Any]:
        """Accuracy, interval and confusion at one grid point."""
        u, n, s = self.units.index(units), self.noise.index(noise), self.sessions.index(sessions)
        return {"units": units, "noise": noise, "sessions": sessions, "accuracy": float(self.accuracy[u, n, s]),
                "ci_low": float(self.ci_low[u, n, s]), "ci_high": float(self.ci_high[u, n, s]),
                "confusion": self.confusion[u, n, s].tolist()}

    def monotonicity_violations(self) -> list[dict[str, Any]]:
        """Grid neighbours where more units, less noise or more sessions *significantly* hurt.

        A violation: the richer protocol's interval lies wholly below the poorer protocol's point estimate.

        Returns
        -------
        list of dict
            ``axis``, ``poorer`` and ``richer`` (units, noise, sessions) and both accuracies.
        """
        found = []
        acc, high = self.accuracy, self.ci_high
        shape = acc.shape
        steps = {"units": (0, 1), "noise": (1, -1), "sessions": (2, 1)}
        for axis_name, (axis, direction) in steps.items():
            for index in np.ndindex(shape):
                other = list(index)
                other[axis] += 1
                if other[axis] >= shape[axis]:
                    continue
                other = tuple(other)
                poorer, richer = (index, other) if direction == 1 else (other, index)
                if np.isnan(acc[poorer]) or np.isnan(acc[richer]):
                    continue
                if high[richer] < acc[poorer]:
                    found.append({"axis": axis_name, "poorer": self._coords(poorer), "richer": self._coords(richer),
                                  "poorer_accuracy": float(acc[poorer]), "richer_accuracy": float(acc[richer])})
        return found

    def _coords(self, index: tuple[int, int, int]) -> dict[str, Any]:
        return {"units": self.units[index[0]], "noise": self.noise[index[1]], "sessions": self.sessions[index[2]]}

    def summary(self) -> dict[str, Any]:
        """JSON-serializable summary: grid, per-point accuracy and interval, answers, chance, provenance."""
        def plain(value: float) -> float | None:
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

        points = []
        for index in np.ndindex(self.accuracy.shape):
            if np.isnan(self.accuracy[index]):
                continue
            u, n, s = index
            points.append({**self._coords(index), "accuracy": plain(self.accuracy[index]),
                           "ci_low": plain(self.ci_low[index]), "ci_high": plain(self.ci_high[index]),
                           "above_chance_threshold": bool(self.accuracy[index] >= self.chance["threshold"])})
        return {"classes": list(self.classes), "rules": [short_rule(c) for c in self.classes],
                "mode": "pairwise" if len(self.classes) == 2 else "all rules",
                "target": self.target, "confidence": self.confidence, "n_networks": self.n_networks,
                "grid": {"units": list(self.units), "noise": list(self.noise), "sessions": list(self.sessions)},
                "skipped": list(self.skipped), "chance": dict(self.chance), "points": points,
                "thresholds": list(self.thresholds), "recommendation": self.recommendation,
                "selection": {"n_networks": len(self.selection_networks), "networks": list(self.selection_networks),
                              "note": "grid accuracies ('points') are cross-validated on these networks"},
                "confirmation": {**{k: v for k, v in self.confirmation.items() if k != "per_network"},
                                 "n_networks": len(self.confirmation_networks)},
                "holdout": self.holdout, "pairs": list(self.pairs), "animals": self.animals,
                "answers": self.answers,
                "monotonicity_violations": self.monotonicity_violations(), "provenance": self.provenance}

    def write_table(self, path: str | os.PathLike) -> Path:
        """Write the tidy table (one row per grid point x repeat x split) as CSV."""
        path = Path(path)
        columns = list(self.rows[0]) if self.rows else []
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return path
