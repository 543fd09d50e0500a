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
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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
from virtual_lab.validation import check_choice, did_you_mean

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
    """

    name: str
    description: str = ""
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: str = ""

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
                    raise TypeError(f"{where}: {stage}.{key} = {value!r} has the wrong type "
                                    f"(expected {type(defaults[key]).__name__}, like the default {defaults[key]!r})")
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
            dotted = SHORTCUTS.get(key, key.replace("__", "."))
            if "." not in dotted:
                allowed = sorted(SHORTCUTS) + ["<stage>.<key>"]
                raise ValueError(f"unknown rig parameter {key!r}{did_you_mean(key, SHORTCUTS)} "
                                 f"(allowed: {', '.join(allowed)})")
            stage, name = dotted.split(".", 1)
            stages.setdefault(stage, {})[name] = list(value) if isinstance(value, tuple) else value
        return RigPreset(self.name, self.description, stages, self.path)


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
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"{path}: top-level key {key!r} must be a [stage] table (stages: {', '.join(STAGES)})")
    return RigPreset(str(name), str(description), data, str(path))


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
