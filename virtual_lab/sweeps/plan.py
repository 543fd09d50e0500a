"""A sweep's plan: every run, its session path, its fixed population (no training, no file access)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from virtual_lab.seeding import stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from virtual_lab.lab.spec import RunSpec
    from virtual_lab.protocol import Protocol

logger = logging.getLogger(__name__)

__all__ = ["Population", "SweepPlan", "plan_populations", "plan_sweep"]


@dataclass(frozen=True)
class Population:
    """A fixed group of runs trained together in one batched computation.

    Attributes
    ----------
    population_id : str
        Hash of the member run ids (stable across executors and resumptions).
    specs : tuple of RunSpec
        Members, in sweep order.
    """

    population_id: str
    specs: tuple

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(s.run_id for s in self.specs)


def plan_populations(specs: Sequence["RunSpec"], population_size: int) -> list[Population]:
    """Cut a sweep into fixed populations.

    Each cohort (equal :attr:`RunSpec.cohort_key`) of ``n`` runs is split, in sweep order, into
    ``ceil(n / population_size)`` contiguous populations whose sizes differ by at most one.

    Parameters
    ----------
    specs : sequence of RunSpec
        The whole sweep (never only the missing runs: membership must not depend on what is on disk).
    population_size : int
        Most networks per population, >= 1.

    Returns
    -------
    list of Population

    Examples
    --------
    >>> from virtual_lab.lab.spec import RunSpec
    >>> specs = [RunSpec("sgdm", 0.1, 8, 1, seed) for seed in range(10)]
    >>> [len(p.specs) for p in plan_populations(specs, 4)]
    [4, 3, 3]
    """
    from virtual_lab.sweeps.expand import group_cohorts

    if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 1:
        raise ValueError(f"population_size must be an integer >= 1, got {population_size!r}")
    populations = []
    for cohort in group_cohorts(specs):
        n_parts = math.ceil(len(cohort) / population_size)
        base, extra = divmod(len(cohort), n_parts)
        start = 0
        for part in range(n_parts):
            size = base + (1 if part < extra else 0)
            members = tuple(cohort[start:start + size])
            start += size
            populations.append(Population(stable_hash("\n".join(s.run_id for s in members)), members))
    return populations


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a protocol's sweep, its session path and its population.

    Attributes
    ----------
    protocol : Protocol
    root : Path
        The recordings folder (``protocol.recordings_dir``).
    specs : tuple of RunSpec
        In sweep order.
    populations : tuple of Population
    paths : dict of str to Path
        Session path of every run id.
    caveats : tuple of str
        What the plan cannot deliver as the protocol may expect (e.g. information-alignment runs shorter than
        the time constant of their feedback matrices); logged as warnings and repeated in the report.
    steps : dict of str to int
        Training steps of every run id (what the progress bar counts, per network).
    calibration : Calibration or None
        The learning-curve calibration the rates come from (``[sweep.match_curves]``;
        :mod:`virtual_lab.sweeps.calibrate`).
    """

    protocol: Any
    root: Path
    specs: tuple
    populations: tuple
    paths: Mapping[str, Path]
    caveats: tuple = ()
    steps: Mapping[str, int] = field(default_factory=dict)
    calibration: Any = None

    def population_of(self) -> dict[str, Population]:
        return {run_id: pop for pop in self.populations for run_id in pop.run_ids}


def plan_sweep(protocol: "Protocol", calibration: Any = None) -> SweepPlan:
    """Expand a protocol's sweep and cut it into populations (no training, no file access).

    Parameters
    ----------
    protocol : Protocol
    calibration : Calibration, optional
        Required when the protocol matches learning curves (``[sweep.match_curves]``): the result of
        :func:`virtual_lab.sweeps.calibrate.calibrate_learning_rates`, whose per-rule multipliers the rates
        take and whose warnings join the caveats.

    Returns
    -------
    SweepPlan

    Raises
    ------
    ValueError
        The sweep holds identical runs, or it matches learning curves and ``calibration`` is missing.
    """
    from virtual_lab.lab.spec import n_training_steps
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, sanitize_id, session_path
    from virtual_lab.sweeps.expand import expand_sweep, short_feedback_warnings

    task = load_task_cached(protocol.task.name, protocol.task.n_probe, protocol.task.seed, protocol.task.root,
                            protocol.task.download)
    specs = tuple(expand_sweep(protocol, task.n_features, task.n_classes,
                               calibration.scales if calibration is not None else None))

    def steps_of(spec) -> int:
        run_task = load_task_cached(spec.task, spec.n_probe, spec.task_seed, protocol.task.root,
                                    protocol.task.download)
        return n_training_steps(len(run_task.train_y), spec.batch_size, spec.n_epochs)

    steps = {s.run_id: steps_of(s) for s in specs}
    caveats = tuple(short_feedback_warnings(specs, lambda spec: steps[spec.run_id]))
    for message in caveats:
        logger.warning("protocol %s: %s", protocol.name, message)
    if calibration is not None:  # its warnings were logged when it was made
        caveats += tuple(calibration.warnings())
    root = protocol.recordings_dir
    paths = {s.run_id: session_path(root, sanitize_id(s.run_id), GROUND_TRUTH_SESSION_ID) for s in specs}
    if len(paths) != len(specs):
        counts = Counter(s.run_id for s in specs)
        twice = [run_id for run_id, n in counts.items() if n > 1]
        raise ValueError(f"the sweep of protocol {protocol.name!r} holds identical runs (run ids {twice[:3]}); "
                         f"make sweep values unique")
    populations = tuple(plan_populations(specs, protocol.training.population_size))
    return SweepPlan(protocol, root, specs, populations, paths, caveats, steps, calibration)


@lru_cache(maxsize=4)
def load_task_cached(name: str, n_probe: int, seed: int, root: str = "", download: bool = False):
    """:func:`virtual_lab.lab.tasks.load_task`, remembered for the last few tasks (planning and workers)."""
    from virtual_lab.lab.tasks import load_task

    return load_task(name, n_probe=n_probe, seed=seed, root=root or None, download=download)


def architecture_of(spec: "RunSpec") -> str:
    """A run's architecture name (``"mlp"`` for specs without one)."""
    return str(getattr(spec, "architecture", "mlp"))
