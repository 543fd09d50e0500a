"""Protocol sweep -> run specs, grouped into populations that train together."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.train import RunSpec
from virtual_lab.protocol import Protocol
from virtual_lab.seeding import derive_seed


def expand_sweep(protocol: Protocol, n_features: int, n_classes: int) -> list[RunSpec]:
    """Every run of a protocol's sweep: rules x learning-rate scales x seeds.

    Every run gets its own seed (initialization and data order), derived from the protocol seed, the rule,
    the learning-rate scale and the replicate. Seeds are deliberately *not* paired across rules: with
    paired seeds, twin networks that share an initialization but differ in rule sit on both sides of a
    network-grouped split, and a decoder of an uninformative feature (e.g. the initial checkpoint) is then
    pushed systematically *below* chance.

    Parameters
    ----------
    protocol : Protocol
    n_features, n_classes : int
        Input and output sizes of the task.

    Returns
    -------
    list of RunSpec
    """
    sizes = (n_features, *protocol.network.hidden_sizes, n_classes)
    specs = []
    for rule_name in protocol.sweep.rules:
        rule = get_rule(rule_name)
        overrides = protocol.rules.get(rule.name)
        base_lr = overrides.learning_rate if overrides and overrides.learning_rate > 0 else rule.default_learning_rate
        ia = {}
        if overrides is not None:
            ia = {"ia_alpha": overrides.ia_alpha, "ia_beta": overrides.ia_beta, "ia_gamma": overrides.ia_gamma}
        for scale_index, scale in enumerate(protocol.sweep.learning_rate_scales):
            for replicate in range(protocol.sweep.n_seeds):
                specs.append(RunSpec(
                    rule=rule.name,
                    learning_rate=float(base_lr * scale),
                    batch_size=protocol.training.batch_size,
                    n_epochs=protocol.training.n_epochs,
                    seed=derive_seed(protocol.seed, "run", rule.name, scale_index, replicate),
                    layer_sizes=sizes,
                    task=protocol.task.name,
                    task_seed=protocol.task.seed,
                    n_probe=protocol.task.n_probe,
                    n_checkpoints=protocol.training.n_checkpoints,
                    checkpoint_spacing=protocol.training.checkpoint_spacing,
                    protocol=protocol.name,
                    **ia,
                ))
    return specs


def group_cohorts(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """Group runs that can share one batched population (equal :attr:`RunSpec.cohort_key`)."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        groups[spec.cohort_key].append(spec)
    return list(groups.values())
