"""Plain types shared by every stage: the ground-truth record of one training run (numpy arrays, no torch).

A :class:`GroundTruth` is what the lab produces for every run and what a session file holds. It is the
contract between the lab (which fills it), :mod:`virtual_lab.sessions` (which writes and reads it) and the
rig (which observes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

DEPTH_POSITIONS = ("early", "middle", "deep")


def depth_positions(n_layers: int) -> tuple[str, ...]:
    """Depth position of each layer of an ordered layer list.

    The paper splits the ordered layer list into thirds, the remainder going to ``deep``.

    Parameters
    ----------
    n_layers : int
        Number of recorded layers, in forward order.

    Returns
    -------
    tuple of str, length ``n_layers``
        ``"early"``, ``"middle"`` or ``"deep"`` for each layer.

    Examples
    --------
    >>> depth_positions(3)
    ('early', 'middle', 'deep')
    >>> depth_positions(5)
    ('early', 'middle', 'deep', 'deep', 'deep')
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    third = n_layers // 3
    if third == 0:
        # fewer layers than thirds: fill from the deep end so the readout is always "deep"
        return tuple(DEPTH_POSITIONS[3 - n_layers:])
    early = ("early",) * third
    middle = ("middle",) * third
    deep = ("deep",) * (n_layers - 2 * third)
    return early + middle + deep


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Everything recorded from one training run, at every checkpoint, for every unit.

    Attributes
    ----------
    layer_names : tuple of str
        Recordable layers in forward order, e.g. ``("fc1", "fc2", "fc3")``.
    depth_positions : tuple of str
        ``"early"``/``"middle"``/``"deep"`` for each layer.
    checkpoint_steps : ndarray of int64, shape (T,)
        Training step of each checkpoint (0 = initialization).
    activations : dict of str to ndarray of float32, shape (T, S, U_layer)
        Each layer's output for every probe stimulus and unit.
    weights : dict of str to ndarray of float32, shape (T, out, in)
        Each layer's forward weight matrix (no bias).
    activity_change : dict of str to ndarray of float32, shape (T, S)
        Layer-wise activity change per stimulus, ``g_b = (1/n_out) sum_j sum_i dy_bj/dx_bi``.
    train_loss : ndarray of float32, shape (T,)
        Task loss on the training set at each checkpoint.
    test_accuracy : ndarray of float32, shape (T,)
        Accuracy on the held-out probe set at each checkpoint.
    probe_stimuli : ndarray of float32, shape (S, H, W) or (S, D)
        The probe stimuli shown at every checkpoint.
    probe_labels : ndarray of int64, shape (S,)
        Class label of each probe stimulus.
    metadata : dict
        The resolved run spec: ``run_id``, ``rule``, ``family``, hyperparameters, seeds, architecture,
        task, package versions, and ``diverged`` / ``diverged_step``. Values are str, int, float or bool.
    """

    layer_names: tuple[str, ...]
    depth_positions: tuple[str, ...]
    checkpoint_steps: np.ndarray
    activations: Mapping[str, np.ndarray]
    weights: Mapping[str, np.ndarray]
    activity_change: Mapping[str, np.ndarray]
    train_loss: np.ndarray
    test_accuracy: np.ndarray
    probe_stimuli: np.ndarray
    probe_labels: np.ndarray
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_t = len(self.checkpoint_steps)
        if len(self.depth_positions) != len(self.layer_names):
            raise ValueError("depth_positions must have one entry per layer")
        for name in self.layer_names:
            for what, table, ndim in (("activations", self.activations, 3), ("weights", self.weights, 3),
                                      ("activity_change", self.activity_change, 2)):
                if name not in table:
                    raise ValueError(f"{what} has no entry for layer {name!r}")
                arr = table[name]
                if arr.ndim != ndim or arr.shape[0] != n_t:
                    raise ValueError(f"{what}[{name!r}] has shape {arr.shape}; expected {ndim} dims "
                                     f"with {n_t} checkpoints first")

    @property
    def n_checkpoints(self) -> int:
        return len(self.checkpoint_steps)

    @property
    def n_stimuli(self) -> int:
        return len(self.probe_labels)

    @property
    def run_id(self) -> str:
        return str(self.metadata.get("run_id", ""))

    @property
    def rule(self) -> str:
        return str(self.metadata.get("rule", ""))

    @property
    def diverged(self) -> bool:
        return bool(self.metadata.get("diverged", False))
