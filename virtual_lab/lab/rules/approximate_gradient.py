"""Approximate-gradient rules: the error still flows backward, but not through ``W``.

``W`` is stored ``[out, in]``; a layer's error ``delta`` (shape ``[batch, out]``) is sent to its input as
``delta @ M`` where ``M`` is the rule's backward matrix. Weight updates are ``dW = delta^T x`` as in backprop;
all five use SGD with Nesterov momentum, as in the paper.

* ``feedback_alignment`` - backward matrix is a fixed random ``B``, drawn independently of ``W`` from the same
  distribution, never updated (Lillicrap et al. 2016).
* ``information_alignment`` - as feedback alignment, but ``B`` is trained by the layer-local loss
  ``R = alpha R_amp + beta R_null + gamma R_decay`` with ``R_amp = -E[(xW)(xB^T)]``, ``R_null = E||(xW)B||^2``,
  ``R_decay = ||W||^2 + ||B||^2``, ``W`` held fixed (Kunin et al., ICML 2020); defaults :data:`IA_DEFAULTS`.
* ``kolen_pollack`` - ``B`` starts as an independent random draw and receives the same update as ``W`` (in the
  ``[out, in]`` layout, i.e. ``W^T``'s update in the paper's notation), both with weight decay, so ``W - B``
  decays geometrically and ``B -> W`` (Akrout et al., NeurIPS 2019).
* ``sign_symmetry`` - backward matrix is ``sign(W)``, times a fixed per-layer constant ``1 / (2 sqrt(fan_in))``
  (the mean ``|W|`` at initialization, :func:`sign_symmetry_scale`), so the backward signal has backprop's
  scale at initialization (Liao, Leibo & Poggio 2016; Xiao et al. 2018 use batch norm for that purpose).
* ``direct_feedback_alignment`` - the output error ``e`` is sent straight to every hidden layer through a fixed
  random matrix ``D_l`` of shape ``[n_classes, n_l]``: ``delta_l = (e @ D_l) * relu'(h_l)`` (Nokland, NeurIPS
  2016). ``D_l`` is drawn like feedback alignment's ``B`` of the last layer, ``U(-1/sqrt(n_l), 1/sqrt(n_l))``,
  from its own random stream, and never changes.

The first four carry over to convolutional networks as transposed convolutions with the backward kernel; a
convolutional DFA would need a projection to every feature map and is not defined here. All five are defined
for the contrastive paradigm (the error of NT-Xent goes back along the usual path).
"""

from __future__ import annotations

import math

from virtual_lab.lab.rules.base import ARCHITECTURES, PARADIGMS, Rule, through_feedback

#: Information alignment's local-loss weights (Kunin et al., ICML 2020).
IA_DEFAULTS = {"ia_alpha": 2e-3, "ia_beta": 1e-3, "ia_gamma": 1e-3}


def sign_symmetry_scale(fan_in: int) -> float:
    """Fixed scale of sign symmetry's backward matrix ``sign(W)``: the mean ``|W|`` at initialization."""
    return 0.5 / math.sqrt(fan_in)


def through_sign_of_weights(weight, feedback, fan_in: int):
    """Sign symmetry: the error goes back through ``sign(W) * sign_symmetry_scale(fan_in)``."""
    return weight.sign().mul_(sign_symmetry_scale(fan_in))


def _ia_decay(learning_rate: float, weight_decay: float, ia_gamma: float) -> float:
    return 2.0 * ia_gamma * learning_rate


def _kp_decay(learning_rate: float, weight_decay: float, ia_gamma: float) -> float:
    return weight_decay * learning_rate


def _approximate(name: str, short_name: str, display_name: str, **fields) -> Rule:
    defaults = dict(aliases=(short_name,), family="approximate_gradient", paper=False, default_learning_rate=0.02,
                    default_weight_decay=0.0, hyperparameters=(), random_streams=(), architectures=ARCHITECTURES,
                    paradigms=PARADIGMS, optimizer="sgdm", update="backward", backward_path="B",
                    backward_matrix=through_feedback, feedback_update="fixed", feedback_decay=None,
                    feedback_decay_formula="")
    return Rule(name=name, short_name=short_name, display_name=display_name, **{**defaults, **fields})


FEEDBACK_ALIGNMENT = _approximate("feedback_alignment", "fa", "FA", paper=True, feedback="fixed_random")

INFORMATION_ALIGNMENT = _approximate(
    "information_alignment", "ia", "IA", paper=True, feedback="information_alignment",
    hyperparameters=tuple(IA_DEFAULTS), feedback_update="local_loss", feedback_decay=_ia_decay,
    feedback_decay_formula="2 ia_gamma lr")

KOLEN_POLLACK = _approximate(
    "kolen_pollack", "kp", "KP", default_weight_decay=1e-3, feedback="kolen_pollack",
    feedback_update="weight_update", feedback_decay=_kp_decay, feedback_decay_formula="weight_decay lr")

SIGN_SYMMETRY = _approximate("sign_symmetry", "ss", "SS", feedback="sign_symmetry", backward_path="sign",
                             backward_matrix=through_sign_of_weights)

DIRECT_FEEDBACK_ALIGNMENT = _approximate(
    "direct_feedback_alignment", "dfa", "DFA", random_streams=("direct_feedback",), architectures=("mlp",),
    feedback="direct", backward_path="direct", backward_matrix=None)

RULES = (FEEDBACK_ALIGNMENT, INFORMATION_ALIGNMENT, KOLEN_POLLACK, SIGN_SYMMETRY, DIRECT_FEEDBACK_ALIGNMENT)
