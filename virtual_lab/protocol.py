"""Protocol files: TOML in, frozen dataclasses out, with precise one-line errors.

A protocol names the task, the network, the training schedule, the sweep (rules x learning rates x
seeds), the rig settings to observe the sessions through, and the decoders. ``load_protocol(path)`` reads a
file with :mod:`tomllib`; any unknown key, wrong type or out-of-range value raises :class:`ProtocolError`
naming the file, the dotted key, what was given, what is allowed and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from virtual_lab.lab.rules import ALIASES, ARCHITECTURES, PAPER_RULES, PARADIGMS, PERTURBATION_SD, RULES, undefined_reason
from virtual_lab.lab.tasks import TASKS


class ProtocolError(ValueError):
    """A protocol file is missing, unreadable or invalid. The message is one line."""


#: Experimenter names DANDI accepts ("Last, First", "Last, First M.", "Last, First, Middle"): the pattern
#: nwbinspector's check_experimenter_form applies when dandischema is not installed (dandischema NAME_PATTERN).
_DANDI_NAME = re.compile(r"^([\w\s\-\.']+),\s+([\w\s\-\.']+)$")


def _spec(help: str, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False, each_choice: tuple | None = None, min_len: int = 0, unique: bool = True) -> dict:
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


@dataclass(frozen=True)
class SweepSection:
    rules: tuple[str, ...] = _f(PAPER_RULES, "learning rules", each_choice=tuple(RULES) + tuple(ALIASES), min_len=1)
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


@dataclass(frozen=True)
class RuleSection:
    learning_rate: float = _f(0.0, "base learning rate (0 = the rule's default)", low=0)
    ia_alpha: float = _f(2e-3, "information alignment: weight of R_amp", low=0)
    ia_beta: float = _f(1e-3, "information alignment: weight of R_null", low=0)
    ia_gamma: float = _f(1e-3, "information alignment: weight of R_decay", low=0)
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
    preset: str = _f("", "rig preset: a name in protocols/rigs or a TOML path (relative to the protocol file); "
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
        if dotted == "rules":
            if not isinstance(value, dict):
                self.fail(dotted, f"expected a table of per-rule settings, got {_type_name(value)}")
            out = {}
            for rule, sub in value.items():
                name = ALIASES.get(rule, rule)
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
    rules = tuple(ALIASES.get(r, r) for r in protocol.sweep.rules)
    if len(set(rules)) != len(rules):
        loader.fail("sweep.rules", f"each rule may appear once, got {list(protocol.sweep.rules)}")
    sweep = dataclasses.replace(protocol.sweep, rules=rules)
    architectures = sweep.architectures or (protocol.network.architecture,)
    paradigms = sweep.paradigms or (protocol.training.paradigm,)
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


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol TOML file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        One line naming the file, the dotted key, the value given, what is allowed and the closest key.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"{path}: no such protocol file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{path}: not a text file") from None
    return parse_protocol(data, str(path))
