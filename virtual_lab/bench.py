"""Benchmark of the population training engine (``virtual-lab bench``; :mod:`virtual_lab.commands.bench`).

Measures, in one run on one machine and one thread setting:

(a) network-steps per second of the batched population engine (:func:`virtual_lab.lab.train.train_population`)
    against a plain PyTorch reference that trains the same networks one at a time with ``nn.Module`` and
    ``torch.optim`` (:class:`virtual_lab.lab.reference.ReferenceTrainer`);
(b) the engine's achieved FLOP/s against the float32 matmul peak measured in the same run (best of several
    large ``torch.mm`` calls);
(c) the cost of checkpoint recording (probe responses, weights, activity change, loss and accuracy at every
    checkpoint) as a fraction of the engine's wall-clock time, with the training loss on the protocol's fixed
    evaluation subset (``[training] eval_subset``), and what a checkpoint costs in training steps with that
    subset and, projected from the measured loss time, with the loss on the whole training set, so the share at
    any checkpoint density follows (:func:`recording_share`).

FLOPs are the matrix-multiply FLOPs each network's rule performs per step (:func:`rule_flops_per_step`): the
forward pass (``2 B m`` per layer, with ``m`` the layer's multiply-adds per example: ``in x out`` for a dense
layer, ``H_out W_out C_out C_in k^2`` for a convolution), the weight gradient (``2 B m``) and the error sent to
the layer below (``2 B m``, not for the first layer), plus what a rule adds (information alignment's local
loss on B: four more products per layer, ``8 B m``; direct feedback alignment sends the output error through
``D_l`` instead). Element-wise work is not counted, so the fraction of peak is a lower bound.

Both the MLP (``architecture="mlp"``) and the small CNN (``"cnn"``, :mod:`virtual_lab.lab.conv`) are measured;
``virtual-lab bench`` runs both and writes one JSON file.
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
    """Matmul FLOPs of one backprop-like MLP training step (forward, weight gradients, error propagation).

    Examples
    --------
    The input layer costs ``4 b n_in n_out`` (forward and weight gradient), every later layer ``6 b n_in n_out``
    (its error is propagated back as well):

    >>> model_flops_per_step((64, 128, 10), 32)
    1294336
    >>> 4 * 32 * 64 * 128 + 6 * 32 * 128 * 10
    1294336
    """
    return rule_flops_per_step([n_in * n_out for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])],
                               batch_size, "sgdm")


def rule_flops_per_step(layer_macs: Sequence[int], batch_size: int, rule: str, *,
                        hidden_units: Sequence[int] = (), n_outputs: int = 0) -> int:
    """Matmul FLOPs one network's step performs under a rule.

    Parameters
    ----------
    layer_macs : sequence of int
        Multiply-adds of each weight layer's forward pass for one example, in forward order.
    batch_size : int
    rule : str
    hidden_units, n_outputs : optional
        Units of each hidden layer and of the output (direct feedback alignment only).

    Examples
    --------
    >>> rule_flops_per_step([64 * 128, 128 * 10], 32, "feedback_alignment") == model_flops_per_step((64, 128, 10), 32)
    True
    >>> rule_flops_per_step([100], 2, "information_alignment")
    2400
    """
    from virtual_lab.lab.rules import get_rule

    r = get_rule(rule)
    b = batch_size
    forward = sum(2 * b * m for m in layer_macs)
    if r.update == "node_perturbation":  # a clean and a perturbed forward pass, and the weight update
        return 2 * forward + sum(2 * b * m for m in layer_macs)
    weight_grads = sum(2 * b * m for m in layer_macs)
    if r.backward_path == "direct":
        errors = sum(2 * b * n_outputs * u for u in hidden_units)
    elif r.update == "hebbian":  # only the readout's delta rule sends no error; Oja's rule on hidden layers
        errors = 0
    else:
        errors = sum(2 * b * m for m in layer_macs[1:])
    extra = sum(8 * b * m for m in layer_macs) if r.feedback_update == "local_loss" else 0  # IA's local loss
    return forward + weight_grads + errors + extra


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


def recording_share(checkpoint_cost_steps: float, steps_per_checkpoint: float) -> float:
    """Fraction of a run's time spent recording when a checkpoint costs ``checkpoint_cost_steps`` training steps
    and comes every ``steps_per_checkpoint`` steps.

    Examples
    --------
    >>> recording_share(1.0, 9.0)
    0.1
    """
    return checkpoint_cost_steps / (checkpoint_cost_steps + steps_per_checkpoint)


def _population_specs(n_networks: int, hidden_sizes: Sequence[int], batch_size: int, n_epochs: int,
                      rules: Sequence[str], n_checkpoints: int, n_probe: int, task_inputs: int, task_classes: int,
                      architecture: str = "mlp", channels: Sequence[int] = (), eval_subset: int | None = None):
    from virtual_lab.lab.rules import get_rule
    from virtual_lab.lab.spec import EVAL_SUBSET, RunSpec
    from virtual_lab.seeding import derive_seed

    sizes = (task_inputs, *hidden_sizes, task_classes) if architecture == "mlp" else (task_inputs, task_classes)
    specs = []
    for i in range(n_networks):
        rule = get_rule(rules[i % len(rules)])
        specs.append(RunSpec(rule=rule.name, learning_rate=rule.default_learning_rate, batch_size=batch_size,
                             n_epochs=n_epochs, seed=derive_seed("bench", i), layer_sizes=sizes, n_probe=n_probe,
                             n_checkpoints=n_checkpoints, weight_decay=rule.default_weight_decay,
                             architecture=architecture, channels=tuple(channels),
                             eval_subset=EVAL_SUBSET if eval_subset is None else eval_subset))
    return specs


def _layer_macs(spec, task) -> tuple[list[int], list[int], str]:
    """Per-example multiply-adds of every weight layer, hidden-layer units, and a one-line shape label."""
    if spec.architecture == "mlp":
        sizes = spec.layer_sizes
        return ([a * b for a, b in zip(sizes[:-1], sizes[1:])], list(sizes[1:-1]),
                "MLP " + "-".join(map(str, sizes)))
    from virtual_lab.lab.conv_geometry import conv_input_shape, conv_layers

    layers = conv_layers(spec.architecture, spec.channels, conv_input_shape(task.image_shape), spec.layer_sizes[-1])
    macs = [layer.n_units * layer.fan_in if layer.kind == "conv" else layer.n_in * layer.n_out for layer in layers]
    label = f"{spec.architecture.upper()} " + ", ".join(
        f"{layer.name} {layer.n_in}->{layer.n_out}" for layer in layers)
    return macs, [layer.n_units for layer in layers[:-1]], label


def run_benchmark(*, architecture: str = "mlp", n_networks: int = 64, hidden_sizes: Sequence[int] = (128, 128),
                  channels: Sequence[int] = (), batch_size: int = 64, n_epochs: int = 20, n_checkpoints: int = 21,
                  n_probe: int = 200, rules: Sequence[str] = DEFAULT_RULES, n_threads: int = 2,
                  n_reference_networks: int = 8, n_reference_steps: int = 100, device: str = "cpu",
                  peak_size: int = 1024, peak: float | None = None, eval_subset: int | None = None) -> dict:
    """Time the population engine against one-at-a-time training on digits.

    Parameters
    ----------
    architecture : {"mlp", "cnn", "resnet"}, default="mlp"
    n_networks : int, default=64
        Networks in the population (rules assigned round-robin).
    hidden_sizes : sequence of int, default=(128, 128)
        The default MLP: 64-128-128-10 (``"mlp"`` only).
    channels : sequence of int, default=()
        Convolutional widths (empty = the architecture's default; conv architectures only).
    batch_size, n_epochs, n_checkpoints, n_probe : int
        As in a protocol; the defaults give 480 steps of digits, 21 checkpoints and 200 probes.
    rules : sequence of str, default=the paper's four rules
    n_threads : int, default=2
        Torch intra-op threads for every measurement (restored afterwards).
    n_reference_networks : int, default=8
        Networks the one-at-a-time reference trains (the first ones of the population, so the same mix of
        rules; its rate does not depend on how many).
    n_reference_steps : int, default=100
        Steps each reference network trains.
    device : str, default="cpu"
        Device of the engine and of the matmul peak ("cuda" on a GPU machine); the reference runs on CPU.
    peak_size : int, default=1024
        Side of the square matrices whose product measures the matmul peak.
    peak : float, optional
        A matmul peak (FLOP/s) already measured in this run (so several architectures share one).
    eval_subset : int, optional
        Training examples of the recorded loss (:attr:`~virtual_lab.lab.spec.RunSpec.eval_subset`; 0 = all);
        default the protocols' default, :data:`virtual_lab.lab.spec.EVAL_SUBSET`.

    Returns
    -------
    dict
        JSON-serializable: ``config``, ``machine``, ``engine``, ``recording``, ``reference``, ``speedup``,
        ``matmul_peak_flops``, ``fraction_of_peak``. ``recording`` holds the share of this run
        (``record_fraction``), what one checkpoint costs in seconds (``checkpoint_s``, of which the loss
        ``checkpoint_loss_s``) and in training steps with the evaluation subset and, projected from the loss
        time, with the whole training set (``full_pass_*``), and the share both would take at the quickstart
        protocol's checkpoint density (``quickstart_density``).
    """
    import torch

    from virtual_lab.lab.engine import train_cohort
    from virtual_lab.lab.tasks import load_digits_task
    from virtual_lab.lab.spec import n_training_steps

    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if n_networks < 1 or n_reference_networks < 1 or n_reference_steps < 1:
        raise ValueError("n_networks, n_reference_networks and n_reference_steps must be >= 1, got "
                         f"{n_networks}, {n_reference_networks}, {n_reference_steps}")
    if architecture not in ("mlp", "cnn", "resnet"):
        raise ValueError(f"architecture must be one of mlp, cnn, resnet; got {architecture!r}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        task = load_digits_task(n_probe=n_probe, seed=0)
        specs = _population_specs(n_networks, hidden_sizes, batch_size, n_epochs, rules, n_checkpoints, n_probe,
                                  task.n_features, task.n_classes, architecture, channels, eval_subset)
        macs, hidden_units, label = _layer_macs(specs[0], task)
        per_network = [rule_flops_per_step(macs, batch_size, s.rule, hidden_units=hidden_units,
                                           n_outputs=task.n_classes) for s in specs]
        flops_per_step = sum(per_network) / len(per_network)
        if peak is None:
            peak = measure_matmul_peak(size=peak_size, device=device)

        warm_up = [dataclasses.replace(s, n_epochs=1, n_checkpoints=2) for s in specs[: min(4, n_networks)]]
        train_cohort(warm_up, task, device=device)  # warm up allocator and kernels
        timings: dict = {}
        train_cohort(specs, task, device=device, timings=timings)
        n_steps = n_training_steps(len(task.train_y), batch_size, n_epochs)
        train_s = timings["total"] - timings["record"]
        engine_rate = n_networks * n_steps / train_s
        recording = _recording(specs, task, timings, n_steps)

        n_ref = min(n_reference_networks, n_networks)
        reference_rate, reference_flops = _reference_rates(specs[:n_ref], per_network, task, n_reference_steps)
    finally:
        torch.set_num_threads(previous_threads)

    engine_flops = engine_rate * flops_per_step
    result = {
        "config": {"architecture": architecture, "network": label, "layer_sizes": list(specs[0].layer_sizes),
                   "channels": list(specs[0].channels), "n_networks": n_networks,
                   "batch_size": batch_size, "n_steps": n_steps, "n_checkpoints": n_checkpoints, "n_probe": n_probe,
                   "rules": list(rules), "n_threads": n_threads, "device": device,
                   "eval_subset": specs[0].eval_subset,
                   "n_reference_networks": n_ref, "n_reference_steps": n_reference_steps,
                   "peak_matmul_size": peak_size},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_version": torch.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "engine": {"network_steps_per_s": engine_rate, "train_s": train_s, "record_s": timings["record"],
                   "total_s": timings["total"], "record_fraction": timings["record"] / timings["total"],
                   "flops_per_network_step": flops_per_step, "achieved_flops": engine_flops},
        "recording": recording,
        "reference": {"network_steps_per_s": reference_rate, "achieved_flops": reference_flops},
        "speedup": engine_rate / reference_rate,
        "matmul_peak_flops": peak,
        "fraction_of_peak": engine_flops / peak,
    }
    return result


def _recording(specs: Sequence, task, timings: dict, n_steps: int) -> dict:
    """The recording figures of a timed run (``timings`` of :func:`~virtual_lab.lab.engine.train_cohort`).

    What a checkpoint would cost with the loss on the whole training set is projected from the same run: the
    measured loss time (``record_loss``) scaled by training-set size over evaluation-subset size (the loss pass
    is a forward pass, linear in its examples), the rest of the recording as measured.
    """
    from virtual_lab.lab.spec import eval_subset_indices

    n_train, n_checkpoints = len(task.train_y), specs[0].n_checkpoints
    subset = eval_subset_indices(n_train, specs[0].eval_subset, specs[0].task_seed)
    n_loss = n_train if subset is None else len(subset)
    step_s = (timings["total"] - timings["record"]) / n_steps
    checkpoint_s = timings["record"] / n_checkpoints
    loss_s = timings["record_loss"] / n_checkpoints
    full_checkpoint_s = checkpoint_s + loss_s * (n_train / n_loss - 1)
    per_checkpoint = n_steps / n_checkpoints
    density = _quickstart_steps_per_checkpoint()
    return {
        "eval_subset": specs[0].eval_subset, "n_loss_examples": n_loss, "n_train": n_train,
        "record_fraction": timings["record"] / timings["total"], "steps_per_checkpoint": per_checkpoint,
        "checkpoint_s": checkpoint_s, "checkpoint_loss_s": loss_s, "checkpoint_cost_steps": checkpoint_s / step_s,
        "full_pass_checkpoint_s": full_checkpoint_s, "full_pass_checkpoint_cost_steps": full_checkpoint_s / step_s,
        "full_pass_record_fraction": recording_share(full_checkpoint_s / step_s, per_checkpoint),
        "quickstart_density": {"steps_per_checkpoint": density,
                               "record_fraction": recording_share(checkpoint_s / step_s, density),
                               "full_pass_record_fraction": recording_share(full_checkpoint_s / step_s, density)},
    }


def _quickstart_steps_per_checkpoint() -> float:
    """Training steps per checkpoint of the bundled quickstart protocol (digits): steps / checkpoints, as
    :func:`recording_share` counts them (initialization is a checkpoint too)."""
    from virtual_lab.lab.spec import n_training_steps
    from virtual_lab.lab.tasks import load_digits_task
    from virtual_lab.protocol import load_protocol

    protocol = load_protocol("quickstart")
    n_train = len(load_digits_task(n_probe=protocol.task.n_probe, seed=protocol.task.seed).train_y)
    n_steps = n_training_steps(n_train, protocol.training.batch_size, protocol.training.n_epochs)
    return n_steps / protocol.training.n_checkpoints


def _reference_rates(specs: Sequence, flops_per_step: Sequence[float], task, n_steps: int) -> tuple[float, float]:
    """Network-steps/s and FLOP/s of the one-at-a-time reference over ``specs`` (``n_steps`` timed steps each)."""
    import torch

    from virtual_lab.lab.spec import batch_order

    train_x, train_y = torch.as_tensor(task.train_x), torch.as_tensor(task.train_y)
    if specs[0].architecture == "mlp":
        from virtual_lab.lab.reference import ReferenceTrainer

        def trainer_of(spec):
            return ReferenceTrainer(spec)
    else:
        from virtual_lab.lab.conv_geometry import conv_input_shape, task_images
        from virtual_lab.lab.conv_reference import ConvReferenceTrainer

        input_shape = conv_input_shape(task.image_shape)
        train_x = torch.as_tensor(task_images(task.train_x, task.image_shape))

        def trainer_of(spec):
            return ConvReferenceTrainer(spec, input_shape)
    ref_time, ref_steps, ref_flops = 0.0, 0, 0.0
    for spec, flops in zip(specs, flops_per_step):
        trainer = trainer_of(spec)
        order = batch_order(spec.seed, len(task.train_y), spec.batch_size, spec.n_epochs)[:n_steps + 1]
        batches = [(train_x[i], train_y[i]) for i in order]
        trainer.step(*batches[0])  # warm up
        t0 = time.perf_counter()
        for x, y in batches[1:]:
            trainer.step(x, y)
        ref_time += time.perf_counter() - t0
        ref_steps += len(batches) - 1
        ref_flops += flops * (len(batches) - 1)
    return ref_steps / ref_time, ref_flops / ref_time


def format_benchmark(result: dict) -> str:
    """A few human-readable lines summarizing :func:`run_benchmark`'s result."""
    c, e, r = result["config"], result["engine"], result["reference"]
    rec = result["recording"]
    q = rec["quickstart_density"]
    return "\n".join([
        f"{c['network']}, {c['n_networks']} networks ({', '.join(c['rules'])}), batch {c['batch_size']}, "
        f"{c['n_threads']} thread(s), {c['device']}",
        f"  population engine : {e['network_steps_per_s']:8.0f} network-steps/s "
        f"({e['achieved_flops'] / 1e9:.1f} GFLOP/s)",
        f"  one at a time     : {r['network_steps_per_s']:8.0f} network-steps/s "
        f"({r['achieved_flops'] / 1e9:.1f} GFLOP/s)",
        f"  speedup           : {result['speedup']:.2f}x",
        f"  matmul peak       : {result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; engine at "
        f"{100 * result['fraction_of_peak']:.0f}% of peak",
        f"  recording         : {100 * e['record_fraction']:.1f}% of the run "
        f"({c['n_checkpoints']} checkpoints x {c['n_probe']} probes, loss on {rec['n_loss_examples']} training "
        f"examples); a checkpoint costs {rec['checkpoint_cost_steps']:.2f} steps "
        f"({rec['full_pass_checkpoint_cost_steps']:.2f} projected with the loss on the whole training set: "
        f"{100 * rec['full_pass_record_fraction']:.1f}% of the run)",
        f"  at quickstart's   : {100 * q['record_fraction']:.1f}% (whole-set loss "
        f"{100 * q['full_pass_record_fraction']:.1f}%), a checkpoint every {q['steps_per_checkpoint']:.0f} steps",
    ])


def write_benchmark(result: dict, path: str | Path) -> Path:
    """Write a benchmark result as JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path
