"""Learning rules: one registry dict from name to a frozen :class:`Rule` description.

Definitions follow Nayebi et al. (2020) and DESIGN.md section 3:

* ``sgdm`` - backprop gradient, SGD with Nesterov momentum 0.9.
* ``adam`` - backprop gradient, Adam (betas 0.9, 0.999; eps 1e-8).
* ``feedback_alignment`` - the error is sent backward through a fixed random matrix B, drawn independently
  of W from the same distribution, never updated (Lillicrap et al. 2016); weight updates dW = delta^T x.
* ``information_alignment`` - as feedback alignment, but B is trained by the layer-local loss
  R = alpha R_amp + beta R_null + gamma R_decay with R_amp = -E[(xW)(xB^T)], R_null = E||(xW)B||^2,
  R_decay = ||W||^2 + ||B||^2, W held fixed in this loss (Kunin et al., ICML 2020).

Optimizers: the approximate-gradient rules use SGD with Nesterov momentum, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("exact_gradient", "approximate_gradient", "local", "reward")


@dataclass(frozen=True)
class Rule:
    """A learning rule as the population engine runs it.

    Attributes
    ----------
    name : str
    family : str
        One of :data:`FAMILIES`.
    optimizer : {"sgdm", "adam"}
        Update applied to the (pseudo-)gradient.
    feedback : {"transpose", "fixed_random", "information_alignment"}
        What carries the error backward: W itself, a fixed random B, or a B trained by the IA loss.
    default_learning_rate : float
    short_name : str
        Abbreviation used in figures.
    """

    name: str
    family: str
    optimizer: str
    feedback: str
    default_learning_rate: float
    short_name: str


RULES: dict[str, Rule] = {
    "sgdm": Rule("sgdm", "exact_gradient", "sgdm", "transpose", 0.02, "SGDM"),
    "adam": Rule("adam", "exact_gradient", "adam", "transpose", 1e-3, "Adam"),
    "feedback_alignment": Rule("feedback_alignment", "approximate_gradient", "sgdm", "fixed_random", 0.02, "FA"),
    "information_alignment": Rule("information_alignment", "approximate_gradient", "sgdm",
                                  "information_alignment", 0.02, "IA"),
}

ALIASES = {"fa": "feedback_alignment", "ia": "information_alignment"}

PAPER_RULES = ("sgdm", "adam", "feedback_alignment", "information_alignment")

IA_DEFAULTS = {"ia_alpha": 2e-3, "ia_beta": 1e-3, "ia_gamma": 1e-3}


def get_rule(name: str) -> Rule:
    """Look up a rule by name or alias (``fa``, ``ia``)."""
    name = ALIASES.get(name, name)
    if name not in RULES:
        import difflib

        close = difflib.get_close_matches(name, list(RULES) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown learning rule {name!r}{hint} (available: {', '.join(RULES)})")
    return RULES[name]
