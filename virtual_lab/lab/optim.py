"""The population optimizers: per-network SGD, SGD with Nesterov momentum and Adam on stacked parameters.

Both population engines update ``W`` and ``b`` with one :class:`_Optimizer`, and the feedback matrices that
learn (information alignment's ``B`` by its local loss, Kolen-Pollack's ``B`` by ``W``'s update) with one
each, over the networks of that kind (:meth:`virtual_lab.lab.population._PopulationState.subset_optimizer`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from virtual_lab.lab.rules import MOMENTUM

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def _runs(labels: Sequence) -> list[tuple[slice, object]]:
    """Maximal runs of equal consecutive labels, as ``(slice, label)``."""
    runs, begin = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[begin]:
            runs.append((slice(begin, i), labels[begin]))
            begin = i
    return runs


class _Optimizer:
    """Per-network plain SGD, SGD with Nesterov momentum or Adam on stacked parameters ``[N, ...]``.

    Equals ``torch.optim.SGD(momentum=0)``, ``torch.optim.SGD(momentum=0.9, nesterov=True)`` and
    ``torch.optim.Adam`` (with their coupled L2 ``weight_decay``) because it runs their fused kernels
    (``torch._fused_sgd_``, ``torch._fused_adam_``, what ``fused=True`` selects). Each kernel call updates one
    run of neighbouring networks that share optimizer, learning rate and weight decay, through views
    (``p[a:b]``) of the stacked tensors; a population sorted by rule and learning rate therefore needs a few
    calls per step, each on its own networks only. Networks whose ``active`` flag is 0 (diverged) are left out
    of every update, so their parameters stay as they were.
    """

    def __init__(self, params: list[torch.Tensor], is_adam: torch.Tensor, learning_rate: torch.Tensor,
                 is_plain: torch.Tensor | None = None, weight_decay: torch.Tensor | None = None):
        self.params = params
        is_plain = is_plain if is_plain is not None else torch.zeros_like(is_adam)
        kinds = ["adam" if a else "sgd" if p else "sgdm" for a, p in zip(is_adam.tolist(), is_plain.tolist())]
        decays = weight_decay.tolist() if weight_decay is not None else [0.0] * len(kinds)
        self.labels = list(zip(kinds, learning_rate.tolist(), decays))
        self.buf = [torch.zeros_like(p) for p in params] if "sgdm" in kinds else []
        self.m = [torch.zeros_like(p) for p in params] if "adam" in kinds else []
        self.v = [torch.zeros_like(p) for p in params] if "adam" in kinds else []
        self.t = 0
        self._runs: dict[tuple, list] = {}

    def _active_runs(self, active: torch.Tensor) -> list[tuple[slice, tuple]]:
        key = tuple(bool(a) for a in active.tolist())
        if key not in self._runs:
            labels = [label if alive else None for label, alive in zip(self.labels, key)]
            self._runs[key] = [(sl, label) for sl, label in _runs(labels) if label is not None]
        return self._runs[key]

    def step(self, grads: list[torch.Tensor], active: torch.Tensor) -> None:
        """Apply one update; ``grads`` are read, never modified; networks with ``active == 0`` are skipped."""
        self.t += 1
        step = torch.tensor(float(self.t), device=self.params[0].device)
        b1, b2 = ADAM_BETAS
        for sl, (kind, lr, decay) in self._active_runs(active):
            params = [p[sl] for p in self.params]
            views = [g[sl].contiguous() for g in grads]  # the fused kernels read a gradient in its parameter's layout
            if kind == "adam":
                torch._fused_adam_(params, views, [m[sl] for m in self.m], [v[sl] for v in self.v], [],
                                   [step] * len(params), lr=lr, beta1=b1, beta2=b2, weight_decay=decay,
                                   eps=ADAM_EPS, amsgrad=False, maximize=False)
            else:
                momentum = MOMENTUM[kind]
                torch._fused_sgd_(params, views, [b[sl] for b in self.buf] if momentum else [],
                                  weight_decay=decay, momentum=momentum, lr=lr, dampening=0.0,
                                  nesterov=momentum > 0, maximize=False, is_first_step=False)
