"""Rig settings of the power analysis and the general path (modality presets observed with
:func:`virtual_lab.rig.presets.apply_preset` at every grid point)."""

from __future__ import annotations

import contextlib
import logging
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import Observable, compute_observables
from virtual_lab.rig.recording import Recording
from virtual_lab.seeding import derive_seed
from virtual_lab.types import GroundTruth
from virtual_lab.validation import did_you_mean

logger = logging.getLogger(__name__)

#: Rig settings built into the power analysis (the paper-equivalent rig of :func:`virtual_lab.rig.observe`).
#: ``units``, ``noise`` and ``sessions`` come from the grid; these fix everything else.
RIG_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"description": "paper-equivalent rig (Nayebi et al. 2020 obfuscate_tensor): a subset of units, "
                             "every synapse, Gaussian noise relative to each measure's SD, evenly spaced sessions",
              "synapse_fraction": None, "noise_relative": True},
    "paper-absolute": {"description": "as 'paper' but with absolute noise SD (same units as the recordings)",
                       "synapse_fraction": None, "noise_relative": False},
    "paper-quarter-synapses": {"description": "as 'paper' with 25% of synapses measured",
                               "synapse_fraction": 0.25, "noise_relative": True},
}


def resolve_rig(rig: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings of a rig preset for the power analysis.

    Parameters
    ----------
    rig : str, dict or None
        A name from :data:`RIG_PRESETS` (or from :mod:`virtual_lab.rig.presets` once that module offers
        ``load_preset``), a dict with ``synapse_fraction`` / ``noise_relative``, or None for ``"paper"``.

    Returns
    -------
    dict
        ``name``, ``description``, ``synapse_fraction`` (None: all), ``noise_relative``.
    """
    if rig is None:
        rig = "paper"
    if isinstance(rig, Mapping):
        unknown = sorted(set(rig) - {"name", "description", "synapse_fraction", "noise_relative", "noise_measures",
                                     "origin"})
        if unknown:
            raise ValueError(f"rig: unknown setting {unknown[0]!r}; allowed: name, description, synapse_fraction, "
                             f"noise_relative")
        settings = {"name": "custom", "description": "custom rig", "synapse_fraction": None, "noise_relative": True,
                    "noise_measures": ("weight", "act", "gradavg"), "origin": "built-in"}
        settings.update(rig)
        if settings["synapse_fraction"] is not None:
            fraction = settings["synapse_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
                raise ValueError(f"rig synapse_fraction must be a number in (0, 1], got {fraction!r}")
        return settings
    if not isinstance(rig, str):
        raise TypeError(f"rig must be a preset name or a dict, got {type(rig).__name__}")
    if rig in RIG_PRESETS:
        return {"name": rig, "noise_measures": ("weight", "act", "gradavg"), "origin": "built-in", **RIG_PRESETS[rig]}
    available = list(RIG_PRESETS)
    # the rig presets of virtual_lab.rig.presets: those made of paper-equivalent stages take the shared fast
    # path, modality presets the general one (see the module docstring); a preset file path works too
    extra = _external_presets()
    if rig in extra:
        return extra[rig]
    if rig.endswith(".toml"):  # a preset file (e.g. written by virtual-lab calibrate)
        if not Path(rig).is_file():
            raise ValueError(f"rig preset file {rig!r} does not exist")
        return general_rig(rig)
    available += list(extra)
    raise ValueError(f"unknown rig preset {rig!r}; available for power analysis: "
                     f"{', '.join(available)}{did_you_mean(rig, available)}")


#: Preset stages the power engine reproduces exactly (the grid sets units, noise SD and sessions).
POWER_STAGES = ("checkpoints", "units", "synapses", "noise")


def _external_presets() -> dict[str, dict[str, Any]]:
    """Presets of :mod:`virtual_lab.rig.presets` as power settings (name -> settings, or name -> error text)."""
    try:
        from virtual_lab.rig.presets import available_presets, load_preset
    except ImportError:
        return {}
    found: dict[str, Any] = {}
    for name in available_presets():
        preset = load_preset(name)
        other = [stage for stage in preset.stages if stage not in POWER_STAGES]
        if other:
            found[name] = general_rig(name)
            continue
        synapses = preset.stages.get("synapses", {}).get("fraction", 1.0)
        noise = preset.stages.get("noise", {})
        found[name] = {"name": name, "description": preset.description,
                       "synapse_fraction": None if synapses == 1.0 else float(synapses),
                       "noise_relative": bool(noise.get("relative", False)),
                       "noise_measures": tuple(noise.get("measures", ("weight", "act", "gradavg"))),
                       "origin": "preset"}
    return found


def general_rig(preset: str) -> dict[str, Any]:
    """Power settings of a rig preset observed through :func:`virtual_lab.rig.presets.apply_preset` at every
    grid point (the general path)."""
    from virtual_lab.rig.presets import load_preset

    loaded = load_preset(preset)
    pilots = list(loaded.provenance.get("pilot_files", []))  # a preset written by virtual-lab calibrate
    return {"name": loaded.name, "description": loaded.description, "preset": loaded.path or preset,
            "general": True, "noise_relative": True, "synapse_fraction": None,
            "noise_measures": ("weight", "act", "gradavg"), "origin": "preset", "stages": list(loaded.stages),
            **({"calibrated_from": pilots} if pilots else {})}


#: Noise axis of the general path unless ``noise_param`` says otherwise: extra Gaussian measurement noise,
#: relative to each measure's SD, after the modality (the preset's ``[noise]`` stage).
DEFAULT_NOISE_PARAM = "noise.sd"


def _preset_overrides(plan: Mapping[str, Any], units: int, noise_value: float, sessions: int) -> dict[str, Any]:
    """``apply_preset`` overrides of one grid point of the general path."""
    overrides: dict[str, Any] = {"units__n_units": int(units), "units__fraction": 1.0,
                                 "units__cap": bool(plan["cap_units"]), "units__layers": tuple(plan["layers"])}
    if plan["has_checkpoints"]:
        overrides["checkpoints__n_checkpoints"] = int(sessions)
    key = plan["noise_param"]
    if key == DEFAULT_NOISE_PARAM:
        overrides["noise__relative"] = True
    overrides[key.replace(".", "__")] = noise_value
    return overrides


def compute_preset_grid_features(ground_truth: GroundTruth, plan: Mapping[str, Any]) -> list[np.ndarray]:
    """Observables of one session at every grid point of the general path (modality presets).

    Each value is exactly ``compute_observables(apply_preset(ground_truth, preset,
    seed=derive_seed(rig_seed, run_id), **overrides))`` for the grid point's overrides
    (:func:`_preset_overrides`). A grid point whose observation leaves a layer without units (e.g. no unit
    tracked across every session) gives NaN features there, which the decoding step drops with a warning.

    Returns
    -------
    list of ndarray of float32
        One array per session count, shape (n_rig_seeds, n_units, n_noise, n_layers, sessions, n_observables).
    """
    from virtual_lab.rig.presets import apply_preset, load_preset

    preset = load_preset(plan["preset"])  # parsed once, not at every grid point
    layers, observables = tuple(plan["layers"]), plan["observables"]
    out = []
    with _silenced("virtual_lab.rig.tracking"):  # a layer lost at one grid point: NaN, counted when decoding
        for k in plan["sessions"]:
            n_t = k if plan["has_checkpoints"] else 1
            block = np.full((len(plan["rig_seeds"]), len(plan["units"]), len(plan["noise"]), len(layers), n_t,
                             len(observables)), np.nan, dtype=np.float32)
            for r, rig_seed in enumerate(plan["rig_seeds"]):
                network_seed = derive_seed(int(rig_seed), ground_truth.run_id)
                for u_i, units in enumerate(plan["units"]):
                    for z_i, value in enumerate(plan["noise"]):
                        recording = apply_preset(ground_truth, preset, seed=network_seed,
                                                 **_preset_overrides(plan, units, value, k))
                        for l_i, layer in enumerate(layers):
                            stats = compute_observables(_OneLayer(recording, layer), observables)[layer]
                            block[r, u_i, z_i, l_i] = stats.astype(np.float32)
            out.append(block)
    return out


@contextlib.contextmanager
def _silenced(logger_name: str):
    """Drop the records of one logger while the grid runs (restored afterwards)."""
    target = logging.getLogger(logger_name)
    drop = lambda record: False  # noqa: E731
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class _OneLayer:
    """A recording seen through one of its layers (for :func:`compute_observables`)."""

    def __init__(self, recording: Recording, layer: str):
        self._recording, self.layer_names, self.n_checkpoints = recording, (layer,), recording.n_checkpoints
        self.measures = recording.measures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recording, name)


def _check_noise_param(settings: Mapping[str, Any], noise: Sequence[float]) -> None:
    """A clear error before any work when the noise axis names a parameter the preset cannot take."""
    from virtual_lab.rig.presets import load_preset

    key = settings["noise_param"]
    stage = key.split(".", 1)[0]
    if "." not in key or stage in ("units", "checkpoints"):
        raise ValueError(f"noise_param must be a preset parameter 'stage.key' other than the units and "
                         f"checkpoints the grid sets (e.g. 'noise.sd', 'calcium.noise_level'), got {key!r}")
    preset = load_preset(settings["preset"])
    try:
        for value in noise:
            preset.with_params({key: value})
    except (TypeError, ValueError) as error:
        raise ValueError(f"noise_param {key!r} for rig preset {settings['name']!r}: {error}") from None


def _measured_observables(ground_truth: GroundTruth, plan: Mapping[str, Any], observables: Sequence[Observable],
                          rig_name: str, explicit: bool = False) -> tuple[Observable, ...]:
    """The observables whose measure the preset records (a calcium rig sees activity, EM sees weights):
    :func:`virtual_lab.rig.presets.measured_observables`, as ``virtual-lab decode`` uses."""
    from virtual_lab.rig.presets import apply_preset, measured_observables

    recording = apply_preset(ground_truth, plan["preset"], seed=0, **_preset_overrides(
        plan, plan["units"][0], plan["noise"][0], plan["sessions"][0]))
    kept, note = measured_observables(observables, recording.measures, rig_name, explicit=explicit)
    if note:
        logger.info("%s", note)
    return kept


def _power_rig(rig: str | Mapping[str, Any] | None, noise_param: str | None, noise: Sequence[float],
               sessions: Sequence[int]) -> tuple[dict[str, Any], bool]:
    """The rig settings of one analysis and whether the rig observes checkpoints (an EM snapshot does not),
    with every rig-dependent input checked before any work."""
    settings = resolve_rig(rig)
    if noise_param is not None and not settings.get("general"):
        if settings.get("origin") != "preset":
            raise ValueError(f"noise_param ({noise_param!r}) needs a rig preset of virtual_lab.rig.presets "
                             f"(protocols/rigs), not the built-in rig {settings['name']!r}")
        settings = general_rig(settings["name"])
    general = bool(settings.get("general"))
    if general:
        settings = {**settings, "noise_param": noise_param or DEFAULT_NOISE_PARAM}
        _check_noise_param(settings, noise)
    has_checkpoints = not general or "em" not in settings["stages"]
    if not has_checkpoints and tuple(sessions) != (1,):
        raise ValueError(f"rig preset {settings['name']!r} observes one timepoint (an EM snapshot); use "
                         f"sessions=[1] (--sessions 1), got {list(sessions)}")
    return settings, has_checkpoints
