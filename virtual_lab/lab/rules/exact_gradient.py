"""Exact-gradient rules: the backprop gradient, with three optimizers.

``W`` is stored ``[out, in]``; a layer's error ``delta`` (shape ``[batch, out]``) is sent to its input as
``delta @ W`` (:func:`~virtual_lab.lab.rules.base.through_weights`).

* ``sgd`` - backprop gradient, plain SGD (no momentum).
* ``sgdm`` - backprop gradient, SGD with Nesterov momentum 0.9 (the paper's optimizer).
* ``adam`` - backprop gradient, Adam (betas 0.9, 0.999; eps 1e-8).

All three are defined for every architecture and paradigm the engines train.
"""

from __future__ import annotations

from virtual_lab.lab.rules.base import ARCHITECTURES, PARADIGMS, Rule, through_weights


def _backprop(name: str, display_name: str, optimizer: str, learning_rate: float, paper: bool) -> Rule:
    return Rule(name=name, short_name=name, display_name=display_name, aliases=(), family="exact_gradient",
                paper=paper, default_learning_rate=learning_rate, default_weight_decay=0.0, hyperparameters=(),
                random_streams=(), architectures=ARCHITECTURES, paradigms=PARADIGMS, optimizer=optimizer,
                feedback="transpose", update="backward", backward_path="W", backward_matrix=through_weights,
                feedback_update="fixed", feedback_decay=None, feedback_decay_formula="")


SGD = _backprop("sgd", "SGD", "sgd", 0.1, paper=False)
SGDM = _backprop("sgdm", "SGDM", "sgdm", 0.02, paper=True)
ADAM = _backprop("adam", "Adam", "adam", 1e-3, paper=True)

RULES = (SGD, SGDM, ADAM)
