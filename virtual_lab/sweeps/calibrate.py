"""Learning-curve-matched design (``[sweep.match_curves]``): per-rule learning rates whose curves coincide.

A decoder that names the learning rule might only be reading how fast a network learns. To take that cue
away, each rule's learning rate is calibrated before the sweep so that its mean learning curves match a
reference rule's: a few *pilot* networks are trained per rule and candidate multiplier (seeds of their own,
never those of the sweep), and each rule keeps the candidate whose curves are closest to the reference rule's
(trained at its base rate). The distance between two sets of pilots is

    max(RMS_t |mean accuracy_a(t) - mean accuracy_b(t)|, RMS_t |mean log10 loss_a(t) - mean log10 loss_b(t)|)

over the checkpoints ``t``, from the probe accuracy and training loss every checkpoint records (the curves the
``performance only`` control decodes). A rule whose best candidate stays above ``tolerance`` is reported in a
warning, in ``calibration.json`` and in the report's caveats, never hidden.

The result is stored in ``<recordings>/calibration.json`` (candidates, distances, mean curves, chosen
multipliers, whether each rule met the tolerance), reused by a later sweep of the same protocol when its pilots
would be the same, and every session stores its rule's chosen multiplier as ``calibrated_scale``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.lab.spec import RunSpec
from virtual_lab.protocol import Protocol
from virtual_lab.seeding import derive_seed, stable_hash

logger = logging.getLogger(__name__)

__all__ = ["CALIBRATION_NAME", "Calibration", "CandidateDistance", "RuleCalibration", "calibrate_from_curves",
           "calibrate_learning_rates", "choose_candidate", "curve_distance", "pilot_specs", "read_calibration"]

CALIBRATION_NAME = "calibration.json"
FORMAT = "virtual_lab learning-curve calibration 1"
METRIC = ("max(RMS over checkpoints of the difference of the pilots' mean probe-accuracy curves, RMS of the "
          "difference of their mean log10 training-loss curves)")


# ----------------------------------------------------------------------------------------------- distances


def _mean_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean log10 loss and accuracy curves over the networks that stayed finite, and how many diverged."""
    finite = [(np.log10(np.maximum(np.asarray(loss, float), 1e-12)), np.asarray(acc, float))
              for loss, acc in curves if np.isfinite(loss).all() and np.isfinite(acc).all()]
    if not finite:
        n_t = len(curves[0][0]) if curves else 0
        return np.full(n_t, np.nan), np.full(n_t, np.nan), len(curves)
    return (np.mean([c[0] for c in finite], axis=0), np.mean([c[1] for c in finite], axis=0),
            len(curves) - len(finite))


def curve_distance(curves: Sequence[tuple[np.ndarray, np.ndarray]],
                   reference: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """How far the mean learning curves of two groups of networks lie apart.

    Parameters
    ----------
    curves, reference : sequence of (train_loss, test_accuracy)
        One pair of arrays of shape (T,) per network (the checkpoints of the same schedule). Networks with a
        non-finite value (diverged) are left out of their group's mean.

    Returns
    -------
    accuracy_rms : float
        RMS over checkpoints of the difference of the mean accuracy curves.
    log_loss_rms : float
        The same for the mean log10 training-loss curves.
    distance : float
        ``max(accuracy_rms, log_loss_rms)``; ``inf`` when a group has no finite network.

    Examples
    --------
    >>> import numpy as np
    >>> a = [(np.array([1.0, 0.1]), np.array([0.1, 0.9]))]
    >>> b = [(np.array([1.0, 0.01]), np.array([0.1, 0.8]))]
    >>> [round(x, 4) for x in curve_distance(a, b)]
    [0.0707, 0.7071, 0.7071]
    """
    loss_a, acc_a, _ = _mean_curves(curves)
    loss_b, acc_b, _ = _mean_curves(reference)
    if len(loss_a) != len(loss_b):
        raise ValueError(f"curves of {len(loss_a)} and {len(loss_b)} checkpoints cannot be compared")
    if not (np.isfinite(loss_a).all() and np.isfinite(loss_b).all()):
        return math.inf, math.inf, math.inf
    accuracy_rms = float(np.sqrt(np.mean((acc_a - acc_b) ** 2)))
    log_loss_rms = float(np.sqrt(np.mean((loss_a - loss_b) ** 2)))
    return accuracy_rms, log_loss_rms, max(accuracy_rms, log_loss_rms)


def choose_candidate(candidates: Sequence[float], distances: Sequence[float]) -> int:
    """Index of the candidate with the smallest distance (ties: the multiplier closest to 1, then the first).

    Examples
    --------
    >>> choose_candidate([0.5, 1.0, 2.0], [0.3, 0.1, 0.1])
    1
    """
    if len(candidates) != len(distances) or not candidates:
        raise ValueError("need one distance per candidate, at least one candidate")
    return min(range(len(candidates)), key=lambda i: (distances[i], abs(math.log(candidates[i])), i))


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CandidateDistance:
    """One candidate multiplier of one rule: its pilots' mean curves and their distance to the reference's.

    Attributes
    ----------
    scale : float
    learning_rate : float
    accuracy_rms, log_loss_rms, distance : float
        See :func:`curve_distance` (``inf`` when every pilot diverged).
    n_diverged : int
        Pilots whose curves were not finite.
    accuracy, log10_loss : tuple of float
        The mean curves, one value per checkpoint.
    """

    scale: float
    learning_rate: float
    accuracy_rms: float
    log_loss_rms: float
    distance: float
    n_diverged: int
    accuracy: tuple = ()
    log10_loss: tuple = ()


@dataclass(frozen=True)
class RuleCalibration:
    """The calibration of one rule.

    Attributes
    ----------
    rule : str
    base_learning_rate : float
    candidates : tuple of CandidateDistance
        Every candidate tried (the reference rule: its base rate only, at distance 0).
    chosen_scale : float
        The multiplier of the closest candidate.
    distance : float
    tolerance_met : bool
    """

    rule: str
    base_learning_rate: float
    candidates: tuple
    chosen_scale: float
    distance: float
    tolerance_met: bool

    @property
    def chosen_learning_rate(self) -> float:
        return self.base_learning_rate * self.chosen_scale


@dataclass(frozen=True)
class Calibration:
    """Per-rule learning-rate multipliers that match every rule's learning curves to a reference rule's.

    Attributes
    ----------
    reference : str
    tolerance : float
    rules : dict of str to RuleCalibration
        Every rule of the sweep, the reference included.
    key : str
        Hash of the pilot run ids and the settings: a stored calibration is reused only for the same key.
    n_pilot_networks : int
    wall_s : float
        Seconds the pilots took to train (0 when reused).
    """

    reference: str
    tolerance: float
    rules: Mapping[str, RuleCalibration]
    key: str = ""
    n_pilot_networks: int = 0
    wall_s: float = 0.0

    @property
    def scales(self) -> dict[str, float]:
        """Rule -> chosen multiplier (what :func:`virtual_lab.sweeps.expand.expand_sweep` takes)."""
        return {rule: r.chosen_scale for rule, r in self.rules.items()}

    @property
    def tolerance_met(self) -> bool:
        return all(r.tolerance_met for r in self.rules.values())

    def warnings(self) -> list[str]:
        """One message per rule whose best candidate misses the tolerance."""
        messages = []
        for rule, result in self.rules.items():
            if result.tolerance_met:
                continue
            scales = [c.scale for c in result.candidates]
            edge = ""
            if result.chosen_scale in (min(scales), max(scales)):
                which = "smallest" if result.chosen_scale == min(scales) else "largest"
                edge = f"; it is the {which} candidate, so a closer one may lie beyond: widen the candidates"
            messages.append(
                f"match_curves: {rule}'s learning curves stay {result.distance:.3f} from {self.reference}'s at best "
                f"(multiplier {result.chosen_scale:g}x, learning rate {result.chosen_learning_rate:g}), above the "
                f"tolerance {self.tolerance:g}: its runs are not learning-curve matched{edge}")
        return messages

    def table_text(self) -> str:
        """A plain table: rule, chosen multiplier and rate, distance, tolerance met, distance per candidate."""
        lines = [f"learning-curve calibration to {self.reference} (tolerance {self.tolerance:g}; distance = "
                 f"max of RMS accuracy and RMS log10-loss differences)"]
        for rule, r in self.rules.items():
            tried = ", ".join(f"{c.scale:g}x {c.distance:.3f}" for c in r.candidates)
            lines.append(f"  {rule:24s} {r.chosen_scale:g}x (lr {r.chosen_learning_rate:.4g}) distance "
                         f"{r.distance:.3f} {'met' if r.tolerance_met else 'NOT met'}  [{tried}]")
        return "\n".join(lines)

    def to_json(self, protocol: Protocol | None = None) -> dict[str, Any]:
        """The calibration as JSON-ready data (``inf`` as ``null``)."""
        def number(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        match = protocol.sweep.match_curves if protocol is not None else None
        return {
            "format": FORMAT,
            "protocol": protocol.name if protocol is not None else "",
            "key": self.key,
            "reference": self.reference,
            "tolerance": self.tolerance,
            "metric": METRIC,
            "candidates": list(match.candidates) if match is not None else [],
            "n_pilots": match.n_pilots if match is not None else None,
            "pilot_epochs": _pilot_epochs(protocol) if protocol is not None else None,
            "n_pilot_networks": self.n_pilot_networks,
            "wall_s": round(self.wall_s, 3),
            "tolerance_met": self.tolerance_met,
            "warnings": self.warnings(),
            "rules": {rule: {
                "base_learning_rate": r.base_learning_rate,
                "chosen_scale": r.chosen_scale,
                "chosen_learning_rate": r.chosen_learning_rate,
                "distance": number(r.distance),
                "tolerance_met": r.tolerance_met,
                "candidates": [{"scale": c.scale, "learning_rate": c.learning_rate,
                                "accuracy_rms": number(c.accuracy_rms), "log_loss_rms": number(c.log_loss_rms),
                                "distance": number(c.distance), "n_diverged": c.n_diverged,
                                "accuracy": [number(v) for v in c.accuracy],
                                "log10_loss": [number(v) for v in c.log10_loss]} for c in r.candidates],
            } for rule, r in self.rules.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Calibration":
        """Inverse of :meth:`to_json`."""
        def number(x: Any) -> float:
            return math.inf if x is None else float(x)

        rules = {}
        for rule, r in data["rules"].items():
            candidates = tuple(CandidateDistance(
                float(c["scale"]), float(c["learning_rate"]), number(c["accuracy_rms"]), number(c["log_loss_rms"]),
                number(c["distance"]), int(c["n_diverged"]), tuple(number(v) for v in c["accuracy"]),
                tuple(number(v) for v in c["log10_loss"])) for c in r["candidates"])
            rules[rule] = RuleCalibration(rule, float(r["base_learning_rate"]), candidates, float(r["chosen_scale"]),
                                          number(r["distance"]), bool(r["tolerance_met"]))
        return cls(str(data["reference"]), float(data["tolerance"]), rules, str(data.get("key", "")),
                   int(data.get("n_pilot_networks", 0)), 0.0)


def calibrate_from_curves(reference: str, tolerance: float, base_learning_rates: Mapping[str, float],
                          reference_curves: Sequence[tuple[np.ndarray, np.ndarray]],
                          rule_curves: Mapping[str, Mapping[float, Sequence[tuple[np.ndarray, np.ndarray]]]]
                          ) -> Calibration:
    """Choose every rule's multiplier from its pilots' curves (no training).

    Parameters
    ----------
    reference : str
        The reference rule (its multiplier is 1).
    tolerance : float
    base_learning_rates : mapping of str to float
        Every rule's base rate, the reference's included.
    reference_curves : sequence of (train_loss, test_accuracy)
        The reference rule's pilots.
    rule_curves : mapping of str to (mapping of float to sequence of (train_loss, test_accuracy))
        For every other rule, its pilots at every candidate multiplier.

    Returns
    -------
    Calibration
        Rules in the order of ``base_learning_rates``.
    """
    ref_loss, ref_acc, ref_diverged = _mean_curves(reference_curves)
    if not np.isfinite(ref_loss).all():
        raise ValueError(f"match_curves: every pilot of the reference rule {reference} diverged; lower its "
                         f"learning rate or choose another reference")
    rules = {}
    for rule, base in base_learning_rates.items():
        if rule == reference:
            own = CandidateDistance(1.0, base, 0.0, 0.0, 0.0, ref_diverged, tuple(ref_acc), tuple(ref_loss))
            rules[rule] = RuleCalibration(rule, base, (own,), 1.0, 0.0, True)
            continue
        tried = []
        for scale, curves in rule_curves[rule].items():
            loss, acc, n_diverged = _mean_curves(curves)
            acc_rms, loss_rms, distance = curve_distance(curves, reference_curves)
            tried.append(CandidateDistance(float(scale), base * scale, acc_rms, loss_rms, distance, n_diverged,
                                           tuple(acc), tuple(loss)))
        best = tried[choose_candidate([c.scale for c in tried], [c.distance for c in tried])]
        rules[rule] = RuleCalibration(rule, base, tuple(tried), best.scale, best.distance,
                                      bool(best.distance <= tolerance))
    return Calibration(reference, float(tolerance), rules)


# ----------------------------------------------------------------------------------------------- pilots


def _pilot_epochs(protocol: Protocol) -> int:
    match = protocol.sweep.match_curves
    return match.pilot_epochs or protocol.training.n_epochs


def pilot_specs(protocol: Protocol, n_features: int, n_classes: int) -> list[tuple[str, float, RunSpec]]:
    """The pilot networks of a protocol's calibration: ``(rule, multiplier, spec)``.

    The reference rule trains ``n_pilots`` networks at its base rate; every other rule ``n_pilots`` per
    candidate. Pilots train the protocol's base configuration (``[task]``, ``[network]``, ``[training]``, each
    rule's default weight decay) for ``pilot_epochs`` epochs, whatever the sweep crosses or draws, with seeds
    ``derive_seed(protocol seed, "pilot", rule, candidate index, replicate)``, disjoint from the sweep's.

    Parameters
    ----------
    protocol : Protocol
        With ``[sweep.match_curves]``.
    n_features, n_classes : int
        Input and output sizes of ``[task].name``.

    Returns
    -------
    list of (str, float, RunSpec)
    """
    from virtual_lab.sweeps.expand import run_spec

    match = protocol.sweep.match_curves
    if match is None:
        raise ValueError(f"protocol {protocol.name!r} has no [sweep.match_curves]")
    network, training = protocol.network, protocol.training
    architecture, paradigm = network.architecture, training.paradigm
    n_outputs = n_classes if paradigm == "supervised" else network.projection_size
    sizes = (n_features, *network.hidden_sizes, n_outputs) if architecture == "mlp" else (n_features, n_outputs)
    out = []
    for rule in protocol.sweep.rules:
        options = [("reference", 1.0)] if rule == match.reference else list(enumerate(match.candidates))
        for index, scale in options:
            for replicate in range(match.n_pilots):
                spec = run_spec(protocol, rule, scale=float(scale), calibrated_scale=1.0,
                                seed=derive_seed(protocol.seed, "pilot", rule, index, replicate), sizes=sizes,
                                task=protocol.task.name, batch_size=training.batch_size, decay=None,
                                architecture=architecture, channels=network.channels_of(architecture),
                                paradigm=paradigm, n_epochs=_pilot_epochs(protocol))
                out.append((rule, float(scale), spec))
    return out


def _train_pilots(specs: Sequence[RunSpec], task_args: tuple, device: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train one population of pilots (in a worker) and keep only their curves."""
    import torch

    from virtual_lab.lab.engine import train_cohort
    from virtual_lab.sweeps.executors import TRAINING_THREADS
    from virtual_lab.sweeps.plan import load_task_cached

    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        results = train_cohort(list(specs), load_task_cached(*task_args), device=device)
    finally:
        torch.set_num_threads(threads)
    return [(np.asarray(gt.train_loss, float), np.asarray(gt.test_accuracy, float)) for gt in results]


def _run_pilots(protocol: Protocol, specs: Sequence[RunSpec], n_workers: int | None,
                progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves of every pilot, by run id: fixed populations, trained in this process or a local pool."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from virtual_lab.lab.spec import n_training_steps
    from virtual_lab.progress import progress_bar
    from virtual_lab.sweeps.executors import _worker_init
    from virtual_lab.sweeps.plan import load_task_cached, plan_populations

    task = protocol.task
    task_args = (task.name, task.n_probe, task.seed, task.root, task.download)
    n_train = len(load_task_cached(*task_args).train_y)
    populations = plan_populations(specs, protocol.training.population_size)
    steps = {p.population_id: sum(n_training_steps(n_train, s.batch_size, s.n_epochs) for s in p.specs)
             for p in populations}
    if n_workers is None:
        n_workers = min(os.cpu_count() or 1, len(populations))
        if n_workers <= 1 or protocol.training.device != "cpu":
            n_workers = 0
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with progress_bar(total=sum(steps.values()), desc="calibrating", unit="network-steps", enabled=progress) as bar:
        if n_workers == 0:
            for population in populations:
                curves.update(zip(population.run_ids, _train_pilots(population.specs, task_args,
                                                                     protocol.training.device)))
                bar.update(steps[population.population_id])
        else:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context(method),
                                     initializer=_worker_init) as pool:
                futures = {pool.submit(_train_pilots, p.specs, task_args, protocol.training.device): p
                           for p in populations}
                for future in as_completed(futures):
                    population = futures[future]
                    curves.update(zip(population.run_ids, future.result()))
                    bar.update(steps[population.population_id])
    return curves


def calibration_key(protocol: Protocol, specs: Sequence[RunSpec]) -> str:
    """Hash of what a calibration depends on: the pilots (their run ids) and the reference and tolerance."""
    match = protocol.sweep.match_curves
    return stable_hash(json.dumps({"pilots": [s.run_id for s in specs], "reference": match.reference,
                                   "tolerance": match.tolerance, "format": FORMAT}))


def read_calibration(path: str | os.PathLike) -> Calibration:
    """Read a ``calibration.json`` written by :func:`calibrate_learning_rates`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a calibration file of this version (format {data.get('format')!r})")
    return Calibration.from_json(data)


def calibrate_learning_rates(protocol: Protocol, *, n_workers: int | None = None, progress: bool = True,
                             root: str | os.PathLike | None = None) -> Calibration:
    """Calibrate every rule's learning rate so its learning curves match the reference rule's.

    Trains the pilots of :func:`pilot_specs`, measures :func:`curve_distance` of every rule and candidate to
    the reference rule, keeps per rule the closest candidate, logs a warning for every rule that misses the
    tolerance, and writes ``<root>/calibration.json``. A stored calibration of the same pilots and settings is
    read back instead of training again.

    Parameters
    ----------
    protocol : Protocol
        With ``[sweep.match_curves]``.
    n_workers : int, optional
        Worker processes for the pilots (default: one per core, at most one per pilot population; 0 = this
        process). Results do not depend on it.
    progress : bool, default=True
    root : path, optional
        Folder of ``calibration.json`` (default ``protocol.recordings_dir``).

    Returns
    -------
    Calibration
    """
    from virtual_lab.sweeps.plan import load_task_cached
    from virtual_lab.sweeps.storage import _write_json_atomic

    match = protocol.sweep.match_curves
    if match is None:
        raise ValueError(f"protocol {protocol.name!r} has no [sweep.match_curves]")
    root = Path(root) if root is not None else protocol.recordings_dir
    task = load_task_cached(protocol.task.name, protocol.task.n_probe, protocol.task.seed, protocol.task.root,
                            protocol.task.download)
    pilots = pilot_specs(protocol, task.n_features, task.n_classes)
    specs = [spec for _, _, spec in pilots]
    key = calibration_key(protocol, specs)
    path = root / CALIBRATION_NAME
    if path.is_file():
        try:
            stored = read_calibration(path)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("%s: unreadable (%s); calibrating again", path, error)
        else:
            if stored.key == key and set(stored.rules) == set(protocol.sweep.rules):
                logger.info("learning-curve calibration reused from %s", path)
                for message in stored.warnings():
                    logger.warning("protocol %s: %s", protocol.name, message)
                return stored
            logger.info("%s belongs to other pilots or settings; calibrating again", path)
    t0 = time.perf_counter()
    curves = _run_pilots(protocol, specs, n_workers, progress)
    wall_s = time.perf_counter() - t0
    reference_curves = [curves[spec.run_id] for rule, _, spec in pilots if rule == match.reference]
    rule_curves: dict[str, dict[float, list]] = {}
    for rule, scale, spec in pilots:
        if rule != match.reference:
            rule_curves.setdefault(rule, {}).setdefault(scale, []).append(curves[spec.run_id])
    bases = {rule: protocol.base_learning_rate(rule) for rule in protocol.sweep.rules}
    result = calibrate_from_curves(match.reference, match.tolerance, bases, reference_curves, rule_curves)
    result = Calibration(result.reference, result.tolerance, result.rules, key, len(specs), wall_s)
    root.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, result.to_json(protocol))
    logger.info("learning-curve calibration (%d pilot networks, %.0f s) written to %s\n%s", len(specs), wall_s,
                path, result.table_text())
    for message in result.warnings():
        logger.warning("protocol %s: %s", protocol.name, message)
    return result
