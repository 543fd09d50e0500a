"""Local rules: hidden layers learn without any error signal.

* ``hebbian`` - every hidden layer learns by Oja's subspace rule on its own pre-synaptic input ``x`` and
  post-synaptic rate ``y = relu(Wx + b)``: ``dW = eta (y^T x - y^T y W) / batch`` (Oja 1989), hidden biases
  fixed; the readout learns by the delta rule for softmax units, ``dW = eta (t - p)^T x / batch``. No error
  reaches a hidden layer. Plain SGD.

Defined for the MLP only (a convolutional Oja rule needs a weight-sharing convention) and for the supervised
paradigm only (the delta-rule readout needs class targets, which NT-Xent does not give).
"""

from __future__ import annotations

from virtual_lab.lab.rules.base import Rule

HEBBIAN = Rule(name="hebbian", short_name="hebbian", display_name="Hebb", aliases=("oja",), family="local",
               paper=False, default_learning_rate=0.05, default_weight_decay=0.0, hyperparameters=(),
               random_streams=(), architectures=("mlp",), paradigms=("supervised",), optimizer="sgd",
               feedback="none", update="hebbian", backward_path="none", backward_matrix=None,
               feedback_update="fixed", feedback_decay=None, feedback_decay_formula="")

RULES = (HEBBIAN,)
