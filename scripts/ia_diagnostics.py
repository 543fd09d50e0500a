"""Information alignment at small scale: how far its feedback matrices move, and why conv IA can diverge.

Two measurements quoted in the README, reproducible from the repository root:

``python scripts/ia_diagnostics.py alignment --epochs 20 105``
    Feedback alignment and information alignment MLPs (64-128-128-10, digits, batch 64, the quickstart's
    three learning rates x 3 seeds) trained for each number of epochs. Prints, per network, the cosine
    between ``B`` and ``W`` and the norm of ``B`` in every layer at the end of training, next to the number
    of steps in units of IA's feedback time constant ``(1 - momentum) / (2 gamma lr)``
    (:func:`virtual_lab.lab.rules.feedback_time_constant`). FA's ``B`` never changes (its cosine grows only
    because ``W`` aligns with ``B``); IA's ``B`` moves toward ``W`` over about one time constant.

``python scripts/ia_diagnostics.py conv-ablation``
    6 CNN IA networks (batch 32, 10 epochs, digits) for each setting of the local loss: Kunin et al.'s
    coefficients, alpha / 10, beta / 10, no amp term, no null term. Prints how many diverged or ended at
    chance and the median / largest final norm of ``B`` per layer.

Each run takes seconds to a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from virtual_lab.lab.conv import train_conv_population
from virtual_lab.lab.rules import IA_DEFAULTS, feedback_time_constant
from virtual_lab.lab.tasks import load_digits_task
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def alignment(epochs: list[int], seeds: int, scale: float = 1.0) -> None:
    task = load_digits_task(n_probe=200, seed=0)
    alpha, beta, gamma = (scale * IA_DEFAULTS[name] for name in ("ia_alpha", "ia_beta", "ia_gamma"))
    steps_per_epoch = len(task.train_y) // 64
    for n_epochs in epochs:
        specs = [RunSpec(rule=rule, learning_rate=0.02 * scale, batch_size=64, n_epochs=n_epochs, seed=100 + i,
                         n_checkpoints=2, ia_alpha=alpha, ia_beta=beta, ia_gamma=gamma)
                 for rule in ("feedback_alignment", "information_alignment") for scale in (0.5, 1.0, 2.0)
                 for i in range(seeds)]
        state: dict = {}
        train_population(specs, task, final_state=state)
        steps = n_epochs * steps_per_epoch
        print(f"\n{n_epochs} epochs = {steps} steps, IA coefficients x {scale:g}")
        print(f"{'rule':22s} {'lr':>6s} {'steps/tau':>9s}  cos(B, W) per layer        |B| per layer")
        for j, spec in enumerate(specs):
            tau = feedback_time_constant("information_alignment", spec.learning_rate, ia_gamma=gamma)
            cos = " ".join(f"{_cosine(w[j], b[j]):5.2f}" for w, b in zip(state["weights"], state["feedback"]))
            norms = " ".join(f"{np.linalg.norm(b[j]):5.2f}" for b in state["feedback"])
            print(f"{spec.rule:22s} {spec.learning_rate:6.3f} {steps / tau:9.2f}  {cos}   {norms}")


def conv_ablation(seeds: int, epochs: int = 10, scale: float = 1.0) -> None:
    task = load_digits_task(n_probe=100, seed=0)
    a, b, g = (scale * IA_DEFAULTS[name] for name in ("ia_alpha", "ia_beta", "ia_gamma"))
    settings = {"Kunin et al.": (a, b, g), "alpha / 10": (a / 10, b, g), "beta / 10": (a, b / 10, g),
                "no amp term": (0.0, b, g), "no null term": (a, 0.0, g)}
    specs = [RunSpec(rule="information_alignment", learning_rate=0.02, batch_size=32, n_epochs=epochs, seed=10 + i,
                     layer_sizes=(64, 10), architecture="cnn", n_probe=100, n_checkpoints=3, ia_alpha=alpha,
                     ia_beta=beta, ia_gamma=gamma)
             for alpha, beta, gamma in settings.values() for i in range(seeds)]
    state: dict = {}
    results = train_conv_population(specs, task, final_state=state)
    for k, name in enumerate(settings):
        block = range(k * seeds, (k + 1) * seeds)
        diverged = sum(results[j].diverged for j in block)
        at_chance = sum(not results[j].diverged and results[j].test_accuracy[-1] < 0.3 for j in block)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.array([[np.linalg.norm(f[j].astype(np.float64)) for f in state["feedback"]] for j in block])
        norms[~np.isfinite(norms)] = np.nan
        print(f"{name:13s} diverged {diverged}/{seeds}, at chance {at_chance}/{seeds}; final |B| per layer: "
              f"median {np.round(np.nanmedian(norms, axis=0), 1).tolist()}, "
              f"largest {[f'{v:.3g}' for v in np.nanmax(norms, axis=0)]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    align = commands.add_parser("alignment", help="B-W alignment of FA and IA MLPs after each training length")
    align.add_argument("--epochs", type=int, nargs="+", default=[20, 105])
    align.add_argument("--seeds", type=int, default=3)
    align.add_argument("--scale", type=float, default=1.0,
                       help="multiply all three IA coefficients (alpha, beta, gamma) by this factor")
    ablation = commands.add_parser("conv-ablation", help="which term of IA's local loss destabilizes CNNs")
    ablation.add_argument("--seeds", type=int, default=6)
    ablation.add_argument("--epochs", type=int, default=10)
    ablation.add_argument("--scale", type=float, default=1.0,
                          help="multiply all three IA coefficients before the ablation's changes")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.command == "alignment":
        alignment(args.epochs, args.seeds, args.scale)
    else:
        conv_ablation(args.seeds, args.epochs, args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
