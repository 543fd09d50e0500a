"""Sweeps drawn from priors (``[sweep] sampling = "random"``): the unknowns of a recorded brain area as
distributions rather than grid levels.

An experimentalist does not know the learning rate, width, batch size or task of the circuit they record, so a
decoder of the learning rule should be trained on conditions spread over plausible ranges, not on three grid
levels. ``[sweep.priors]`` gives one distribution per axis (:data:`virtual_lab.protocol.PRIOR_AXES`); every
rule gets ``n_runs`` networks, each with its own draw of every prior axis, in every cell of the lists the
sweep still crosses (axes without a prior).

Determinism. A draw is a pure function of the protocol seed, the axis, the cell of the crossed lists and the
draw index, through :func:`virtual_lab.seeding.derive_seed` (a hash, so no random number generator holds any
state and none is global): each axis is its own stream, so adding a prior, a rule or more draws never changes
the draws already made. Draw ``i`` takes the same values for every rule (the rules see identical
hyperparameter samples, so no rule is told apart by a lucky draw), while every network keeps its own,
unpaired seed (:func:`virtual_lab.sweeps.expand.expand_sweep` explains why seeds are never paired).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping

from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.spec import RunSpec
from virtual_lab.protocol import Prior, Protocol
from virtual_lab.seeding import derive_seed

__all__ = ["draw_value", "sample_sweep", "unit_draw"]


def unit_draw(*parts: object) -> float:
    """A number in the open interval (0, 1), a pure function of ``parts`` (53 bits of their hash).

    Examples
    --------
    >>> unit_draw(2020, "prior", "width", 0) == unit_draw(2020, "prior", "width", 0)
    True
    >>> 0 < unit_draw("anything") < 1
    True
    """
    return ((derive_seed(*parts) >> 10) + 0.5) / 2.0 ** 53


def draw_value(prior: Prior, u: float) -> Any:
    """The value of ``prior`` at the quantile ``u`` in (0, 1) (inverse-CDF sampling).

    Parameters
    ----------
    prior : Prior
    u : float
        In (0, 1), e.g. from :func:`unit_draw`.

    Returns
    -------
    float, int or str
        ``uniform`` / ``log_uniform``: a float in [low, high]; ``int_uniform`` / ``int_log_uniform``: an int in
        [low, high]; ``choice``: one of ``values``.

    Examples
    --------
    >>> from virtual_lab.protocol import Prior
    >>> draw_value(Prior("learning_rate_scale", "log_uniform", 0.5, 2.0), 0.5)
    1.0
    >>> draw_value(Prior("width", "int_uniform", 1, 4), 0.99)
    4
    >>> draw_value(Prior("batch_size", "choice", values=(32, 64)), 0.25)
    32
    """
    if not 0 < u < 1:
        raise ValueError(f"u must lie in (0, 1), got {u!r}")
    kind, low, high = prior.distribution, prior.low, prior.high
    if kind == "choice":
        return prior.values[min(int(u * len(prior.values)), len(prior.values) - 1)]
    if kind == "uniform":
        return float(min(max(low + u * (high - low), low), high))
    if kind == "log_uniform":
        return float(min(max(math.exp(math.log(low) + u * (math.log(high) - math.log(low))), low), high))
    if kind == "int_uniform":
        n = int(high) - int(low) + 1
        return int(low) + min(int(u * n), n - 1)
    if kind == "int_log_uniform":
        value = math.floor(math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low))))
        return int(min(max(value, low), high))
    raise ValueError(f"unknown distribution {kind!r}")


def _grid(protocol: Protocol) -> dict[str, tuple]:
    """The crossed options of every axis: its list (or the protocol's single value); ``(None,)`` for an axis drawn
    from a prior."""
    sweep, network = protocol.sweep, protocol.network
    lists = {
        "task": sweep.tasks or (protocol.task.name,),
        "paradigm": sweep.paradigms or (protocol.training.paradigm,),
        "architecture": sweep.architectures or (network.architecture,),
        "width": sweep.widths or (None,),
        "depth": sweep.depths or (None,),
        "batch_size": sweep.batch_sizes or (protocol.training.batch_size,),
        "weight_decay": sweep.weight_decays or (None,),  # None = each rule's default
        "learning_rate_scale": sweep.learning_rate_scales,
    }
    return {axis: (None,) if sweep.prior(axis) else values for axis, values in lists.items()}


def _crossed_tag(protocol: Protocol, axis: str, index: int) -> list[str]:
    """Seed parts naming a cell's position along a crossed list (none for an axis with one option or a prior)."""
    sweep = protocol.sweep
    given = {"task": sweep.tasks, "paradigm": sweep.paradigms, "architecture": sweep.architectures,
             "width": sweep.widths, "depth": sweep.depths, "batch_size": sweep.batch_sizes,
             "weight_decay": sweep.weight_decays, "learning_rate_scale": sweep.learning_rate_scales}[axis]
    return [f"{axis}={index}"] if len(given) > 1 and not sweep.prior(axis) else []


def sample_sweep(protocol: Protocol, n_features: int, n_classes: int,
                 calibrated_scales: Mapping[str, float]) -> list[RunSpec]:
    """Every run of a ``sampling = "random"`` sweep: ``n_runs`` draws per rule in every cell of the crossed lists.

    Parameters
    ----------
    protocol : Protocol
    n_features, n_classes : int
        Input and output sizes of ``[task].name`` (other tasks use :func:`virtual_lab.lab.tasks.task_dimensions`).
    calibrated_scales : mapping of str to float
        Every rule's learning-curve calibration multiplier (1 without calibration).

    Returns
    -------
    list of RunSpec
        Cell by cell, rule by rule, draw by draw. Each spec holds its drawn values in its fields
        (``learning_rate`` and ``learning_rate_scale``, ``layer_sizes``, ``batch_size``, ``weight_decay``,
        ``task``, ``architecture``, ``paradigm``), which every session stores.
    """
    from virtual_lab.lab.tasks import task_dimensions
    from virtual_lab.sweeps.expand import run_spec

    sweep = protocol.sweep
    grid = _grid(protocol)
    axes = list(grid)
    base_hidden = tuple(protocol.network.hidden_sizes)
    specs = []
    for cell in itertools.product(*(list(enumerate(grid[axis])) for axis in axes)):
        tag = [part for axis, (index, _) in zip(axes, cell) for part in _crossed_tag(protocol, axis, index)]
        crossed = {axis: value for axis, (_, value) in zip(axes, cell)}
        draws = [_resolve(protocol, crossed, tag, i, base_hidden) for i in range(sweep.n_runs)]
        for rule_name in sweep.rules:
            rule = get_rule(rule_name).name
            for i, values in enumerate(draws):
                task, paradigm, architecture = values["task"], values["paradigm"], values["architecture"]
                dims = (n_features, n_classes) if task == protocol.task.name else task_dimensions(task)
                n_outputs = dims[1] if paradigm == "supervised" else protocol.network.projection_size
                sizes = (dims[0], *values["hidden"], n_outputs) if architecture == "mlp" else (dims[0], n_outputs)
                specs.append(run_spec(
                    protocol, rule, scale=values["learning_rate_scale"], calibrated_scale=calibrated_scales[rule],
                    seed=derive_seed(protocol.seed, "run", rule, "draw", i, *tag), sizes=sizes, task=task,
                    batch_size=values["batch_size"], decay=values["weight_decay"], architecture=architecture,
                    channels=protocol.network.channels_of(architecture), paradigm=paradigm))
    return specs


def _resolve(protocol: Protocol, crossed: Mapping[str, Any], tag: list[str], index: int,
             base_hidden: tuple[int, ...]) -> dict[str, Any]:
    """The values of draw ``index`` in one cell: the cell's crossed values, every prior axis drawn from its own
    stream, and the hidden sizes they give."""
    sweep = protocol.sweep
    values = dict(crossed)
    for axis in values:
        prior = sweep.prior(axis)
        if prior is not None and not (axis == "width" and prior.per_layer):
            values[axis] = draw_value(prior, unit_draw(protocol.seed, "prior", axis, index, *tag))
    width_prior = sweep.prior("width")
    depth = values["depth"] if values["depth"] is not None else len(base_hidden)
    if width_prior is not None and width_prior.per_layer:
        widths = tuple(draw_value(width_prior, unit_draw(protocol.seed, "prior", "width", layer, index, *tag))
                       for layer in range(depth))
    elif values["width"] is None and values["depth"] is None:
        widths = base_hidden
    else:
        widths = (values["width"] if values["width"] is not None else base_hidden[0],) * depth
    values["hidden"] = tuple(int(w) for w in widths)
    return values
