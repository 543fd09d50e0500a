"""Protocol files: TOML in, frozen dataclasses out, with precise one-line errors.

A protocol names the task, the network, the training schedule, the sweep (a grid of rules x learning rates x
seeds, or ``sampling = "random"`` draws from ``[sweep.priors]``; optionally learning rates calibrated so every
rule's learning curves match a reference rule's, ``[sweep.match_curves]``), the rig settings to observe the
sessions through, and the decoders. ``load_protocol(path)`` reads a file with :mod:`tomllib` (or a bundled
protocol by name, :func:`available_protocols`); any unknown key, wrong type or out-of-range value raises
:class:`ProtocolError` naming the file, the dotted key, what was given, what is allowed and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import numbers
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from virtual_lab.lab.rules import (ARCHITECTURES, IA_DEFAULTS, PAPER_RULES, PARADIGMS, PERTURBATION_SD, RULES,
                                   canonical_name, rule_names, undefined_reason)
from virtual_lab.lab.tasks import TASKS


class ProtocolError(ValueError):
    """A protocol file is missing, unreadable or invalid. The message is one line."""


#: Folder of the bundled protocols (package data, read with :mod:`importlib.resources`); ``protocols/`` in a
#: checkout of the repository links to it.
PROTOCOL_DIR = importlib.resources.files("virtual_lab").joinpath("data", "protocols")


#: Experimenter names DANDI accepts ("Last, First", "Last, First M.", "Last, First, Middle"): the pattern
#: nwbinspector's check_experimenter_form applies when dandischema is not installed (dandischema NAME_PATTERN).
_DANDI_NAME = re.compile(r"^([\w\s\-\.']+),\s+([\w\s\-\.']+)$")


def _spec(help: str, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False, each_choice: tuple | Callable[[], tuple] | None = None, min_len: int = 0,
          unique: bool = True) -> dict:
    return {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "each_choice": each_choice, "min_len": min_len, "unique": unique}


def _f(default: Any, help: str, **kw: Any):
    meta = _spec(help, **kw)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TaskSection:
    name: str = _f("digits", "dataset", choices=TASKS)
    n_probe: int = _f(200, "held-out probe stimuli shown at every checkpoint", low=10)
    seed: int = _f(0, "seed of the train/probe split", low=0)
    root: str = _f("", "folder holding the torchvision datasets (MNIST/raw, FashionMNIST/raw, "
                       "cifar-10-batches-py), relative to the protocol file; empty = $VIRTUAL_LAB_DATA, else "
                       "~/.cache/virtual_lab/data")
    download: bool = _f(False, "download a missing torchvision dataset into root (needs network access)")


#: Conv layers (cnn) or stages (resnet) that ``[network] channels`` lists, and their default widths.
CONV_CHANNELS = {"cnn": (3, (16, 32, 32)), "resnet": (2, (16, 32))}


@dataclass(frozen=True)
class NetworkSection:
    architecture: str = _f("mlp", "network family", choices=ARCHITECTURES)
    hidden_sizes: tuple[int, ...] = _f((128, 128), "units per hidden layer (mlp)", low=1, min_len=1,
                                         unique=False)
    channels: tuple[int, ...] = _f((), "channels of the conv layers (cnn: 3 values) or stages (resnet: 2 "
                                       "values); empty = 16,32,32 (cnn) or 16,32 (resnet)", low=1, unique=False)
    projection_size: int = _f(32, "contrastive paradigm: units of the projection head (the last layer)", low=2)

    def channels_of(self, architecture: str) -> tuple[int, ...]:
        """The conv widths an architecture trains with (``()`` for the MLP)."""
        if architecture not in CONV_CHANNELS:
            return ()
        return self.channels or CONV_CHANNELS[architecture][1]


@dataclass(frozen=True)
class TrainingSection:
    n_epochs: int = _f(20, "passes through the training set", low=1)
    batch_size: int = _f(64, "examples per training step", low=1)
    n_checkpoints: int = _f(21, "recorded checkpoints, initialization included", low=2)
    checkpoint_spacing: str = _f("linear", "spacing of checkpoints over training", choices=("linear", "log"))
    device: str = _f("cpu", "torch device", choices=("cpu", "cuda"))
    paradigm: str = _f("supervised", "objective: cross-entropy on labels, or SimCLR-style contrastive learning on "
                                     "two augmented views", choices=PARADIGMS)
    population_size: int = _f(32, "most networks trained together in one batched population; the sweep is cut "
                                  "into fixed populations of at most this size, so results are bit-reproducible "
                                  "for a given value whatever the executor or resumption", low=1)


@dataclass(frozen=True)
class StorageSection:
    weights_dtype: str = _f("float32", "precision of stored weights (float16 halves the weights' share of a "
                                       "session file)", choices=("float32", "float16"))
    check_free_space: bool = _f(True, "refuse to start a sweep when the disk lacks room for its sessions")
    experimenter: tuple[str, ...] = _f((), "NWB general/experimenter of every session, each 'Last, First' (DANDI "
                                           "form); empty = \"virtual_lab, in silico\" (no person ran it)")
    institution: str = _f("", "NWB general/institution of every session (empty = not written)")
    lab: str = _f("", "NWB general/lab of every session (empty = not written)")

    def session_attribution(self) -> dict[str, Any]:
        """Keyword arguments of :func:`virtual_lab.sessions.write_session` for experimenter, institution, lab.

        None of them enters a run id or the training table, so changing them never makes a session already
        on disk look mismatched (it is kept as it was written).
        """
        return {"experimenter": self.experimenter or None, "institution": self.institution, "lab": self.lab}


#: How a sweep chooses its runs (``[sweep] sampling``).
SAMPLINGS = ("grid", "random")

#: Distributions of ``[sweep.priors]`` and the keys each takes besides ``distribution``. ``uniform`` and
#: ``log_uniform`` draw from [low, high); ``int_uniform`` every integer of [low, high] equally often;
#: ``int_log_uniform`` integers of [low, high] log-uniformly (k with probability log((k+1)/k) / log((high+1)/low));
#: ``choice`` one of ``values``, equally often.
PRIOR_DISTRIBUTIONS = {"uniform": ("low", "high"), "log_uniform": ("low", "high"), "int_uniform": ("low", "high"),
                       "int_log_uniform": ("low", "high"), "choice": ("values",)}


@dataclass(frozen=True)
class PriorAxis:
    """What a prior over one sweep axis may draw: value kind, allowed values, distributions, the grid list it
    replaces."""

    kind: type
    grid_field: str
    distributions: tuple[str, ...]
    low: float | None = None
    low_open: bool = False
    choices: tuple | Callable[[], tuple] | None = None


_NUMBER_DISTRIBUTIONS = ("uniform", "log_uniform", "choice")
_INTEGER_DISTRIBUTIONS = ("int_uniform", "int_log_uniform", "choice")

#: Sweep axes ``[sweep.priors]`` can draw, in the order a run's values are resolved.
PRIOR_AXES = {
    "task": PriorAxis(str, "tasks", ("choice",), choices=TASKS),
    "paradigm": PriorAxis(str, "paradigms", ("choice",), choices=PARADIGMS),
    "architecture": PriorAxis(str, "architectures", ("choice",), choices=ARCHITECTURES),
    "width": PriorAxis(int, "widths", _INTEGER_DISTRIBUTIONS, low=1),
    "depth": PriorAxis(int, "depths", _INTEGER_DISTRIBUTIONS, low=1),
    "batch_size": PriorAxis(int, "batch_sizes", _INTEGER_DISTRIBUTIONS, low=1),
    "weight_decay": PriorAxis(float, "weight_decays", _NUMBER_DISTRIBUTIONS, low=0),
    "learning_rate_scale": PriorAxis(float, "learning_rate_scales", _NUMBER_DISTRIBUTIONS, low=0, low_open=True),
}


@dataclass(frozen=True)
class Prior:
    """A prior over one sweep axis (one entry of ``[sweep.priors]``).

    Attributes
    ----------
    axis : str
        A key of :data:`PRIOR_AXES`.
    distribution : str
        A key of :data:`PRIOR_DISTRIBUTIONS`.
    low, high : float or int
        Bounds (not for ``choice``); ``low < high``.
    values : tuple
        The values of a ``choice``.
    per_layer : bool
        ``width`` only: every hidden layer draws its own width (else all hidden layers share one draw).
    """

    axis: str
    distribution: str
    low: float = 0.0
    high: float = 0.0
    values: tuple = ()
    per_layer: bool = False

    def support(self) -> tuple:
        """The values the prior can draw: ``values`` for a choice, else ``(low, high)``."""
        return self.values if self.distribution == "choice" else (self.low, self.high)


@dataclass(frozen=True)
class MatchCurvesSection:
    reference: str = _f("sgdm", "rule whose learning curves the other rules are matched to (trained at its base "
                                "learning rate)")
    tolerance: float = _f(0.05, "largest acceptable curve distance: max(RMS difference of the mean probe-accuracy "
                                "curves, RMS difference of the mean log10 training-loss curves) over checkpoints",
                          low=0, low_open=True)
    candidates: tuple[float, ...] = _f((0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83), "learning-rate multipliers tried "
                                       "per rule (of its base rate)", low=0, low_open=True, min_len=2)
    n_pilots: int = _f(2, "pilot networks per rule and candidate (their seeds are not those of the sweep)", low=1)
    pilot_epochs: int = _f(0, "epochs of a pilot network (0 = [training].n_epochs)", low=0)


@dataclass(frozen=True)
class SweepSection:
    rules: tuple[str, ...] = _f(PAPER_RULES, "learning rules", each_choice=rule_names, min_len=1)
    learning_rate_scales: tuple[float, ...] = _f((1.0,), "multipliers of each rule's learning rate", low=0,
                                                 low_open=True, min_len=1)
    n_seeds: int = _f(4, "independent networks per (rule, learning rate)", low=1)
    tasks: tuple[str, ...] = _f((), "tasks crossed with everything else (empty = [task].name)", each_choice=TASKS)
    architectures: tuple[str, ...] = _f((), "architectures, crossed (empty = [network].architecture); widths and "
                                            "depths apply to the mlp", each_choice=ARCHITECTURES)
    paradigms: tuple[str, ...] = _f((), "paradigms, crossed (empty = [training].paradigm)", each_choice=PARADIGMS)
    widths: tuple[int, ...] = _f((), "units in every hidden layer, crossed (empty = [network].hidden_sizes)", low=1)
    depths: tuple[int, ...] = _f((), "number of hidden layers, crossed (empty = [network].hidden_sizes)", low=1)
    batch_sizes: tuple[int, ...] = _f((), "batch sizes, crossed (empty = [training].batch_size)", low=1)
    weight_decays: tuple[float, ...] = _f((), "L2 weight decays, crossed (empty = each rule's default)", low=0)
    sampling: str = _f("grid", "how runs are chosen: 'grid' crosses every list above; 'random' draws n_runs "
                               "networks per rule from [sweep.priors] (lists of axes without a prior are still "
                               "crossed)", choices=SAMPLINGS)
    n_runs: int = _f(0, "sampling = 'random': networks drawn per rule (in every cell of the lists still crossed)",
                     low=0)
    priors: tuple[Prior, ...] = field(default=(), metadata=_spec(
        "sampling = 'random': one table per axis drawn, e.g. learning_rate_scale = {distribution = "
        "'log_uniform', low = 0.35, high = 2.83}"))
    match_curves: MatchCurvesSection | None = field(default=None, metadata=_spec(
        "calibrate each rule's learning rate so its learning curves match the reference rule's (pilot networks "
        "trained before the sweep)"))

    def prior(self, axis: str) -> Prior | None:
        """The prior over ``axis``, or None when the axis is not drawn."""
        return next((p for p in self.priors if p.axis == axis), None)


@dataclass(frozen=True)
class RuleSection:
    learning_rate: float = _f(0.0, "base learning rate (0 = the rule's default)", low=0)
    ia_alpha: float = _f(IA_DEFAULTS["ia_alpha"], "information alignment: weight of R_amp", low=0)
    ia_beta: float = _f(IA_DEFAULTS["ia_beta"], "information alignment: weight of R_null", low=0)
    ia_gamma: float = _f(IA_DEFAULTS["ia_gamma"], "information alignment: weight of R_decay", low=0)
    perturbation_sd: float = _f(PERTURBATION_SD, "node perturbation: SD of the noise on pre-activations", low=0,
                                low_open=True)


@dataclass(frozen=True)
class RigSection:
    name: str = _f("full", "label of this rig setting")
    unit_fraction: float = _f(1.0, "fraction of each layer's units recorded", low=0, high=1, low_open=True)
    n_units: int = _f(0, "units recorded per layer (0 = use unit_fraction)", low=0)
    synapse_fraction: float = _f(1.0, "fraction of synapses measured", low=0, high=1, low_open=True)
    noise_sd: float = _f(0.0, "Gaussian measurement noise SD", low=0)
    noise_relative: bool = _f(False, "noise_sd in units of each measure's SD")
    n_checkpoints: int = _f(0, "checkpoints observed (0 = all)", low=0)
    checkpoint_spacing: str = _f("even", "which checkpoints", choices=("even", "random", "early", "late"))
    seed: int = _f(0, "rig seed (units, synapses, noise)", low=0)
    preset: str = _f("", "rig preset: a bundled name (virtual-lab rigs) or a TOML path (relative to the protocol file); "
                         "the other keys given in this table override it")
    given_keys: tuple[str, ...] = field(default=(), metadata={"internal": True})


@dataclass(frozen=True)
class DecoderSection:
    models: tuple[str, ...] = _f(("random_forest", "linear_svm"), "decoders",
                                 each_choice=("random_forest", "linear_svm", "logistic", "conv1d"), min_len=1)
    n_splits: int = _f(10, "cross-validation splits, grouped by network", low=2)
    controls: bool = _f(True, "run the reviewers' controls (with the fastest listed decoder) in the report")
    n_permutations: int = _f(0, "network-level permutation test: label shuffles (0 = skip)", low=0)
    test_fraction: float = _f(0.25, "fraction of each rule's networks held out per split", low=0, high=1,
                              low_open=True)
    observables: str = _f("admissible", "observable set", choices=("admissible", "all"))
    seed: int = _f(0, "seed of the splits and the decoders", low=0)


@dataclass(frozen=True)
class Protocol:
    name: str = _f("protocol", "protocol name; sessions go to <output_dir>/<name>/")
    output_dir: str = _f("recordings", "folder for recordings (relative to the working directory)")
    seed: int = _f(0, "master seed; every run's seeds derive from it", low=0)
    description: str = _f("", "free text")
    task: TaskSection = field(default_factory=TaskSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    rules: Mapping[str, RuleSection] = field(default_factory=dict)
    rig: tuple[RigSection, ...] = field(default_factory=lambda: (RigSection(),))
    decoder: DecoderSection = field(default_factory=DecoderSection)
    storage: StorageSection = field(default_factory=StorageSection)
    source: str = field(default="", metadata={"internal": True})

    @property
    def recordings_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def base_learning_rate(self, rule_name: str) -> float:
        """The learning rate ``learning_rate_scales`` multiply for one rule: its ``[rules.<name>]``
        ``learning_rate`` when positive, else the rule's default."""
        rule = RULES[canonical_name(rule_name)]
        overrides = self.rules.get(rule.name)
        return float(overrides.learning_rate if overrides and overrides.learning_rate > 0
                     else rule.default_learning_rate)


_SECTIONS = {"task": TaskSection, "network": NetworkSection, "training": TrainingSection,
             "sweep": SweepSection, "decoder": DecoderSection, "storage": StorageSection}


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


class _Loader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> None:
        raise ProtocolError(f"{self.source}: {key}: {message}")

    def unknown(self, key: str, allowed: list[str]) -> None:
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, allowed, n=1, cutoff=0.5)
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
        self.fail(key, f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def scalar(self, key: str, value: Any, kind: type, meta: dict) -> Any:
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"expected true or false, got {_type_name(value)} {value!r}")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                self.fail(key, f"expected an integer, got {_type_name(value)} {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                self.fail(key, f"expected a number, got {_type_name(value)} {value!r}")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                self.fail(key, f"expected a string, got {_type_name(value)} {value!r}")
        choices = meta.get("choices") or meta.get("each_choice")
        if callable(choices):  # read when checked (the rule registry's names)
            choices = choices()
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(key, f"{value!r} is not allowed{hint} (allowed: {', '.join(map(str, choices))})")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("low_open") and value == low)):
            bound = f"> {low}" if meta.get("low_open") else f">= {low}"
            self.fail(key, f"{value!r} is out of range (allowed: {bound}" + (f" and <= {high})" if high is not None else ")"))
        if high is not None and value > high:
            self.fail(key, f"{value!r} is out of range (allowed: <= {high})")
        return value

    def build(self, cls: type, table: Any, prefix: str) -> Any:
        if not isinstance(table, dict):
            self.fail(prefix, f"expected a table, got {_type_name(table)} {table!r}")
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        values = {}
        for key, value in table.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if key not in fields:
                self.unknown(dotted, list(fields))
            values[key] = self.value(dotted, fields[key], value)
        return cls(**values)

    def prior(self, dotted: str, axis: str, table: Any) -> Prior:
        """One ``[sweep.priors]`` entry: a known axis, a distribution it allows, its keys, valid bounds."""
        if axis not in PRIOR_AXES:
            self.unknown(dotted, list(PRIOR_AXES))
        spec = PRIOR_AXES[axis]
        if not isinstance(table, dict):
            self.fail(dotted, f"expected a table such as {{distribution = \"{spec.distributions[0]}\", ...}}, got "
                              f"{_type_name(table)} {table!r}")
        if "distribution" not in table:
            self.fail(dotted, f"missing 'distribution' (allowed for {axis}: {', '.join(spec.distributions)})")
        distribution = self.scalar(f"{dotted}.distribution", table["distribution"], str,
                                   {"choices": spec.distributions})
        needed = PRIOR_DISTRIBUTIONS[distribution]
        allowed = ["distribution", *needed] + (["per_layer"] if axis == "width" else [])
        for key in table:
            if key not in allowed:
                self.fail(f"{dotted}.{key}", f"unknown key for distribution {distribution!r} (allowed: "
                                             f"{', '.join(allowed)})")
        missing = [key for key in needed if key not in table]
        if missing:
            self.fail(dotted, f"distribution {distribution!r} needs {' and '.join(needed)}")
        meta = {"low": spec.low, "low_open": spec.low_open, "choices": spec.choices}
        per_layer = self.scalar(f"{dotted}.per_layer", table.get("per_layer", False), bool, {})
        if distribution == "choice":
            values = table["values"]
            if not isinstance(values, list) or not values:
                self.fail(f"{dotted}.values", f"expected a non-empty list, got {_type_name(values)} {values!r}")
            items = tuple(self.scalar(f"{dotted}.values[{i}]", v, spec.kind, meta) for i, v in enumerate(values))
            if len(set(items)) != len(items):
                self.fail(f"{dotted}.values", f"items must be unique, got {values}")
            return Prior(axis, distribution, values=items, per_layer=per_layer)
        kind = int if distribution.startswith("int_") else float
        low = self.scalar(f"{dotted}.low", table["low"], kind, meta)
        high = self.scalar(f"{dotted}.high", table["high"], kind, meta)
        if low >= high:
            self.fail(dotted, f"low ({low!r}) must be < high ({high!r})")
        if "log" in distribution and low <= 0:
            self.fail(f"{dotted}.low", f"{distribution} needs low > 0, got {low!r}")
        return Prior(axis, distribution, low=low, high=high, per_layer=per_layer)

    def rig(self, table: Any, index: int) -> "RigSection":
        """One [[rig]] table: remember which keys were given, resolve and check the preset."""
        rig = self.build(RigSection, table, f"rig[{index}]")
        rig = dataclasses.replace(rig, given_keys=tuple(table))
        if rig.preset:
            from virtual_lab.rig.presets import load_preset

            preset = rig.preset
            if (preset.endswith(".toml") or "/" in preset) and not Path(preset).is_absolute() \
                    and not Path(preset).is_file() and Path(self.source).parent.joinpath(preset).is_file():
                preset = str(Path(self.source).parent / preset)
            try:
                load_preset(preset)
            except (ValueError, TypeError) as err:
                self.fail(f"rig[{index}].preset", str(err))
            rig = dataclasses.replace(rig, preset=preset)
        return rig

    def value(self, dotted: str, f: dataclasses.Field, value: Any) -> Any:
        meta = dict(f.metadata)
        hint = f.type if isinstance(f.type, str) else str(f.type)
        if f.name in _SECTIONS and dotted == f.name:
            return self.build(_SECTIONS[f.name], value, dotted)
        if dotted == "sweep.priors":
            if not isinstance(value, dict):
                self.fail(dotted, f"expected a table of per-axis priors, got {_type_name(value)} {value!r}")
            return tuple(self.prior(f"{dotted}.{axis}", axis, table) for axis, table in value.items())
        if dotted == "sweep.match_curves":
            return self.build(MatchCurvesSection, value, dotted)
        if dotted == "rules":
            if not isinstance(value, dict):
                self.fail(dotted, f"expected a table of per-rule settings, got {_type_name(value)}")
            out = {}
            for rule, sub in value.items():
                name = canonical_name(rule)
                if name not in RULES:
                    self.unknown(f"rules.{rule}", list(RULES))
                out[name] = self.build(RuleSection, sub, f"rules.{rule}")
            return out
        if dotted == "rig":
            if isinstance(value, dict):
                value = [value]
            if not isinstance(value, list) or not value:
                self.fail(dotted, "expected one or more [[rig]] tables")
            rigs = tuple(self.rig(sub, i) for i, sub in enumerate(value))
            names = [r.name for r in rigs]
            if len(set(names)) != len(names):
                self.fail(dotted, f"rig names must be unique, got {names}")
            return rigs
        if hint.startswith("tuple"):
            kind = int if "int" in hint else float if "float" in hint else str
            if not isinstance(value, list):
                self.fail(dotted, f"expected a list, got {_type_name(value)} {value!r}")
            if len(value) < meta.get("min_len", 0):
                self.fail(dotted, f"expected at least {meta['min_len']} item(s), got an empty list")
            items = tuple(self.scalar(f"{dotted}[{i}]", v, kind, meta) for i, v in enumerate(value))
            if meta.get("unique", True) and len(set(items)) != len(items):
                self.fail(dotted, f"items must be unique, got {list(value)}")
            return items
        kind = {"int": int, "float": float, "str": str, "bool": bool}[hint]
        return self.scalar(dotted, value, kind, meta)


def parse_protocol(data: Mapping[str, Any], source: str = "<protocol>") -> Protocol:
    """Build a :class:`Protocol` from an already-parsed TOML mapping.

    Raises
    ------
    ProtocolError
        For any unknown key, wrong type or out-of-range value.
    """
    loader = _Loader(source)
    protocol = loader.build(Protocol, dict(data), "")
    name = protocol.name
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        loader.fail("name", f"{name!r} must be a non-empty folder name without '/', '\\' or spaces")
    rules = tuple(canonical_name(r) for r in protocol.sweep.rules)
    if len(set(rules)) != len(rules):
        loader.fail("sweep.rules", f"each rule may appear once, got {list(protocol.sweep.rules)}")
    sweep = dataclasses.replace(protocol.sweep, rules=rules)
    sweep = _check_sampling(loader, sweep, data.get("sweep", {}))
    architecture_prior, paradigm_prior = sweep.prior("architecture"), sweep.prior("paradigm")
    architectures = (architecture_prior.values if architecture_prior
                     else sweep.architectures or (protocol.network.architecture,))
    paradigms = paradigm_prior.values if paradigm_prior else sweep.paradigms or (protocol.training.paradigm,)
    for architecture in architectures:
        if architecture in CONV_CHANNELS and protocol.network.channels \
                and len(protocol.network.channels) != CONV_CHANNELS[architecture][0]:
            loader.fail("network.channels", f"architecture {architecture!r} needs {CONV_CHANNELS[architecture][0]} "
                                            f"values, got {list(protocol.network.channels)}")
        for paradigm in paradigms:
            for rule in rules:
                reason = undefined_reason(rule, architecture, paradigm)
                if reason:
                    loader.fail("sweep.rules", reason + "; remove the rule or the architecture/paradigm")
    for index, person in enumerate(protocol.storage.experimenter):
        if not _DANDI_NAME.match(person):
            loader.fail(f"storage.experimenter[{index}]", f"{person!r} is not in the DANDI form 'Last, First' "
                                                          f"(e.g. 'Doe, Jane' or 'Doe, Jane A.')")
    task = protocol.task
    if task.root and source != "<protocol>" and not Path(task.root).expanduser().is_absolute():
        task = dataclasses.replace(task, root=str(Path(source).parent / task.root))
    return dataclasses.replace(protocol, sweep=sweep, task=task, source=source)


def _check_sampling(loader: _Loader, sweep: SweepSection, given: Mapping[str, Any]) -> SweepSection:
    """The sweep's sampling settings fit together: priors and n_runs only with random sampling, never a prior and
    a list for one axis, a match_curves reference among the rules (returned with its canonical name)."""
    if sweep.sampling == "grid":
        if sweep.priors:
            loader.fail("sweep.priors", "priors need sampling = \"random\" (sampling = \"grid\" crosses the lists)")
        if "n_runs" in given:
            loader.fail("sweep.n_runs", "used only with sampling = \"random\" (a grid has n_seeds networks per cell)")
    else:
        if sweep.n_runs < 1:
            loader.fail("sweep.n_runs", f"sampling = \"random\" needs n_runs >= 1 (networks drawn per rule), got "
                                        f"{sweep.n_runs}")
        if "n_seeds" in given:
            loader.fail("sweep.n_seeds", "not used with sampling = \"random\" (each of the n_runs draws is one "
                                         "network with its own seed); remove it")
        for prior in sweep.priors:
            grid_field = PRIOR_AXES[prior.axis].grid_field
            if grid_field in given:
                loader.fail(f"sweep.{grid_field}", f"axis {prior.axis!r} has a prior (sweep.priors.{prior.axis}); "
                                                   f"give the list or the prior, not both")
    match = sweep.match_curves
    if match is None:
        return sweep
    if canonical_name(match.reference) not in sweep.rules:
        close = difflib.get_close_matches(match.reference, list(sweep.rules), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        loader.fail("sweep.match_curves.reference", f"{match.reference!r} is not one of sweep.rules{hint} "
                                                    f"(allowed: {', '.join(sweep.rules)})")
    return dataclasses.replace(sweep, match_curves=dataclasses.replace(match,
                                                                       reference=canonical_name(match.reference)))


def available_protocols() -> list[str]:
    """Names of the bundled protocols (the ``.toml`` files of :data:`PROTOCOL_DIR`), for :func:`load_protocol`."""
    return sorted(entry.name[:-len(".toml")] for entry in PROTOCOL_DIR.iterdir()
                  if entry.name.endswith(".toml") and entry.is_file())


def protocol_file(path: str | Path) -> Path:
    """The file :func:`load_protocol` reads: ``path`` itself, or the bundled protocol a bare name names.

    Parameters
    ----------
    path : str or Path
        A file, or a name without folder and suffix (e.g. ``"quickstart"``) when no such file exists.

    Returns
    -------
    Path

    Raises
    ------
    ProtocolError
        No such file, and no bundled protocol of that name (with the closest name and the list).
    """
    text = str(path)
    if Path(text).is_file() or Path(text).suffix or "/" in text or "\\" in text:
        if not Path(text).is_file():
            raise ProtocolError(f"{text}: no such protocol file")
        return Path(text)
    bundled = PROTOCOL_DIR.joinpath(f"{text}.toml")
    if not bundled.is_file():
        names = available_protocols()
        close = difflib.get_close_matches(text, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ProtocolError(f"{text}: no such protocol file or bundled protocol{hint} (bundled: {', '.join(names)})")
    return Path(str(bundled))


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol TOML file, or a bundled protocol by name.

    Parameters
    ----------
    path : str or Path
        A protocol file, or the name of a bundled protocol (:func:`available_protocols`, e.g.
        ``"quickstart"``) when no such file exists and the name has no folder and no suffix.

    Returns
    -------
    Protocol
        Its ``source`` is the file read (for a bundled protocol, the file inside the installed package).

    Raises
    ------
    ProtocolError
        One line naming the file, the dotted key, the value given, what is allowed and the closest key.

    Examples
    --------
    >>> load_protocol("quickstart").name
    'quickstart'
    """
    path = protocol_file(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{path}: not a text file") from None
    return parse_protocol(data, str(path))
