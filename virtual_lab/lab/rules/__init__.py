"""Learning rules: one registry dict from name to a frozen :class:`Rule`, built from one module per family.

Definitions follow Nayebi et al. (2020) and DESIGN.md section 3; each family module states its rules'
definitions and builds their :class:`Rule` records:

* :mod:`~virtual_lab.lab.rules.exact_gradient` - ``sgd``, ``sgdm``, ``adam`` (backprop);
* :mod:`~virtual_lab.lab.rules.approximate_gradient` - ``feedback_alignment``, ``information_alignment``,
  ``kolen_pollack``, ``sign_symmetry``, ``direct_feedback_alignment``;
* :mod:`~virtual_lab.lab.rules.local` - ``hebbian`` (Oja's rule);
* :mod:`~virtual_lab.lab.rules.reward` - ``node_perturbation``.

A :class:`Rule` carries everything the rest of the package asks about a rule: its names (canonical, short for
sentences, display for figures, aliases), family, defaults, the architectures and paradigms it is defined for,
and the engine hooks -- its optimizer, its backward path and backward matrix, how its feedback matrix changes,
how its weight update is formed and how fast a learned ``B`` relaxes. The engines, the protocol checker, the
sweep and the reports read these fields; none of them branches on a rule's name. A new rule that combines
mechanisms the engines implement (an optimizer, a backward matrix, a feedback update, an update kind) is a
:class:`Rule` in its family's module plus its tests; :func:`check_rule` says whether its fields fit together.

Architectures and paradigms: every rule is defined for the MLPs the engine trains (any depth and width). The
convolutional networks (``cnn``, ``resnet``; :mod:`virtual_lab.lab.conv`) run the rules whose backward matrix
carries over as a transposed convolution (:data:`CONV_RULES`). The contrastive paradigm
(:mod:`virtual_lab.lab.contrastive`) runs every rule that sends an error signal backward
(:data:`CONTRASTIVE_RULES`). :func:`undefined_reason` says why a (rule, architecture, paradigm) triple is not
defined; the protocol loader and the engines reject such triples.

The tuples :data:`ALL_RULES`, :data:`PAPER_RULES`, :data:`CONV_RULES`, :data:`CONTRASTIVE_RULES` and the dict
:data:`ALIASES` are derived from :data:`RULES` once, at import; the functions read :data:`RULES` when called.
"""

from __future__ import annotations

from virtual_lab.lab.rules import approximate_gradient, exact_gradient, local, reward
from virtual_lab.lab.rules.approximate_gradient import IA_DEFAULTS, sign_symmetry_scale
from virtual_lab.lab.rules.base import (ARCHITECTURES, FAMILIES, FEEDBACK_UPDATES, MATRIX_FREE_PATHS, MOMENTUM,
                                        OPTIMIZERS, PARADIGMS, SGD_MOMENTUM, UPDATES, Rule)
from virtual_lab.lab.rules.reward import PERTURBATION_SD
from virtual_lab.validation import did_you_mean

__all__ = ["ALIASES", "ALL_RULES", "ARCHITECTURES", "CONTRASTIVE_RULES", "CONV_RULES", "FAMILIES", "FEEDBACKS",
           "FEEDBACK_UPDATES", "IA_DEFAULTS", "MOMENTUM", "OPTIMIZERS", "PAPER_RULES", "PARADIGMS",
           "PERTURBATION_SD", "RULES", "Rule", "SGD_MOMENTUM", "UPDATES", "canonical_name", "check_rule",
           "display_name", "feedback_time_constant", "get_rule", "rule_names", "rules_for", "short_name",
           "sign_symmetry_scale", "undefined_reason"]

#: Every rule by canonical name, family by family (:data:`FAMILIES` order).
RULES: dict[str, Rule] = {rule.name: rule for module in (exact_gradient, approximate_gradient, local, reward)
                          for rule in module.RULES}

ALL_RULES = tuple(RULES)

#: Other names of the rules (``fa``, ``ia``, ``kp``, ``ss``, ``dfa``, ``oja``, ``np``).
ALIASES = {alias: rule.name for rule in RULES.values() for alias in rule.aliases}

#: The paper's rule set: every paper-comparison result uses exactly these.
PAPER_RULES = tuple(name for name, rule in RULES.items() if rule.paper)

#: Names the metadata uses for what carries the error backward.
FEEDBACKS = tuple(dict.fromkeys(rule.feedback for rule in RULES.values()))


def canonical_name(name: str) -> str:
    """A rule's canonical name from its name or an alias; other strings come back unchanged."""
    if name in RULES:
        return name
    for rule in RULES.values():
        if name in rule.aliases:
            return rule.name
    return name


def rule_names() -> tuple[str, ...]:
    """Every name a protocol may use for a rule: canonical names, then aliases."""
    return tuple(RULES) + tuple(alias for rule in RULES.values() for alias in rule.aliases)


def get_rule(name: str) -> Rule:
    """Look up a rule by name or alias (``fa``, ``ia``, ``kp``, ``dfa``, ``oja``, ``np``, ``ss``)."""
    name = canonical_name(name)
    if name not in RULES:
        raise ValueError(f"unknown learning rule {name!r}{did_you_mean(name, rule_names())} "
                         f"(available: {', '.join(RULES)})")
    return RULES[name]


def short_name(name: str) -> str:
    """Lower-case abbreviation of a rule for sentences (``feedback_alignment`` -> ``fa``); a string that is no
    rule's canonical name (an opaque label of a blind export, say) comes back unchanged."""
    return RULES[name].short_name if name in RULES else name


def display_name(name: str) -> str:
    """Label of a rule in figures and tables (``feedback_alignment`` -> ``FA``); a string that is no rule's
    canonical name comes back unchanged."""
    return RULES[name].display_name if name in RULES else name


def rules_for(architecture: str | None = None, paradigm: str | None = None) -> tuple[str, ...]:
    """Names of the rules defined for an architecture and/or a paradigm (``None``: any).

    Examples
    --------
    >>> rules_for(paradigm="contrastive")[-1]
    'direct_feedback_alignment'
    """
    return tuple(name for name, rule in RULES.items()
                 if (architecture is None or architecture in rule.architectures)
                 and (paradigm is None or paradigm in rule.paradigms))


#: Rules with a convolutional version (the backward matrix as a transposed convolution).
CONV_RULES = rules_for(architecture="cnn")

#: Rules defined for the contrastive paradigm: every rule whose update is a backward-sent error.
CONTRASTIVE_RULES = rules_for(paradigm="contrastive")


def feedback_time_constant(rule: str, learning_rate: float, *, ia_gamma: float = IA_DEFAULTS["ia_gamma"],
                           weight_decay: float | None = None) -> float | None:
    """Training steps over which a rule's *learned* feedback matrix ``B`` relaxes, or ``None`` when ``B`` is
    fixed or absent.

    ``tau = (1 - momentum) / rate`` with the rule's per-step rate :attr:`Rule.feedback_decay`. Both rules that
    learn ``B`` do it slowly, through a small decay coefficient, so a short run leaves ``B`` at its random draw
    and the network trains as feedback alignment would:

    * ``information_alignment``: the decay term ``gamma ||B||^2`` of the local loss shrinks ``B`` by
      ``2 gamma lr / (1 - momentum)`` per step once momentum has built up. ``B`` forgets its random draw and
      settles where the amp term balances decay and null with time constant ``tau = (1 - momentum) /
      (2 gamma lr)`` in its slowest directions (the null term speeds up those along which the layer's
      outputs vary). With Kunin et al.'s ``gamma = 1e-3`` at lr 0.02 and Nesterov momentum 0.9,
      ``tau = 2,500`` steps.
    * ``kolen_pollack``: ``W`` and ``B`` receive the same update, both with weight decay ``lambda``, so
      ``W - B`` shrinks with ``tau = (1 - momentum) / (lambda lr)``.

    Parameters
    ----------
    rule : str
        Name or alias.
    learning_rate : float
    ia_gamma : float, default=1e-3
        Information alignment's decay weight.
    weight_decay : float, optional
        Default: the rule's default weight decay.

    Examples
    --------
    >>> round(feedback_time_constant("information_alignment", 0.02))
    2500
    >>> feedback_time_constant("feedback_alignment", 0.02) is None
    True
    """
    rule_ = get_rule(rule)
    if rule_.feedback_decay is None:
        return None
    decay = rule_.default_weight_decay if weight_decay is None else weight_decay
    rate = rule_.feedback_decay(learning_rate=learning_rate, weight_decay=decay, ia_gamma=ia_gamma)
    return (1.0 - MOMENTUM[rule_.optimizer]) / rate if rate > 0 else float("inf")


def undefined_reason(rule: str, architecture: str = "mlp", paradigm: str = "supervised") -> str | None:
    """Why a rule is not defined for an architecture or paradigm, or ``None`` when it is.

    Examples
    --------
    >>> undefined_reason("sgdm", "cnn") is None
    True
    >>> undefined_reason("hebbian", "cnn")
    "rule 'hebbian' has no convolutional version (architecture 'cnn' allows: sgd, sgdm, adam, feedback_alignment, information_alignment, kolen_pollack, sign_symmetry)"
    """
    rule_ = get_rule(rule)
    name = rule_.name
    if architecture not in rule_.architectures:
        what = "has no convolutional version" if architecture != "mlp" else "is not defined for the mlp"
        return f"rule {name!r} {what} (architecture {architecture!r} allows: {', '.join(rules_for(architecture))})"
    if paradigm not in rule_.paradigms:
        why = "it needs labels or a per-example reward; " if paradigm == "contrastive" else ""
        return (f"rule {name!r} is not defined for the {paradigm} paradigm ({why}allowed: "
                f"{', '.join(rules_for(paradigm=paradigm))})")
    return None


def check_rule(rule: Rule) -> Rule:
    """Return ``rule`` if its fields fit together and with the registered rules, else raise ``ValueError``.

    Checks that every vocabulary field takes a known value, that the backward matrix is given exactly for the
    paths that need one, that rules sharing a backward path share its matrix, that convolutional and
    contrastive rules send a backward error the engines know how to carry, and that names, short names,
    display names and aliases are unique.
    """
    problems = []
    for field, allowed in (("family", FAMILIES), ("optimizer", OPTIMIZERS), ("update", UPDATES),
                           ("feedback_update", FEEDBACK_UPDATES)):
        if getattr(rule, field) not in allowed:
            problems.append(f"{field} {getattr(rule, field)!r} is not one of {', '.join(allowed)}")
    for field, allowed in (("architectures", ARCHITECTURES), ("paradigms", PARADIGMS)):
        values = getattr(rule, field)
        if not values or not set(values) <= set(allowed):
            problems.append(f"{field} {values!r} must be a non-empty subset of {', '.join(allowed)}")
    for field in ("name", "short_name", "display_name", "feedback", "backward_path"):
        if not getattr(rule, field):
            problems.append(f"{field} is empty")
    if not rule.default_learning_rate > 0 or not rule.default_weight_decay >= 0:
        problems.append("default_learning_rate must be > 0 and default_weight_decay >= 0")
    if (rule.backward_matrix is None) != (rule.backward_path in MATRIX_FREE_PATHS):
        problems.append(f"backward_matrix must be given exactly when backward_path is not one of "
                        f"{', '.join(MATRIX_FREE_PATHS)}")
    if (rule.update == "backward") == (rule.backward_path == "none"):
        problems.append("a rule sends an error backward (backward_path other than 'none') exactly when its "
                        "update is 'backward'")
    if (rule.feedback_decay is None) != (rule.feedback_update == "fixed") or \
            bool(rule.feedback_decay_formula) != (rule.feedback_decay is not None):
        problems.append("feedback_decay and feedback_decay_formula are given exactly when B is learned")
    if set(rule.architectures) - {"mlp"} and rule.backward_matrix is None:
        problems.append("a convolutional rule needs a backward matrix (the transposed convolution's kernel)")
    if "contrastive" in rule.paradigms and rule.update != "backward":
        problems.append("a contrastive rule must send the NT-Xent error backward")
    for other in RULES.values():
        if other.name == rule.name:
            continue
        taken = {other.name, other.short_name, other.display_name, *other.aliases}
        clash = taken & {rule.name, rule.short_name, rule.display_name, *rule.aliases}
        if clash:
            problems.append(f"names {sorted(clash)} are taken by rule {other.name!r}")
        if other.backward_path == rule.backward_path and other.backward_matrix is not rule.backward_matrix:
            problems.append(f"backward path {rule.backward_path!r} has another backward matrix in rule "
                            f"{other.name!r}")
    if problems:
        raise ValueError(f"rule {rule.name!r}: " + "; ".join(problems))
    return rule


for _rule in RULES.values():
    check_rule(_rule)
