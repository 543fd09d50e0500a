"""Benchmark of the population training engine (``virtual-lab bench``, or ``python -m virtual_lab.bench``).

Measures, in one run on one machine and one thread setting:

(a) network-steps per second of the batched population engine (:func:`virtual_lab.lab.train.train_population`)
    against a plain PyTorch reference that trains the same networks one at a time with ``nn.Module`` and
    ``torch.optim`` (:class:`virtual_lab.lab.reference.ReferenceTrainer`);
(b) the engine's achieved FLOP/s against the float32 matmul peak measured in the same run (best of several
    large ``torch.mm`` calls);
(c) the cost of checkpoint recording (probe responses, weights, activity change, loss and accuracy at every
    checkpoint) as a fraction of the engine's wall-clock time.

FLOPs are *model* FLOPs of the rule-independent part of a step: the forward pass (``2 B in out`` per layer),
the weight gradient (``2 B in out``) and the error sent to the layer below (``2 B in out``, not for the first
layer). Element-wise work and the information-alignment local loss are not counted, so the fraction of
peak is a lower bound.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

DEFAULT_RULES = ("sgdm", "adam", "feedback_alignment", "information_alignment")


def model_flops_per_step(layer_sizes: Sequence[int], batch_size: int) -> int:
    """Model FLOPs of one network's training step (forward, weight gradients, error propagation).

    Examples
    --------
    >>> model_flops_per_step((64, 128, 10), 32)
    2162688
    """
    total = 0
    for l, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        total += (4 if l == 0 else 6) * batch_size * n_in * n_out
    return total


def measure_matmul_peak(size: int = 1024, repeats: int = 10, device: str = "cpu") -> float:
    """Peak float32 matmul FLOP/s: the best of ``repeats`` timed ``size x size`` products.

    Returns
    -------
    float
        FLOP/s (``2 size^3`` per product).
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand((size, size), generator=generator).to(device)
    b = torch.rand((size, size), generator=generator).to(device)
    out = torch.empty((size, size), device=device)
    torch.mm(a, b, out=out)  # warm up
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * size ** 3 / best


def _population_specs(n_networks: int, hidden_sizes: Sequence[int], batch_size: int, n_epochs: int,
                      rules: Sequence[str], n_checkpoints: int, n_probe: int, task_inputs: int, task_classes: int):
    from virtual_lab.lab.rules import get_rule
    from virtual_lab.lab.train import RunSpec
    from virtual_lab.seeding import derive_seed

    sizes = (task_inputs, *hidden_sizes, task_classes)
    specs = []
    for i in range(n_networks):
        rule = get_rule(rules[i % len(rules)])
        specs.append(RunSpec(rule=rule.name, learning_rate=rule.default_learning_rate, batch_size=batch_size,
                             n_epochs=n_epochs, seed=derive_seed("bench", i), layer_sizes=sizes, n_probe=n_probe,
                             n_checkpoints=n_checkpoints, weight_decay=rule.default_weight_decay))
    return specs


def run_benchmark(*, n_networks: int = 64, hidden_sizes: Sequence[int] = (128, 128), batch_size: int = 64,
                  n_epochs: int = 20, n_checkpoints: int = 21, n_probe: int = 200,
                  rules: Sequence[str] = DEFAULT_RULES, n_threads: int = 2, n_reference_networks: int = 8,
                  n_reference_steps: int = 100, device: str = "cpu", peak_size: int = 1024) -> dict:
    """Time the population engine against one-at-a-time training on digits.

    Parameters
    ----------
    n_networks : int, default=64
        Networks in the population (rules assigned round-robin).
    hidden_sizes : sequence of int, default=(128, 128)
        The default MLP: 64-128-128-10.
    batch_size, n_epochs, n_checkpoints, n_probe : int
        As in a protocol; the defaults are the quickstart's (480 steps, 21 checkpoints, 200 probes).
    rules : sequence of str, default=the paper's four rules
    n_threads : int, default=2
        Torch intra-op threads for every measurement (restored afterwards).
    n_reference_networks : int, default=8
        Networks the one-at-a-time reference trains (the first ones of the population; its rate does
        not depend on how many).
    n_reference_steps : int, default=100
        Steps each reference network trains.
    device : str, default="cpu"
        Device of the engine and of the matmul peak ("cuda" on a GPU machine); the reference runs on CPU.
    peak_size : int, default=1024
        Side of the square matrices whose product measures the matmul peak.

    Returns
    -------
    dict
        JSON-serializable: ``config``, ``machine``, ``engine``, ``reference``, ``speedup``,
        ``matmul_peak_flops``, ``fraction_of_peak``.
    """
    import torch

    from virtual_lab.lab.reference import ReferenceTrainer
    from virtual_lab.lab.tasks import load_digits_task
    from virtual_lab.lab.train import batch_order, train_population

    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if n_networks < 1 or n_reference_networks < 1 or n_reference_steps < 1:
        raise ValueError("n_networks, n_reference_networks and n_reference_steps must be >= 1, got "
                         f"{n_networks}, {n_reference_networks}, {n_reference_steps}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        task = load_digits_task(n_probe=n_probe, seed=0)
        specs = _population_specs(n_networks, hidden_sizes, batch_size, n_epochs, rules, n_checkpoints, n_probe,
                                  task.n_features, task.n_classes)
        sizes = specs[0].layer_sizes
        flops_per_step = model_flops_per_step(sizes, batch_size)
        peak = measure_matmul_peak(size=peak_size, device=device)

        warm_up = [dataclasses.replace(s, n_epochs=1, n_checkpoints=2) for s in specs[: min(4, n_networks)]]
        train_population(warm_up, task, device=device)  # warm up allocator and kernels
        timings: dict = {}
        train_population(specs, task, device=device, timings=timings)
        n_steps = n_epochs * (len(task.train_y) // batch_size)
        train_s = timings["total"] - timings["record"]
        engine_rate = n_networks * n_steps / train_s

        n_ref = min(n_reference_networks, n_networks)
        train_x, train_y = torch.as_tensor(task.train_x), torch.as_tensor(task.train_y)
        ref_time, ref_steps = 0.0, 0
        for spec in specs[:n_ref]:
            trainer = ReferenceTrainer(spec)
            order = batch_order(spec.seed, len(task.train_y), batch_size, n_epochs)[:n_reference_steps]
            batches = [(train_x[i], train_y[i]) for i in order]
            trainer.step(*batches[0])  # warm up
            t0 = time.perf_counter()
            for x, y in batches[1:]:
                trainer.step(x, y)
            ref_time += time.perf_counter() - t0
            ref_steps += len(batches) - 1
        reference_rate = ref_steps / ref_time
    finally:
        torch.set_num_threads(previous_threads)

    engine_flops = engine_rate * flops_per_step
    result = {
        "config": {"architecture": "mlp", "layer_sizes": list(sizes), "n_networks": n_networks,
                   "batch_size": batch_size, "n_steps": n_steps, "n_checkpoints": n_checkpoints, "n_probe": n_probe,
                   "rules": list(rules), "n_threads": n_threads, "device": device,
                   "n_reference_networks": n_ref, "n_reference_steps": n_reference_steps,
                   "peak_matmul_size": peak_size},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_version": torch.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "engine": {"network_steps_per_s": engine_rate, "train_s": train_s, "record_s": timings["record"],
                   "total_s": timings["total"], "record_fraction": timings["record"] / timings["total"],
                   "model_flops_per_step": flops_per_step, "achieved_flops": engine_flops},
        "reference": {"network_steps_per_s": reference_rate, "achieved_flops": reference_rate * flops_per_step},
        "speedup": engine_rate / reference_rate,
        "matmul_peak_flops": peak,
        "fraction_of_peak": engine_flops / peak,
    }
    return result


def format_benchmark(result: dict) -> str:
    """A few human-readable lines summarizing :func:`run_benchmark`'s result."""
    c, e, r = result["config"], result["engine"], result["reference"]
    return "\n".join([
        f"MLP {'-'.join(map(str, c['layer_sizes']))}, {c['n_networks']} networks, batch {c['batch_size']}, "
        f"{c['n_threads']} thread(s), {c['device']}",
        f"  population engine : {e['network_steps_per_s']:8.0f} network-steps/s "
        f"({e['achieved_flops'] / 1e9:.1f} GFLOP/s)",
        f"  one at a time     : {r['network_steps_per_s']:8.0f} network-steps/s "
        f"({r['achieved_flops'] / 1e9:.1f} GFLOP/s)",
        f"  speedup           : {result['speedup']:.2f}x",
        f"  matmul peak       : {result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; engine at "
        f"{100 * result['fraction_of_peak']:.0f}% of peak",
        f"  recording         : {100 * e['record_fraction']:.1f}% of the run "
        f"({c['n_checkpoints']} checkpoints x {c['n_probe']} probes)",
    ])


def write_benchmark(result: dict, path: str | Path) -> Path:
    """Write a benchmark result as JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a script: ``python -m virtual_lab.bench [virtual-lab bench options]``."""
    from virtual_lab.cli import main as cli_main

    return cli_main(["bench", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
