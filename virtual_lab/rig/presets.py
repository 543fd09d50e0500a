"""Rig presets: named, commented TOML recipes of rig steps, and one call to observe a session through one.

A preset file (bundled: ``virtual_lab/data/protocols/rigs/<name>.toml``, also reached as ``protocols/rigs/`` in
a checkout of the repository) has a ``name``, a ``description`` and one table per stage,
applied in this fixed order (absent stages are skipped)::

    checkpoints  keep_checkpoints(n_checkpoints, spacing)        sessions over learning
    units        keep_units(n_units | fraction, cap, layers)     neurons within reach of the rig
    spiking      spike_counts(...)                               rates -> spike counts per presentation
    sorting      sort_spikes(...)                                recall vs SNR, contamination, merges, splits
    tracking     track_units(found_probability, swap_probability)  chronic identity across sessions
    calcium      calcium_imaging(indicator, ...)                 spikes -> dF/F per presentation
    synapses     keep_synapses(fraction)                          synapses measured (paper)
    em           em_snapshot(...)                                one terminal timepoint, sizes without sign
    spines       spine_imaging(...)                              positive weights, several timepoints
    noise        add_noise(sd, relative, measures)               additive Gaussian noise (paper)

Keys are the keyword arguments of those functions (``n_checkpoints = 0`` and ``n_units = 0`` mean "all").
Each stage gets its own seed, split from the rig seed by :func:`virtual_lab.rig.seeds.rig_stage_seeds` (as
:func:`virtual_lab.rig.observe` splits it), so changing one stage's parameters never changes another stage's
draws (a new noise level keeps the same units), and a preset of paper steps observes exactly what ``observe``
does with the same seed.

Library entry points::

    preset = load_preset("2p-gcamp6s")                   # a bundled name (available_presets()), or a path
    recording = apply_preset(ground_truth, preset, seed=0, n_units=50, noise_sd=0.2)
    variant = preset.with_params({"calcium.noise_level": 4.0})
"""

from __future__ import annotations

import importlib.resources
import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from virtual_lab.rig.calcium import calcium_imaging
from virtual_lab.rig.recording import Recording
from virtual_lab.rig.spiking import sort_spikes, spike_counts
from virtual_lab.rig.synapses import em_snapshot, spine_imaging
from virtual_lab.rig.tracking import track_units
from virtual_lab.rig.transforms import add_noise, keep_checkpoints, keep_synapses, keep_units
from virtual_lab.rig.seeds import rig_stage_seeds
from virtual_lab.seeding import resolve_seed
from virtual_lab.validation import InputError, check_choice, check_real, did_you_mean

#: Folder of the bundled presets (package data, read with :mod:`importlib.resources`).
PRESET_DIR = importlib.resources.files("virtual_lab").joinpath("data", "protocols", "rigs")


def _checkpoints(rec: Recording, *, n_checkpoints: int = 0, spacing: str = "even", seed: int) -> Recording:
    return rec if n_checkpoints == 0 else keep_checkpoints(rec, n_checkpoints, spacing=spacing, seed=seed)


def _units(rec: Recording, *, n_units: int = 0, fraction: float = 1.0, cap: bool = False,
           layers: tuple[str, ...] = (), seed: int) -> Recording:
    chosen = tuple(layers) or None
    if n_units:
        return keep_units(rec, n_units=n_units, seed=seed, layers=chosen, cap=cap)
    return rec if fraction == 1.0 else keep_units(rec, fraction=fraction, seed=seed, layers=chosen)


def _synapses(rec: Recording, *, fraction: float = 1.0, seed: int) -> Recording:
    return rec if fraction == 1.0 else keep_synapses(rec, fraction, seed=seed)


def _noise(rec: Recording, *, sd: float = 0.0, relative: bool = False,
           measures: tuple[str, ...] = ("weight", "act", "gradavg"), seed: int) -> Recording:
    measures = tuple(m for m in measures if m in rec.measures)
    return rec if sd == 0 or not measures else add_noise(rec, sd, relative=relative, measures=measures, seed=seed)


#: Stage name -> function, in the order stages are applied.
STAGES: Mapping[str, Callable[..., Recording]] = {
    "checkpoints": _checkpoints, "units": _units, "spiking": spike_counts, "sorting": sort_spikes,
    "tracking": track_units, "calcium": calcium_imaging, "synapses": _synapses, "em": em_snapshot,
    "spines": spine_imaging, "noise": _noise,
}

#: Shortcuts accepted by :func:`apply_preset` (and protocol ``[[rig]]`` tables) -> "stage.key".
SHORTCUTS = {"n_units": "units.n_units", "unit_fraction": "units.fraction", "n_checkpoints": "checkpoints.n_checkpoints",
             "checkpoint_spacing": "checkpoints.spacing", "synapse_fraction": "synapses.fraction",
             "noise_sd": "noise.sd", "noise_relative": "noise.relative"}


def stage_defaults(stage: str) -> dict[str, Any]:
    """Keyword parameters of a stage and their defaults (``seed`` excluded)."""
    check_choice("stage", stage, STAGES)
    params = inspect.signature(STAGES[stage]).parameters
    return {name: (None if p.default is inspect.Parameter.empty else p.default)
            for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "seed"}


def _type_ok(value: Any, default: Any) -> bool:
    if default is None:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(default))


@dataclass(frozen=True)
class RigPreset:
    """A validated rig recipe.

    Attributes
    ----------
    name : str
    description : str
    stages : dict of str to dict
        Stage name -> the parameters the preset sets (defaults of the stage function fill the rest).
    path : str
        File the preset was read from ("" if built in code).
    provenance : dict
        The file's ``[provenance]`` table (where each value came from; written by ``virtual-lab calibrate``,
        with ``pilot_files``), empty for the bundled presets.
    """

    name: str
    description: str = ""
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = self.path or self.name
        for stage, params in self.stages.items():
            if stage not in STAGES:
                raise ValueError(f"{where}: unknown rig stage [{stage}]{did_you_mean(stage, STAGES)} "
                                 f"(available: {', '.join(STAGES)})")
            defaults = stage_defaults(stage)
            for key, value in params.items():
                if key not in defaults:
                    hint = did_you_mean(f"{stage}.{key}", [f"{stage}.{k}" for k in defaults])
                    raise ValueError(f"{where}: unknown key {stage}.{key}{hint} (allowed: {', '.join(defaults)})")
                if not _type_ok(value, defaults[key]):
                    raise InputError(where, f"{stage}.{key}", f"{value!r} has the wrong type (expected "
                                     f"{type(defaults[key]).__name__}, like the default {defaults[key]!r})")
                if isinstance(value, float):
                    check_real(f"{stage}.{key}", value, source=where)  # NaN and infinities never make sense
        if "em" in self.stages and ("spines" in self.stages or "checkpoints" in self.stages):
            raise ValueError(f"{where}: an [em] snapshot has one timepoint; it cannot be combined with "
                             f"[checkpoints] or [spines]")

    def parameters(self) -> dict[str, Any]:
        """Every parameter of every stage of the preset, defaults filled in, as ``{"stage.key": value}``."""
        out = {}
        for stage in STAGES:
            if stage in self.stages:
                for key, default in stage_defaults(stage).items():
                    out[f"{stage}.{key}"] = self.stages[stage].get(key, default)
        return out

    def with_params(self, changes: Mapping[str, Any]) -> "RigPreset":
        """A copy with some parameters changed: keys ``"stage.key"`` or a shortcut such as ``"noise_sd"``.

        Changing a parameter of a stage the preset lacks adds that stage.
        """
        stages = {stage: dict(params) for stage, params in self.stages.items()}
        for key, value in changes.items():
            stage, name = _parameter(key)
            stages.setdefault(stage, {})[name] = list(value) if isinstance(value, tuple) else value
        return RigPreset(self.name, self.description, stages, self.path, self.provenance)

    def with_settings(self, settings: Sequence[str]) -> "RigPreset":
        """A copy with ``KEY=VALUE`` texts applied (``--set`` on the command line), each parsed with the type of
        the parameter it sets.

        Parameters
        ----------
        settings : sequence of str
            E.g. ``["noise_sd=0.3", "calcium.indicator=GCaMP6f", "units.layers=fc1,fc2"]``.

        Raises
        ------
        ValueError
            One line naming the setting: no ``=``, an unknown parameter, a value that does not parse as the
            parameter's type (an integer, a finite number, true/false, or a comma-separated list of names).

        Examples
        --------
        >>> load_preset("paper-gaussian").with_settings(["noise_sd=0.3"]).stages["noise"]["sd"]
        0.3
        >>> load_preset("paper-gaussian").with_settings(["noise_sd=nan"])
        Traceback (most recent call last):
        ...
        virtual_lab.validation.InputError: --set: noise_sd: 'nan' is not a finite number
        """
        changes = {}
        for item in settings:
            key, equals, text = item.partition("=")
            if not equals or not key.strip():
                raise InputError("--set", item, "expected KEY=VALUE, e.g. noise_sd=0.3 or calcium.noise_level=4")
            key = key.strip()
            stage, name = _parameter(key)
            defaults = stage_defaults(stage)
            if name not in defaults:
                raise InputError("--set", key, f"unknown parameter of stage [{stage}]"
                                               f"{did_you_mean(name, defaults, prefix=f'{stage}.')} "
                                               f"(allowed: {', '.join(defaults)})")
            changes[key] = _parse_setting(key, text.strip(), defaults[name])
        return self.with_params(changes)


def _parameter(key: str) -> tuple[str, str]:
    """``(stage, key)`` of a parameter named as ``"stage.key"``, ``"stage__key"`` or a shortcut (``noise_sd``)."""
    dotted = SHORTCUTS.get(key, key.replace("__", "."))
    if "." not in dotted:
        allowed = sorted(SHORTCUTS) + ["<stage>.<key>"]
        raise ValueError(f"unknown rig parameter {key!r}{did_you_mean(key, SHORTCUTS)} "
                         f"(allowed: {', '.join(allowed)})")
    stage, name = dotted.split(".", 1)
    return stage, name


def _parse_setting(key: str, text: str, default: Any) -> Any:
    """The value of ``--set key=text``, parsed with the type of the parameter's default."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise InputError("--set", key, f"{text!r} is not true or false")
        return text.lower() == "true"
    if isinstance(default, tuple):  # names: fc1,fc2 (or a JSON list, ["fc1", "fc2"])
        return [part.strip().strip("'\"") for part in text.strip("[]").split(",") if part.strip()]
    if isinstance(default, str):
        return text
    if isinstance(default, int) and not isinstance(default, float):
        try:
            return int(text)
        except ValueError:
            raise InputError("--set", key, f"{text!r} is not an integer") from None
    try:  # a float, or a parameter without a default (a number)
        value = float(text)
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")):
        raise InputError("--set", key, f"{text!r} is not a finite number")
    return int(value) if default is None and value.is_integer() and "." not in text else value


def available_presets() -> list[str]:
    """Names of the bundled presets (the ``.toml`` files of :data:`PRESET_DIR`)."""
    return sorted(entry.name[:-len(".toml")] for entry in PRESET_DIR.iterdir()
                  if entry.name.endswith(".toml") and entry.is_file())


def preset_file(name_or_path: str | os.PathLike):
    """The file :func:`load_preset` reads: a path, or the bundled preset a name names.

    Parameters
    ----------
    name_or_path : str or path-like
        A path (with a folder or a ``.toml`` suffix), or a bundled name (:func:`available_presets`).

    Returns
    -------
    Path or importlib.resources.abc.Traversable
        Readable with ``read_text()`` (a :class:`pathlib.Path` for an installed package, as usual).

    Raises
    ------
    ValueError
        No such file, or an unknown name (with the closest name and the list of available ones).
    """
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix == ".toml" or os.sep in text or "/" in text:
        if not candidate.is_file():
            raise ValueError(f"rig preset file {text!r} does not exist")
        return candidate
    path = PRESET_DIR.joinpath(f"{text}.toml")
    if not path.is_file():
        check_choice("preset", text, available_presets())
    return path


def load_preset(name_or_path: str | os.PathLike) -> RigPreset:
    """Read a rig preset: a bundled name (see :func:`available_presets`) or a path to a TOML file.

    Parameters
    ----------
    name_or_path : str or path-like

    Returns
    -------
    RigPreset

    Raises
    ------
    ValueError
        Unknown preset (with the closest name and the list of available ones), unknown stage or key, or a
        value of the wrong type.

    Examples
    --------
    >>> load_preset("paper-gaussian").stages["noise"]["relative"]
    True
    """
    if isinstance(name_or_path, RigPreset):
        return name_or_path
    path = preset_file(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    name = data.pop("name", Path(path.name).stem)
    description = data.pop("description", "")
    provenance = data.pop("provenance", {})  # where the values came from (virtual-lab calibrate), kept as is
    if not isinstance(provenance, dict):
        raise ValueError(f"{path}: provenance must be a [provenance] table")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"{path}: top-level key {key!r} must be a [stage] table (stages: {', '.join(STAGES)})")
    return RigPreset(str(name), str(description), data, str(path), provenance)


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value else "nan"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def _toml_table(prefix: str, table: Mapping[str, Any]) -> list[str]:
    """``[prefix]`` with its plain values, then its sub-tables and arrays of tables (None values left out)."""
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in table.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()
             if k not in nested and k not in arrays and v is not None]
    if lines or not (nested or arrays):  # a table of tables needs no header of its own
        lines.insert(0, f"[{prefix}]")
    for key, value in nested.items():
        lines += ([""] if lines else []) + _toml_table(f"{prefix}.{_toml_key(key)}", value)
    for key, rows in arrays.items():
        for row in rows:
            lines += ["", f"[[{prefix}.{_toml_key(key)}]]"] + [f"{_toml_key(k)} = {_toml_value(v)}"
                                                               for k, v in row.items() if v is not None]
    return lines


def preset_toml(preset: RigPreset, *, comments: Mapping[str, str] | None = None, header: Sequence[str] = ()) -> str:
    """A preset as the TOML text :func:`load_preset` reads back: name, description, one table per stage (each
    value with its comment from ``comments["stage.key"]``), then the ``[provenance]`` table.

    Examples
    --------
    >>> text = preset_toml(load_preset("paper-gaussian"), comments={"noise.sd": "paper: sigma"})
    >>> [line for line in text.splitlines() if line.startswith("sd")]
    ['sd = 0.5                     # paper: sigma']
    """
    comments = comments or {}
    lines = [f"# {line}" for line in header]
    lines += [f"name = {_toml_value(preset.name)}", f"description = {_toml_value(preset.description)}"]
    for stage in (s for s in STAGES if s in preset.stages):
        lines += ["", f"[{stage}]"]
        for key, value in preset.stages[stage].items():
            note = " ".join(str(comments.get(f"{stage}.{key}", "")).split())
            text = f"{key} = {_toml_value(value)}"
            lines.append(f"{text:<28} # {note}" if note else text)
    if preset.provenance:
        lines += [""] + _toml_table("provenance", preset.provenance)
    return "\n".join(lines) + "\n"


#: Measure -> the words a message uses for it.
MEASURE_WORDS = {"weight": "weights", "act": "activity", "gradavg": "activity change"}
_ADJECTIVES = {"weight": "weight", "act": "activity", "gradavg": "activity-change"}


def _words(measures: Any, words: Mapping[str, str] = MEASURE_WORDS) -> str:
    words = [words.get(m, m) for m in measures]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def measured_observables(observables: Any, measures: Any, rig: str, *, explicit: bool = False
                         ) -> tuple[tuple[Any, ...], str]:
    """The observables a rig can measure, and the one line that says what was left out.

    The one place that decides which observables a rig (a preset or ``"full"``) is observed through:
    those whose ``measure`` is among the measures of a recording made with it (a calcium or
    electrophysiology rig records activity, an EM or spine rig records weights). ``virtual-lab decode``,
    ``virtual-lab power`` and ``virtual-lab run`` all call it.

    Parameters
    ----------
    observables : sequence of Observable
        What was asked for (anything with a ``measure`` and a ``name``).
    measures : sequence of str
        ``recording.measures`` of a session observed through the rig.
    rig : str
        Rig name, for the messages.
    explicit : bool, default=False
        The observables were named one by one by the user: one the rig cannot measure is an error rather
        than left out.

    Returns
    -------
    kept : tuple of Observable
        The observables of a measured measure, in the order given.
    note : str
        ``""`` if nothing was left out; otherwise one line such as "rig 2p-gcamp6s measures activity only:
        using its 8 activity observables of the 24 asked for (weights and activity change not measured)".

    Raises
    ------
    ValueError
        No observable asked for is measured; or, with ``explicit``, some are not (one line naming what the
        rig measures).

    Examples
    --------
    >>> from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES
    >>> kept, note = measured_observables(ADMISSIBLE_OBSERVABLES, ("act",), "2p-gcamp6s")
    >>> len(kept)
    8
    >>> print(note)
    rig 2p-gcamp6s measures activity only: using its 8 activity observables of the 24 asked for
    (weights and activity change not measured)
    """
    observables, measures = tuple(observables), tuple(measures)
    kept = tuple(o for o in observables if o.measure in measures)
    if not kept:
        raise ValueError(f"rig preset {rig!r} measures {', '.join(measures)}, and none of the observables asked "
                         f"for uses it")
    if len(kept) == len(observables):
        return kept, ""
    if explicit:
        missing = [o.name for o in observables if o.measure not in measures]
        raise ValueError(f"rig {rig!r} measures {_words(measures)} only ({', '.join(measures)}); it cannot measure "
                         f"{', '.join(missing)}")
    used = [m for m in measures if any(o.measure == m for o in kept)]
    dropped = list(dict.fromkeys(o.measure for o in observables if o.measure not in measures))
    note = (f"rig {rig} measures {_words(measures)} only: using its {len(kept)} {_words(used, _ADJECTIVES)} "
            f"observables of the {len(observables)} asked for ({_words(dropped)} not measured)")
    return kept, note


def apply_preset(ground_truth, preset: RigPreset | str, seed: int | None = 0, **overrides: Any) -> Recording:
    """Observe a ground-truth session through a rig preset.

    Parameters
    ----------
    ground_truth : GroundTruth or Recording
        The session (a Recording is observed further).
    preset : RigPreset or str
        A preset or a name / path for :func:`load_preset`.
    seed : int, optional, default=0
        Rig seed; each stage uses its seed from :func:`virtual_lab.rig.seeds.rig_stage_seeds`. ``None`` draws
        one (stored in provenance).
    **overrides
        Parameter changes, as in :meth:`RigPreset.with_params`: shortcuts (``n_units``, ``unit_fraction``,
        ``n_checkpoints``, ``checkpoint_spacing``, ``synapse_fraction``, ``noise_sd``, ``noise_relative``)
        or ``stage__key`` (e.g. ``calcium__noise_level=4.0``).

    Returns
    -------
    Recording
        Its provenance starts with ``{"step": "preset", "name", "seed", "parameters"}``.

    Examples
    --------
    >>> from virtual_lab.testing import mock_ground_truth
    >>> rec = apply_preset(mock_ground_truth(), "em-snapshot", seed=1)
    >>> rec.n_checkpoints, rec.measures
    (1, ('weight',))
    """
    preset = load_preset(preset)
    if overrides:
        preset = preset.with_params(overrides)
    seed = resolve_seed(seed)
    rec = ground_truth if isinstance(ground_truth, Recording) else Recording.from_ground_truth(ground_truth)
    header = {"step": "preset", "name": preset.name, "seed": seed, "parameters": preset.parameters()}
    rec = rec.with_(provenance=rec.provenance + (header,))
    seeds = rig_stage_seeds(seed, [stage for stage in STAGES if stage in preset.stages])
    for stage, function in STAGES.items():
        if stage in preset.stages:
            params = {k: tuple(v) if isinstance(v, list) else v for k, v in preset.stages[stage].items()}
            rec = function(rec, **params, seed=seeds[stage])
    return rec
