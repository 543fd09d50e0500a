"""Reward-based rules: no backward pass at all.

* ``node_perturbation`` - every unit's pre-activation receives Gaussian noise ``xi ~ N(0, sigma^2)``
  (``sigma`` = the run's ``perturbation_sd``, default :data:`PERTURBATION_SD`) in a second, perturbed forward
  pass, drawn from the network's own ``"perturbation"`` stream; the change of each example's loss (the
  negative reward) is correlated with the perturbation:
  ``dW_l = -eta (1/batch) sum_b (L_b(xi) - L_b) xi_lb x_lb^T / sigma^2`` (Williams 1992; Werfel, Xie & Seung
  2005): an unbiased estimate of the gradient from two forward passes. SGD with Nesterov momentum.

Defined for the MLP only (a convolutional version needs a noise model per feature map) and for the supervised
paradigm only (NT-Xent couples every anchor's loss, so there is no per-example reward).
"""

from __future__ import annotations

from virtual_lab.lab.rules.base import Rule

#: Default standard deviation of node perturbation's noise on pre-activations.
PERTURBATION_SD = 0.05

NODE_PERTURBATION = Rule(
    name="node_perturbation", short_name="np", display_name="NP", aliases=("np",), family="reward", paper=False,
    default_learning_rate=0.003, default_weight_decay=0.0, hyperparameters=("perturbation_sd",),
    random_streams=("perturbation",), architectures=("mlp",), paradigms=("supervised",), optimizer="sgdm",
    feedback="none", update="node_perturbation", backward_path="none", backward_matrix=None,
    feedback_update="fixed", feedback_decay=None, feedback_decay_formula="")

RULES = (NODE_PERTURBATION,)
