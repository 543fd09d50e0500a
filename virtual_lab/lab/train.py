"""Population training engine with ground-truth checkpoint recording.

Many independent networks of one architecture advance in one batched computation: parameters are stacked
as ``[N, out, in]``, the forward pass is ``baddbmm``, and the backward pass is written by hand, which is what
lets one population mix learning rules. Backprop sends the error back through ``W``, feedback alignment
through a fixed random ``B``, information alignment through a ``B`` trained by its layer-local loss,
Kolen-Pollack through a ``B`` that receives ``W``'s update, sign symmetry through ``sign(W)``, direct feedback
alignment straight from the output error through fixed random matrices; Hebbian networks replace the hidden
layers' update by Oja's rule and node-perturbation networks replace the whole backward pass by a second,
perturbed forward pass (see :mod:`virtual_lab.lab.rules`). Two paradigms: supervised (cross-entropy on the
labels) and self-supervised contrastive (SimCLR: two augmented views per image, NT-Xent on the last layer, the
projection head; every backward-based rule carries its gradient; see :mod:`virtual_lab.lab.contrastive`).
Each network keeps its own seed, initialization, data order, learning rule and hyperparameters, and its
results equal a one-network-at-a-time reference within float tolerance (``tests/test_train.py``,
``tests/test_contrastive.py``, which run both in float64, ``dtype=torch.float64``, where rounding cannot grow
into a visible difference; float32, the default, is what training uses).

A network whose loss becomes NaN/inf is marked diverged and frozen at that step; its later checkpoints are
NaN. Its neighbours are unaffected: every operation is independent along the network axis.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from virtual_lab import __version__
from virtual_lab.lab.contrastive import (TEMPERATURE, augment_generator, centroid_predict,
                                         check_contrastive_rule, class_sums, evaluation_views, make_views, nt_xent,
                                         nt_xent_loss)
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.lab.rules import IA_DEFAULTS, PARADIGMS, PERTURBATION_SD, SGD_MOMENTUM, get_rule
from virtual_lab.lab.tasks import Task
from virtual_lab.seeding import derive_seed, stable_hash

logger = logging.getLogger(__name__)

CHECKPOINT_SPACINGS = ("linear", "log")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: Compute dtypes of the engines and references: float32 (the default) and float64 (for equality tests).
DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run (and therefore its deterministic ``run_id``).

    Attributes
    ----------
    rule : str
        Learning rule name (see :data:`virtual_lab.lab.rules.RULES`).
    learning_rate : float
    batch_size : int
    n_epochs : int
    seed : int
        Seed of this network's initialization and data order.
    layer_sizes : tuple of int
        Input size, hidden sizes, output size, e.g. ``(64, 128, 128, 10)``.
    task : str
    task_seed : int
        Seed of the task's train/probe split.
    n_probe : int
    n_checkpoints : int
        Recorded checkpoints including initialization.
    checkpoint_spacing : {"linear", "log"}
    ia_alpha, ia_beta, ia_gamma : float
        Information-alignment loss weights (used by ``information_alignment`` only).
    protocol : str
        Name of the protocol the run belongs to (not part of the id).
    weight_decay : float, default=0.0
        L2 weight decay added to every (pseudo-)gradient, as ``torch.optim``'s ``weight_decay``
        (Kolen-Pollack applies it to ``B`` too).
    perturbation_sd : float, default=0.05
        Standard deviation of node perturbation's noise on pre-activations (``node_perturbation`` only).
    architecture : {"mlp", "cnn", "resnet"}, default="mlp"
        Network family. For ``"mlp"``, ``layer_sizes`` lists every layer; for the convolutional families it is
        ``(n_inputs, n_outputs)`` and ``channels`` gives the convolutional widths
        (see :mod:`virtual_lab.lab.conv`).
    channels : tuple of int, default=()
        Channels of the convolutional layers (``"cnn"``: one per conv layer; ``"resnet"``: one per stage).
    paradigm : {"supervised", "contrastive"}, default="supervised"
        Objective: cross-entropy on labels, or SimCLR-style NT-Xent on two augmented views (the last layer is
        then the projection head and ``layer_sizes[-1]`` its width; see :mod:`virtual_lab.lab.contrastive`).
    temperature : float, default=0.5
        NT-Xent temperature (``"contrastive"`` only); may differ between the networks of one population.

    Fields added after the first release (``weight_decay`` and every field after it) enter the ``run_id`` only
    when they differ from their defaults, so run ids of earlier specs do not change.
    """

    rule: str
    learning_rate: float
    batch_size: int
    n_epochs: int
    seed: int
    layer_sizes: tuple[int, ...] = (64, 128, 128, 10)
    task: str = "digits"
    task_seed: int = 0
    n_probe: int = 200
    n_checkpoints: int = 21
    checkpoint_spacing: str = "linear"
    ia_alpha: float = IA_DEFAULTS["ia_alpha"]
    ia_beta: float = IA_DEFAULTS["ia_beta"]
    ia_gamma: float = IA_DEFAULTS["ia_gamma"]
    protocol: str = ""
    weight_decay: float = 0.0
    perturbation_sd: float = PERTURBATION_SD
    architecture: str = "mlp"
    channels: tuple[int, ...] = ()
    paradigm: str = "supervised"
    temperature: float = TEMPERATURE

    @property
    def run_id(self) -> str:
        """Deterministic id from the resolved spec and the code version (protocol name excluded)."""
        fields = asdict(self)
        fields.pop("protocol")
        for name, default in _ID_OPTIONAL_FIELDS.items():
            if fields[name] == default:
                fields.pop(name)
        fields["code_version"] = __version__
        return stable_hash(json.dumps(fields, sort_keys=True))

    @property
    def cohort_key(self) -> tuple:
        """Runs with equal keys can train together in one batched population."""
        return (self.architecture, self.layer_sizes, self.channels, self.paradigm, self.batch_size, self.n_epochs,
                self.task, self.task_seed, self.n_probe, self.n_checkpoints, self.checkpoint_spacing)


#: Fields added after the first release, with the default at which they are left out of the run id.
_ID_OPTIONAL_FIELDS = {"weight_decay": 0.0, "perturbation_sd": PERTURBATION_SD, "architecture": "mlp", "channels": (),
                       "paradigm": "supervised", "temperature": TEMPERATURE}


def checkpoint_schedule(n_steps: int, n_checkpoints: int, spacing: str = "linear") -> np.ndarray:
    """Training steps at which the ground truth is recorded, initialization (step 0) included.

    Parameters
    ----------
    n_steps : int
        Total training steps.
    n_checkpoints : int
        Number of checkpoints, >= 2.
    spacing : {"linear", "log"}, default="linear"

    Returns
    -------
    ndarray of int64, shape (n_checkpoints,)
        Strictly increasing, starting at 0 and ending at ``n_steps``.

    Examples
    --------
    >>> checkpoint_schedule(100, 5).tolist()
    [0, 25, 50, 75, 100]
    """
    if n_checkpoints < 2:
        raise ValueError(f"n_checkpoints must be >= 2, got {n_checkpoints}")
    if n_checkpoints > n_steps + 1:
        raise ValueError(f"{n_checkpoints} checkpoints need at least {n_checkpoints - 1} training steps; "
                         f"this run has {n_steps}")
    if spacing == "linear":
        steps = np.round(np.linspace(0, n_steps, n_checkpoints)).astype(np.int64)
    elif spacing == "log":
        steps = np.concatenate([[0], np.round(np.geomspace(1, n_steps, n_checkpoints - 1))]).astype(np.int64)
        for i in range(1, len(steps)):  # rounding can collide at the start: push duplicates forward
            steps[i] = max(steps[i], steps[i - 1] + 1)
        if steps[-1] > n_steps:
            raise ValueError(f"{n_checkpoints} log-spaced checkpoints do not fit in {n_steps} steps")
    else:
        raise ValueError(f"checkpoint spacing must be one of {', '.join(CHECKPOINT_SPACINGS)}; got {spacing!r}")
    return steps


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


def init_parameters(layer_sizes: Sequence[int], seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                    list[torch.Tensor]]:
    """One network's initial forward weights, biases and feedback matrices.

    PyTorch's ``nn.Linear`` default, U(-1/sqrt(in), 1/sqrt(in)), for W and b; every feedback matrix B is a
    further independent draw from the same distribution (so B is never W^T). Draw order is fixed (all W, b,
    then all B) so initial W does not depend on the rule.

    Returns
    -------
    weights : list of Tensor, shapes (out, in)
    biases : list of Tensor, shapes (out,)
    feedback : list of Tensor, shapes (out, in)
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "init"))
    weights, biases = [], []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        weights.append(_uniform((n_out, n_in), bound, generator))
        biases.append(_uniform((n_out,), bound, generator))
    feedback = [_uniform(w.shape, 1.0 / math.sqrt(w.shape[1]), generator) for w in weights]
    return weights, biases, feedback


def n_training_steps(n_train: int, batch_size: int, n_epochs: int) -> int:
    """Training steps of a run: full batches per epoch (the last partial batch is dropped) times epochs."""
    return n_epochs * (n_train // batch_size)


def export_final_state(final_state: dict, weights, biases, feedback, direct_feedback) -> None:
    """Fill ``final_state`` with the last parameters of a population as numpy arrays (both engines)."""
    final_state["weights"] = [w.cpu().numpy() for w in weights]
    final_state["biases"] = [b.cpu().numpy() for b in biases]
    final_state["feedback"] = [f.cpu().numpy() for f in feedback]
    final_state["direct_feedback"] = [d.cpu().numpy() for d in direct_feedback]


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return ``dtype`` if the engines and references compute in it (float32 or float64), else raise ``ValueError``.

    Whatever the compute dtype, every random draw (initial parameters, data order, feedback matrices, noise,
    augmentations) is made in float32 from the same stream and then cast, so a float64 run starts exactly
    where its float32 twin does.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}; got {dtype!r}")
    return dtype


def batch_order(seed: int, n_train: int, batch_size: int, n_epochs: int) -> torch.Tensor:
    """Indices of every training batch of one network, shape (n_epochs * steps_per_epoch, batch_size).

    A fresh permutation per epoch from the network's own data-order stream; the last partial batch of an
    epoch is dropped.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "data"))
    per_epoch = n_train // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n_train} examples)")
    epochs = [torch.randperm(n_train, generator=generator)[: per_epoch * batch_size].view(per_epoch, batch_size)
              for _ in range(n_epochs)]
    return torch.cat(epochs)


def init_direct_feedback(layer_sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """One network's direct-feedback-alignment matrices, one per hidden layer.

    ``D_l`` maps the output error to hidden layer ``l``; it is drawn like feedback alignment's ``B`` of the
    last layer, ``U(-1/sqrt(n_l), 1/sqrt(n_l))``, from its own stream (so it changes no other draw).

    Returns
    -------
    list of Tensor, shapes (n_classes, n_l) for every hidden layer l
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "direct_feedback"))
    n_out = layer_sizes[-1]
    return [_uniform((n_out, n), 1.0 / math.sqrt(n), generator) for n in layer_sizes[1:-1]]


def perturbation_generator(seed: int) -> torch.Generator:
    """The generator of one node-perturbation network's noise (drawn per step, per layer, in forward order)."""
    return torch.Generator().manual_seed(derive_seed(seed, "perturbation"))


def sign_symmetry_scale(fan_in: int) -> float:
    """Fixed scale of sign symmetry's backward matrix ``sign(W)``: the mean ``|W|`` at initialization."""
    return 0.5 / math.sqrt(fan_in)


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
                momentum = SGD_MOMENTUM if kind == "sgdm" else 0.0
                torch._fused_sgd_(params, views, [b[sl] for b in self.buf] if momentum else [],
                                  weight_decay=decay, momentum=momentum, lr=lr, dampening=0.0,
                                  nesterov=momentum > 0, maximize=False, is_first_step=False)


class _Recorder:
    """Preallocated numpy buffers for every network's checkpoints."""

    def __init__(self, n_nets: int, n_checkpoints: int, n_probe: int, layer_sizes: Sequence[int]):
        outs, ins = layer_sizes[1:], layer_sizes[:-1]
        self.activations = [np.full((n_nets, n_checkpoints, n_probe, o), np.nan, np.float32) for o in outs]
        self.weights = [np.full((n_nets, n_checkpoints, o, i), np.nan, np.float32) for o, i in zip(outs, ins)]
        self.change = [np.full((n_nets, n_checkpoints, n_probe), np.nan, np.float32) for _ in outs]
        self.train_loss = np.full((n_nets, n_checkpoints), np.nan, np.float32)
        self.test_accuracy = np.full((n_nets, n_checkpoints), np.nan, np.float32)


def _forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]):
    """Batched forward pass. x: [N, B, in]. Returns (pre-activations, layer outputs), one per layer."""
    pre, outs = [], []
    a = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))
        a = h if i == last else torch.relu(h)
        pre.append(h)
        outs.append(a)
    return pre, outs


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


def run_metadata(spec: RunSpec, rule, n_steps: int, diverged_step: int) -> dict:
    """The metadata every engine stores for a run: its rule, hyperparameters, seeds, task, checkpoints, fate
    and versions (engines add their architecture's keys)."""
    return {
        "run_id": spec.run_id,
        "protocol": spec.protocol,
        "rule": rule.name,
        "family": rule.family,
        "optimizer": rule.optimizer,
        "feedback": rule.feedback,
        "update": rule.update,
        "learning_rate": float(spec.learning_rate),
        "weight_decay": float(spec.weight_decay),
        "batch_size": int(spec.batch_size),
        "n_epochs": int(spec.n_epochs),
        "n_steps": int(n_steps),
        "seed": int(spec.seed),
        "init_seed": int(derive_seed(spec.seed, "init")),
        "data_seed": int(derive_seed(spec.seed, "data")),
        "task": spec.task,
        "task_seed": int(spec.task_seed),
        "n_probe": int(spec.n_probe),
        "checkpoint_spacing": spec.checkpoint_spacing,
        "diverged": bool(diverged_step >= 0),
        "diverged_step": int(diverged_step),
        "paradigm": spec.paradigm,
        "virtual_lab_version": __version__,
        "torch_version": torch.__version__,
    }


def _backward_pass(error: torch.Tensor, inputs: list[torch.Tensor], pre: list[torch.Tensor],
                   send_back: Callable[[int, torch.Tensor], torch.Tensor]) -> tuple[list, list]:
    """Send the output error backward and form every layer's weight and bias (pseudo-)gradient.

    Parameters
    ----------
    error : Tensor, shape (N, B, n_classes)
        d loss / d logits, already divided by the batch size.
    inputs, pre : list of Tensor, shapes (N, B, in_l) and (N, B, out_l)
        Each layer's input and pre-activation.
    send_back : callable
        ``(l, delta) -> (N, B, in_l)``: layer ``l``'s error carried to its input by each network's rule
        (``delta @ W`` for backprop, ``delta @ B`` for feedback alignment, the output error through a direct
        projection for DFA, ...), before the input's nonlinearity.

    Returns
    -------
    grad_w : list of Tensor, shapes (N, out_l, in_l)
    grad_b : list of Tensor, shapes (N, out_l)
    """
    n_layers = len(inputs)
    grad_w, grad_b = [None] * n_layers, [None] * n_layers
    delta = error
    for l in reversed(range(n_layers)):
        grad_w[l] = torch.bmm(delta.transpose(1, 2), inputs[l])
        grad_b[l] = delta.sum(1)
        if l > 0:
            delta = send_back(l, delta).mul_(pre[l - 1] > 0)
    return grad_w, grad_b


#: How a rule carries the error backward, as the engine groups networks: through ``W``, through a stored
#: ``B`` (fixed, trained by IA, or Kolen-Pollack), through ``sign(W)``, directly from the output, or not at all.
_BACKWARD_PATH = {"transpose": "W", "fixed_random": "B", "information_alignment": "B", "kolen_pollack": "B",
                  "sign_symmetry": "sign", "direct": "direct", "none": "none"}


def _population_order(rules: Sequence, learning_rates: Sequence[float], weight_decays: Sequence[float]) -> list[int]:
    """Network order that makes equal optimizers, backward paths, feedback kinds, learning rates and weight
    decays contiguous (a stable sort: ties keep the caller's order)."""
    def key(i: int) -> tuple:
        r = rules[i]
        return (OPTIMIZER_ORDER.index(r.optimizer), _BACKWARD_PATH[r.feedback], r.feedback, r.update,
                learning_rates[i], weight_decays[i])
    return sorted(range(len(rules)), key=key)


OPTIMIZER_ORDER = ("sgdm", "sgd", "adam")

#: Elements of the largest intermediate tensor of the contrastive read-outs (chunking bound, ~64 MB of float32).
_CHUNK_ELEMENTS = 2 ** 24


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


def train_population(specs: Sequence[RunSpec], task: Task, *, device: str = "cpu",
                     progress: Callable[[int], None] | None = None,
                     final_state: dict | None = None, timings: dict | None = None,
                     dtype: torch.dtype = torch.float32) -> list[GroundTruth]:
    """Train a population of networks of one architecture in one batched computation.

    Parameters
    ----------
    specs : sequence of RunSpec
        The runs; they must share :attr:`RunSpec.cohort_key` (architecture, batch size, epochs, task,
        checkpoints). Rules, learning rates, weight decays and seeds may differ.
    task : Task
        The task every run trains on (``task.name`` must match the specs; supervised runs need
        ``layer_sizes[-1] == task.n_classes``, contrastive runs any projection width, a hidden layer and
        image stimuli).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    progress : callable, optional
        Called with the number of network-steps just completed.
    final_state : dict, optional
        If given, filled with the final stacked parameters as numpy arrays: ``"weights"``, ``"biases"``,
        ``"feedback"`` (lists over layers of ``[N, ...]`` arrays) and ``"direct_feedback"`` (list over hidden
        layers of ``[N, n_classes, n_l]``, or empty when no run uses direct feedback alignment), for
        inspecting a rule's mechanics.
    timings : dict, optional
        If given, filled with wall-clock seconds: ``"total"`` and ``"record"`` (checkpoint recording).
    dtype : torch.dtype, default=torch.float32
        Compute dtype of parameters, activations and optimizer state: ``torch.float32`` or ``torch.float64``
        (:func:`check_dtype`). Random draws are float32 in both, so a float64 run starts from the same
        parameters, batches and noise; ``final_state`` holds arrays of this dtype, the recorded ground truth is
        float32.

    Returns
    -------
    list of GroundTruth
        One per spec, in order. Supervised runs record the cross-entropy on the training set
        (``train_loss``) and the probe accuracy of the output layer (``test_accuracy``). Contrastive runs
        (``paradigm="contrastive"``; rules in :data:`virtual_lab.lab.contrastive.CONTRASTIVE_RULES`) record
        the NT-Xent loss on a fixed evaluation pair set, identical for every network of the task
        (:func:`virtual_lab.lab.contrastive.evaluation_views`), and the nearest-class-centroid (cosine)
        accuracy of the last hidden layer on the probes, centroids from the unaugmented training set.
        Activations, weights and activity change are recorded on the unaugmented probes in both paradigms.
    """
    t_start = time.perf_counter()
    clock = {"record": 0.0}
    check_dtype(dtype)
    if not specs:
        return []
    keys = {s.cohort_key for s in specs}
    if len(keys) > 1:
        raise ValueError("all runs of one population must share architecture, batch size, epochs, task and "
                         "checkpoints; group them by RunSpec.cohort_key first")
    first = specs[0]
    if first.paradigm not in PARADIGMS:
        raise ValueError(f"paradigm must be one of {', '.join(PARADIGMS)}; got {first.paradigm!r}")
    contrastive = first.paradigm == "contrastive"
    if contrastive:  # the last layer is the projection head: any width, and a hidden layer before it
        if task.name != first.task or task.n_features != first.layer_sizes[0] or len(first.layer_sizes) < 3:
            raise ValueError(f"task {task.name!r} ({task.n_features} inputs) does not match the contrastive runs "
                             f"(task {first.task!r}, layer sizes {first.layer_sizes}: inputs, at least one hidden "
                             f"layer, projection width)")
        if len(task.image_shape) not in (2, 3):
            raise ValueError(f"the contrastive paradigm augments images; task {task.name!r} has stimuli of shape "
                             f"{tuple(task.image_shape)}")
    elif task.name != first.task or task.n_features != first.layer_sizes[0] or task.n_classes != first.layer_sizes[-1]:
        raise ValueError(f"task {task.name!r} ({task.n_features} inputs, {task.n_classes} classes) does not match "
                         f"the runs (task {first.task!r}, layer sizes {first.layer_sizes})")
    rules = [get_rule(s.rule) for s in specs]
    if contrastive:
        for rule in rules:
            check_contrastive_rule(rule.name)
    order = _population_order(rules, [s.learning_rate for s in specs], [s.weight_decay for s in specs])
    if order != list(range(len(specs))):
        # train in an order where the networks of one optimizer and one backward path are contiguous, so
        # every rule-specific step works on views of the stacked tensors; results come back in caller order
        inner_state: dict | None = {} if final_state is not None else None
        results = train_population([specs[i] for i in order], task, device=device, progress=progress,
                                   final_state=inner_state, timings=timings, dtype=dtype)
        inverse = np.argsort(order)
        if final_state is not None:
            final_state.update({key: [a[inverse] for a in arrays] for key, arrays in inner_state.items()})
        return [results[i] for i in inverse]
    dev = torch.device(device)
    n_nets = len(specs)
    sizes = first.layer_sizes
    n_layers = len(sizes) - 1
    n_train = len(task.train_y)

    state = _PopulationState.create(specs, rules, [init_parameters(sizes, s.seed) for s in specs], n_train, dev,
                                    dtype)
    weights, biases, feedback, orders = state.weights, state.biases, state.feedback, state.orders
    is_adam, is_plain, learning_rate, weight_decay = state.is_adam, state.is_plain, state.learning_rate, \
        state.weight_decay
    optimizer, column = state.optimizer, state.column
    n_steps = orders.shape[1]
    schedule = checkpoint_schedule(n_steps, first.n_checkpoints, first.checkpoint_spacing)

    # what carries the error backward: contiguous runs of networks sharing a backward path
    paths = _runs([_BACKWARD_PATH[r.feedback] for r in rules])
    direct_feedback: list[torch.Tensor] = []
    if any(r.feedback == "direct" for r in rules):
        drawn = [init_direct_feedback(sizes, s.seed) for s in specs]
        direct_feedback = [torch.stack([d[l] for d in drawn]).to(dev, dtype) for l in range(n_layers - 1)]

    def send_back(l: int, delta: torch.Tensor) -> torch.Tensor:
        """Layer ``l``'s error carried to its input, each run of networks by its own rule."""
        if len(paths) == 1 and paths[0][1] == "W":
            return torch.bmm(delta, weights[l])
        out = torch.empty(delta.shape[0], delta.shape[1], sizes[l], dtype=dtype, device=dev)
        for sl, path in paths:
            if path == "W":
                torch.bmm(delta[sl], weights[l][sl], out=out[sl])
            elif path == "B":
                torch.bmm(delta[sl], feedback[l][sl], out=out[sl])
            elif path == "sign":
                torch.bmm(delta[sl], torch.sign(weights[l][sl]).mul_(sign_symmetry_scale(sizes[l])), out=out[sl])
            elif path == "direct":  # the output error, straight to hidden layer l - 1
                torch.bmm(error[sl], direct_feedback[l - 1][sl], out=out[sl])
            else:  # local and reward-based networks: their hidden updates do not use an error
                out[sl].zero_()
        return out

    # feedback matrices with their own update: information alignment (local loss), Kolen-Pollack (W's update);
    # their optimizers update views of ``feedback`` in place
    ia_span = _span([r.feedback == "information_alignment" for r in rules])
    ia_optimizer = state.subset_optimizer(ia_span) if ia_span is not None else None
    if ia_optimizer is not None:
        ia_coef = [column([getattr(s, name) for s in specs[ia_span]]).view(-1, 1, 1)
                   for name in ("ia_alpha", "ia_beta", "ia_gamma")]
    kp_span = _span([r.feedback == "kolen_pollack" for r in rules])
    kp_optimizer = state.subset_optimizer(kp_span) if kp_span is not None else None

    # networks whose update is not a backward-propagated error
    any_backward = any(r.update == "backward" for r in rules)
    hebb_index = _indices(_mask(rules, lambda r: r.update == "hebbian", dev))
    np_index = _indices(_mask(rules, lambda r: r.update == "node_perturbation", dev))
    np_generators = [perturbation_generator(specs[i].seed) for i in np_index.tolist()]
    if len(np_index):
        np_sd = column([specs[i].perturbation_sd for i in np_index.tolist()]).view(-1, 1, 1)

    train_x = torch.as_tensor(task.train_x, device=dev).to(dtype)
    train_y = torch.as_tensor(task.train_y, device=dev)
    probe_x = torch.as_tensor(task.probe_x, device=dev).to(dtype)
    probe_y = torch.as_tensor(task.probe_y, device=dev)
    temperature = None
    if contrastive:
        augment_generators = [augment_generator(s.seed) for s in specs]
        temperature = column([s.temperature for s in specs])
        eval_x = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype).to(dev)
        n_eval = eval_x.shape[0] // 2
    active = torch.ones(n_nets, dtype=torch.float32, device=dev)
    diverged_step = np.full(n_nets, -1, dtype=np.int64)
    recorder = _Recorder(n_nets, len(schedule), len(probe_y), sizes)

    def record(index: int) -> None:
        alive = active.bool().cpu().numpy()
        with torch.no_grad():
            pre, outs = _forward(probe_x.expand(n_nets, -1, -1), weights, biases)
            for l in range(n_layers):
                recorder.activations[l][alive, index] = outs[l].cpu().numpy()[alive]
                recorder.weights[l][alive, index] = weights[l].cpu().numpy()[alive]
                deriv = (pre[l] > 0).to(dtype) if l < n_layers - 1 else torch.ones_like(pre[l])
                change = torch.einsum("nbo,no->nb", deriv, weights[l].sum(2)) / sizes[l + 1]
                recorder.change[l][alive, index] = change.cpu().numpy()[alive]
            if contrastive:
                accuracy = (centroid_predict(train_centroids(), outs[-2]) == probe_y).float().mean(1)
                loss = evaluation_loss()
            else:
                accuracy = (outs[-1].argmax(2) == probe_y).float().mean(1)
                _, train_outs = _forward(train_x.expand(n_nets, -1, -1), weights, biases)
                loss = _cross_entropy(train_outs[-1], train_y.expand(n_nets, -1))
        recorder.train_loss[alive, index] = loss.cpu().numpy()[alive]
        recorder.test_accuracy[alive, index] = accuracy.cpu().numpy()[alive]

    def train_centroids() -> torch.Tensor:
        """Class sums of the normalized last-hidden-layer representations of the (unaugmented) training set."""
        sums = torch.zeros(n_nets, task.n_classes, sizes[-2], dtype=dtype, device=dev)
        chunk = max(1, _CHUNK_ELEMENTS // (n_nets * max(sizes[1:-1])))
        for start in range(0, n_train, chunk):
            _, hidden = _forward(train_x[start:start + chunk].expand(n_nets, -1, -1), weights[:-1], biases[:-1])
            sums += class_sums(torch.relu(hidden[-1]), train_y[start:start + chunk], task.n_classes)
        return sums

    def evaluation_loss() -> torch.Tensor:
        """NT-Xent of every network on the fixed evaluation pairs (networks in chunks: (2M)^2 similarities each)."""
        losses = []
        chunk = max(1, _CHUNK_ELEMENTS // (2 * n_eval) ** 2)
        for start in range(0, n_nets, chunk):
            part = slice(start, start + chunk)
            _, eval_outs = _forward(eval_x.expand(min(chunk, n_nets - start), -1, -1), [w[part] for w in weights],
                                    [b[part] for b in biases])
            z = eval_outs[-1]
            losses.append(nt_xent_loss(z[:, :n_eval], z[:, n_eval:], temperature[part]))
        return torch.cat(losses)

    eye = None if contrastive else torch.eye(sizes[-1], dtype=dtype, device=dev)
    with torch.no_grad():
        for step in _training_steps(n_steps, schedule, record, clock):
            idx = orders[:, step]
            y = train_y[idx]
            # contrastive: both views in one pass, rows [0, B) view 1 and [B, 2B) view 2
            x = make_views(train_x[idx], task.image_shape, augment_generators) if contrastive else train_x[idx]
            pre, outs = _forward(x, weights, biases)
            loss, example_losses, error = _objective(outs[-1], y, eye, temperature)
            active = _mark_diverged(loss, active, diverged_step, specs, step)
            batch = x.shape[1]
            inputs = [x] + outs[:-1]
            if any_backward:
                grad_w, grad_b = _backward_pass(error, inputs, pre, send_back)
            else:  # only local and reward-based networks: no error is sent backward
                grad_w = [torch.zeros_like(w) for w in weights]
                grad_b = [torch.zeros_like(b) for b in biases]
                if len(hebb_index):  # the delta rule of the readout uses only its own input and error
                    grad_w[-1] = torch.bmm(error.transpose(1, 2), inputs[-1])
                    grad_b[-1] = error.sum(1)
            if len(hebb_index):
                for l in range(n_layers - 1):
                    x_l = inputs[l].index_select(0, hebb_index)
                    y_l = outs[l].index_select(0, hebb_index)
                    w_l = weights[l].index_select(0, hebb_index)
                    oja = torch.bmm(y_l.transpose(1, 2), x_l) - torch.bmm(torch.bmm(y_l.transpose(1, 2), y_l), w_l)
                    grad_w[l].index_copy_(0, hebb_index, -oja / batch)
                    grad_b[l].index_fill_(0, hebb_index, 0.0)
            if len(np_index):
                a = x.index_select(0, np_index)
                noise, presyn = [], []
                for l in range(n_layers):
                    xi = torch.stack([torch.randn((batch, sizes[l + 1]), generator=g) for g in np_generators])
                    xi = xi.to(dev, dtype) * np_sd
                    presyn.append(a)
                    noise.append(xi)
                    h = torch.baddbmm(biases[l].index_select(0, np_index).unsqueeze(1), a,
                                      weights[l].index_select(0, np_index).transpose(1, 2)) + xi
                    a = h if l == n_layers - 1 else torch.relu(h)
                change = _example_losses(a, y.index_select(0, np_index)) - example_losses.index_select(0, np_index)
                coef = (change.unsqueeze(2) / (np_sd * np_sd)) / batch  # [k, B, 1]
                for l in range(n_layers):
                    weighted = coef * noise[l]
                    grad_w[l].index_copy_(0, np_index, torch.bmm(weighted.transpose(1, 2), presyn[l]))
                    grad_b[l].index_copy_(0, np_index, weighted.sum(1))
            if ia_optimizer is not None:
                grad_feedback = []
                alpha, beta, gamma = ia_coef
                for l in range(n_layers):
                    xl = inputs[l][ia_span]
                    bl = ia_optimizer.params[l]
                    yl = torch.bmm(xl, weights[l][ia_span].transpose(1, 2))
                    amp = -torch.bmm(yl.transpose(1, 2), xl) / batch
                    null = 2 * torch.bmm(yl.transpose(1, 2), torch.bmm(yl, bl)) / batch
                    grad_feedback.append(alpha * amp + beta * null + gamma * 2 * bl)
                ia_optimizer.step(grad_feedback, active[ia_span])
            if kp_optimizer is not None:
                kp_optimizer.step([g[kp_span] for g in grad_w], active[kp_span])
            optimizer.step(grad_w + grad_b, active)
            if progress is not None:
                progress(n_nets)

    if final_state is not None:
        export_final_state(final_state, weights, biases, feedback, direct_feedback)
    results = []
    rule_meta = {s.rule: get_rule(s.rule) for s in specs}
    nonlinearities = ",".join(["relu"] * (n_layers - 1) + ["linear"])
    names = tuple(f"fc{i + 1}" for i in range(n_layers))
    for i, spec in enumerate(specs):
        rule = rule_meta[spec.rule]
        metadata = run_metadata(spec, rule, n_steps, int(diverged_step[i]))
        metadata.update(architecture="mlp", layer_sizes=",".join(map(str, sizes)), nonlinearities=nonlinearities)
        if contrastive:
            metadata.update(temperature=float(spec.temperature), augment_seed=int(derive_seed(spec.seed, "augment")),
                            projection_width=int(sizes[-1]), representation_layer=names[-2],
                            n_eval_pairs=int(n_eval),
                            eval_seed=int(derive_seed(task.seed, "contrastive_eval")))
        if rule.feedback == "information_alignment":
            metadata.update(ia_alpha=float(spec.ia_alpha), ia_beta=float(spec.ia_beta), ia_gamma=float(spec.ia_gamma))
        if rule.feedback == "direct":
            metadata["direct_feedback_seed"] = int(derive_seed(spec.seed, "direct_feedback"))
        if rule.update == "node_perturbation":
            metadata.update(perturbation_sd=float(spec.perturbation_sd),
                            perturbation_seed=int(derive_seed(spec.seed, "perturbation")))
        results.append(GroundTruth(
            layer_names=names,
            depth_positions=depth_positions(n_layers),
            checkpoint_steps=schedule.copy(),
            activations={n: recorder.activations[l][i] for l, n in enumerate(names)},
            weights={n: recorder.weights[l][i] for l, n in enumerate(names)},
            activity_change={n: recorder.change[l][i] for l, n in enumerate(names)},
            train_loss=recorder.train_loss[i],
            test_accuracy=recorder.test_accuracy[i],
            probe_stimuli=task.probe_images.astype(np.float32),
            probe_labels=task.probe_y.copy(),
            metadata=metadata,
        ))
    if timings is not None:
        timings["total"] = time.perf_counter() - t_start
        timings["record"] = clock["record"]
    return results
