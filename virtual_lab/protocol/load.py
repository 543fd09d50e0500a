"""Reading protocol files: TOML in, :class:`~virtual_lab.protocol.sections.Protocol` out, one-line errors.

:class:`_Loader` walks the parsed TOML against the section dataclasses (every key known, every value of the right
type and range, through :mod:`virtual_lab.validation`); :func:`parse_protocol` then checks what keys decide
together (rules against architectures and paradigms, rig checkpoints against those recorded, sampling settings).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from virtual_lab.lab.rules import RULES, canonical_name, undefined_reason
from virtual_lab.protocol.sections import (_SECTIONS, CONV_CHANNELS, PRIOR_AXES, PRIOR_DISTRIBUTIONS,
                                           MatchCurvesSection, Prior, Protocol, ProtocolError, RigSection,
                                           RuleSection, SweepSection)
from virtual_lab.validation import (InputError, check_choice, check_int, check_real, did_you_mean,
                                    type_name)

#: Folder of the bundled protocols (package data, read with :mod:`importlib.resources`); ``protocols/`` in a
#: checkout of the repository links to it.
PROTOCOL_DIR = importlib.resources.files("virtual_lab").joinpath("data", "protocols")


#: Experimenter names DANDI accepts ("Last, First", "Last, First M.", "Last, First, Middle"): the pattern
#: nwbinspector's check_experimenter_form applies when dandischema is not installed (dandischema NAME_PATTERN).
_DANDI_NAME = re.compile(r"^([\w\s\-\.']+),\s+([\w\s\-\.']+)$")


class _Loader:
    """Checks the parsed TOML of one file against the section dataclasses; every error names ``source``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> None:
        raise ProtocolError(self.source, key, message)

    @contextmanager
    def checking(self) -> Iterator[None]:
        """Turn the :class:`InputError` of a :mod:`virtual_lab.validation` check into a :class:`ProtocolError`."""
        try:
            yield
        except ProtocolError:
            raise
        except InputError as err:
            raise ProtocolError(err.source, err.key, err.message) from None

    def unknown(self, key: str, allowed: list[str]) -> None:
        table, _, leaf = key.rpartition(".")
        hint = did_you_mean(leaf, allowed, prefix=f"{table}." if table else "")
        self.fail(key, f"unknown key{hint} (allowed: {', '.join(allowed)})")

    def scalar(self, key: str, value: Any, kind: type, meta: dict) -> Any:
        """One value: its type (bool, int, float or str), its choices, its range; floats must be finite."""
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"expected true or false, got {type_name(value)} {value!r}")
            return value
        if kind is str and not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)} {value!r}")
        low, high = meta.get("low"), meta.get("high")
        with self.checking():
            if kind is int:
                value = check_int(key, value, low=None if low is None else int(low) + bool(meta.get("low_open")),
                                  high=high, source=self.source)
            elif kind is float:
                value = check_real(key, value, low=low, high=high, low_open=bool(meta.get("low_open")),
                                   high_open=bool(meta.get("high_open")), source=self.source)
            choices = meta.get("choices") or meta.get("each_choice")
            if callable(choices):  # read when checked (the rule registry's names)
                choices = choices()
            if choices:
                check_choice(key, value, choices, source=self.source)
        return value

    def build(self, cls: type, table: Any, prefix: str) -> Any:
        if not isinstance(table, dict):
            self.fail(prefix, f"expected a table, got {type_name(table)} {table!r}")
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
                              f"{type_name(table)} {table!r}")
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
                self.fail(f"{dotted}.values", f"expected a non-empty list, got {type_name(values)} {values!r}")
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

    def rig_checkpoints(self, rig: RigSection, index: int, n_recorded: int) -> None:
        """A rig observes at most the checkpoints the protocol records; a preset takes the table's overrides."""
        key, n_observed = f"rig[{index}].n_checkpoints", rig.n_checkpoints
        if rig.preset:
            from virtual_lab.rig.presets import load_preset

            try:
                preset = load_preset(rig.preset).with_params(rig.preset_overrides())
            except (ValueError, TypeError) as err:
                self.fail(f"rig[{index}]", f"the keys given do not fit preset {rig.preset!r}: "
                                           f"{str(err).splitlines()[0]}")
            if "n_checkpoints" not in rig.given_keys:
                key = f"rig[{index}].preset"
                n_observed = int(preset.stages.get("checkpoints", {}).get("n_checkpoints", 0))
        if n_observed > n_recorded:
            self.fail(key, f"{n_observed} checkpoints observed, but the protocol records {n_recorded} "
                           f"(training.n_checkpoints); allowed: 0 (all) to {n_recorded}")

    def value(self, dotted: str, f: dataclasses.Field, value: Any) -> Any:
        meta = dict(f.metadata)
        hint = f.type if isinstance(f.type, str) else str(f.type)
        if f.name in _SECTIONS and dotted == f.name:
            return self.build(_SECTIONS[f.name], value, dotted)
        if dotted == "sweep.priors":
            if not isinstance(value, dict):
                self.fail(dotted, f"expected a table of per-axis priors, got {type_name(value)} {value!r}")
            return tuple(self.prior(f"{dotted}.{axis}", axis, table) for axis, table in value.items())
        if dotted == "sweep.match_curves":
            return self.build(MatchCurvesSection, value, dotted)
        if dotted == "rules":
            if not isinstance(value, dict):
                self.fail(dotted, f"expected a table of per-rule settings, got {type_name(value)}")
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
                self.fail(dotted, f"expected a list, got {type_name(value)} {value!r}")
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
    for index, rig in enumerate(protocol.rig):
        loader.rig_checkpoints(rig, index, protocol.training.n_checkpoints)
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
        loader.fail("sweep.match_curves.reference", f"{match.reference!r} is not one of sweep.rules"
                                                    f"{did_you_mean(match.reference, sweep.rules)} "
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
            raise ProtocolError(text, "", "no such protocol file")
        return Path(text)
    bundled = PROTOCOL_DIR.joinpath(f"{text}.toml")
    if not bundled.is_file():
        names = available_protocols()
        raise ProtocolError(text, "", f"no such protocol file or bundled protocol{did_you_mean(text, names)} "
                                      f"(bundled: {', '.join(names)})")
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
        raise ProtocolError(str(path), "", f"not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ProtocolError(str(path), "", "not a text file") from None
    return parse_protocol(data, str(path))
