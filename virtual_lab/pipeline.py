"""The main job: protocol -> trained sessions -> rig -> observables -> decoders -> report.

:func:`run_protocol` is what ``virtual-lab run PROTOCOL`` calls. Every stage is a plain function call; the
sessions written on the way are the durable product, and a second run reuses every complete session
instead of retraining it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from virtual_lab.types import GroundTruth
from virtual_lab.protocol import Protocol, RigSection
from virtual_lab.rig import Recording, keep_checkpoints, observe
from virtual_lab.seeding import derive_seed

logger = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """What :func:`run_protocol` did and found.

    Attributes
    ----------
    protocol : Protocol
    output_dir : Path
        ``<output_dir>/<protocol name>``: sessions under ``sub-*/``, the report under ``report/``.
    session_paths : list of Path
    n_trained, n_reused, n_diverged : int
    evaluations : list of dict
        One per (rig, decoder) and per control: ``rig``, ``decoder``, ``control`` and the decoder's
        :meth:`~virtual_lab.analysis.evaluation.EvaluationResult.summary`.
    report_path : Path or None
    timings : dict of str to float
        Seconds per stage.
    sweep : virtual_lab.sweeps.run.SweepResult
        Per-run status (complete / diverged / failed), errors, the manifest's contents.
    n_failed : int
        Runs without a session (training or writing failed); see ``sweep.failed``.
    train_only : bool
        Whether decoding and the report were skipped.
    """

    protocol: Protocol
    output_dir: Path
    session_paths: list[Path] = field(default_factory=list)
    n_trained: int = 0
    n_reused: int = 0
    n_diverged: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    report_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    sweep: Any = None
    n_failed: int = 0
    train_only: bool = False

    @property
    def ok(self) -> bool:
        """Every run has a session (none failed) and, unless ``train_only``, the decoders ran."""
        return bool(self.session_paths) and self.n_failed == 0 and (self.train_only or bool(self.evaluations))

    def summary_text(self) -> str:
        """A short human-readable summary (what ``virtual-lab run`` prints)."""
        lines = [f"protocol {self.protocol.name}: {len(self.session_paths)} sessions in {self.output_dir} "
                 f"({self.n_trained} trained, {self.n_reused} reused, {self.n_diverged} diverged"
                 + (f", {self.n_failed} FAILED" if self.n_failed else "") + ")"]
        if self.sweep is not None and (self.sweep.failed or self.sweep.diverged or self.sweep.problems):
            lines.extend(self.sweep.summary_text().splitlines()[1:])
        for ev in self.evaluations:
            s = ev["summary"]
            label = f"{ev['rig']:<14} {ev['decoder']:<14}" + (f" [{ev['control']}]" if ev["control"] else "")
            lines.append(f"  {label}  layer acc {s['layer_accuracy_mean']:.3f} +/- {s['layer_accuracy_sem'] or 0:.3f}"
                         f"   network acc {s['network_accuracy_mean']:.3f} +/- {s['network_accuracy_sem'] or 0:.3f}"
                         f"   (chance {s['chance']:.2f}, {s['n_networks']} networks, {s['n_splits']} "
                         f"{'layer-level' if ev['control'] == 'layer-level splits' else 'grouped'} splits)")
        if self.report_path is not None:
            lines.append(f"report: {self.report_path}")
        total = sum(self.timings.values())
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()) + f" (total {total:.0f}s)")
        return "\n".join(lines)


def observe_with_rig(ground_truth: GroundTruth, rig: RigSection) -> Recording:
    """Observe one session through a protocol's rig setting.

    The rig seed is combined with the session's run id, so every network (every "animal") gets its own
    units and noise, and the same (rig, session) pair always gives the same recording. With ``rig.preset`` the
    session is observed through that preset (:func:`virtual_lab.rig.apply_preset`), and the keys given in the
    protocol's ``[[rig]]`` table (other than ``name``, ``preset`` and ``seed``) override the preset's values.
    """
    if rig.preset:
        from virtual_lab.rig.presets import apply_preset

        overrides = {key: getattr(rig, key) for key in rig.given_keys if key not in ("name", "preset", "seed")}
        return apply_preset(ground_truth, rig.preset, seed=derive_seed(rig.seed, ground_truth.run_id), **overrides)
    return observe(
        ground_truth,
        unit_fraction=rig.unit_fraction if rig.n_units == 0 and rig.unit_fraction < 1 else None,
        n_units=rig.n_units or None,
        synapse_fraction=rig.synapse_fraction if rig.synapse_fraction < 1 else None,
        noise_sd=rig.noise_sd,
        noise_relative=rig.noise_relative,
        n_checkpoints=rig.n_checkpoints or None,
        checkpoint_spacing=rig.checkpoint_spacing,
        seed=derive_seed(rig.seed, ground_truth.run_id),
    )


class SessionSequence(Sequence[GroundTruth]):
    """Sessions on disk as a read-only sequence of :class:`GroundTruth`, read one at a time when accessed.

    Nothing is cached, so iterating over thousands of sessions holds one in memory at a time (files are read
    with the fast h5py reader). While iterating, the per-run performance (steps, loss, accuracy, metadata)
    is kept, and :meth:`performance` returns it without reading the files again.

    Parameters
    ----------
    paths : sequence of path-like
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]
        self._performance: dict[int, GroundTruth] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return SessionSequence(self.paths[index])
        from virtual_lab.sessions import read_session

        gt = read_session(self.paths[index], engine="h5py")
        position = index % len(self.paths)
        if position not in self._performance:
            self._performance[position] = _performance_only(gt)
        return gt

    def __iter__(self):
        for index in range(len(self.paths)):
            yield self[index]

    def performance(self) -> list[GroundTruth]:
        """Every session without its layers: checkpoint steps, loss, accuracy, probe labels and metadata."""
        return [self._performance[i] if i in self._performance else _performance_only(self[i])
                for i in range(len(self.paths))]


def _performance_only(gt: GroundTruth) -> GroundTruth:
    return GroundTruth(layer_names=(), depth_positions=(), checkpoint_steps=gt.checkpoint_steps, activations={},
                       weights={}, activity_change={}, train_loss=gt.train_loss, test_accuracy=gt.test_accuracy,
                       probe_stimuli=gt.probe_stimuli[:0], probe_labels=gt.probe_labels, metadata=dict(gt.metadata))


def train_sweep(protocol: Protocol, *, executor: str = "local", scheduler: str | None = None,
                n_workers: int | None = None, progress: bool = True):
    """Train and record every run of the protocol's sweep that has no complete session (resumable).

    Results stream to disk: workers write each population's sessions and return only their status, so
    memory does not grow with the number of runs. See :mod:`virtual_lab.sweeps` for how a sweep
    survives being killed, fixed populations (bit-identical sessions on resume and on every executor),
    the manifest and the free-space check.

    Parameters
    ----------
    protocol : Protocol
    executor : {"local", "dask"}, default="local"
    scheduler : str, optional
        Dask scheduler address; with ``executor="dask"`` and none, a LocalCluster on 127.0.0.1.
    n_workers : int, optional
        Training processes (default: one per core, at most one per population; 0 = this process).
    progress : bool, default=True

    Returns
    -------
    virtual_lab.sweeps.run.SweepResult
    """
    from virtual_lab.sweeps.run import run_sweep

    return run_sweep(protocol, executor=executor, scheduler=scheduler, n_workers=n_workers, progress=progress)


def train_and_record(protocol: Protocol, *, progress: bool = True) -> tuple[list[GroundTruth], list[Path], dict]:
    """Train every run of the protocol's sweep that has no complete session yet, and write its session.

    Kept for scripts and tutorials that want every ground truth in memory; large sweeps should use
    :func:`train_sweep` (which keeps nothing in memory) and :class:`SessionSequence`.

    Returns
    -------
    ground_truths : list of GroundTruth
        Every run of the sweep that has a session, in sweep order (read back from the files).
    paths : list of Path
    counts : dict
        ``trained``, ``reused``, ``diverged``.

    Raises
    ------
    RuntimeError
        If a run failed (its error is in the sweep manifest); the other sessions are written.
    """
    from virtual_lab.sessions import read_session

    sweep = train_sweep(protocol, progress=progress)
    if not sweep.ok:
        raise RuntimeError(sweep.summary_text())
    paths = sweep.session_paths
    ground_truths = [read_session(path, engine="h5py") for path in paths]
    counts = {"trained": sweep.n_trained, "reused": sweep.n_reused, "diverged": len(sweep.diverged)}
    return ground_truths, paths, counts


class _ObservedSessions(Sequence[Recording]):
    """Sessions observed through one rig, computed on access: re-iterable, nothing kept in memory."""

    def __init__(self, ground_truths: Sequence[GroundTruth], rig: RigSection):
        self._ground_truths = ground_truths
        self._rig = rig

    def __len__(self) -> int:
        return len(self._ground_truths)

    def __getitem__(self, index: int) -> Recording:  # type: ignore[override]
        return observe_with_rig(self._ground_truths[index], self._rig)


def decode_sessions(protocol: Protocol, ground_truths: Sequence[GroundTruth], *,
                    progress: bool = True) -> tuple[list[dict[str, Any]], dict]:
    """Observe sessions through every rig of the protocol and cross-validate every decoder.

    Also runs the initialization-only control (full observation of checkpoint 0 alone), which must sit at
    chance: the rule may only show through learning. Each stage reports progress
    (:mod:`virtual_lab.progress`); ``progress=False`` silences the observing bars, and
    :func:`virtual_lab.progress.quiet` every bar.

    Returns
    -------
    evaluations : list of dict
    tables : dict of str to FeatureTable
        The feature table of each rig.
    """
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, build_feature_table
    from virtual_lab.progress import progress_bar
    from virtual_lab.rig.presets import measured_observables

    dec = protocol.decoder
    observables = ADMISSIBLE_OBSERVABLES if dec.observables == "admissible" else ALL_OBSERVABLES
    evaluations, tables = [], {}
    n_jobs = max(1, min(os.cpu_count() or 1, dec.n_splits))
    for rig in protocol.rig:
        # a modality rig measures only some of weight / act / gradavg: decode from what it measures
        rig_observables, note = measured_observables(observables, observe_with_rig(ground_truths[0], rig).measures,
                                                     rig.name)
        if note:
            logger.info("%s", note)
        recordings = progress_bar((observe_with_rig(gt, rig) for gt in ground_truths), total=len(ground_truths),
                                  desc=f"observing (rig {rig.name})", unit="sessions", enabled=progress)
        table = build_feature_table(recordings, rig_observables)
        tables[rig.name] = table
        for model in dec.models:
            result = evaluate(table, model, n_splits=dec.n_splits, test_fraction=dec.test_fraction, seed=dec.seed,
                              n_jobs=n_jobs)
            evaluations.append({"rig": rig.name, "decoder": model, "control": "", "summary": result.summary(),
                                "result": result})
    init_only = progress_bar((keep_checkpoints(Recording.from_ground_truth(gt), steps=[int(gt.checkpoint_steps[0])])
                              for gt in ground_truths), total=len(ground_truths),
                             desc="observing (initialization only)", unit="sessions", enabled=progress)
    table = build_feature_table(init_only, observables)
    tables["init-only"] = table
    model = dec.models[0]
    result = evaluate(table, model, n_splits=dec.n_splits, test_fraction=dec.test_fraction, seed=dec.seed,
                      n_jobs=n_jobs)
    evaluations.append({"rig": "full", "decoder": model, "control": "initialization only",
                        "summary": result.summary(), "result": result})
    # the reviewers' controls (observable classes, temporal, performance, family, layer-level splits),
    # a network-level permutation test (fastest decoder) and clustering, on the first rig
    if not dec.controls:
        return evaluations, tables
    from virtual_lab.analysis.controls import standard_controls

    first = protocol.rig[0]
    fastest = next((m for m in ("linear_svm", "logistic") if m in dec.models), model)
    entries, extras = standard_controls(tables[first.name], _ObservedSessions(ground_truths, first),
                                        fastest, rig=first.name, n_splits=dec.n_splits,
                                        test_fraction=dec.test_fraction, seed=dec.seed, n_jobs=n_jobs,
                                        permutation_decoder=fastest, n_permutations=dec.n_permutations)
    evaluations.extend(entries)
    # what the recording adds over behaviour: the rows already run above are reused (same decoder, same splits)
    from virtual_lab.analysis.behaviour import beyond_behaviour

    done = {e["control"]: e["result"] for e in evaluations if e["rig"] == first.name and e["decoder"] == fastest}
    extras["beyond_behaviour"] = beyond_behaviour(
        tables[first.name], _ObservedSessions(ground_truths, first), fastest, rig=first.name,
        observables_result=done.get(""), curves_result=done.get("performance only"),
        matched_result=done.get("performance matched"), n_splits=dec.n_splits, test_fraction=dec.test_fraction,
        seed=dec.seed, n_jobs=n_jobs).summary()
    evaluations[0]["extras"] = extras
    return evaluations, tables


def run_protocol(protocol: Protocol, *, progress: bool = True, n_threads: int | None = None,
                 executor: str = "local", scheduler: str | None = None, n_workers: int | None = None,
                 train_only: bool = False) -> ExperimentResult:
    """Run everything a protocol describes: train, record, observe, decode, report.

    Sessions stream to disk during training and are read back one at a time for decoding
    (:class:`SessionSequence`), so memory does not grow with the number of runs during training. Runs that
    fail are recorded in the sweep manifest and left out; ``result.ok`` is then False.

    Parameters
    ----------
    protocol : Protocol
    progress : bool, default=True
        Report progress of every stage: a bar on a terminal, a plain line every ~10 s otherwise
        (:mod:`virtual_lab.progress`).
    n_threads : int, optional
        Torch threads of this process (decoders). Training always uses one thread per worker process, so
        that results do not depend on the machine.
    executor : {"local", "dask"}, default="local"
    scheduler : str, optional
        Address of a Dask scheduler (``executor="dask"``).
    n_workers : int, optional
        Training processes (default: one per core, at most one per population; 0 = this process).
    train_only : bool, default=False
        Stop after training and recording.

    Returns
    -------
    ExperimentResult
    """
    from virtual_lab.progress import progress_enabled, quiet

    with quiet(progress and progress_enabled()):
        return _run_protocol(protocol, n_threads=n_threads, executor=executor, scheduler=scheduler,
                             n_workers=n_workers, train_only=train_only)


def _run_protocol(protocol: Protocol, *, n_threads: int | None, executor: str, scheduler: str | None,
                  n_workers: int | None, train_only: bool) -> ExperimentResult:
    import torch

    from virtual_lab.analysis.report import write_report

    if n_threads is not None:
        if n_threads < 1:
            raise ValueError(f"threads must be >= 1, got {n_threads}")
        torch.set_num_threads(n_threads)
    result = ExperimentResult(protocol, protocol.recordings_dir, train_only=train_only)
    t0 = time.perf_counter()
    sweep = train_sweep(protocol, executor=executor, scheduler=scheduler, n_workers=n_workers)
    result.timings["train+record"] = time.perf_counter() - t0
    result.sweep = sweep
    result.session_paths = sweep.session_paths
    result.n_trained, result.n_reused = sweep.n_trained, sweep.n_reused
    result.n_diverged, result.n_failed = len(sweep.diverged), len(sweep.failed)
    if train_only or not result.session_paths:
        return result
    sessions = SessionSequence(result.session_paths)
    t0 = time.perf_counter()
    result.evaluations, _ = decode_sessions(protocol, sessions)
    result.timings["observe+decode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result.report_path = write_report(result, sessions.performance())
    result.timings["report"] = time.perf_counter() - t0
    return result
