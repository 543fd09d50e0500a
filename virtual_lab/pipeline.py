"""The main job: protocol -> trained sessions -> rig -> observables -> decoders -> report.

:func:`run_protocol` is what ``virtual-lab run PROTOCOL`` calls. Every stage is a plain function call; the
sessions written on the way are the durable product, and a second run reuses every complete session
instead of retraining it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virtual_lab.lab.record import GroundTruth
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

    @property
    def ok(self) -> bool:
        return bool(self.session_paths) and bool(self.evaluations)

    def summary_text(self) -> str:
        """A short human-readable summary (what ``virtual-lab run`` prints)."""
        lines = [f"protocol {self.protocol.name}: {len(self.session_paths)} sessions in {self.output_dir} "
                 f"({self.n_trained} trained, {self.n_reused} reused, {self.n_diverged} diverged)"]
        for ev in self.evaluations:
            s = ev["summary"]
            label = f"{ev['rig']:<14} {ev['decoder']:<14}" + (f" [{ev['control']}]" if ev["control"] else "")
            lines.append(f"  {label}  layer acc {s['layer_accuracy_mean']:.3f} +/- {s['layer_accuracy_sem'] or 0:.3f}"
                         f"   network acc {s['network_accuracy_mean']:.3f} +/- {s['network_accuracy_sem'] or 0:.3f}"
                         f"   (chance {s['chance']:.2f}, {s['n_networks']} networks, {s['n_splits']} grouped splits)")
        if self.report_path is not None:
            lines.append(f"report: {self.report_path}")
        total = sum(self.timings.values())
        lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()) + f" (total {total:.0f}s)")
        return "\n".join(lines)


def observe_with_rig(ground_truth: GroundTruth, rig: RigSection) -> Recording:
    """Observe one session through a protocol's rig setting.

    The rig seed is combined with the session's run id, so every network (every "animal") gets its own
    units and noise, and the same (rig, session) pair always gives the same recording.
    """
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


def _progress_bar(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step", unit_scale=True, disable=None if enabled else True,
                dynamic_ncols=True)


def _writer_pool():
    """Processes that write NWB files in parallel (hdmf's object mapping is CPU-bound Python)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                               mp_context=multiprocessing.get_context("spawn"))


def train_and_record(protocol: Protocol, *, progress: bool = True) -> tuple[list[GroundTruth], list[Path], dict]:
    """Train every run of the protocol's sweep that has no complete session yet, and write its session.

    Returns
    -------
    ground_truths : list of GroundTruth
        Every run of the sweep, in sweep order (reused sessions are read back).
    paths : list of Path
    counts : dict
        ``trained``, ``reused``, ``diverged``.
    """
    from virtual_lab.lab.sweep import expand_sweep, group_cohorts
    from virtual_lab.lab.tasks import load_task
    from virtual_lab.lab.train import train_population
    from virtual_lab.sessions import (GROUND_TRUTH_SESSION_ID, is_complete_session, read_session,
                                      sanitize_id, session_path, write_session)

    task = load_task(protocol.task.name, n_probe=protocol.task.n_probe, seed=protocol.task.seed)
    specs = expand_sweep(protocol, task.n_features, task.n_classes)
    root = protocol.recordings_dir
    paths = {s.run_id: session_path(root, sanitize_id(s.run_id), GROUND_TRUTH_SESSION_ID) for s in specs}
    done: dict[str, GroundTruth] = {}
    todo = []
    for spec in specs:
        path = paths[spec.run_id]
        if path.exists() and is_complete_session(path):
            done[spec.run_id] = read_session(path)
        else:
            if path.exists():
                logger.warning("session %s is incomplete or unreadable; retraining it", path)
            todo.append(spec)
    n_reused = len(done)
    if todo:
        total = sum(len(c) * (c[0].n_epochs * (len(task.train_y) // c[0].batch_size)) for c in group_cohorts(todo))
        bar = _progress_bar(total, f"training {len(todo)} networks", progress)
        with _writer_pool() as pool:
            try:
                for cohort in group_cohorts(todo):
                    results = train_population(cohort, task, device=protocol.training.device, progress=bar.update)
                    futures = [pool.submit(write_session, gt, paths[spec.run_id], protocol_name=protocol.name)
                               for spec, gt in zip(cohort, results)]
                    for spec, gt in zip(cohort, results):
                        done[spec.run_id] = gt
                    for future in futures:
                        future.result()  # re-raise the first write error, if any
            finally:
                bar.close()
    ground_truths = [done[s.run_id] for s in specs]
    counts = {"trained": len(todo), "reused": n_reused, "diverged": sum(gt.diverged for gt in ground_truths)}
    return ground_truths, [paths[s.run_id] for s in specs], counts


def decode_sessions(protocol: Protocol, ground_truths: Sequence[GroundTruth], *,
                    progress: bool = True) -> tuple[list[dict[str, Any]], dict]:
    """Observe sessions through every rig of the protocol and cross-validate every decoder.

    Also runs the initialization-only control (full observation of checkpoint 0 alone), which must sit at
    chance: the rule may only show through learning.

    Returns
    -------
    evaluations : list of dict
    tables : dict of str to FeatureTable
        The feature table of each rig.
    """
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, build_feature_table

    dec = protocol.decoder
    observables = ADMISSIBLE_OBSERVABLES if dec.observables == "admissible" else ALL_OBSERVABLES
    evaluations, tables = [], {}
    n_jobs = max(1, min(os.cpu_count() or 1, dec.n_splits))
    for rig in protocol.rig:
        recordings = (observe_with_rig(gt, rig) for gt in ground_truths)
        table = build_feature_table(recordings, observables)
        tables[rig.name] = table
        for model in dec.models:
            result = evaluate(table, model, n_splits=dec.n_splits, test_fraction=dec.test_fraction, seed=dec.seed,
                              n_jobs=n_jobs)
            evaluations.append({"rig": rig.name, "decoder": model, "control": "", "summary": result.summary(),
                                "result": result})
    init_only = (keep_checkpoints(Recording.from_ground_truth(gt), steps=[int(gt.checkpoint_steps[0])])
                 for gt in ground_truths)
    table = build_feature_table(init_only, observables)
    tables["init-only"] = table
    model = dec.models[0]
    result = evaluate(table, model, n_splits=dec.n_splits, test_fraction=dec.test_fraction, seed=dec.seed,
                      n_jobs=n_jobs)
    evaluations.append({"rig": "full", "decoder": model, "control": "initialization only",
                        "summary": result.summary(), "result": result})
    return evaluations, tables


def run_protocol(protocol: Protocol, *, progress: bool = True, n_threads: int | None = None) -> ExperimentResult:
    """Run everything a protocol describes: train, record, observe, decode, report.

    Parameters
    ----------
    protocol : Protocol
    progress : bool, default=True
        Show a progress bar while training (only on a terminal).
    n_threads : int, optional
        Torch threads for training (default: all cores).

    Returns
    -------
    ExperimentResult
    """
    import torch

    from virtual_lab.analysis.report import write_report

    if n_threads is not None:
        if n_threads < 1:
            raise ValueError(f"threads must be >= 1, got {n_threads}")
        torch.set_num_threads(n_threads)
    result = ExperimentResult(protocol, protocol.recordings_dir)
    t0 = time.perf_counter()
    ground_truths, paths, counts = train_and_record(protocol, progress=progress)
    result.timings["train+record"] = time.perf_counter() - t0
    result.session_paths = paths
    result.n_trained, result.n_reused, result.n_diverged = counts["trained"], counts["reused"], counts["diverged"]
    t0 = time.perf_counter()
    result.evaluations, _ = decode_sessions(protocol, ground_truths, progress=progress)
    result.timings["observe+decode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result.report_path = write_report(result, ground_truths)
    result.timings["report"] = time.perf_counter() - t0
    return result
