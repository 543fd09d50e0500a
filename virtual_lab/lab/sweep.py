"""Protocol sweep -> run specs, grouped into populations that train together."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

from virtual_lab.lab.rules import feedback_time_constant, get_rule
from virtual_lab.lab.train import RunSpec
from virtual_lab.protocol import Protocol
from virtual_lab.seeding import derive_seed


def _hidden_size_options(protocol: Protocol) -> list[tuple[int, ...]]:
    """Hidden-layer sizes crossed by the sweep: ``widths x depths`` of uniform layers, or the network's own."""
    base = tuple(protocol.network.hidden_sizes)
    widths, depths = protocol.sweep.widths, protocol.sweep.depths
    if not widths and not depths:
        return [base]
    return [(w,) * d for w in (widths or (base[0],)) for d in (depths or (len(base),))]


def expand_sweep(protocol: Protocol, n_features: int, n_classes: int) -> list[RunSpec]:
    """Every run of a protocol's sweep: tasks x paradigms x architectures (hidden sizes for the MLP) x batch
    sizes x weight decays x rules x learning-rate scales x seeds.

    Every run gets its own seed (initialization and data order), derived from the protocol seed, the rule,
    the learning-rate scale and the replicate (and, for the sweep dimensions a protocol crosses, the task,
    paradigm, architecture, hidden sizes, batch size and weight decay; a sweep that crosses none of them keeps the seeds and run ids
    of earlier versions). Seeds are deliberately *not* paired across rules: with paired seeds, twin networks
    that share an initialization but differ in rule sit on both sides of a network-grouped split, and a
    decoder of an uninformative feature (e.g. the initial checkpoint) is then pushed systematically *below*
    chance.

    Parameters
    ----------
    protocol : Protocol
    n_features, n_classes : int
        Input and output sizes of the protocol's task (``[task].name``); other tasks of ``sweep.tasks`` use
        :func:`virtual_lab.lab.tasks.task_dimensions`.

    Returns
    -------
    list of RunSpec
        In sweep order; runs with equal :attr:`RunSpec.cohort_key` can train in one population, and each
        run's ``task`` names the task it trains on.
    """
    from virtual_lab.lab.tasks import task_dimensions

    sweep = protocol.sweep
    tasks = sweep.tasks or (protocol.task.name,)
    architectures = sweep.architectures or (protocol.network.architecture,)
    paradigms = sweep.paradigms or (protocol.training.paradigm,)
    hidden_options = _hidden_size_options(protocol)
    batch_sizes = sweep.batch_sizes or (protocol.training.batch_size,)
    specs = []
    for task in tasks:
        dims = (n_features, n_classes) if task == protocol.task.name else task_dimensions(task)
        for paradigm in paradigms:
            n_outputs = dims[1] if paradigm == "supervised" else protocol.network.projection_size
            for architecture in architectures:
                channels = protocol.network.channels_of(architecture)
                shapes = ([(dims[0], *hidden, n_outputs) for hidden in hidden_options] if architecture == "mlp"
                          else [(dims[0], n_outputs)])
                for sizes in shapes:
                    for batch_size in batch_sizes:
                        for decay_index, decay in enumerate(sweep.weight_decays or (None,)):
                            extra = []  # seed parts only for the dimensions this sweep crosses
                            if sweep.tasks:
                                extra.append(f"task={task}")
                            if sweep.paradigms:
                                extra.append(f"paradigm={paradigm}")
                            if sweep.architectures:
                                extra.append(f"architecture={architecture}")
                            if (sweep.widths or sweep.depths) and architecture == "mlp":
                                extra.append("hidden=" + ",".join(map(str, sizes[1:-1])))
                            if sweep.batch_sizes:
                                extra.append(f"batch={batch_size}")
                            if sweep.weight_decays:
                                extra.append(f"decay={decay_index}")
                            specs.extend(_rule_runs(protocol, sizes, task, batch_size, decay, extra,
                                                    architecture=architecture, channels=channels,
                                                    paradigm=paradigm))
    return specs


def base_learning_rate(protocol: Protocol, rule_name: str) -> float:
    """The learning rate a protocol's ``learning_rate_scales`` multiply for one rule: its ``[rules.<name>]``
    ``learning_rate`` when positive, else the rule's default."""
    rule = get_rule(rule_name)
    overrides = protocol.rules.get(rule.name)
    return float(overrides.learning_rate if overrides and overrides.learning_rate > 0 else rule.default_learning_rate)


def _rule_runs(protocol: Protocol, sizes: tuple[int, ...], task: str, batch_size: int, decay: float | None,
               extra: list[str], *, architecture: str = "mlp", channels: tuple[int, ...] = (),
               paradigm: str = "supervised") -> list[RunSpec]:
    """Rules x learning-rate scales x seeds of one cell of the sweep."""
    specs = []
    for rule_name in protocol.sweep.rules:
        rule = get_rule(rule_name)
        overrides = protocol.rules.get(rule.name)
        base_lr = base_learning_rate(protocol, rule.name)
        options = {}
        if overrides is not None:
            options = {"ia_alpha": overrides.ia_alpha, "ia_beta": overrides.ia_beta, "ia_gamma": overrides.ia_gamma,
                       "perturbation_sd": overrides.perturbation_sd}
        weight_decay = rule.default_weight_decay if decay is None else float(decay)
        for scale_index, scale in enumerate(protocol.sweep.learning_rate_scales):
            for replicate in range(protocol.sweep.n_seeds):
                specs.append(RunSpec(
                    rule=rule.name,
                    learning_rate=float(base_lr * scale),
                    batch_size=batch_size,
                    n_epochs=protocol.training.n_epochs,
                    seed=derive_seed(protocol.seed, "run", rule.name, scale_index, replicate, *extra),
                    layer_sizes=sizes,
                    task=task,
                    task_seed=protocol.task.seed,
                    n_probe=protocol.task.n_probe,
                    n_checkpoints=protocol.training.n_checkpoints,
                    checkpoint_spacing=protocol.training.checkpoint_spacing,
                    protocol=protocol.name,
                    weight_decay=weight_decay,
                    architecture=architecture,
                    channels=tuple(channels),
                    paradigm=paradigm,
                    **options,
                ))
    return specs


def group_cohorts(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """Group runs that can share one batched population (equal :attr:`RunSpec.cohort_key`)."""
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        groups[spec.cohort_key].append(spec)
    return list(groups.values())


def short_feedback_warnings(specs: Sequence[RunSpec], steps_of: Callable[[RunSpec], int]) -> list[str]:
    """One message per rule with a learned feedback matrix when most of its runs stop before ``B`` can change.

    Information alignment and Kolen-Pollack learn ``B`` with a time constant of thousands of steps at the
    usual coefficients (:func:`virtual_lab.lab.rules.feedback_time_constant`). A run shorter than its time
    constant leaves ``B`` close to its random draw: the network is in effect a feedback-alignment network,
    and a decoder cannot be expected to tell the rules apart. A message is returned when most (more than
    half) of a rule's runs are that short. Nothing is changed; the caller logs the messages.

    Parameters
    ----------
    specs : sequence of RunSpec
    steps_of : callable
        Training steps of a run (its epochs times the batches per epoch of its task).
    """
    by_rule: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for spec in specs:
        tau = feedback_time_constant(spec.rule, spec.learning_rate, ia_gamma=spec.ia_gamma,
                                     weight_decay=spec.weight_decay)
        if tau is not None:
            by_rule[spec.rule].append((steps_of(spec), tau))
    messages = []
    for rule, runs in by_rule.items():
        short = [(steps, tau) for steps, tau in runs if steps < tau]
        if 2 * len(short) <= len(runs):
            continue
        taus = sorted({tau for _, tau in short})
        steps = sorted({s for s, _ in short})
        what = ("(1 - momentum) / (2 ia_gamma lr)" if get_rule(rule).feedback == "information_alignment"
                else "(1 - momentum) / (weight_decay lr)")
        messages.append(
            f"{rule}: {len(short)} of its {len(runs)} runs train fewer steps ({_span(steps)}) than the time "
            f"constant of their feedback matrices ({_span(taus)} steps, {what}), so their B is still close to its "
            f"random draw and they are hard to tell from feedback alignment; train for at least the time "
            f"constant to let the rule act")
    return messages


def _span(values: Sequence[float]) -> str:
    """``"2,500"`` or ``"1,250-5,000"`` (``"inf"`` for a feedback matrix that never converges)."""
    low, high = f"{values[0]:,.0f}", f"{values[-1]:,.0f}"
    return low if low == high else f"{low}-{high}"
