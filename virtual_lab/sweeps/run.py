"""Run a protocol's sweep: plan, scan what is on disk, train what is missing, record every outcome.

:func:`run_sweep` is the one entry point; how a sweep survives crashes is told in :mod:`virtual_lab.sweeps`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtual_lab.sweeps.executors import (EXECUTORS, PopulationTask, error_text, outcome, run_dask, run_in_process,
                                          run_local_pool)
from virtual_lab.sweeps.lock import sweep_lock
from virtual_lab.sweeps.plan import SweepPlan, architecture_of, plan_sweep
from virtual_lab.sweeps.storage import (LOG_NAME, MANIFEST_NAME, STAGING_NAME, EventLog, check_free_space,
                                        check_run_file, estimate_session_bytes, previous_runs, recover_staging,
                                        session_checksum, set_aside, write_manifest)
from virtual_lab.validation import check_choice, check_int

if TYPE_CHECKING:  # pragma: no cover
    from virtual_lab.protocol import Protocol

logger = logging.getLogger(__name__)

__all__ = ["SweepResult", "run_sweep"]


@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    plan : SweepPlan
    runs : dict of str to dict
        Per run id: ``run_id``, ``status`` (complete / diverged / failed / pending), ``error``, ``step``,
        ``rule``, ``architecture``, ``path``, ``population``.
    n_trained : int
        Sessions written by this call.
    n_reused : int
        Sessions found complete.
    n_recomputed : int
        Complete runs trained again (not rewritten) because their population was partly missing.
    problems : list of str
        Files found damaged, foreign or of another spec at session paths (retrained; set aside when
        complete).
    wall_s : float
    """

    plan: SweepPlan
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_trained: int = 0
    n_reused: int = 0
    n_recomputed: int = 0
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def _with(self, *statuses: str) -> list[dict[str, Any]]:
        return [r for r in self.runs.values() if r["status"] in statuses]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return self._with("failed", "pending")

    @property
    def diverged(self) -> list[dict[str, Any]]:
        return self._with("diverged")

    @property
    def ok(self) -> bool:
        """Every run of the plan has a session (diverged runs included)."""
        return not self.failed

    @property
    def session_paths(self) -> list[Path]:
        """Paths of every run with a session, in sweep order."""
        return [self.plan.paths[s.run_id] for s in self.plan.specs
                if self.runs[s.run_id]["status"] in ("complete", "diverged")]

    def summary_text(self) -> str:
        """A few lines: counts, then every failure (and divergence) with its error."""
        counts = Counter(r["status"] for r in self.runs.values())
        lines = [f"sweep {self.plan.protocol.name}: {len(self.runs)} runs in {self.plan.root}: "
                 f"{counts['complete']} complete, {counts['diverged']} diverged, "
                 f"{counts['failed'] + counts['pending']} failed ({self.n_trained} written now, "
                 f"{self.n_reused} reused) in {self.wall_s:.0f}s; manifest {self.plan.root / MANIFEST_NAME}"]
        for record in self.failed:
            lines.append(f"  FAILED   {record['run_id']} ({record['rule']}): {record['error'] or 'not run'}")
        for record in self.diverged[:20]:
            lines.append(f"  diverged {record['run_id']} ({record['rule']}) at step {record['step']}")
        if len(self.diverged) > 20:
            lines.append(f"  ... and {len(self.diverged) - 20} more diverged runs (see the manifest)")
        for problem in self.problems[:10]:
            lines.append(f"  replaced {problem}")
        return "\n".join(lines)




def run_sweep(protocol: "Protocol", *, executor: str = "local", scheduler: str | None = None,
              n_workers: int | None = None, progress: bool = True) -> SweepResult:
    """Train and record every run of a protocol's sweep that has no complete session; resume safely.

    Parameters
    ----------
    protocol : Protocol
    executor : {"local", "dask"}, default="local"
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); with ``executor="dask"`` and no
        address, a ``LocalCluster`` bound to 127.0.0.1 is started for the sweep.
    n_workers : int, optional
        Worker processes (local) or LocalCluster workers (dask); default: as many as cores, at most one
        per population. ``0`` (local only) trains in the calling process. Results do not depend on it.
    progress : bool, default=True
        A progress bar over runs with an ETA (only on a terminal).

    Returns
    -------
    SweepResult
        Failures are recorded there and in the manifest, never raised.

    Raises
    ------
    ValueError
        Unknown executor, bad ``n_workers``, ``scheduler`` without ``executor="dask"``.
    InsufficientDiskSpaceError
        The disk lacks room for the sessions to write (before anything is trained).
    SweepLockedError
        Another sweep is writing the same recordings folder (:mod:`virtual_lab.sweeps.lock`); nothing is
        touched.

    Notes
    -----
    The whole call holds the folder's exclusive lock (``<root>/.sweep.lock``, in this process: with the Dask
    executor too, whose workers write the sessions), so recovering a killed sweep's staging never races a
    live sweep. Every session committed gets its SHA-256 and size in the manifest (``sha256``, ``size``;
    sessions found complete keep those of the previous manifest, or are hashed when it has none), which
    ``virtual-lab status --verify`` checks.

    A protocol with ``[sweep.match_curves]`` first calibrates its learning rates on pilot networks (in local
    processes; :func:`virtual_lab.sweeps.calibrate.calibrate_learning_rates`), or reuses the calibration stored
    in the recordings folder.
    """
    _check_arguments(executor, scheduler, n_workers)
    with sweep_lock(protocol.recordings_dir):
        return _run_locked(protocol, executor=executor, scheduler=scheduler, n_workers=n_workers,
                           progress=progress)


def _run_locked(protocol: "Protocol", *, executor: str, scheduler: str | None, n_workers: int | None,
                progress: bool) -> SweepResult:
    """:func:`run_sweep` under the folder's lock."""
    t0 = time.perf_counter()
    calibration = None
    if protocol.sweep.match_curves is not None:  # pilots first (local processes whatever the executor)
        from virtual_lab.sweeps.calibrate import calibrate_learning_rates

        calibration = calibrate_learning_rates(protocol, n_workers=None if executor == "dask" else n_workers,
                                               progress=progress)
    plan = plan_sweep(protocol, calibration)
    root = plan.root
    root.mkdir(parents=True, exist_ok=True)
    recover_staging(root)
    result = SweepResult(plan, runs=_pending_records(plan))
    missing, sizes = _scan(result)
    tasks = _population_tasks(result, missing)
    n_to_write = sum(len(t.write_ids) for t in tasks)
    if n_to_write and protocol.storage.check_free_space:
        per_session = max(sizes) if sizes else max(
            estimate_session_bytes(s, protocol.storage.weights_dtype) for s in plan.specs)
        check_free_space(root, per_session * n_to_write, what=f"{n_to_write} sessions")

    log = EventLog(root / LOG_NAME)
    try:
        log.write("sweep_start", protocol=protocol.name, n_runs=len(plan.specs), n_reused=result.n_reused,
                  n_to_write=n_to_write, n_populations=len(tasks), executor=executor,
                  problems=result.problems)
        write_manifest(plan, result.runs, finished=not tasks)
        if tasks:
            _execute(result, tasks, log, executor=executor, scheduler=scheduler, n_workers=n_workers,
                     progress=progress)
        result.wall_s = time.perf_counter() - t0
        counts = Counter(r["status"] for r in result.runs.values())
        log.write("sweep_end", counts=dict(counts), n_trained=result.n_trained, wall_s=round(result.wall_s, 3))
        write_manifest(plan, result.runs, finished=True)
    finally:
        log.close()
        try:
            (root / STAGING_NAME).rmdir()  # only when empty: a concurrent sweep may still be staging
        except OSError:
            pass
    for record in result.failed:
        logger.error("run %s (%s) failed: %s", record["run_id"], record["rule"], record["error"] or "not run")
    return result


def _check_arguments(executor: str, scheduler: str | None, n_workers: int | None) -> None:
    check_choice("executor", executor, EXECUTORS)
    if scheduler and executor != "dask":
        raise ValueError(f"a scheduler address ({scheduler!r}) needs executor 'dask', got {executor!r}")
    if n_workers is not None:
        check_int("n_workers", n_workers, low=1 if executor == "dask" else 0)


def _pending_records(plan: SweepPlan) -> dict[str, dict[str, Any]]:
    """The manifest record of every run before anything is known about it."""
    population_of = plan.population_of()
    return {spec.run_id: {
        "run_id": spec.run_id, "status": "pending", "error": "", "step": -1, "rule": spec.rule,
        "architecture": architecture_of(spec), "path": plan.paths[spec.run_id].relative_to(plan.root).as_posix(),
        "population": population_of[spec.run_id].population_id, "sha256": "", "size": -1,
    } for spec in plan.specs}


def _scan(result: SweepResult) -> tuple[set[str], list[int]]:
    """Check every session path: record complete runs, set aside files of another spec or tool.

    Returns the run ids to (re)write and the sizes of the complete session files. A complete session keeps
    the checksum the previous manifest recorded for it (:func:`~virtual_lab.sweeps.storage.session_checksum`).
    """
    plan = result.plan
    missing: set[str] = set()
    sizes = []
    previous = previous_runs(plan.root)
    for spec in plan.specs:
        path = plan.paths[spec.run_id]
        check = check_run_file(path, spec)
        record = result.runs[spec.run_id]
        if check.state == "complete":
            record["status"] = "diverged" if check.diverged else "complete"
            if check.diverged:
                record.update(error=f"loss became NaN or inf at step {check.diverged_step}",
                              step=check.diverged_step)
            record.update(session_checksum(path, previous.get(record["path"]), spec.run_id))
            sizes.append(record["size"])
            continue
        missing.add(spec.run_id)
        if check.state in ("mismatch", "foreign"):
            aside = set_aside(path)
            message = f"{path}: {check.reason}; kept as {aside.name}"
            logger.warning("%s; retraining run %s", message, spec.run_id)
            result.problems.append(message)
        elif check.state == "damaged":
            message = f"{path}: {check.reason}"
            logger.warning("%s; retraining run %s", message, spec.run_id)
            result.problems.append(message)
    result.n_reused = len(plan.specs) - len(missing)
    return missing, sizes


def _population_tasks(result: SweepResult, missing: set[str]) -> list[PopulationTask]:
    """A task for every population with a run to write (the whole population trains again)."""
    plan = result.plan
    protocol, root = plan.protocol, plan.root
    tasks = []
    for population in plan.populations:
        write_ids = tuple(r for r in population.run_ids if r in missing)
        if not write_ids:
            continue
        if len(write_ids) < len(population.specs):
            result.n_recomputed += len(population.specs) - len(write_ids)
            logger.warning("population %s is partly on disk: training all %d of its networks again to write "
                           "the %d missing session(s) bit-identically", population.population_id,
                           len(population.specs), len(write_ids))
        tasks.append(PopulationTask(
            population=population, write_ids=write_ids, root=str(root),
            relative_paths={s.run_id: plan.paths[s.run_id].relative_to(root).as_posix() for s in population.specs},
            protocol_name=protocol.name, weights_dtype=protocol.storage.weights_dtype,
            device=protocol.training.device, task_name=population.specs[0].task,
            n_probe=population.specs[0].n_probe, task_seed=population.specs[0].task_seed,
            task_root=protocol.task.root, task_download=protocol.task.download,
            attribution=protocol.storage.session_attribution()))
    return tasks


def _execute(result: SweepResult, tasks: list[PopulationTask], log: EventLog, *, executor: str,
             scheduler: str | None, n_workers: int | None, progress: bool) -> None:
    cores = os.cpu_count() or 1
    if n_workers is None:
        n_workers = min(cores, len(tasks))
        if executor == "local" and (n_workers <= 1 or tasks[0].device != "cpu"):
            n_workers = 0  # one population (or one GPU): no process start-up cost
    from virtual_lab.progress import progress_bar

    n_to_write = sum(len(t.write_ids) for t in tasks)
    steps = result.plan.steps
    population_steps = {t.population.population_id: sum(steps.get(s.run_id, 0) for s in t.population.specs)
                        for t in tasks}
    bar = progress_bar(total=sum(population_steps.values()), desc="training", unit="network-steps",
                       enabled=progress)
    bar.set_postfix_str(f"sessions written 0/{n_to_write}")
    for task in tasks:
        log.write("population_start", population=task.population.population_id, write=list(task.write_ids),
                  recompute=[r for r in task.population.run_ids if r not in task.write_ids])
    if executor == "dask":
        stream = run_dask(tasks, scheduler, max(1, n_workers))
    elif n_workers == 0:
        stream = run_in_process(tasks, bar.update)
    else:
        stream = run_local_pool(tasks, n_workers, bar.update)
    last_manifest = time.monotonic()
    n_failed = counted_steps = 0
    try:
        for task, outcomes in stream:
            n_failed += _record(result, task, outcomes, log)
            counted_steps += population_steps[task.population.population_id]
            if bar.n < counted_steps:  # dask reports no steps until a population ends; a dead worker's are lost
                bar.update(counted_steps - bar.n)
            bar.set_postfix_str(f"sessions written {result.n_trained}/{n_to_write}"
                                + (f", {n_failed} failed" if n_failed else ""))
            if time.monotonic() - last_manifest > 2.0:
                write_manifest(result.plan, result.runs, finished=False)
                last_manifest = time.monotonic()
    finally:
        bar.close()


def _record(result: SweepResult, task: PopulationTask, outcomes: list[dict[str, Any]] | BaseException,
            log: EventLog) -> int:
    """Enter a population's outcomes in the result and the event log; returns how many runs failed."""
    if isinstance(outcomes, BaseException):
        outcomes = [outcome(r, "failed", error=error_text(outcomes), stage="worker") for r in task.write_ids]
    n_failed = 0
    for item in outcomes:
        record = result.runs[item["run_id"]]
        record.update(status=item["status"], error=item["error"], step=item["step"])
        if "sha256" in item:
            record.update(sha256=item["sha256"], size=item["size"])
        if item["status"] != "failed":
            result.n_trained += 1
        else:
            n_failed += 1
        log.write("run", **item, population=task.population.population_id, rule=record["rule"],
                  architecture=record["architecture"], path=record["path"])
    return n_failed
