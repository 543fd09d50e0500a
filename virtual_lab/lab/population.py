"""What the population engines share: the compute dtype, the stacked start state, the network order, the
objectives, the loop over steps with its checkpoints and divergence, the recorder and the results.

:mod:`virtual_lab.lab.train` (MLPs) and :mod:`virtual_lab.lab.conv` (CNN, ResNet) build on these; each adds its
own network pass and rule mechanics. Every operation is independent along the network axis, so a network
that diverges (NaN/inf loss) is frozen at that step without touching its neighbours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from virtual_lab.lab.contrastive import nt_xent
from virtual_lab.lab.optim import _Optimizer
from virtual_lab.lab.rules import PARADIGMS
from virtual_lab.lab.spec import RunSpec, batch_order
from virtual_lab.lab.tasks import Task
from virtual_lab.seeding import derive_seed
from virtual_lab.types import GroundTruth, depth_positions

logger = logging.getLogger(__name__)

#: Compute dtypes of the engines and references: float32 (the default) and float64 (for equality tests).
DTYPES = (torch.float32, torch.float64)


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return ``dtype`` if the engines and references compute in it (float32 or float64), else raise ``ValueError``.

    Whatever the compute dtype, every random draw (initial parameters, data order, feedback matrices, noise,
    augmentations) is made in float32 from the same stream and then cast, so a float64 run starts exactly
    where its float32 twin does.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}; got {dtype!r}")
    return dtype


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


def _population_order(rules: Sequence, learning_rates: Sequence[float], weight_decays: Sequence[float]) -> list[int]:
    """Network order that makes equal optimizers, backward paths (:attr:`~virtual_lab.lab.rules.Rule.backward_path`:
    through ``W``, a stored ``B``, ``sign(W)``, directly from the output, or none), feedback updates, update kinds,
    learning rates and weight decays contiguous (a stable sort: ties keep the caller's order)."""
    def key(i: int) -> tuple:
        r = rules[i]
        return (OPTIMIZER_ORDER.index(r.optimizer), r.backward_path, r.feedback_update, r.update,
                learning_rates[i], weight_decays[i])
    return sorted(range(len(rules)), key=key)


OPTIMIZER_ORDER = ("sgdm", "sgd", "adam")


@dataclass
class _PopulationState:
    """What every population engine stacks at the start: parameters, data orders, per-network optimizer
    settings and the optimizer of W and b."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    feedback: list[torch.Tensor]
    orders: torch.Tensor
    is_adam: torch.Tensor
    is_plain: torch.Tensor
    learning_rate: torch.Tensor
    weight_decay: torch.Tensor
    optimizer: "_Optimizer"
    device: torch.device
    dtype: torch.dtype = torch.float32

    @classmethod
    def create(cls, specs: Sequence[RunSpec], rules: Sequence, init: Sequence[tuple], n_train: int,
               device: torch.device, dtype: torch.dtype = torch.float32) -> "_PopulationState":
        """Stack each network's initial ``(weights, biases, feedback)`` (``init``, one tuple of per-layer lists
        per network, as drawn) and data order on ``device``, parameters cast to ``dtype``."""
        n_layers = len(init[0][0])
        weights, biases, feedback = ([torch.stack([p[k][l] for p in init]).to(device, dtype)
                                      for l in range(n_layers)] for k in range(3))
        orders = torch.stack([batch_order(s.seed, n_train, s.batch_size, s.n_epochs) for s in specs]).to(device)
        is_adam = _mask(rules, lambda r: r.optimizer == "adam", device)
        is_plain = _mask(rules, lambda r: r.optimizer == "sgd", device)
        # in the compute dtype: a float32 learning rate would put a 1e-8 relative error into every float64 step
        learning_rate = torch.tensor([s.learning_rate for s in specs], dtype=dtype, device=device)
        weight_decay = torch.tensor([s.weight_decay for s in specs], dtype=dtype, device=device)
        optimizer = _Optimizer(weights + biases, is_adam, learning_rate, is_plain, weight_decay)
        return cls(weights, biases, feedback, orders, is_adam, is_plain, learning_rate, weight_decay, optimizer,
                   device, dtype)

    def column(self, values: Sequence[float]) -> torch.Tensor:
        """Per-network values as a column of the population's dtype on its device."""
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    def subset_optimizer(self, index: torch.Tensor | slice) -> "_Optimizer":
        """An optimizer of the feedback matrices of some networks, with their own optimizer settings: views
        when ``index`` is a slice (updates land in ``feedback``), copies when it is an index tensor."""
        if isinstance(index, slice):
            pick = lambda t: t[index]  # noqa: E731
        else:
            pick = lambda t: t.index_select(0, index)  # noqa: E731
        return _Optimizer([pick(f) for f in self.feedback], pick(self.is_adam), pick(self.learning_rate),
                          pick(self.is_plain), pick(self.weight_decay))


def _mask(rules: Sequence, predicate: Callable, device: torch.device) -> torch.Tensor:
    return torch.tensor([bool(predicate(r)) for r in rules], device=device)


def _indices(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask).flatten()


def _span(flags: Sequence[bool]) -> slice | None:
    """The networks flagged, as one slice (they must be contiguous), or None when there are none."""
    where = [i for i, f in enumerate(flags) if f]
    if not where:
        return None
    if where[-1] - where[0] + 1 != len(where):
        raise AssertionError("networks of one feedback kind must be contiguous (see _population_order)")
    return slice(where[0], where[-1] + 1)


def _example_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every example. logits [N, B, C], targets [N, B] -> [N, B]."""
    logp = torch.log_softmax(logits, dim=2)
    return -logp.gather(2, targets.unsqueeze(2)).squeeze(2)


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per network. logits [N, B, C], targets [N, B] -> [N]."""
    return _example_losses(logits, targets).mean(1)


def _objective(output: torch.Tensor, y: torch.Tensor | None, eye: torch.Tensor | None,
               temperature: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The population's loss and the error at its last layer, for either paradigm.

    Parameters
    ----------
    output : Tensor, shape (N, B, n_outputs)
        Last-layer outputs: logits (supervised), or projections of two views, rows ``[0, B/2)`` and
        ``[B/2, B)`` (contrastive).
    y : Tensor, shape (N, B), or None
        Labels (supervised).
    eye : Tensor or None
        Identity of size n_classes for the one-hot targets; ``None`` selects the contrastive objective.
    temperature : Tensor, shape (N,), or None
        NT-Xent temperature of each network (contrastive).

    Returns
    -------
    loss : Tensor, shape (N,)
    example_losses : Tensor, shape (N, B), or None
        Cross-entropy of every example (supervised only).
    error : Tensor, shape (N, B, n_outputs)
        d loss / d output: ``(softmax - one-hot) / B``, or dNT-Xent/dz averaged over the 2B anchors.
    """
    if eye is None:
        half = output.shape[1] // 2
        loss, grad_view1, grad_view2 = nt_xent(output[:, :half], output[:, half:], temperature)
        return loss, None, torch.cat([grad_view1, grad_view2], 1)
    example_losses = _example_losses(output, y)
    return example_losses.mean(1), example_losses, (torch.softmax(output, dim=2) - eye[y]) / output.shape[1]


def _alive_rows(active: torch.Tensor) -> slice | np.ndarray:
    """The networks still training, as rows of the recorder's arrays: every row (a slice, so recording copies
    each array once) or a boolean mask when some diverged."""
    alive = active.bool().cpu().numpy()
    return slice(None) if alive.all() else alive


def _timings(timings: dict | None, t_start: float, clock: dict, recorder: "_Recorder") -> None:
    """Fill an engine's ``timings``: ``total``, ``record`` (checkpoint recording) and ``record_loss`` (the part of
    ``record`` computing the loss: the evaluation subset, the whole training set or the contrastive pairs)."""
    if timings is not None:
        timings.update(total=time.perf_counter() - t_start, record=clock["record"], record_loss=recorder.loss_seconds)


def _training_steps(n_steps: int, schedule: np.ndarray, record: Callable[[int], None],
                    clock: dict) -> Iterator[int]:
    """Yield the training steps ``0 .. n_steps - 1``, recording checkpoint ``k`` just before step
    ``schedule[k]`` (the last one after the final step); recording time accumulates in ``clock["record"]``."""
    next_checkpoint = 0
    for step in range(n_steps + 1):
        if next_checkpoint < len(schedule) and step == schedule[next_checkpoint]:
            t0 = time.perf_counter()
            record(next_checkpoint)
            clock["record"] += time.perf_counter() - t0
            next_checkpoint += 1
        if step < n_steps:
            yield step


def _mark_diverged(loss: torch.Tensor, active: torch.Tensor, diverged_step: np.ndarray, specs: Sequence[RunSpec],
                   step: int) -> torch.Tensor:
    """Mark networks whose loss just became NaN/inf as diverged at ``step`` (logged once each); returns the new
    0/1 ``active`` column, which freezes them."""
    bad = ~torch.isfinite(loss) & active.bool()
    if not bool(bad.any()):
        return active
    for i in torch.nonzero(bad).flatten().tolist():
        diverged_step[i] = step
        logger.warning("run %s (%s) diverged at step %d", specs[i].run_id, specs[i].rule, step)
    return active * (~bad).float()


class _Recorder:
    """Preallocated numpy buffers for every network's checkpoints, NaN until recorded.

    Parameters
    ----------
    n_nets, n_checkpoints, n_probe : int
    n_units : sequence of int
        Units of each layer's recorded output.
    weight_shapes : sequence of (int, int)
        Each layer's weights as stored, ``(n_out, n_in)`` (conv layers: ``(C_out, C_in*k*k)``).
    """

    def __init__(self, n_nets: int, n_checkpoints: int, n_probe: int, n_units: Sequence[int],
                 weight_shapes: Sequence[tuple[int, int]]):
        self.activations = [np.full((n_nets, n_checkpoints, n_probe, u), np.nan, np.float32) for u in n_units]
        self.weights = [np.full((n_nets, n_checkpoints, o, i), np.nan, np.float32) for o, i in weight_shapes]
        self.change = [np.full((n_nets, n_checkpoints, n_probe), np.nan, np.float32) for _ in n_units]
        self.train_loss = np.full((n_nets, n_checkpoints), np.nan, np.float32)
        self.test_accuracy = np.full((n_nets, n_checkpoints), np.nan, np.float32)
        #: Wall-clock seconds the engine spent computing the recorded loss (part of the recording time).
        self.loss_seconds = 0.0

    def ground_truth(self, i: int, names: Sequence[str], schedule: np.ndarray, task: Task,
                     metadata: dict) -> GroundTruth:
        """Network ``i``'s record, its layers named ``names`` in forward order."""
        return GroundTruth(
            layer_names=tuple(names),
            depth_positions=depth_positions(len(names)),
            checkpoint_steps=schedule.copy(),
            activations={n: self.activations[l][i] for l, n in enumerate(names)},
            weights={n: self.weights[l][i] for l, n in enumerate(names)},
            activity_change={n: self.change[l][i] for l, n in enumerate(names)},
            train_loss=self.train_loss[i],
            test_accuracy=self.test_accuracy[i],
            probe_stimuli=task.probe_images.astype(np.float32),
            probe_labels=task.probe_y.copy(),
            metadata=metadata,
        )


def _check_cohort(specs: Sequence[RunSpec]) -> None:
    """Raise ``ValueError`` unless the runs form one cohort (they share :attr:`RunSpec.cohort_key`)."""
    keys = {s.cohort_key for s in specs}
    if len(keys) > 1:
        raise ValueError("all runs of one population must share architecture, batch size, epochs, task and "
                         "checkpoints; group them by RunSpec.cohort_key first")


def _check_paradigm(paradigm: str) -> None:
    if paradigm not in PARADIGMS:
        raise ValueError(f"paradigm must be one of {', '.join(PARADIGMS)}; got {paradigm!r}")


def _contrastive_metadata(spec: RunSpec, task: Task, projection_width: int, representation_layer: str,
                          n_eval_pairs: int, pooling: str | None = None) -> dict:
    """The metadata of a contrastive run: temperature, augmentation and evaluation seeds, what is read out."""
    metadata = {"temperature": float(spec.temperature), "augment_seed": int(derive_seed(spec.seed, "augment")),
                "projection_width": int(projection_width), "representation_layer": representation_layer}
    if pooling is not None:
        metadata["representation_pooling"] = pooling
    metadata.update(n_eval_pairs=int(n_eval_pairs), eval_seed=int(derive_seed(task.seed, "contrastive_eval")))
    return metadata


def export_final_state(final_state: dict, weights, biases, feedback, direct_feedback) -> None:
    """Fill ``final_state`` with the last parameters of a population as numpy arrays (both engines)."""
    final_state["weights"] = [w.cpu().numpy() for w in weights]
    final_state["biases"] = [b.cpu().numpy() for b in biases]
    final_state["feedback"] = [f.cpu().numpy() for f in feedback]
    final_state["direct_feedback"] = [d.cpu().numpy() for d in direct_feedback]
