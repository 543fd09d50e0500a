"""A protocol's sweep -> run specs (the lab's :class:`~virtual_lab.lab.spec.RunSpec`), grouped into cohorts.

A grid sweep crosses its lists here; a sweep with ``sampling = "random"`` draws its runs from priors
(:mod:`virtual_lab.sweeps.priors`); either multiplies each rule's rate by its learning-curve calibration when
the protocol matches curves (:mod:`virtual_lab.sweeps.calibrate`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping, Sequence

from virtual_lab.lab.rules import feedback_time_constant, get_rule
from virtual_lab.lab.spec import RunSpec
from virtual_lab.protocol import Protocol
from virtual_lab.seeding import derive_seed


def _hidden_size_options(protocol: Protocol) -> list[tuple[int, ...]]:
    """Hidden-layer sizes crossed by the sweep: ``widths x depths`` of uniform layers, or the network's own."""
    base = tuple(protocol.network.hidden_sizes)
    widths, depths = protocol.sweep.widths, protocol.sweep.depths
    if not widths and not depths:
        return [base]
    return [(w,) * d for w in (widths or (base[0],)) for d in (depths or (len(base),))]


def expand_sweep(protocol: Protocol, n_features: int, n_classes: int,
                 calibrated_scales: Mapping[str, float] | None = None) -> list[RunSpec]:
    """Every run of a protocol's sweep: tasks x paradigms x architectures (hidden sizes for the MLP) x batch
    sizes x weight decays x rules x learning-rate scales x seeds.

    With ``[sweep] sampling = "random"`` the runs are drawn from the sweep's priors instead
    (:func:`virtual_lab.sweeps.priors.sample_sweep`).

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
    calibrated_scales : mapping of str to float, optional
        Per rule, the learning-rate multiplier chosen by learning-curve calibration
        (:attr:`virtual_lab.sweeps.calibrate.Calibration.scales`); it multiplies every rate of the rule and is
        stored in each spec's ``calibrated_scale``. Required when the protocol has ``[sweep.match_curves]``.

    Returns
    -------
    list of RunSpec
        In sweep order; runs with equal :attr:`RunSpec.cohort_key` can train in one population, and each
        run's ``task`` names the task it trains on. Each spec's ``learning_rate_scale`` is the multiplier of
        its rule's base rate (:meth:`virtual_lab.protocol.Protocol.base_learning_rate`) it trains with.

    Raises
    ------
    ValueError
        The protocol matches learning curves and ``calibrated_scales`` lacks one of its rules.
    """
    from virtual_lab.lab.tasks import task_dimensions

    sweep = protocol.sweep
    calibrated_scales = _calibrated_scales(protocol, calibrated_scales)
    if sweep.sampling == "random":
        from virtual_lab.sweeps.priors import sample_sweep

        return sample_sweep(protocol, n_features, n_classes, calibrated_scales)
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
                                                    paradigm=paradigm, calibrated_scales=calibrated_scales))
    return specs


def _calibrated_scales(protocol: Protocol, scales: Mapping[str, float] | None) -> dict[str, float]:
    """Every rule's calibration multiplier (1 without ``[sweep.match_curves]``), checked."""
    if protocol.sweep.match_curves is None:
        if scales:
            raise ValueError(f"protocol {protocol.name!r} has no [sweep.match_curves]; calibrated scales "
                             f"{dict(scales)} would not be used")
        return {rule: 1.0 for rule in protocol.sweep.rules}
    missing = [rule for rule in protocol.sweep.rules if rule not in (scales or {})]
    if missing:
        raise ValueError(f"protocol {protocol.name!r} matches learning curves ([sweep.match_curves]): calibrate "
                         f"first (virtual_lab.sweeps.calibrate.calibrate_learning_rates); no calibrated scale for "
                         f"{', '.join(missing)}")
    return {rule: float(scales[rule]) for rule in protocol.sweep.rules}


def _rule_runs(protocol: Protocol, sizes: tuple[int, ...], task: str, batch_size: int, decay: float | None,
               extra: list[str], *, architecture: str = "mlp", channels: tuple[int, ...] = (),
               paradigm: str = "supervised", calibrated_scales: Mapping[str, float]) -> list[RunSpec]:
    """Rules x learning-rate scales x seeds of one cell of the sweep."""
    specs = []
    for rule_name in protocol.sweep.rules:
        for scale_index, scale in enumerate(protocol.sweep.learning_rate_scales):
            for replicate in range(protocol.sweep.n_seeds):
                specs.append(run_spec(
                    protocol, rule_name, scale=scale, calibrated_scale=calibrated_scales[rule_name],
                    seed=derive_seed(protocol.seed, "run", get_rule(rule_name).name, scale_index, replicate, *extra),
                    sizes=sizes, task=task, batch_size=batch_size, decay=decay, architecture=architecture,
                    channels=channels, paradigm=paradigm))
    return specs


def run_spec(protocol: Protocol, rule_name: str, *, scale: float, calibrated_scale: float, seed: int,
             sizes: tuple[int, ...], task: str, batch_size: int, decay: float | None, architecture: str = "mlp",
             channels: tuple[int, ...] = (), paradigm: str = "supervised", n_epochs: int | None = None) -> RunSpec:
    """One run of a protocol: the rule's settings of ``[rules.<name>]`` and its base rate, resolved.

    Parameters
    ----------
    protocol : Protocol
    rule_name : str
    scale : float
        Multiplier of the rule's base learning rate (a grid value or a draw).
    calibrated_scale : float
        Learning-curve calibration multiplier of the rule (1 without calibration).
    seed : int
        The run's seed (initialization and data order).
    sizes, task, batch_size, architecture, channels, paradigm
        As :class:`RunSpec`.
    decay : float or None
        Weight decay; None = the rule's default.
    n_epochs : int, optional
        Default ``[training].n_epochs``.

    Returns
    -------
    RunSpec
        ``learning_rate = base rate x calibrated_scale x scale``, ``learning_rate_scale = calibrated_scale x
        scale``.
    """
    rule = get_rule(rule_name)
    overrides = protocol.rules.get(rule.name)
    options = {}
    if overrides is not None:
        options = {"ia_alpha": overrides.ia_alpha, "ia_beta": overrides.ia_beta, "ia_gamma": overrides.ia_gamma,
                   "perturbation_sd": overrides.perturbation_sd}
    base_lr = protocol.base_learning_rate(rule.name) * calibrated_scale  # exact when calibrated_scale == 1
    return RunSpec(
        rule=rule.name,
        learning_rate=float(base_lr * scale),
        batch_size=batch_size,
        n_epochs=protocol.training.n_epochs if n_epochs is None else n_epochs,
        seed=seed,
        layer_sizes=tuple(sizes),
        task=task,
        task_seed=protocol.task.seed,
        n_probe=protocol.task.n_probe,
        n_checkpoints=protocol.training.n_checkpoints,
        checkpoint_spacing=protocol.training.checkpoint_spacing,
        eval_subset=protocol.training.eval_subset,
        protocol=protocol.name,
        weight_decay=rule.default_weight_decay if decay is None else float(decay),
        architecture=architecture,
        channels=tuple(channels),
        paradigm=paradigm,
        learning_rate_scale=float(calibrated_scale * scale),
        calibrated_scale=float(calibrated_scale),
        **options,
    )


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
        what = f"(1 - momentum) / ({get_rule(rule).feedback_decay_formula})"
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
