"""Coverage check of the power analysis' 95% intervals: are they honest?

The same small power experiment is repeated ``--repeats`` times, each time with **fresh networks** (a new
protocol seed, so new initializations and data orders) and **fresh rig seeds** (new units and noise draws).
Each repeat reports an accuracy and its 95% network-bootstrap interval (as ``virtual-lab power`` does) at
one operating point. The check counts how often a repeat's interval covers

- the *expected* accuracy of this experiment: the mean accuracy of the other repeats (leave-one-out, so a
  repeat is never compared with itself) -- this is the coverage the interval claims; it must be >= 90%;
- each *other* repeat's accuracy (all ordered pairs) -- a stricter, prediction-interval reading, reported
  for information (a confidence interval of width w covers a new estimate less often than the mean).

Usage (from the repository root)::

    python scripts/power_coverage.py --repeats 20 --out coverage.json

Defaults (chosen so that a repeat takes seconds): the quickstart protocol's task and rules (digits, the
paper's four rules) on a smaller MLP (64-32-32-10), 6 networks per (rule, learning rate) x 2 learning rates
= 48 networks per repeat, 5 epochs, 11 checkpoints, 100 probes; rig "paper" with 10 units per layer, noise
1.0 x signal SD, 5 sessions; linear SVM, 10 grouped splits, 1 rig seed. The result (and the figure quoted
in the README) is written as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def make_population(protocol, seed: int):
    """Train one fresh population in memory (no NWB files): the protocol's sweep under ``seed``."""
    from virtual_lab.lab.sweep import expand_sweep, group_cohorts
    from virtual_lab.lab.tasks import load_task
    from virtual_lab.lab.train import train_population

    protocol = dataclasses.replace(protocol, seed=seed)
    task = load_task(protocol.task.name, n_probe=protocol.task.n_probe, seed=protocol.task.seed)
    specs = expand_sweep(protocol, task.n_features, task.n_classes)
    ground_truths = []
    for cohort in group_cohorts(specs):
        ground_truths.extend(train_population(cohort, task, device="cpu"))
    return ground_truths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example:\n  python scripts/power_coverage.py --repeats 20",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="protocols/quickstart.toml")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seeds-per-rule", type=int, default=6, help="networks per (rule, learning rate)")
    parser.add_argument("--learning-rate-scales", default="0.5,2.0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", default="32,32", help="hidden layer sizes")
    parser.add_argument("--checkpoints", type=int, default=11, help="recorded checkpoints per network")
    parser.add_argument("--probe", type=int, default=100, help="probe stimuli")
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--decoder", default="linear_svm")
    parser.add_argument("--seed", type=int, default=1000, help="first protocol seed; repeat i uses seed + i")
    parser.add_argument("--out", type=Path, default=Path("power_coverage.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from virtual_lab.analysis.power import power_analysis
    from virtual_lab.protocol import load_protocol

    base = load_protocol(args.protocol)
    scales = tuple(float(x) for x in args.learning_rate_scales.split(","))
    base = dataclasses.replace(
        base, sweep=dataclasses.replace(base.sweep, n_seeds=args.seeds_per_rule, learning_rate_scales=scales),
        training=dataclasses.replace(base.training, n_epochs=args.epochs, n_checkpoints=args.checkpoints),
        network=dataclasses.replace(base.network, hidden_sizes=tuple(int(x) for x in args.hidden.split(","))),
        task=dataclasses.replace(base.task, n_probe=args.probe))
    repeats = []
    for i in range(args.repeats):
        started = time.perf_counter()
        population = make_population(base, args.seed + i)
        result = power_analysis(population, units=[args.units], noise=[args.noise], sessions=[args.sessions],
                                rig="paper", cap_units=True, rig_seeds=1, n_splits=args.splits,
                                decoder=args.decoder, seed=args.seed + i, progress=False)
        point = {"repeat": i, "protocol_seed": args.seed + i, "rig_seeds": result.provenance["rig_seeds"],
                 "n_networks": result.n_networks, "accuracy": float(result.accuracy[0, 0, 0]),
                 "ci_low": float(result.ci_low[0, 0, 0]), "ci_high": float(result.ci_high[0, 0, 0]),
                 "seconds": time.perf_counter() - started}
        repeats.append(point)
        print(f"repeat {i}: accuracy {point['accuracy']:.3f} [{point['ci_low']:.3f}, {point['ci_high']:.3f}] "
              f"({point['seconds']:.0f} s)", file=sys.stderr, flush=True)

    acc = np.array([r["accuracy"] for r in repeats])
    low = np.array([r["ci_low"] for r in repeats])
    high = np.array([r["ci_high"] for r in repeats])
    n = len(repeats)
    loo = (acc.sum() - acc) / (n - 1)
    covers_mean = (low <= loo) & (loo <= high)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    covers_other = np.mean([low[i] <= acc[j] <= high[i] for i, j in pairs])
    summary = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n_repeats": n, "mean_accuracy": float(acc.mean()), "sd_accuracy_across_repeats": float(acc.std(ddof=1)),
        "mean_interval_width": float(np.mean(high - low)),
        "coverage_of_expected_accuracy": float(covers_mean.mean()),
        "coverage_of_other_repeats": float(covers_other),
        "passes": bool(covers_mean.mean() >= 0.9),
        "repeats": repeats,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"coverage of the expected accuracy: {summary['coverage_of_expected_accuracy']:.0%} of {n} repeats "
          f"(needs >= 90%); of other repeats' accuracy: {covers_other:.0%}; mean accuracy {acc.mean():.3f}, "
          f"SD across repeats {summary['sd_accuracy_across_repeats']:.3f}, mean interval width "
          f"{summary['mean_interval_width']:.3f}")
    return 0 if summary["passes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
