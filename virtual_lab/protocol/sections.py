"""Protocol sections: the frozen dataclasses a protocol file becomes, each field with its help and allowed values.

Every field is declared with :func:`_f`: its default, a help text and the checks :mod:`virtual_lab.protocol.load`
applies (``choices``, ``low``/``high`` bounds, open or closed, list length); one place says what a key allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from virtual_lab.lab.rules import (ARCHITECTURES, IA_DEFAULTS, PAPER_RULES, PARADIGMS, PERTURBATION_SD, RULES,
                                   canonical_name, rule_names)
from virtual_lab.lab.tasks import EVAL_SUBSET, TASKS
from virtual_lab.validation import InputError


class ProtocolError(InputError):
    """A protocol file is missing, unreadable or invalid: ``file: key: message`` in one line.

    An :class:`~virtual_lab.validation.InputError` (so a ``ValueError``) with ``source``, ``key`` (``""`` when the
    whole file is at fault) and ``message``.
    """


def _spec(help: str, *, choices: tuple | None = None, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False, each_choice: tuple | Callable[[], tuple] | None = None,
          min_len: int = 0, unique: bool = True) -> dict:
    return {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "each_choice": each_choice, "min_len": min_len, "unique": unique}


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
    eval_subset: int = _f(EVAL_SUBSET, "training examples whose loss every checkpoint records (a fixed subset, "
                                       "seeded by the task seed, the same for every network); 0 = the whole "
                                       "training set", low=0)


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

    def preset_overrides(self) -> dict[str, Any]:
        """The keys given in the ``[[rig]]`` table that override its preset (all but name, preset and seed)."""
        return {key: getattr(self, key) for key in self.given_keys if key not in ("name", "preset", "seed")}


@dataclass(frozen=True)
class DecoderSection:
    models: tuple[str, ...] = _f(("random_forest", "linear_svm"), "decoders",
                                 each_choice=("random_forest", "linear_svm", "logistic", "conv1d"), min_len=1)
    n_splits: int = _f(10, "cross-validation splits, grouped by network", low=2)
    controls: bool = _f(True, "run the reviewers' controls (with the fastest listed decoder) in the report")
    n_permutations: int = _f(0, "network-level permutation test: label shuffles (0 = skip)", low=0)
    test_fraction: float = _f(0.25, "fraction of each rule's networks held out per split", low=0, high=1,
                              low_open=True, high_open=True)
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

