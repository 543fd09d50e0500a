"""What determines a training run: :class:`RunSpec`, its schedule of batches and checkpoints, its metadata.

Both population engines (:mod:`virtual_lab.lab.train` for MLPs, :mod:`virtual_lab.lab.conv` for the CNN and
ResNet), the one-network references and the sweeps read a run from here: its deterministic ``run_id``, the
cohort it can train with (:attr:`RunSpec.cohort_key`), the number of steps (:func:`n_training_steps`), the data
order of each network (:func:`batch_order`), the steps at which the ground truth is recorded
(:func:`checkpoint_schedule`) and the metadata every engine stores (:func:`run_metadata`,
:func:`rule_metadata`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from virtual_lab import __version__
from virtual_lab.lab.contrastive import TEMPERATURE
from virtual_lab.lab.rules import IA_DEFAULTS, PERTURBATION_SD
from virtual_lab.lab.tasks import EVAL_SUBSET  # noqa: F401 (public here too: the default of RunSpec.eval_subset)
from virtual_lab.seeding import derive_seed, stable_hash
from virtual_lab.validation import check_int

CHECKPOINT_SPACINGS = ("linear", "log")


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
    learning_rate_scale : float, default=1.0
        Multiplier of the rule's base learning rate that gave ``learning_rate`` (a grid value of
        ``[sweep] learning_rate_scales``, a draw from a prior, times ``calibrated_scale``). Descriptive.
    calibrated_scale : float, default=1.0
        The part of ``learning_rate_scale`` chosen by learning-curve calibration (``[sweep] match_curves``;
        1 without it). Descriptive.
    eval_subset : int, default=256
        Training examples whose loss a checkpoint records (``train_loss``): a fixed subset, the same for every
        network of the task (:func:`eval_subset_indices`); 0, or at least the training set's size, records the
        loss on the whole training set.

    Descriptive fields (:attr:`DESCRIPTIVE_FIELDS`) say how a run was chosen, not what it is: ``learning_rate``
    already holds their effect. They never enter the ``run_id`` or the check of a stored session against its
    spec, so sessions written before they existed are still recognised.

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
    learning_rate_scale: float = 1.0
    calibrated_scale: float = 1.0
    eval_subset: int = EVAL_SUBSET

    #: Fields that describe how the run was chosen; left out of the run id and of stored-spec checks.
    DESCRIPTIVE_FIELDS: ClassVar[tuple[str, ...]] = ("learning_rate_scale", "calibrated_scale")

    @property
    def run_id(self) -> str:
        """Deterministic id from the resolved spec and the code version (protocol name and
        :attr:`DESCRIPTIVE_FIELDS` excluded)."""
        fields = asdict(self)
        fields.pop("protocol")
        for name in self.DESCRIPTIVE_FIELDS:
            fields.pop(name)
        for name, default in _ID_OPTIONAL_FIELDS.items():
            if fields[name] == default:
                fields.pop(name)
        fields["code_version"] = __version__
        return stable_hash(json.dumps(fields, sort_keys=True))

    @property
    def cohort_key(self) -> tuple:
        """Runs with equal keys can train together in one batched population."""
        return (self.architecture, self.layer_sizes, self.channels, self.paradigm, self.batch_size, self.n_epochs,
                self.task, self.task_seed, self.n_probe, self.n_checkpoints, self.checkpoint_spacing,
                self.eval_subset)


#: Fields added after the first release, with the default at which they are left out of the run id.
_ID_OPTIONAL_FIELDS = {"weight_decay": 0.0, "perturbation_sd": PERTURBATION_SD, "architecture": "mlp", "channels": (),
                       "paradigm": "supervised", "temperature": TEMPERATURE, "eval_subset": EVAL_SUBSET}


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


def n_training_steps(n_train: int, batch_size: int, n_epochs: int) -> int:
    """Training steps of a run: full batches per epoch (the last partial batch is dropped) times epochs."""
    return n_epochs * (n_train // batch_size)


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


def eval_subset_seed(task_seed: int) -> int:
    """Seed of the evaluation subset of a task (stream ``derive_seed(task_seed, "eval_subset")``)."""
    return derive_seed(task_seed, "eval_subset")


def eval_subset_indices(n_train: int, eval_subset: int, task_seed: int) -> torch.Tensor | None:
    """Training examples whose loss every checkpoint records, or ``None`` for the whole training set.

    The subset is a permutation's first ``eval_subset`` indices (in ascending order) from the task's
    ``"eval_subset"`` stream (:func:`eval_subset_seed`), so every network of a task, engine or reference, is
    evaluated on the same examples.

    Parameters
    ----------
    n_train : int
        Size of the training set.
    eval_subset : int
        Examples in the subset, >= 0; 0 or ``>= n_train`` means the whole training set.
    task_seed : int

    Returns
    -------
    Tensor of int64, shape (eval_subset,), or None

    Examples
    --------
    >>> eval_subset_indices(1597, 0, 0) is None
    True
    >>> eval_subset_indices(1597, 4, 0).tolist() == eval_subset_indices(1597, 4, 0).tolist()
    True
    """
    eval_subset = check_int("eval_subset", eval_subset, low=0)
    if eval_subset == 0 or eval_subset >= n_train:
        return None
    generator = torch.Generator().manual_seed(eval_subset_seed(task_seed))
    return torch.randperm(n_train, generator=generator)[:eval_subset].sort().values


def eval_subset_metadata(spec: RunSpec, n_train: int) -> dict:
    """The metadata of a run's recorded loss: the subset asked for, the examples used and the subset's seed."""
    subset = eval_subset_indices(n_train, spec.eval_subset, spec.task_seed)
    return {"eval_subset": int(spec.eval_subset),
            "n_loss_examples": int(n_train if subset is None else len(subset)),
            "eval_subset_seed": int(eval_subset_seed(spec.task_seed))}


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


def rule_metadata(spec: RunSpec, rule) -> dict:
    """The metadata of a run's rule-specific settings (both engines): every hyperparameter the rule reads
    (:attr:`~virtual_lab.lab.rules.Rule.hyperparameters`) and the seed of every extra random stream it draws
    from (``<stream>_seed``)."""
    metadata = {name: float(getattr(spec, name)) for name in rule.hyperparameters}
    metadata.update({f"{stream}_seed": int(derive_seed(spec.seed, stream)) for stream in rule.random_streams})
    return metadata
