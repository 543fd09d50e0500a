"""``virtual-lab check``: validate a protocol and everything a run needs, print the plan, train nothing.

Also what ``virtual-lab run`` does first (and all of ``virtual-lab run --dry-run``): :func:`validate_run`
refuses, with one line naming the key and exit status 2, what would otherwise fail after hours of training --
a device this machine lacks, a network or a sweep too large for its memory or its disk, decoder settings that
cannot split the networks, rig units beyond a layer's width -- once the protocol itself has been read and
checked (:func:`virtual_lab.protocol.load_protocol`: types, ranges, finite numbers, rig checkpoints).

The time estimate is rough: matrix-multiply FLOPs of every training step (:func:`virtual_lab.bench.rule_flops_per_step`)
over :data:`CPU_FLOPS_PER_WORKER`, plus :data:`SECONDS_PER_POPULATION_STEP` per step of each population, both
measured with ``virtual-lab bench`` on one 2-core x86 CPU, shared among the worker processes; decoding is left out.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from virtual_lab.validation import InputError, format_bytes

#: Training FLOP/s of one worker process (one torch thread), recording included: ``virtual-lab bench`` measured
#: 18.9 GFLOP/s (MLP 64-128-128-10, 32 networks) and 10.3 GFLOP/s (the small CNN, 8 networks) on the 2-core x86
#: CPU this project is developed on; 15 GFLOP/s sits between them. Good to a factor of about two.
CPU_FLOPS_PER_WORKER = 15e9

#: Seconds of fixed cost per training step of a population, whatever its size: ``virtual-lab bench`` ran 8 tiny
#: MLPs (64-8-10) at 3,163 network-steps/s, 395 population-steps/s, on the same CPU. It dominates small networks.
SECONDS_PER_POPULATION_STEP = 2.5e-3

#: Bytes of memory per parameter while a network trains: weights, gradients, up to two optimizer states, a
#: feedback matrix and a spare copy, float32.
TRAINING_BYTES_PER_PARAMETER = 6 * 4


@dataclass(frozen=True)
class RunPlan:
    """What a run of a protocol will do, estimated before anything is trained.

    Attributes
    ----------
    protocol : Protocol
    n_runs : int
        Networks of the sweep.
    runs_per_rule : dict of str to int
    n_populations : int
    network_steps : int
        Training steps summed over the sweep's networks.
    population_steps : int
        Training steps summed over the populations (each as many as its longest member).
    n_pilots, pilot_steps : int
        Learning-curve calibration networks (``[sweep.match_curves]``) and their steps.
    flops : float
        Matrix-multiply FLOPs of all that training.
    largest : str
        Shape of the network with the most parameters, and ``largest_parameters`` its count.
    session_bytes : int
        Estimated bytes of all the sessions (an upper bound; complete sessions on disk are reused).
    population_bytes : int
        Estimated memory of the largest population while it trains.
    n_workers : int
        Training processes the time estimate assumes.
    free_bytes, memory_bytes : int or None
        Free disk under the output folder and this machine's memory (None when unknown).
    notes : tuple of str
        The plan's caveats (:attr:`virtual_lab.sweeps.plan.SweepPlan.caveats`).
    """

    protocol: Any
    n_runs: int
    runs_per_rule: Mapping[str, int]
    n_populations: int
    network_steps: int
    population_steps: int
    n_pilots: int
    pilot_steps: int
    flops: float
    largest: str
    largest_parameters: int
    session_bytes: int
    population_bytes: int
    n_workers: int
    free_bytes: int | None = None
    memory_bytes: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def seconds(self) -> float:
        """Rough training time (see :data:`CPU_FLOPS_PER_WORKER` and :data:`SECONDS_PER_POPULATION_STEP`)."""
        total = self.flops / CPU_FLOPS_PER_WORKER + self.population_steps * SECONDS_PER_POPULATION_STEP
        return total / max(1, self.n_workers)

    def text(self) -> str:
        """The plan, one aspect a line."""
        p = self.protocol
        per_rule = ", ".join(f"{rule} {n}" for rule, n in self.runs_per_rule.items())
        lines = [f"protocol {p.name} ({p.source or 'in memory'}): valid",
                 f"  runs:          {self.n_runs} networks ({per_rule}) in {self.n_populations} population(s) of "
                 f"at most {p.training.population_size}",
                 f"  network-steps: {self.network_steps:,}" + (f" + {self.pilot_steps:,} for {self.n_pilots} "
                                                               f"calibration pilots" if self.n_pilots else ""),
                 f"  largest:       {self.largest}, {self.largest_parameters:,} parameters",
                 f"  disk:          about {format_bytes(self.session_bytes)} for {self.n_runs} sessions in "
                 f"{p.recordings_dir}" + (f" ({format_bytes(self.free_bytes)} free)" if self.free_bytes else "")
                 + "; complete sessions already there are reused",
                 f"  memory:        about {format_bytes(self.population_bytes)} per population while it trains"
                 + (f" ({format_bytes(self.memory_bytes)} on this machine)" if self.memory_bytes else ""),
                 f"  time:          about {_duration(self.seconds)} of training on {self.n_workers} {p.training.device} "
                 f"worker process(es) (rough: {CPU_FLOPS_PER_WORKER / 1e9:g} GFLOP/s per process and "
                 f"{SECONDS_PER_POPULATION_STEP * 1e3:g} ms per population step, measured with virtual-lab bench "
                 f"on a 2-core x86 CPU; decoding not included)",
                 f"  decoding:      {len(p.rig)} rig setting(s) x {len(p.decoder.models)} decoder(s), "
                 f"{p.decoder.n_splits} grouped splits"]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


class _UnitScales:
    """Stands in for a learning-curve calibration not run yet: network sizes and steps do not depend on rates."""

    def __init__(self, rules):
        self.scales = {rule: 1.0 for rule in rules}

    def warnings(self) -> list[str]:
        return []


def _parameters_and_units(spec: Any, task: Any) -> tuple[int, list[int], str]:
    """A network's parameter count, the units of every recorded layer, and a one-line shape."""
    from virtual_lab.bench import _layer_macs

    sizes = tuple(spec.layer_sizes)
    if spec.architecture == "mlp":
        parameters = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        return parameters, list(sizes[1:]), "MLP " + "-".join(map(str, sizes))
    from virtual_lab.lab.conv_geometry import conv_input_shape, conv_layers

    layers = conv_layers(spec.architecture, spec.channels, conv_input_shape(task.image_shape), sizes[-1])
    return (sum(math.prod(layer.weight_shape) for layer in layers), [layer.n_units for layer in layers],
            _layer_macs(spec, task)[2])


def _memory_bytes(device: str) -> int | None:
    """Total memory of the training device: this machine's RAM, or the first CUDA device's."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def _disk(folder: Path) -> tuple[int | None, int | None]:
    """(free, total) bytes of the disk ``folder`` will be on (its nearest existing parent; nothing is created)."""
    probe = folder.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None, None
    return usage.free, usage.total


def check_device(protocol: Any) -> None:
    """Refuse ``[training] device = "cuda"`` on a machine where torch finds no CUDA device."""
    if protocol.training.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError(protocol.source or "<protocol>", "training.device",
                         "'cuda' asked for, but torch finds no CUDA device here (torch.cuda.is_available() is "
                         "False); use device = \"cpu\"")


def check_splits(protocol: Any, runs_per_rule: Mapping[str, int]) -> None:
    """Refuse decoder settings that cannot split the sweep's networks (grouped by network, stratified by rule).

    Every rule needs a network on each side of a split, and ``n_splits`` cannot exceed the number of distinct
    splits the networks allow.
    """
    from virtual_lab.analysis.splits import _n_test

    source = protocol.source or "<protocol>"
    count_key = "sweep.n_runs" if protocol.sweep.sampling == "random" else "sweep.n_seeds"
    if len(runs_per_rule) < 2:
        raise InputError(source, "sweep.rules", f"decoding the rule needs at least 2 rules, got "
                                                f"{list(runs_per_rule)} (or run with --train-only)")
    few = {rule: n for rule, n in runs_per_rule.items() if n < 2}
    if few:
        raise InputError(source, count_key, "every rule needs at least 2 networks to decode (one for training, one "
                                            f"for testing); this sweep has {', '.join(f'{r} {n}' for r, n in few.items())}"
                                            " (or run with --train-only)")
    fraction = protocol.decoder.test_fraction
    distinct = math.prod(math.comb(n, _n_test(fraction, n)) for n in runs_per_rule.values())
    if protocol.decoder.n_splits > distinct:
        raise InputError(source, "decoder.n_splits", f"{protocol.decoder.n_splits} splits asked for, but "
                                                     f"{min(runs_per_rule.values())}+ networks per rule at "
                                                     f"test_fraction {fraction:g} allow only {distinct} distinct "
                                                     f"splits; lower n_splits or add networks ({count_key})")


def _check_rig_units(protocol: Any, smallest_layer: int) -> None:
    """A rig recording ``n_units`` per layer (no preset, so no cap) needs layers at least that wide."""
    for index, rig in enumerate(protocol.rig):
        if not rig.preset and rig.n_units > smallest_layer:
            raise InputError(protocol.source or "<protocol>", f"rig[{index}].n_units",
                             f"{rig.n_units} units per layer, but the sweep's smallest recorded layer has "
                             f"{smallest_layer}; allowed: 0 (use unit_fraction) to {smallest_layer}")


def _check_size(protocol: Any, plan: RunPlan, largest_bytes: int, disk_total: int | None) -> None:
    """Refuse a network or a sweep that cannot fit this machine's memory or the output folder's disk at all."""
    source = protocol.source or "<protocol>"
    memory = plan.memory_bytes
    if memory and largest_bytes > memory:
        raise InputError(source, "network.hidden_sizes" if protocol.network.architecture == "mlp" else "network",
                         f"the largest network ({plan.largest}) has {plan.largest_parameters:,} parameters; "
                         f"training it needs about {format_bytes(largest_bytes)} of memory and this machine "
                         f"({protocol.training.device}) has {format_bytes(memory)}")
    if memory and plan.population_bytes > memory:
        raise InputError(source, "training.population_size",
                         f"a population of {protocol.training.population_size} networks needs about "
                         f"{format_bytes(plan.population_bytes)} of memory and this machine has "
                         f"{format_bytes(memory)}; lower population_size or the network sizes")
    if disk_total and plan.session_bytes > disk_total:
        raise InputError(source, "output_dir", f"the {plan.n_runs} sessions need about "
                                               f"{format_bytes(plan.session_bytes)} and the whole disk of "
                                               f"{protocol.recordings_dir} holds {format_bytes(disk_total)} (fewer "
                                               f"or smaller networks, fewer checkpoints, or weights_dtype = "
                                               f"\"float16\")")


def validate_run(protocol: Any, *, train_only: bool = False, n_workers: int | None = None,
                 executor: str = "local", scheduler: str | None = None) -> RunPlan:
    """Check everything a run of ``protocol`` needs before anything is trained, and estimate the run.

    Parameters
    ----------
    protocol : Protocol
        Already read and checked by :func:`virtual_lab.protocol.load_protocol`.
    train_only : bool, default=False
        The run stops after training (decoder settings are not checked).
    n_workers : int, optional
        Training processes (``0``: this process); default one per core, at most one per population.
    executor, scheduler : str, optional
        As for ``virtual-lab run``; a remote Dask scheduler's workers are not this machine, so its device and
        memory are not checked.

    Returns
    -------
    RunPlan

    Raises
    ------
    InputError
        One line naming the file and key: no CUDA device for ``device = "cuda"``, a network larger than the
        device's memory, sessions larger than the disk, decoder settings that cannot split the networks, rig
        units beyond a layer's width.
    """
    from virtual_lab.sweeps.plan import plan_sweep

    local = not (executor == "dask" and scheduler)
    if local:
        check_device(protocol)
    plan_logger = logging.getLogger("virtual_lab.sweeps.plan")
    disabled, plan_logger.disabled = plan_logger.disabled, True  # its caveats: RunPlan.notes; `run` logs them
    try:
        plan = plan_sweep(protocol, None if protocol.sweep.match_curves is None else _UnitScales(protocol.sweep.rules))
    finally:
        plan_logger.disabled = disabled
    flops, (parameters, label, per_network), smallest_layer, session_bytes = _networks(protocol, plan)
    n_pilots, pilot_steps = _pilots(protocol)
    flops *= 1 + pilot_steps / max(1, sum(plan.steps.values()))  # pilots are networks of the sweep's sizes
    population = min(protocol.training.population_size, max(len(p.specs) for p in plan.populations))
    workers = n_workers if n_workers is not None else (os.cpu_count() or 1)
    free, total = _disk(protocol.recordings_dir)
    runs_per_rule = dict(Counter(spec.rule for spec in plan.specs))
    result = RunPlan(
        protocol, len(plan.specs), runs_per_rule, len(plan.populations), sum(plan.steps.values()),
        sum(max(plan.steps[run_id] for run_id in p.run_ids) for p in plan.populations), n_pilots, pilot_steps,
        flops, label, parameters, session_bytes, population * per_network,
        max(1, min(workers, len(plan.populations))), free, _memory_bytes(protocol.training.device) if local else None,
        tuple(plan.caveats))
    _check_size(protocol, result, per_network, total)
    _check_rig_units(protocol, smallest_layer)
    if not train_only:
        check_splits(protocol, runs_per_rule)
    return result


def _networks(protocol: Any, plan: Any) -> tuple[float, tuple[int, str, int], int, int]:
    """Training FLOPs of the sweep; (parameters, shape, training memory) of its largest network; the units of
    its smallest recorded layer; the bytes of all its sessions."""
    from virtual_lab.bench import _layer_macs, rule_flops_per_step
    from virtual_lab.sweeps.plan import load_task_cached
    from virtual_lab.sweeps.storage import estimate_session_bytes

    flops, largest, smallest, total, tasks = 0.0, (0, "", 0), math.inf, 0, {}
    for spec in plan.specs:
        if spec.task not in tasks:
            tasks[spec.task] = load_task_cached(spec.task, spec.n_probe, spec.task_seed, protocol.task.root,
                                                protocol.task.download)
        task = tasks[spec.task]
        parameters, layer_units, label = _parameters_and_units(spec, task)
        macs, hidden, _ = _layer_macs(spec, task)
        flops += plan.steps[spec.run_id] * rule_flops_per_step(macs, spec.batch_size, spec.rule,
                                                                hidden_units=hidden, n_outputs=spec.layer_sizes[-1])
        session = estimate_session_bytes(spec, protocol.storage.weights_dtype)
        total += session
        smallest = min(smallest, *layer_units)
        if parameters > largest[0]:
            largest = (parameters, label, parameters * TRAINING_BYTES_PER_PARAMETER + session)
    return flops, largest, int(smallest), total


def _pilots(protocol: Any) -> tuple[int, int]:
    """Networks and network-steps of the learning-curve calibration (``[sweep.match_curves]``), else (0, 0)."""
    match = protocol.sweep.match_curves
    if match is None:
        return 0, 0
    from virtual_lab.lab.spec import n_training_steps
    from virtual_lab.sweeps.calibrate import _pilot_epochs
    from virtual_lab.sweeps.plan import load_task_cached

    task = load_task_cached(protocol.task.name, protocol.task.n_probe, protocol.task.seed, protocol.task.root,
                            protocol.task.download)
    n_pilots = match.n_pilots * (1 + len(match.candidates) * (len(protocol.sweep.rules) - 1))
    return n_pilots, n_pilots * n_training_steps(len(task.train_y), protocol.training.batch_size,
                                                 _pilot_epochs(protocol))


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if args.output_dir is not None:
        import dataclasses

        protocol = dataclasses.replace(protocol, output_dir=str(args.output_dir))
    print(validate_run(protocol, train_only=args.train_only).text())
    return 0


def add_parser(subparsers) -> None:
    """Add the ``check`` subcommand."""
    parser = subparsers.add_parser(
        "check", help="validate a protocol and print its plan (runs, steps, time, disk) without training",
        description="Read and check a protocol as `virtual-lab run` does before it trains anything -- every key, "
                    "type and range, the device, the network and session sizes against memory and disk, the "
                    "decoder's splits -- and print the plan: runs, network-steps, a rough time and the disk "
                    "it needs. Nothing is trained or written. Same as `virtual-lab run PROTOCOL --dry-run`.",
        epilog="example:\n  virtual-lab check protocols/quickstart.toml\n  virtual-lab check quickstart --output-dir "
               "/tmp/recordings\nexit status: 0 for a valid protocol, 2 (one line naming the key) otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", type=Path,
                        help="protocol TOML file, or the name of a bundled protocol (list: virtual-lab protocols)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="override the protocol's output_dir (the disk the sessions would go to)")
    parser.add_argument("--train-only", action="store_true", help="the run would stop after training (decoder "
                                                                   "settings are not checked)")
    parser.set_defaults(func=_run)
