"""Learning rules: one registry dict from name to a frozen :class:`Rule` description.

Definitions follow Nayebi et al. (2020) and DESIGN.md section 3. ``W`` is stored ``[out, in]``; a layer's
error ``delta`` (shape ``[batch, out]``) is sent to its input as ``delta @ M`` where ``M`` is the rule's
*backward matrix* (``W`` itself for backprop).

Exact gradient
    * ``sgd`` - backprop gradient, plain SGD (no momentum).
    * ``sgdm`` - backprop gradient, SGD with Nesterov momentum 0.9.
    * ``adam`` - backprop gradient, Adam (betas 0.9, 0.999; eps 1e-8).

Approximate gradient (the error still flows backward, but not through ``W``)
    * ``feedback_alignment`` - backward matrix is a fixed random ``B``, drawn independently of ``W`` from the
      same distribution, never updated (Lillicrap et al. 2016); weight updates ``dW = delta^T x``.
    * ``information_alignment`` - as feedback alignment, but ``B`` is trained by the layer-local loss
      ``R = alpha R_amp + beta R_null + gamma R_decay`` with ``R_amp = -E[(xW)(xB^T)]``,
      ``R_null = E||(xW)B||^2``, ``R_decay = ||W||^2 + ||B||^2``, ``W`` held fixed (Kunin et al., ICML 2020).
    * ``kolen_pollack`` - ``B`` starts as an independent random draw and receives the same update as ``W``
      (in the ``[out, in]`` layout, i.e. ``W^T``'s update in the paper's notation), both with weight decay,
      so ``W - B`` decays geometrically and ``B -> W`` (Akrout et al., NeurIPS 2019).
    * ``sign_symmetry`` - backward matrix is ``sign(W)``, times a fixed per-layer constant
      ``1 / (2 sqrt(fan_in))`` (the mean ``|W|`` at initialization), so the backward signal has backprop's
      scale at initialization (Liao, Leibo & Poggio 2016; Xiao et al. 2018 use batch norm for that purpose).
    * ``direct_feedback_alignment`` - the output error ``e`` is sent straight to every hidden layer through a
      fixed random matrix ``D_l`` of shape ``[n_classes, n_l]``: ``delta_l = (e @ D_l) * relu'(h_l)``
      (Nokland, NeurIPS 2016). ``D_l`` is drawn like feedback alignment's ``B`` of the last layer,
      ``U(-1/sqrt(n_l), 1/sqrt(n_l))``, and never changes.

Local (unsupervised hidden layers)
    * ``hebbian`` - every hidden layer learns by Oja's subspace rule on its own pre-synaptic input ``x`` and
      post-synaptic rate ``y = relu(Wx + b)``: ``dW = eta (y^T x - y^T y W) / batch`` (Oja 1989), hidden
      biases fixed; the readout learns by the delta rule for softmax units, ``dW = eta (t - p)^T x / batch``.
      No error reaches a hidden layer.

Reward-based
    * ``node_perturbation`` - every unit's pre-activation receives Gaussian noise ``xi ~ N(0, sigma^2)`` in a
      second, perturbed forward pass; the change of each example's loss (the negative reward) is correlated
      with the perturbation: ``dW_l = -eta (1/batch) sum_b (L_b(xi) - L_b) xi_lb x_lb^T / sigma^2``
      (Williams 1992; Werfel, Xie & Seung 2005). No backward pass: an unbiased estimate of the gradient
      from two forward passes.

Optimizers: the approximate-gradient and reward rules use SGD with Nesterov momentum, as in the paper;
``hebbian`` uses plain SGD.

Architectures and paradigms: every rule is defined for the MLPs the engine trains (any depth and width).
The convolutional networks (``cnn``, ``resnet``; :mod:`virtual_lab.lab.conv`) run the rules whose backward
matrix carries over as a transposed convolution: sgd, sgdm, adam, FA, IA, KP and sign symmetry
(:data:`CONV_RULES`). DFA, Hebbian and node perturbation are not defined for them here (a convolutional DFA
needs a projection to every feature map, a convolutional Oja rule a weight-sharing convention, a
convolutional node perturbation a noise model per feature map). The contrastive paradigm
(:mod:`virtual_lab.lab.contrastive`) runs every rule that sends an error signal backward
(:data:`CONTRASTIVE_RULES`): Hebbian's readout and node perturbation's reward are defined per labelled example.
:func:`undefined_reason` says why a (rule, architecture, paradigm) triple is not defined; the protocol loader
rejects such triples.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("exact_gradient", "approximate_gradient", "local", "reward")

OPTIMIZERS = ("sgd", "sgdm", "adam")

FEEDBACKS = ("transpose", "fixed_random", "information_alignment", "kolen_pollack", "sign_symmetry", "direct",
             "none")

UPDATES = ("backward", "hebbian", "node_perturbation")


@dataclass(frozen=True)
class Rule:
    """A learning rule as the population engine runs it.

    Attributes
    ----------
    name : str
    family : str
        One of :data:`FAMILIES`.
    optimizer : {"sgd", "sgdm", "adam"}
        Update applied to the (pseudo-)gradient.
    feedback : str
        What carries the error backward (one of :data:`FEEDBACKS`): ``W`` itself (``"transpose"``), a fixed
        random ``B``, a ``B`` trained by the IA loss, a ``B`` updated like ``W`` (Kolen-Pollack),
        ``sign(W)``, direct random projections of the output error (``"direct"``), or nothing (``"none"``).
    default_learning_rate : float
    short_name : str
        Abbreviation used in figures.
    update : {"backward", "hebbian", "node_perturbation"}, default="backward"
        How the weight update is formed: from a backward-propagated error, from Oja's rule (hidden layers)
        plus the delta rule (readout), or from reward-correlated perturbations.
    default_weight_decay : float, default=0.0
        L2 weight decay added to the update unless the protocol sets one (Kolen-Pollack needs it).
    """

    name: str
    family: str
    optimizer: str
    feedback: str
    default_learning_rate: float
    short_name: str
    update: str = "backward"
    default_weight_decay: float = 0.0


RULES: dict[str, Rule] = {
    "sgd": Rule("sgd", "exact_gradient", "sgd", "transpose", 0.1, "SGD"),
    "sgdm": Rule("sgdm", "exact_gradient", "sgdm", "transpose", 0.02, "SGDM"),
    "adam": Rule("adam", "exact_gradient", "adam", "transpose", 1e-3, "Adam"),
    "feedback_alignment": Rule("feedback_alignment", "approximate_gradient", "sgdm", "fixed_random", 0.02, "FA"),
    "information_alignment": Rule("information_alignment", "approximate_gradient", "sgdm",
                                  "information_alignment", 0.02, "IA"),
    "kolen_pollack": Rule("kolen_pollack", "approximate_gradient", "sgdm", "kolen_pollack", 0.02, "KP",
                          default_weight_decay=1e-3),
    "sign_symmetry": Rule("sign_symmetry", "approximate_gradient", "sgdm", "sign_symmetry", 0.02, "SS"),
    "direct_feedback_alignment": Rule("direct_feedback_alignment", "approximate_gradient", "sgdm", "direct", 0.02,
                                      "DFA"),
    "hebbian": Rule("hebbian", "local", "sgd", "none", 0.05, "Hebb", update="hebbian"),
    "node_perturbation": Rule("node_perturbation", "reward", "sgdm", "none", 0.003, "NP",
                              update="node_perturbation"),
}

ALIASES = {"fa": "feedback_alignment", "ia": "information_alignment", "kp": "kolen_pollack",
           "dfa": "direct_feedback_alignment", "oja": "hebbian", "np": "node_perturbation", "ss": "sign_symmetry"}

PAPER_RULES = ("sgdm", "adam", "feedback_alignment", "information_alignment")

ALL_RULES = tuple(RULES)

IA_DEFAULTS = {"ia_alpha": 2e-3, "ia_beta": 1e-3, "ia_gamma": 1e-3}

#: Default standard deviation of node perturbation's noise on pre-activations.
PERTURBATION_SD = 0.05

#: Momentum of the ``sgdm`` optimizer (Nesterov).
SGD_MOMENTUM = 0.9


def get_rule(name: str) -> Rule:
    """Look up a rule by name or alias (``fa``, ``ia``, ``kp``, ``dfa``, ``oja``, ``np``, ``ss``)."""
    name = ALIASES.get(name, name)
    if name not in RULES:
        import difflib

        close = difflib.get_close_matches(name, list(RULES) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown learning rule {name!r}{hint} (available: {', '.join(RULES)})")
    return RULES[name]


#: Architectures the engines train.
ARCHITECTURES = ("mlp", "cnn", "resnet")
#: Training objectives.
PARADIGMS = ("supervised", "contrastive")
#: Rules with a convolutional version (the backward matrix as a transposed convolution).
CONV_RULES = ("sgd", "sgdm", "adam", "feedback_alignment", "information_alignment", "kolen_pollack",
              "sign_symmetry")
#: Rules defined for the contrastive paradigm: every rule whose update is a backward-sent error.
CONTRASTIVE_RULES = tuple(name for name, rule in RULES.items() if rule.update == "backward")


def feedback_time_constant(rule: str, learning_rate: float, *, ia_gamma: float = IA_DEFAULTS["ia_gamma"],
                           weight_decay: float | None = None) -> float | None:
    """Training steps over which a rule's *learned* feedback matrix ``B`` relaxes, or ``None`` when ``B`` is
    fixed or absent.

    Both rules that learn ``B`` do it slowly, through a small decay coefficient, so a short run leaves ``B`` at
    its random draw and the network trains as feedback alignment would:

    * ``information_alignment``: the decay term ``gamma ||B||^2`` of the local loss shrinks ``B`` by
      ``2 gamma lr / (1 - momentum)`` per step once momentum has built up. ``B`` forgets its random draw and
      settles where the amp term balances decay and null with time constant ``tau = (1 - momentum) /
      (2 gamma lr)`` in its slowest directions (the null term speeds up those along which the layer's
      outputs vary). With Kunin et al.'s ``gamma = 1e-3`` at lr 0.02 and Nesterov momentum 0.9,
      ``tau = 2,500`` steps.
    * ``kolen_pollack``: ``W`` and ``B`` receive the same update, both with weight decay ``lambda``, so
      ``W - B`` shrinks with ``tau = (1 - momentum) / (lambda lr)``.

    Examples
    --------
    >>> round(feedback_time_constant("information_alignment", 0.02))
    2500
    >>> feedback_time_constant("feedback_alignment", 0.02) is None
    True
    """
    rule_ = get_rule(rule)
    momentum = SGD_MOMENTUM if rule_.optimizer == "sgdm" else 0.0
    if rule_.feedback == "information_alignment":
        rate = 2.0 * ia_gamma * learning_rate
    elif rule_.feedback == "kolen_pollack":
        rate = (rule_.default_weight_decay if weight_decay is None else weight_decay) * learning_rate
    else:
        return None
    return (1.0 - momentum) / rate if rate > 0 else float("inf")


def undefined_reason(rule: str, architecture: str = "mlp", paradigm: str = "supervised") -> str | None:
    """Why a rule is not defined for an architecture or paradigm, or ``None`` when it is.

    Examples
    --------
    >>> undefined_reason("sgdm", "cnn") is None
    True
    >>> undefined_reason("hebbian", "cnn")
    "rule 'hebbian' has no convolutional version (architecture 'cnn' allows: sgd, sgdm, adam, feedback_alignment, information_alignment, kolen_pollack, sign_symmetry)"
    """
    name = get_rule(rule).name
    if architecture != "mlp" and name not in CONV_RULES:
        return (f"rule {name!r} has no convolutional version (architecture {architecture!r} allows: "
                f"{', '.join(CONV_RULES)})")
    if paradigm == "contrastive" and name not in CONTRASTIVE_RULES:
        return (f"rule {name!r} is not defined for the contrastive paradigm (it needs labels or a per-example "
                f"reward; allowed: {', '.join(CONTRASTIVE_RULES)})")
    return None
