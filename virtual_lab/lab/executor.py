"""Sweeps that survive crashes: fixed populations, staged commits, a manifest, local processes or Dask.

How a sweep runs
----------------
1. **Plan.** The protocol's sweep is expanded into run specs (:func:`virtual_lab.lab.sweep.expand_sweep`) and
   every cohort (runs that can share a batched population) is cut, in sweep order, into the fewest
   near-equal *populations* of at most ``training.population_size`` networks (:func:`plan_populations`).
   Population membership depends on the sweep alone, never on which runs are missing, so a resumed or
   distributed sweep trains every network in the same population, with the same number of threads (one),
   as an uninterrupted local sweep, and writes byte-identical sessions. (The batched engine equals
   one-at-a-time training only within float tolerance when the population differs.)
2. **Scan.** Every expected session file is checked with h5py (:func:`check_run_file`): complete and of
   the expected spec (run id and every resolved field stored in the file) -> reused; missing, truncated,
   unreadable or incomplete -> retrained; complete but of another spec, or a foreign NWB file at that
   path -> moved aside to ``<name>.mismatched-N`` (reported) and retrained, never silently overwritten.
3. **Train and commit.** A population with any run to (re)write is trained as a whole; its sessions are
   written into a private staging folder ``<root>/.staging/<population>-<token>/``; when all are written
   and fsynced a ``COMMIT`` list is written atomically and the files are renamed into place. At the next
   start, staging folders with a ``COMMIT`` are rolled forward and others deleted. Hence the sessions of a
   population appear together or not at all: a sweep killed at any moment (SIGKILL included) resumes
   without ever training a completed run again, and never leaves a file under a final name that fails
   to read. (A population that is only partly on disk for another reason - a run that failed to write, a
   deleted file - is retrained as a whole and only its missing sessions are written, to stay
   bit-identical; the log says so.)
4. **Record.** ``<root>/sweep_manifest.json`` (rewritten atomically) holds every run of the plan with its
   status (``complete``, ``diverged``, ``failed``, ``pending``), error, step, rule, architecture and path;
   ``<root>/sweep_log.jsonl`` is an append-only, fsynced event log (sweep and population starts, every
   run outcome). A failing population is recorded and the sweep goes on.

Executors: ``"local"`` (``n_workers`` spawned processes, one torch thread each; ``0`` trains in the calling
process) and ``"dask"`` (:mod:`dask.distributed`; a scheduler address, or a ``LocalCluster`` bound to
127.0.0.1). Dask workers write the sessions themselves, so the recordings folder must be on a filesystem
every worker sees (the usual shared home or scratch of a cluster).

Running on SLURM (dask-jobqueue)
--------------------------------
Install ``virtual_lab[dask]`` and ``dask-jobqueue`` in an environment every node sees, start a cluster
whose workers run one thread each, and point the sweep at its scheduler::

    # cluster.py - keep it running (e.g. in tmux on the login node)
    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="04:00:00",
                           job_extra_directives=["--partition=cpu"])
    cluster.adapt(minimum_jobs=1, maximum_jobs=20)
    print(cluster.scheduler_address)   # e.g. tcp://10.1.2.3:8786
    input("press enter to stop")

    virtual-lab run study.toml --output-dir /shared/scratch/recordings \
        --executor dask --scheduler tcp://10.1.2.3:8786

``processes=cores`` gives one single-threaded worker process per core (training sets one torch thread
anyway). A node that dies or a job that hits its wall time loses only its populations in flight: Dask
reschedules them, and a sweep killed as a whole resumes with the same command. ``virtual-lab status
/shared/scratch/recordings/study`` tells how far it got.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from virtual_lab.seeding import stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from virtual_lab.lab.train import RunSpec
    from virtual_lab.protocol import Protocol

logger = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "InsufficientDiskSpaceError",
    "Population",
    "PopulationTask",
    "RunFileCheck",
    "SweepPlan",
    "SweepResult",
    "SweepStatus",
    "check_free_space",
    "check_run_file",
    "estimate_session_bytes",
    "plan_populations",
    "plan_sweep",
    "read_log",
    "recover_staging",
    "run_population",
    "run_sweep",
    "spec_mismatches",
    "sweep_status",
]

EXECUTORS = ("local", "dask")
MANIFEST_NAME = "sweep_manifest.json"
LOG_NAME = "sweep_log.jsonl"
STAGING_NAME = ".staging"
COMMIT_NAME = "COMMIT"
#: Torch intra-op threads per training process: fixed, so that results do not depend on the machine.
TRAINING_THREADS = 1
#: Bytes every session file carries besides its arrays (cached NWB schema, metadata tables).
SESSION_OVERHEAD_BYTES = 450_000


class InsufficientDiskSpaceError(OSError):
    """The recordings folder's disk lacks room for the sessions a sweep is about to write."""


# ----------------------------------------------------------------------------------------------- plan


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
    >>> from virtual_lab.lab.train import RunSpec
    >>> specs = [RunSpec("sgdm", 0.1, 8, 1, seed) for seed in range(10)]
    >>> [len(p.specs) for p in plan_populations(specs, 4)]
    [4, 3, 3]
    """
    from virtual_lab.lab.sweep import group_cohorts

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
    """

    protocol: Any
    root: Path
    specs: tuple
    populations: tuple
    paths: Mapping[str, Path]
    caveats: tuple = ()
    steps: Mapping[str, int] = field(default_factory=dict)

    def population_of(self) -> dict[str, Population]:
        return {run_id: pop for pop in self.populations for run_id in pop.run_ids}


def plan_sweep(protocol: "Protocol") -> SweepPlan:
    """Expand a protocol's sweep and cut it into populations (no training, no file access)."""
    from virtual_lab.lab.sweep import expand_sweep, short_feedback_warnings
    from virtual_lab.lab.train import n_training_steps
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, sanitize_id, session_path

    task = _load_task(protocol.task.name, protocol.task.n_probe, protocol.task.seed, protocol.task.root,
                      protocol.task.download)
    specs = tuple(expand_sweep(protocol, task.n_features, task.n_classes))

    def steps_of(spec) -> int:
        run_task = _load_task(spec.task, spec.n_probe, spec.task_seed, protocol.task.root, protocol.task.download)
        return n_training_steps(len(run_task.train_y), spec.batch_size, spec.n_epochs)

    steps = {s.run_id: steps_of(s) for s in specs}
    caveats = tuple(short_feedback_warnings(specs, lambda spec: steps[spec.run_id]))
    for message in caveats:
        logger.warning("protocol %s: %s", protocol.name, message)
    root = protocol.recordings_dir
    paths = {s.run_id: session_path(root, sanitize_id(s.run_id), GROUND_TRUTH_SESSION_ID) for s in specs}
    if len(paths) != len(specs):
        counts = Counter(s.run_id for s in specs)
        twice = [run_id for run_id, n in counts.items() if n > 1]
        raise ValueError(f"the sweep of protocol {protocol.name!r} holds identical runs (run ids {twice[:3]}); "
                         f"make sweep values unique")
    populations = tuple(plan_populations(specs, protocol.training.population_size))
    return SweepPlan(protocol, root, specs, populations, paths, caveats, steps)


@lru_cache(maxsize=4)
def _load_task(name: str, n_probe: int, seed: int, root: str = "", download: bool = False):
    from virtual_lab.lab.tasks import load_task

    return load_task(name, n_probe=n_probe, seed=seed, root=root or None, download=download)


def _architecture(spec: "RunSpec") -> str:
    return str(getattr(spec, "architecture", "mlp"))


# ----------------------------------------------------------------------------------------------- spec check


SPEC_PREFIX = "spec_"


def _encode_spec_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def spec_metadata(spec: "RunSpec") -> dict[str, Any]:
    """The resolved spec as metadata entries ``spec_<field>`` (sequences as comma-separated text).

    Stored in every session a sweep writes, so a later sweep can tell whether a file holds exactly the run
    it expects. (One entry per field rather than one JSON text: nwbinspector flags JSON objects in tables.)
    """
    fields = dataclasses.asdict(spec)
    fields.pop("protocol", None)
    return {SPEC_PREFIX + key: _encode_spec_value(value) for key, value in sorted(fields.items())}


def expected_metadata(spec: "RunSpec", population: Population) -> dict[str, Any]:
    """Metadata the sweep adds to every session it writes (spec and population provenance)."""
    return {
        **spec_metadata(spec),
        "population_id": population.population_id,
        "population_size": len(population.specs),
        "torch_threads": TRAINING_THREADS,
    }


def spec_mismatches(spec: "RunSpec", metadata: Mapping[str, Any]) -> list[str]:
    """How a session's stored metadata differs from the spec a sweep expects at its path.

    Parameters
    ----------
    spec : RunSpec
    metadata : mapping
        As stored in the session (:func:`virtual_lab.sessions.read_session_metadata`).

    Returns
    -------
    list of str
        One ``"field: stored X, expected Y"`` per difference; empty when the file holds this run.
        A field the file does not store (written before the field existed) counts only when the spec
        differs from the field's default.
    """
    problems = []
    if str(metadata.get("run_id", "")) != spec.run_id:
        problems.append(f"run_id: stored {metadata.get('run_id')!r}, expected {spec.run_id!r}")
    has_spec = any(str(key).startswith(SPEC_PREFIX) for key in metadata)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for key, value in spec_metadata(spec).items():
        name = key[len(SPEC_PREFIX):]
        # files written before the spec was stored: compare the plain fields the training table has
        stored_key = key if has_spec else name
        if stored_key not in metadata:
            default = defaults.get(name, dataclasses.MISSING)
            if has_spec and (default is dataclasses.MISSING or _encode_spec_value(default) != value):
                problems.append(f"{name}: not stored, expected {value!r}")
            continue
        stored = metadata[stored_key]
        if stored != value:
            problems.append(f"{name}: stored {stored!r}, expected {value!r}")
    return problems


@dataclass(frozen=True)
class RunFileCheck:
    """What is at a run's session path.

    Attributes
    ----------
    state : str
        ``"complete"`` (this run, readable), ``"missing"``, ``"damaged"`` (truncated, unreadable, not HDF5,
        incomplete), ``"mismatch"`` (a complete virtual_lab session of another spec) or ``"foreign"``
        (HDF5/NWB written by something else).
    reason : str
    diverged : bool
    diverged_step : int
    """

    state: str
    reason: str = ""
    diverged: bool = False
    diverged_step: int = -1


def check_run_file(path: str | os.PathLike, spec: "RunSpec") -> RunFileCheck:
    """Check the session file of one run (h5py only, a few ms; never raises)."""
    from virtual_lab.sessions import describe_session_file

    kind, reason, metadata = describe_session_file(path)
    if kind == "missing":
        return RunFileCheck("missing")
    if kind == "foreign":
        return RunFileCheck("foreign", reason)
    if kind != "complete":
        return RunFileCheck("damaged", reason)
    problems = spec_mismatches(spec, metadata)
    if problems:
        return RunFileCheck("mismatch", "session of a different spec: " + "; ".join(problems[:4]))
    step = int(metadata.get("diverged_step", -1))
    return RunFileCheck("complete", "", bool(metadata.get("diverged", False)), step)


def _set_aside(path: Path) -> Path:
    """Rename a file that must not be overwritten to ``<name>.mismatched-N`` (not ``*.nwb``: sweeps skip it)."""
    n = 1
    while True:
        target = path.with_name(f"{path.name}.mismatched-{n}")
        if not target.exists():
            os.replace(path, target)
            return target
        n += 1


# ----------------------------------------------------------------------------------------------- disk


def estimate_session_bytes(spec: "RunSpec", weights_dtype: str = "float32") -> int:
    """Upper estimate of one session file's size in bytes (arrays uncompressed + fixed overhead).

    Weights are stored ``(T, out, in)`` and barely compress; activations ``(T * S, units)`` float32.
    """
    sizes = tuple(spec.layer_sizes)
    n_t, n_s = int(spec.n_checkpoints), int(spec.n_probe)
    if spec.architecture == "mlp":
        units = sum(sizes[1:])
        synapses = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        n_layers = len(sizes) - 1
    else:
        from virtual_lab.lab.conv import conv_input_shape, conv_layers
        from virtual_lab.lab.tasks import task_image_shape

        layers = conv_layers(spec.architecture, spec.channels, conv_input_shape(task_image_shape(spec.task)),
                             sizes[-1])
        units = sum(layer.n_units for layer in layers)
        synapses = sum(math.prod(layer.weight_shape) for layer in layers)
        n_layers = len(layers)
    weight_bytes = 2 if weights_dtype == "float16" else 4
    raw = (n_t * n_s * units * 4 + n_t * synapses * weight_bytes + n_t * n_s * n_layers * 4
           + n_t * n_s * 6 * 8 + n_s * sizes[0] * 4 + units * 48)
    return int(raw) + SESSION_OVERHEAD_BYTES


def check_free_space(folder: str | os.PathLike, n_bytes: int, *, what: str = "the sweep") -> int:
    """Raise :class:`InsufficientDiskSpaceError` unless ``folder``'s disk has ``n_bytes`` free (+ 5%, +50 MB).

    Returns
    -------
    int
        Free bytes.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = int(n_bytes * 1.05) + 50 * 2**20
    if free < needed:
        raise InsufficientDiskSpaceError(
            f"not enough free disk space for {what} in {folder}: it needs about {_gb(needed)} and "
            f"{_gb(free)} is free (free some space, choose another --output-dir, store weights as float16 "
            f"with [storage] weights_dtype = \"float16\", or record fewer checkpoints)")
    return free


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


# ----------------------------------------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    from virtual_lab.sessions import _fsync_dir as fsync_dir

    fsync_dir(path)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _EventLog:
    """Append-only JSON-lines log, flushed and fsynced per event (a killed sweep loses at most a line)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), "pid": os.getpid(), **fields}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Events of a ``sweep_log.jsonl``; a torn last line (killed mid-write) is skipped."""
    events = []
    path = Path(path)
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def recover_staging(root: str | os.PathLike) -> tuple[int, int]:
    """Finish or discard the staged writes a killed sweep left in ``<root>/.staging``.

    A staging folder with a ``COMMIT`` list was complete: its remaining files are renamed into place.
    Any other staging folder is deleted (its population is trained again).

    Returns
    -------
    n_committed, n_discarded : int
        Sessions moved into place, staging folders deleted.
    """
    staging = Path(root) / STAGING_NAME
    if not staging.is_dir():
        return 0, 0
    committed = discarded = 0
    for folder in sorted(staging.iterdir()):
        moves = None
        if folder.is_dir() and (folder / COMMIT_NAME).is_file():
            try:
                moves = json.loads((folder / COMMIT_NAME).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                moves = None
        if moves is not None:
            committed += _commit_moves(Path(root), folder, moves)
        else:
            discarded += 1
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)
    if committed or discarded:
        logger.warning("recovered an interrupted sweep in %s: %d staged session(s) committed, %d unfinished "
                       "population(s) discarded", root, committed, discarded)
    return committed, discarded


def _commit_moves(root: Path, folder: Path, moves: Sequence[Sequence[str]]) -> int:
    n = 0
    for staged_name, relative in moves:
        staged = folder / staged_name
        if not staged.is_file():
            continue  # already moved before the interruption
        final = root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        _fsync_dir(final.parent)
        n += 1
    return n


# ----------------------------------------------------------------------------------------------- worker


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


def _outcome(run_id: str, status: str, *, error: str = "", step: int = -1, stage: str = "") -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "error": error, "step": int(step), "stage": stage}


def _error_text(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_population(task: PopulationTask, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Train one population, write the sessions of ``task.write_ids`` and commit them (worker side).

    Never raises for a failure of training or writing: every run to write gets an outcome dict
    (``run_id``, ``status`` complete/diverged/failed, ``error``, ``step``, ``stage``).
    """
    import torch

    from virtual_lab.lab.engine import train_cohort
    from virtual_lab.sessions import write_session

    population = task.population
    write = set(task.write_ids)
    if progress is None and _STEP_COUNTER is not None:
        progress = _count_steps
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        lab_task = _load_task(task.task_name, task.n_probe, task.task_seed, task.task_root, task.task_download)
        results = train_cohort(list(population.specs), lab_task, device=task.device, progress=progress)
    except Exception as error:  # noqa: BLE001 - recorded in the manifest, the sweep goes on
        logger.error("population %s failed to train: %s", population.population_id, _error_text(error))
        return [_outcome(run_id, "failed", error=_error_text(error), stage="train")
                for run_id in population.run_ids if run_id in write]
    finally:
        torch.set_num_threads(threads)

    root = Path(task.root)
    staging = root / STAGING_NAME / f"{population.population_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
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
        except Exception as error:  # noqa: BLE001
            logger.error("run %s: writing its session failed: %s", spec.run_id, _error_text(error))
            outcomes.append(_outcome(spec.run_id, "failed", error=_error_text(error), stage="write"))
            continue
        moves.append((staged_name, task.relative_paths[spec.run_id]))
        if gt.diverged:
            step = int(gt.metadata.get("diverged_step", -1))
            outcomes.append(_outcome(spec.run_id, "diverged", error=f"loss became NaN or inf at step {step}",
                                     step=step, stage="train"))
        else:
            outcomes.append(_outcome(spec.run_id, "complete"))
    try:
        commit = staging / COMMIT_NAME
        tmp = staging / f".{COMMIT_NAME}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(moves, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, commit)
        _fsync_dir(staging)
        _commit_moves(root, staging, moves)
        shutil.rmtree(staging, ignore_errors=True)
    except Exception as error:  # noqa: BLE001 - e.g. disk full while committing
        logger.error("population %s: committing its sessions failed: %s", population.population_id,
                     _error_text(error))
        done = {r for r, rel in ((s.run_id, task.relative_paths[s.run_id]) for s in population.specs)
                if (root / rel).is_file()}
        outcomes = [o if o["run_id"] in done or o["status"] == "failed"
                    else _outcome(o["run_id"], "failed", error=_error_text(error), stage="commit")
                    for o in outcomes]
    return outcomes


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


def _run_in_process(tasks: Sequence[PopulationTask], step_progress: Callable[[int], None] | None
                    ) -> Iterator[tuple[PopulationTask, list[dict[str, Any]] | BaseException]]:
    for task in tasks:
        yield task, run_population(task, progress=step_progress)


def _run_local_pool(tasks: Sequence[PopulationTask], n_workers: int,
                    step_progress: Callable[[int], None] | None = None
                    ) -> Iterator[tuple[PopulationTask, list[dict[str, Any]] | BaseException]]:
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


def _run_dask(tasks: Sequence[PopulationTask], scheduler: str | None, n_workers: int
              ) -> Iterator[tuple[PopulationTask, list[dict[str, Any]] | BaseException]]:
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


# ----------------------------------------------------------------------------------------------- sweep


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


def _write_manifest(result: SweepResult, finished: bool) -> None:
    plan = result.plan
    counts = Counter(r["status"] for r in result.runs.values())
    _write_json_atomic(plan.root / MANIFEST_NAME, {
        "format": "virtual_lab sweep manifest 1",
        "protocol": plan.protocol.name,
        "protocol_source": plan.protocol.source,
        "finished": finished,
        "updated": round(time.time(), 3),
        "counts": {k: counts[k] for k in ("complete", "diverged", "failed", "pending")},
        "runs": [result.runs[s.run_id] for s in plan.specs],
    })


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
    """
    if executor not in EXECUTORS:
        import difflib

        close = difflib.get_close_matches(str(executor), EXECUTORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"The 'executor' parameter must be one of {', '.join(EXECUTORS)}. Got {executor!r} "
                         f"instead.{hint}")
    if scheduler and executor != "dask":
        raise ValueError(f"a scheduler address ({scheduler!r}) needs executor 'dask', got {executor!r}")
    if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0):
        raise ValueError(f"The 'n_workers' parameter must be an integer >= 0. Got {n_workers!r} instead.")
    if executor == "dask" and n_workers == 0:
        raise ValueError("The 'n_workers' parameter must be >= 1 with the dask executor. Got 0 instead.")
    t0 = time.perf_counter()
    plan = plan_sweep(protocol)
    root = plan.root
    root.mkdir(parents=True, exist_ok=True)
    recover_staging(root)
    result = SweepResult(plan)
    population_of = plan.population_of()
    for spec in plan.specs:
        result.runs[spec.run_id] = {
            "run_id": spec.run_id, "status": "pending", "error": "", "step": -1, "rule": spec.rule,
            "architecture": _architecture(spec), "path": plan.paths[spec.run_id].relative_to(root).as_posix(),
            "population": population_of[spec.run_id].population_id,
        }

    # --- scan what is on disk
    missing: set[str] = set()
    sizes = []
    for spec in plan.specs:
        path = plan.paths[spec.run_id]
        check = check_run_file(path, spec)
        record = result.runs[spec.run_id]
        if check.state == "complete":
            record["status"] = "diverged" if check.diverged else "complete"
            if check.diverged:
                record.update(error=f"loss became NaN or inf at step {check.diverged_step}",
                              step=check.diverged_step)
            sizes.append(path.stat().st_size)
            continue
        missing.add(spec.run_id)
        if check.state in ("mismatch", "foreign"):
            aside = _set_aside(path)
            message = f"{path}: {check.reason}; kept as {aside.name}"
            logger.warning("%s; retraining run %s", message, spec.run_id)
            result.problems.append(message)
        elif check.state == "damaged":
            message = f"{path}: {check.reason}"
            logger.warning("%s; retraining run %s", message, spec.run_id)
            result.problems.append(message)
    result.n_reused = len(plan.specs) - len(missing)

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

    n_to_write = sum(len(t.write_ids) for t in tasks)
    if n_to_write and protocol.storage.check_free_space:
        per_session = max(sizes) if sizes else max(
            estimate_session_bytes(s, protocol.storage.weights_dtype) for s in plan.specs)
        check_free_space(root, per_session * n_to_write, what=f"{n_to_write} sessions")

    log = _EventLog(root / LOG_NAME)
    try:
        log.write("sweep_start", protocol=protocol.name, n_runs=len(plan.specs), n_reused=result.n_reused,
                  n_to_write=n_to_write, n_populations=len(tasks), executor=executor,
                  problems=result.problems)
        _write_manifest(result, finished=not tasks)
        if tasks:
            _execute(result, tasks, log, executor=executor, scheduler=scheduler, n_workers=n_workers,
                     progress=progress)
        result.wall_s = time.perf_counter() - t0
        counts = Counter(r["status"] for r in result.runs.values())
        log.write("sweep_end", counts=dict(counts), n_trained=result.n_trained, wall_s=round(result.wall_s, 3))
        _write_manifest(result, finished=True)
    finally:
        log.close()
        try:
            (root / STAGING_NAME).rmdir()  # only when empty: a concurrent sweep may still be staging
        except OSError:
            pass
    for record in result.failed:
        logger.error("run %s (%s) failed: %s", record["run_id"], record["rule"], record["error"] or "not run")
    return result


def _execute(result: SweepResult, tasks: list[PopulationTask], log: _EventLog, *, executor: str,
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
        stream = _run_dask(tasks, scheduler, max(1, n_workers))
    elif n_workers == 0:
        stream = _run_in_process(tasks, bar.update)
    else:
        stream = _run_local_pool(tasks, n_workers, bar.update)
    last_manifest = time.monotonic()
    n_failed = counted_steps = 0
    try:
        for task, outcome in stream:
            if isinstance(outcome, BaseException):
                outcome = [_outcome(r, "failed", error=_error_text(outcome), stage="worker")
                           for r in task.write_ids]
            for item in outcome:
                record = result.runs[item["run_id"]]
                record.update(status=item["status"], error=item["error"], step=item["step"])
                if item["status"] != "failed":
                    result.n_trained += 1
                else:
                    n_failed += 1
                log.write("run", **item, population=task.population.population_id, rule=record["rule"],
                          architecture=record["architecture"], path=record["path"])
            counted_steps += population_steps[task.population.population_id]
            if bar.n < counted_steps:  # dask reports no steps until a population ends; a dead worker's are lost
                bar.update(counted_steps - bar.n)
            bar.set_postfix_str(f"sessions written {result.n_trained}/{n_to_write}"
                                + (f", {n_failed} failed" if n_failed else ""))
            if time.monotonic() - last_manifest > 2.0:
                _write_manifest(result, finished=False)
                last_manifest = time.monotonic()
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------- status


@dataclass
class SweepStatus:
    """A recordings folder summarized (what ``virtual-lab status`` prints).

    Attributes
    ----------
    folder : Path
    protocol : str
        From the manifest; empty without one.
    groups : dict of (rule, architecture) to Counter
        Counts of ``complete``, ``diverged``, ``failed``, ``missing`` per group.
    failures : list of dict
        Failed runs of the manifest without a complete session (``run_id``, ``rule``, ``error``).
    problem_files : list of (Path, str, str)
        Files named ``*.nwb`` that are not complete sessions: path, kind, reason.
    unplanned : int
        Complete sessions that the manifest does not list (e.g. from another version of the protocol).
    has_manifest : bool
    """

    folder: Path
    protocol: str = ""
    groups: dict[tuple[str, str], Counter] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    problem_files: list[tuple[Path, str, str]] = field(default_factory=list)
    unplanned: int = 0
    has_manifest: bool = False

    @property
    def totals(self) -> Counter:
        total: Counter = Counter()
        for counts in self.groups.values():
            total.update(counts)
        return total

    @property
    def ok(self) -> bool:
        totals = self.totals
        return totals["failed"] == 0 and totals["missing"] == 0 and not self.problem_files

    def summary_text(self) -> str:
        totals = self.totals
        head = f"{self.folder}: " + (f"sweep of protocol {self.protocol}" if self.protocol
                                      else "no sweep manifest (missing runs unknown)")
        lines = [head]
        header = f"  {'rule':<26} {'architecture':<14} {'complete':>8} {'diverged':>8} {'failed':>7} {'missing':>8}"
        lines.append(header)
        for (rule, arch), counts in sorted(self.groups.items()):
            lines.append(f"  {rule:<26} {arch:<14} {counts['complete']:>8} {counts['diverged']:>8} "
                         f"{counts['failed']:>7} {counts['missing']:>8}")
        lines.append(f"  {'total':<26} {'':<14} {totals['complete']:>8} {totals['diverged']:>8} "
                     f"{totals['failed']:>7} {totals['missing']:>8}")
        if self.unplanned:
            lines.append(f"  {self.unplanned} complete session(s) not in the manifest's plan")
        for failure in self.failures[:20]:
            lines.append(f"  failed  {failure['run_id']} ({failure['rule']}): {failure['error'] or 'not run yet'}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failed runs (see the manifest)")
        if self.problem_files:
            lines.append(f"  {len(self.problem_files)} file(s) named .nwb that are not complete sessions:")
            for path, kind, reason in self.problem_files[:20]:
                lines.append(f"    {kind:<10} {path}: {reason}")
        return "\n".join(lines)


def sweep_status(folder: str | os.PathLike) -> SweepStatus:
    """Summarize a recordings folder: complete / diverged / failed / missing runs by rule and architecture.

    Reads ``sweep_manifest.json`` when there is one (the plan and the recorded failures) and checks every
    ``*.nwb`` file under the folder with h5py. Never raises for a damaged or foreign file: such files are
    listed in :attr:`SweepStatus.problem_files`.

    Raises
    ------
    ValueError
        ``folder`` is not a folder.
    """
    from virtual_lab.sessions import describe_session_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"recordings folder {str(folder)!r} does not exist or is not a folder")
    status = SweepStatus(folder)
    manifest = None
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            status.protocol = str(manifest.get("protocol", ""))
            status.has_manifest = True
        except (OSError, json.JSONDecodeError, AttributeError) as error:
            status.problem_files.append((manifest_path, "manifest", f"unreadable: {error}"))
            manifest = None
    files = sorted(p for p in folder.rglob("*.nwb")
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    found: dict[Path, tuple[str, str, dict]] = {p: describe_session_file(p) for p in files}
    planned_paths = set()
    if manifest is not None:
        for run in manifest.get("runs", []):
            path = folder / run["path"]
            planned_paths.add(path)
            key = (str(run.get("rule", "?")), str(run.get("architecture", "?")))
            counts = status.groups.setdefault(key, Counter())
            kind, _, metadata = found.get(path, ("missing", "", {}))
            if kind == "complete" and metadata.get("run_id") == run["run_id"]:
                counts["diverged" if metadata.get("diverged") else "complete"] += 1
            elif run.get("status") == "failed":
                counts["failed"] += 1
                status.failures.append(run)
            else:
                counts["missing"] += 1
    for path, (kind, reason, metadata) in found.items():
        if kind != "complete":
            status.problem_files.append((path, kind, reason))
        elif path not in planned_paths:
            if manifest is not None:
                status.unplanned += 1
            else:
                key = (str(metadata.get("rule", "?")), str(metadata.get("architecture", "?")))
                status.groups.setdefault(key, Counter())["diverged" if metadata.get("diverged") else "complete"] += 1
    return status
