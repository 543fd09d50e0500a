"""The :class:`Rule` record every rule module fills in, the vocabularies its engine-facing fields draw from, and
the backward matrices several rules share.

Nothing here imports torch: hooks receive tensors and use their methods, so the registry (and the protocol
checker that reads it) stays cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: Rule families, in the order the registry lists them.
FAMILIES = ("exact_gradient", "approximate_gradient", "local", "reward")

#: Optimizers the engines implement (plain SGD, SGD with Nesterov momentum, Adam).
OPTIMIZERS = ("sgd", "sgdm", "adam")

#: Momentum of the ``sgdm`` optimizer (Nesterov).
SGD_MOMENTUM = 0.9

#: Heavy-ball momentum of each optimizer's update (Adam's first moment is not counted as momentum here).
MOMENTUM = {"sgd": 0.0, "sgdm": SGD_MOMENTUM, "adam": 0.0}

#: How the weight update is formed: from a backward-sent error, from Oja's rule on hidden layers plus the delta
#: rule on the readout, or from reward-correlated perturbations (two forward passes).
UPDATES = ("backward", "hebbian", "node_perturbation")

#: Backward paths without a per-layer backward matrix: the output error sent straight to every hidden layer
#: (``"direct"``), or no error reaching a hidden layer at all (``"none"``). Every other backward path is a label
#: the engines group networks by, and the rule's :attr:`Rule.backward_matrix` says what the error goes through.
MATRIX_FREE_PATHS = ("direct", "none")

#: How a feedback matrix ``B`` changes over training: never (``"fixed"``; also when no ``B`` is used), by a
#: layer-local loss (information alignment's), or by the same update as ``W`` (Kolen-Pollack).
FEEDBACK_UPDATES = ("fixed", "local_loss", "weight_update")

#: Architectures the engines train.
ARCHITECTURES = ("mlp", "cnn", "resnet")

#: Training objectives.
PARADIGMS = ("supervised", "contrastive")

#: ``(weight, feedback, fan_in) -> matrix``: what a layer's error is multiplied by on its way to the layer's
#: input. ``weight`` and ``feedback`` are stacked ``[N, out, in]`` (MLP) or ``[N, C_out, C_in, k, k]`` (conv);
#: the result has their shape. It may return one of its arguments (never modified by the engines).
BackwardMatrix = Callable[..., object]


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A learning rule: its names, defaults, where it is defined, and what the engines do for it.

    Every field is required, so a rule module states every fact about its rule.

    Attributes
    ----------
    name : str
        Canonical name (protocol files, run specs, session metadata).
    short_name : str
        Lower-case abbreviation used in sentences (``"fa"``); unique.
    display_name : str
        Label used in figures and tables (``"FA"``).
    aliases : tuple of str
        Other names a protocol or command line may use (``("fa",)``).
    family : str
        One of :data:`FAMILIES`.
    paper : bool
        Whether the rule is in the paper's rule set (Nayebi et al. 2020: sgdm, adam, FA, IA).
    default_learning_rate : float
    default_weight_decay : float
        L2 weight decay added to the update unless the protocol sets one (Kolen-Pollack needs it).
    hyperparameters : tuple of str
        :class:`~virtual_lab.lab.spec.RunSpec` fields the rule reads besides the learning rate and weight decay
        (``("ia_alpha", "ia_beta", "ia_gamma")``); recorded in the session metadata.
    random_streams : tuple of str
        Random streams the rule draws from besides initialization and data order; the metadata records
        ``<stream>_seed``.
    architectures, paradigms : tuple of str
        Where the rule is defined (subsets of :data:`ARCHITECTURES`, :data:`PARADIGMS`).
    optimizer : str
        One of :data:`OPTIMIZERS`: the update applied to the (pseudo-)gradient.
    feedback : str
        Name of what carries the error backward, as the metadata records it (``"transpose"``,
        ``"fixed_random"``, ...).
    update : str
        One of :data:`UPDATES`.
    backward_path : str
        The group the engines sort and batch networks by when sending errors backward: rules with equal paths
        share :attr:`backward_matrix`; ``"direct"`` and ``"none"`` (:data:`MATRIX_FREE_PATHS`) have none.
    backward_matrix : callable or None
        :data:`BackwardMatrix` hook, ``None`` for the matrix-free paths.
    feedback_update : str
        One of :data:`FEEDBACK_UPDATES`.
    feedback_decay : callable or None
        ``(learning_rate, weight_decay, ia_gamma) -> rate``: per-step shrink rate of ``B``'s distance to where
        it settles, for rules that learn ``B``; ``None`` when ``B`` is fixed or unused
        (:func:`virtual_lab.lab.rules.feedback_time_constant` turns it into a time constant).
    feedback_decay_formula : str
        :attr:`feedback_decay` written out (``"2 ia_gamma lr"``), ``""`` when there is none.
    """

    name: str
    short_name: str
    display_name: str
    aliases: tuple[str, ...]
    family: str
    paper: bool
    default_learning_rate: float
    default_weight_decay: float
    hyperparameters: tuple[str, ...]
    random_streams: tuple[str, ...]
    architectures: tuple[str, ...]
    paradigms: tuple[str, ...]
    optimizer: str
    feedback: str
    update: str
    backward_path: str
    backward_matrix: BackwardMatrix | None
    feedback_update: str
    feedback_decay: Callable[..., float] | None
    feedback_decay_formula: str


def through_weights(weight, feedback, fan_in: int):
    """Backprop: the error goes back through ``W`` itself."""
    return weight


def through_feedback(weight, feedback, fan_in: int):
    """Feedback alignment and its learned variants: the error goes back through the stored ``B``."""
    return feedback
