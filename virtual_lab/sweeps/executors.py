"""Where populations train: one population in a worker (:func:`run_population`), and three executors.

An executor takes the :class:`PopulationTask` list of a sweep and yields ``(task, outcomes)`` as populations
finish, ``outcomes`` being the worker's list of per-run dicts or the exception that lost the population (a
dead worker process, a Dask ``KilledWorker``). ``run_in_process`` trains in the calling process,
``run_local_pool`` in ``n_workers`` local processes (one torch thread each, a shared step counter for the
progress bar), ``run_dask`` on a :mod:`dask.distributed` cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from virtual_lab.sweeps.plan import Population, load_task_cached
from virtual_lab.sweeps.storage import commit_staged, new_staging_folder, spec_metadata

if TYPE_CHECKING:  # pragma: no cover
    from virtual_lab.lab.spec import RunSpec

logger = logging.getLogger(__name__)

__all__ = ["EXECUTORS", "PopulationTask", "expected_metadata", "run_population"]

EXECUTORS = ("local", "dask")
#: Torch intra-op threads per training process: fixed, so that results do not depend on the machine.
TRAINING_THREADS = 1

#: An executor's stream: each task with its outcomes, or the exception that lost it.
Outcomes = Iterator[tuple["PopulationTask", "list[dict[str, Any]] | BaseException"]]


@dataclass(frozen=True)
class PopulationTask:
    """Everything a worker needs to train one population and write its sessions (picklable).

    Attributes
    ----------
    population : Population
    write_ids : tuple of str
        Run ids whose sessions are to be written (the others are complete on disk).
    root : str
        Recordings folder.
    relative_paths : dict of str to str
        Session path of each member, relative to ``root``.
    protocol_name, weights_dtype, device : str
    task_name : str
    n_probe, task_seed : int
    task_root : str
        Folder of the torchvision datasets ("" = the default).
    task_download : bool
    attribution : dict
        Experimenter, institution and lab written into every session (``[storage]``; not part of run ids).
    """

    population: Population
    write_ids: tuple
    root: str
    relative_paths: Mapping[str, str]
    protocol_name: str
    weights_dtype: str
    device: str
    task_name: str
    n_probe: int
    task_seed: int
    task_root: str = ""
    task_download: bool = False
    attribution: Mapping[str, Any] = field(default_factory=dict)


def expected_metadata(spec: "RunSpec", population: Population) -> dict[str, Any]:
    """Metadata the sweep adds to every session it writes (spec and population provenance, and the spec's
    descriptive fields under their own names: ``learning_rate_scale``, ``calibrated_scale``)."""
    return {
        **spec_metadata(spec),
        **{name: getattr(spec, name) for name in getattr(spec, "DESCRIPTIVE_FIELDS", ())},
        "population_id": population.population_id,
        "population_size": len(population.specs),
        "torch_threads": TRAINING_THREADS,
    }


def outcome(run_id: str, status: str, *, error: str = "", step: int = -1, stage: str = "",
            checksum: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One run's outcome as a worker reports it (``status`` complete / diverged / failed).

    ``checksum`` (``sha256`` and ``size`` of the session file written, :func:`virtual_lab.sessions.checksum.
    file_checksum`) is merged in for a run whose session was written.
    """
    return {"run_id": run_id, "status": status, "error": error, "step": int(step), "stage": stage,
            **(dict(checksum) if checksum else {})}


def error_text(error: BaseException) -> str:
    """``"Type: first line of the message"`` (what the manifest records)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_population(task: PopulationTask, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Train one population, write the sessions of ``task.write_ids`` and commit them (worker side).

    Never raises for a failure of training or writing: every run to write gets an outcome dict
    (``run_id``, ``status`` complete/diverged/failed, ``error``, ``step``, ``stage``).

    Parameters
    ----------
    task : PopulationTask
    progress : callable, optional
        Called with the number of network-steps trained since the last call (in a pool worker, the
        parent's shared step counter by default).

    Returns
    -------
    list of dict
        One outcome per run id of ``task.write_ids``.
    """
    import torch

    from virtual_lab.lab.engine import train_cohort

    population = task.population
    if progress is None and _STEP_COUNTER is not None:
        progress = _count_steps
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        lab_task = load_task_cached(task.task_name, task.n_probe, task.task_seed, task.task_root,
                                    task.task_download)
        results = train_cohort(list(population.specs), lab_task, device=task.device, progress=progress)
    except Exception as error:  # noqa: BLE001 - recorded in the manifest, the sweep goes on
        logger.error("population %s failed to train: %s", population.population_id, error_text(error))
        write = set(task.write_ids)
        return [outcome(run_id, "failed", error=error_text(error), stage="train")
                for run_id in population.run_ids if run_id in write]
    finally:
        torch.set_num_threads(threads)
    staging = new_staging_folder(task.root, population.population_id)
    outcomes, moves = _write_staged(task, results, staging)
    try:
        commit_staged(task.root, staging, moves)
    except Exception as error:  # noqa: BLE001 - e.g. disk full while committing
        logger.error("population %s: committing its sessions failed: %s", population.population_id,
                     error_text(error))
        root = Path(task.root)
        done = {s.run_id for s in population.specs if (root / task.relative_paths[s.run_id]).is_file()}
        outcomes = [o if o["run_id"] in done or o["status"] == "failed"
                    else outcome(o["run_id"], "failed", error=error_text(error), stage="commit")
                    for o in outcomes]
    return outcomes


def _write_staged(task: PopulationTask, results: list, staging: Path
                  ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Write the sessions of ``task.write_ids`` into ``staging``: their outcomes (with the SHA-256 and size of
    each file written, taken before the commit renames it) and the moves to commit."""
    from virtual_lab.sessions import write_session
    from virtual_lab.sessions.checksum import file_checksum

    population = task.population
    write = set(task.write_ids)
    outcomes, moves = [], []
    for index, spec in enumerate(population.specs):
        gt, results[index] = results[index], None  # drop each ground truth once written
        if spec.run_id not in write:
            continue
        staged_name = Path(task.relative_paths[spec.run_id]).name
        try:
            extra = expected_metadata(spec, population)
            extra["weights_dtype"] = task.weights_dtype
            gt = dataclasses.replace(gt, metadata={**gt.metadata, **extra})
            write_session(gt, staging / staged_name, protocol_name=task.protocol_name,
                          weights_dtype=task.weights_dtype, **task.attribution)
            checksum = file_checksum(staging / staged_name)
        except Exception as error:  # noqa: BLE001
            logger.error("run %s: writing its session failed: %s", spec.run_id, error_text(error))
            outcomes.append(outcome(spec.run_id, "failed", error=error_text(error), stage="write"))
            continue
        moves.append((staged_name, task.relative_paths[spec.run_id]))
        if gt.diverged:
            step = int(gt.metadata.get("diverged_step", -1))
            outcomes.append(outcome(spec.run_id, "diverged", error=f"loss became NaN or inf at step {step}",
                                    step=step, stage="train", checksum=checksum))
        else:
            outcomes.append(outcome(spec.run_id, "complete", checksum=checksum))
    return outcomes, moves


# ----------------------------------------------------------------------------------------------- worker


#: In a pool worker: the parent's shared count of network-steps trained (the progress bar reads it).
_STEP_COUNTER: Any = None


def _count_steps(n: int) -> None:
    with _STEP_COUNTER.get_lock():
        _STEP_COUNTER.value += n


def _worker_init(step_counter: Any = None) -> None:
    """Process-pool initializer: one torch thread, a step counter, and exit when the parent dies."""
    import multiprocessing
    import threading

    import torch

    global _STEP_COUNTER
    _STEP_COUNTER = step_counter
    torch.set_num_threads(TRAINING_THREADS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        def watch() -> None:
            parent.join()
            os._exit(70)

        threading.Thread(target=watch, name="virtual-lab-parent-watch", daemon=True).start()


# ----------------------------------------------------------------------------------------------- executors


def run_in_process(tasks: Sequence[PopulationTask], step_progress: Callable[[int], None] | None) -> Outcomes:
    """Populations one after another in the calling process."""
    for task in tasks:
        yield task, run_population(task, progress=step_progress)


def run_local_pool(tasks: Sequence[PopulationTask], n_workers: int,
                   step_progress: Callable[[int], None] | None = None) -> Outcomes:
    """Populations in worker processes; ``step_progress`` gets the network-steps trained, about twice a second."""
    import multiprocessing
    import sys
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork on Linux: scripts and notebooks need no `if __name__ == "__main__":` guard (spawn re-imports an
    # unguarded script in every worker); workers run torch with one thread, as DataLoader workers do.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    counter = context.Value("q", 0)
    reported = 0

    def report() -> None:
        nonlocal reported
        if step_progress is not None and counter.value > reported:
            now = counter.value
            step_progress(now - reported)
            reported = now

    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=_worker_init,
                             initargs=(counter,)) as pool:
        pending = {pool.submit(run_population, task): task for task in tasks}
        try:
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                report()
                for future in done:
                    task = pending.pop(future)
                    try:
                        yield task, future.result()
                    except Exception as error:  # noqa: BLE001 - e.g. a worker process died
                        yield task, error
        finally:
            for future in pending:
                future.cancel()


def run_dask(tasks: Sequence[PopulationTask], scheduler: str | None, n_workers: int) -> Outcomes:
    """Populations on a Dask cluster: the one at ``scheduler``, or a ``LocalCluster`` on 127.0.0.1."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError("the 'dask' executor needs dask.distributed: pip install 'virtual_lab[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
        client = Client(cluster)
    try:
        token = uuid.uuid4().hex[:8]
        futures = {client.submit(run_population, task, key=f"virtual-lab-{task.population.population_id}-{token}",
                                 pure=False): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                yield task, future.result()
            except Exception as error:  # noqa: BLE001 - e.g. KilledWorker
                yield task, error
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
