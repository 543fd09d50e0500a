"""A plain one-network-at-a-time PyTorch reference for the convolutional population engine.

Each network is an ``nn.Module`` of ``nn.Conv2d`` / ``nn.Linear`` layers trained with ``torch.optim``.
Backprop runs on plain autograd. The approximate-gradient rules use custom autograd functions whose backward
pass sends the error to the layer input through a different kernel -- ``B`` (feedback alignment,
information alignment, Kolen-Pollack) or ``sign(W) * sign_symmetry_scale(fan_in)`` (sign symmetry) -- by
differentiating the same convolution with that kernel in place of ``W``; the weight gradient is autograd's.
Information alignment's ``B`` is trained by autograd on its local loss with its own ``torch.optim``
optimizer; Kolen-Pollack's ``B`` receives ``W``'s gradient. The contrastive paradigm augments each batch of
images with :func:`virtual_lab.lab.contrastive.augment` on the network's own generator and differentiates an
autograd NT-Xent (:func:`virtual_lab.lab.reference.nt_xent_autograd`). It exists to check
:mod:`virtual_lab.lab.conv` (tests) and is written independently of it except for sharing the layer plan,
the initialization, the data order, the checkpoint schedule and the random streams (and, for contrastive
runs, the view augmentation and the evaluation pairs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virtual_lab.lab.contrastive import augment, augment_generator, check_contrastive_rule, evaluation_views
from virtual_lab.lab.conv import init_conv_parameters
from virtual_lab.lab.conv_geometry import conv_input_shape, conv_layers, task_images
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.lab.reference import _FeedbackLinear, _optimizer, nt_xent_autograd
from virtual_lab.lab.rules import get_rule, sign_symmetry_scale
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.population import check_dtype
from virtual_lab.lab.spec import RunSpec, batch_order, checkpoint_schedule, eval_subset_indices


def _vjp(function, primal: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """``cotangent^T d function / d primal`` by autograd."""
    with torch.enable_grad():
        primal = primal.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(function(primal), primal, cotangent)
    return grad


class _FeedbackConv2d(torch.autograd.Function):
    """y = conv2d(x, W) + b, with the input gradient sent back through the kernel ``feedback`` instead of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding):
        ctx.save_for_backward(x, weight, feedback)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, feedback = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_x = _vjp(lambda u: F.conv2d(u, feedback, None, stride, padding), x, grad_out)
        grad_w = _vjp(lambda k: F.conv2d(x, k, None, stride, padding), weight, grad_out)
        return grad_x, grad_w, grad_out.sum((0, 2, 3)), None, None, None


class ReferenceConvNet(nn.Module):
    """One KNet-like CNN or narrow ResNet (no batch norm) whose layers send errors back through W, B or sign(W).

    Parameters
    ----------
    spec : RunSpec
        ``architecture`` ``"cnn"`` or ``"resnet"``; ``layer_sizes[-1]`` outputs.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.
    dtype : torch.dtype, default=torch.float32
        Dtype of the parameters (drawn in float32, as the engine's, then cast).

    ``forward`` returns the logits and fills :attr:`tape`: per layer name, ``(input, output, shortcut)`` where
    ``shortcut`` is what a block's second conv adds before its ReLU (``None`` elsewhere).
    """

    def __init__(self, spec: RunSpec, input_shape: tuple[int, int, int], dtype: torch.dtype = torch.float32):
        super().__init__()
        self.architecture = spec.architecture
        self.plan = conv_layers(spec.architecture, spec.channels, input_shape, spec.layer_sizes[-1])
        weights, biases, feedback = init_conv_parameters(self.plan, spec.seed)
        self.layers = nn.ModuleDict()
        for layer, w, b in zip(self.plan, weights, biases):
            if layer.kind == "fc":
                module = nn.Linear(layer.n_in, layer.n_out, dtype=dtype)
            else:
                module = nn.Conv2d(layer.n_in, layer.n_out, layer.kernel_size, layer.stride, layer.padding,
                                   dtype=dtype)
            with torch.no_grad():
                module.weight.copy_(w)
                module.bias.copy_(b)
            self.layers[layer.name] = module
        self.feedback = nn.ParameterDict({layer.name: nn.Parameter(f.to(dtype).clone())
                                          for layer, f in zip(self.plan, feedback)})
        self.path = get_rule(spec.rule).backward_path
        if self.path not in ("W", "B", "sign"):  # written out here, independently of the engine
            raise ValueError(f"the convolutional reference has no implementation of backward path {self.path!r}")
        self.tape: dict[str, tuple] = {}

    def backward_kernel(self, name: str) -> torch.Tensor | None:
        """What carries this layer's error to its input; ``None`` for plain autograd (backprop)."""
        if self.path == "B":  # fixed (FA), trained by a local loss (IA), updated like W (KP)
            return self.feedback[name]
        if self.path == "sign":
            w = self.layers[name].weight.detach()
            return torch.sign(w) * sign_symmetry_scale(w[0].numel())
        return None

    def pre_activation(self, name: str, x: torch.Tensor) -> torch.Tensor:
        module = self.layers[name]
        back = self.backward_kernel(name)
        if back is None:
            return module(x)
        if isinstance(module, nn.Linear):
            return _FeedbackLinear.apply(x, module.weight, module.bias, back)
        return _FeedbackConv2d.apply(x, module.weight, module.bias, back, module.stride, module.padding)

    def _layer(self, name: str, x: torch.Tensor, relu: bool = True, shortcut: torch.Tensor | None = None):
        h = self.pre_activation(name, x)
        if shortcut is not None:
            h = h + shortcut
        y = torch.relu(h) if relu else h
        self.tape[name] = (x, y, shortcut)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tape = {}
        if self.architecture == "cnn":
            for layer in self.plan[:-1]:
                x = self._layer(layer.name, x)
            features = x.flatten(1)
        else:
            a = self._layer("conv1", x)
            s = 1
            while f"block{s}_conv1" in self.layers:
                mid = self._layer(f"block{s}_conv1", a)
                if f"block{s}_shortcut" in self.layers:
                    shortcut = self._layer(f"block{s}_shortcut", a, relu=False)
                else:
                    shortcut = a
                a = self._layer(f"block{s}_conv2", mid, shortcut=shortcut)
                s += 1
            features = a.mean((2, 3))
        return self._layer("fc", features, relu=False)

    def layer_function(self, name: str, shortcut: torch.Tensor | None):
        """The map from layer ``name``'s input to its recorded output, the shortcut held fixed."""
        module = self.layers[name]
        relu = name != "fc" and not name.endswith("_shortcut")

        def function(x: torch.Tensor) -> torch.Tensor:
            h = module(x)
            if shortcut is not None:
                h = h + shortcut.detach()
            return torch.relu(h) if relu else h

        return function


def _information_alignment_loss(model: ReferenceConvNet, spec: RunSpec) -> torch.Tensor:
    """Sum over layers of IA's local loss on the last forward pass (W and the layer inputs held fixed)."""
    total = 0.0
    for layer in model.plan:
        module, b = model.layers[layer.name], model.feedback[layer.name]
        x = model.tape[layer.name][0].detach()
        w = module.weight.detach()
        if layer.kind == "fc":
            y = x @ w.t()
            r_amp = -(y * (x @ b.t())).sum(1).mean()
            r_null = ((y @ b) ** 2).sum(1).mean()
        else:
            y = F.conv2d(x, w, None, layer.stride, layer.padding)
            positions = y.shape[2] * y.shape[3]  # averaged over positions as the MLP's loss is over examples
            r_amp = -(y * F.conv2d(x, b, None, layer.stride, layer.padding)).sum((1, 2, 3)).mean() / positions
            # conv_transpose2d inverts conv2d's shape only up to the rows/columns the stride dropped
            output_padding = tuple(x.shape[d] - ((y.shape[d] - 1) * layer.stride - 2 * layer.padding
                                                 + layer.kernel_size) for d in (2, 3))
            back = F.conv_transpose2d(y, b, None, layer.stride, layer.padding, output_padding)
            r_null = (back ** 2).sum((1, 2, 3)).mean() / positions
        r_decay = (w ** 2).sum() + (b ** 2).sum()
        total = total + spec.ia_alpha * r_amp + spec.ia_beta * r_null + spec.ia_gamma * r_decay
    return total


class ConvReferenceTrainer:
    """One convolutional network, its ``torch.optim`` optimizers; :meth:`step` trains it.

    Parameters
    ----------
    spec : RunSpec
        ``paradigm="contrastive"`` trains on two augmented views of every image (NT-Xent on ``fc``, the
        projection head); ``"supervised"`` on the labels.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.
    dtype : torch.dtype, default=torch.float32
        Compute dtype (float32 or float64), as the engine's; :meth:`step` expects images of this dtype.
    """

    def __init__(self, spec: RunSpec, input_shape: tuple[int, int, int], dtype: torch.dtype = torch.float32):
        check_dtype(dtype)
        self.spec = spec
        self.rule = rule = get_rule(spec.rule)
        self.contrastive = spec.paradigm == "contrastive"
        self.augment_generator = None
        if self.contrastive:
            check_contrastive_rule(rule.name)
            self.augment_generator = augment_generator(spec.seed)
        self.model = ReferenceConvNet(spec, input_shape, dtype)
        self.optimizer = _optimizer(rule.optimizer, list(self.model.layers.parameters()), spec.learning_rate,
                                    spec.weight_decay)
        self.feedback_optimizer = None
        if rule.feedback_update != "fixed":  # B learns: by IA's local loss or by W's update (KP)
            self.feedback_optimizer = _optimizer(rule.optimizer, list(self.model.feedback.values()),
                                                 spec.learning_rate, spec.weight_decay)

    def step(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """One training step on a batch of images ``x`` (B, C, H, W) with labels ``y`` (B,).

        ``y`` is unused by the contrastive paradigm, whose network sees both views of ``x``: (2B, C, H, W),
        view 1 first.
        """
        self.optimizer.zero_grad()
        if self.contrastive:
            views = augment(x.unsqueeze(0), [self.augment_generator])[0]  # (2, B, C, H, W)
            loss = nt_xent_autograd(self.model(views.reshape(-1, *x.shape[1:])), self.spec.temperature)
        else:
            loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        if self.feedback_optimizer is not None:
            self.feedback_optimizer.zero_grad()
            if self.rule.feedback_update == "weight_update":  # Kolen-Pollack
                for name, b in self.model.feedback.items():
                    b.grad = self.model.layers[name].weight.grad.clone()  # torch.optim adds the decay
            else:
                _information_alignment_loss(self.model, self.spec).backward()
            self.feedback_optimizer.step()
        self.optimizer.step()


def train_conv_reference(spec: RunSpec, task: Task, final_state: dict | None = None,
                         dtype: torch.dtype = torch.float32) -> GroundTruth:
    """Train one convolutional network the plain way and record the same checkpoints as the engine.

    The layer-wise activity change is computed with autograd (the engine uses the closed form), which makes
    the comparison a check of that formula too. Contrastive runs record the NT-Xent on the evaluation pairs
    and the nearest-class-centroid accuracy of ``fc``'s input, computed here class by class.

    Parameters
    ----------
    spec : RunSpec
    task : Task
    final_state : dict, optional
        If given, filled with the final ``"weights"``, ``"biases"`` and ``"feedback"`` (lists over layers of
        numpy arrays, conv kernels ``(C_out, C_in, k, k)``), like the engine's ``final_state`` for one network.
    dtype : torch.dtype, default=torch.float32
        Compute dtype (float32 or float64), as the engine's ``dtype``; the recorded arrays are float32,
        ``final_state`` of this dtype.

    Returns
    -------
    GroundTruth
    """
    input_shape = conv_input_shape(task.image_shape)
    trainer = ConvReferenceTrainer(spec, input_shape, dtype)
    model = trainer.model
    order = batch_order(spec.seed, len(task.train_y), spec.batch_size, spec.n_epochs)
    schedule = checkpoint_schedule(order.shape[0], spec.n_checkpoints, spec.checkpoint_spacing)
    train_x = torch.as_tensor(task_images(task.train_x, task.image_shape)).to(dtype)
    train_y = torch.as_tensor(task.train_y)
    probe_x = torch.as_tensor(task_images(task.probe_x, task.image_shape)).to(dtype)
    probe_y = torch.as_tensor(task.probe_y)
    subset = eval_subset_indices(len(train_y), spec.eval_subset, spec.task_seed)
    loss_x, loss_y = (train_x, train_y) if subset is None else (train_x[subset], train_y[subset])
    eval_x = None
    if trainer.contrastive:
        eval_flat = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype).numpy()
        eval_x = torch.as_tensor(task_images(eval_flat, task.image_shape, eval_flat.dtype))
    names = tuple(layer.name for layer in model.plan)
    acts = {n: [] for n in names}
    weights = {n: [] for n in names}
    change = {n: [] for n in names}
    loss_curve, acc_curve = [], []

    def record() -> None:
        with torch.no_grad():
            logits = model(probe_x)
        probe_features = model.tape["fc"][0].detach()
        _record_layers(model, names, acts, weights, change)
        if trainer.contrastive:
            accuracy, loss = _contrastive_performance(model, train_x, train_y, probe_features, probe_y, eval_x,
                                                      task.n_classes, spec.temperature)
        else:
            accuracy = float((logits.argmax(1) == probe_y).float().mean())
            with torch.no_grad():
                loss = float(F.cross_entropy(model(loss_x), loss_y))
        acc_curve.append(accuracy)
        loss_curve.append(loss)

    checkpoints = set(schedule.tolist())
    for step in range(order.shape[0] + 1):
        if step in checkpoints:
            record()
        if step == order.shape[0]:
            break
        idx = order[step]
        trainer.step(train_x[idx], train_y[idx])

    if final_state is not None:
        final_state["weights"] = [model.layers[n].weight.detach().numpy().copy() for n in names]
        final_state["biases"] = [model.layers[n].bias.detach().numpy().copy() for n in names]
        final_state["feedback"] = [model.feedback[n].detach().numpy().copy() for n in names]
    return _ground_truth(spec, task, names, schedule, acts, weights, change, loss_curve, acc_curve)


def _record_layers(model: ReferenceConvNet, names: tuple[str, ...], acts: dict[str, list], weights: dict[str, list],
                   change: dict[str, list]) -> None:
    """Append each layer's responses, weights (flattened per output channel) and autograd activity change
    at the probe stimuli of the forward pass just run (``model.tape``)."""
    for name in names:
        x_in, y_out, shortcut = model.tape[name]
        function = model.layer_function(name, shortcut)
        x_in = x_in.detach().requires_grad_(True)
        with torch.enable_grad():
            out = function(x_in)
            (grad,) = torch.autograd.grad(out.sum(), x_in)
        n_out = out[0].numel()
        change[name].append(grad.flatten(1).sum(1).numpy() / n_out)
        acts[name].append(y_out.detach().flatten(1).numpy())
        w = model.layers[name].weight.detach()
        weights[name].append(w.reshape(w.shape[0], -1).numpy().copy())


def _contrastive_performance(model: ReferenceConvNet, train_x: torch.Tensor, train_y: torch.Tensor,
                             probe_features: torch.Tensor, probe_y: torch.Tensor, eval_x: torch.Tensor,
                             n_classes: int, temperature: float) -> tuple[float, float]:
    """(accuracy, loss) of a contrastive run: nearest-class-centroid accuracy of ``fc``'s input at the probe
    stimuli (centroids of the training images, class by class) and the NT-Xent on the evaluation pairs."""
    with torch.no_grad():
        model(train_x)
        train_rep = F.normalize(model.tape["fc"][0], dim=1)
        centroids = torch.stack([train_rep[train_y == c].mean(0) for c in range(n_classes)])
        cosine = F.normalize(probe_features, dim=1) @ F.normalize(centroids, dim=1).t()
        accuracy = float((cosine.argmax(1) == probe_y).float().mean())
        loss = float(nt_xent_autograd(model(eval_x), temperature))
    return accuracy, loss


def _ground_truth(spec: RunSpec, task: Task, names: tuple[str, ...], schedule: np.ndarray,
                  acts: dict[str, list], weights: dict[str, list], change: dict[str, list],
                  loss_curve: list[float], acc_curve: list[float]) -> GroundTruth:
    """The recorded checkpoints of one reference run as a GroundTruth (float32 arrays)."""
    return GroundTruth(
        layer_names=names,
        depth_positions=depth_positions(len(names)),
        checkpoint_steps=schedule,
        activations={n: np.stack(v).astype(np.float32) for n, v in acts.items()},
        weights={n: np.stack(v).astype(np.float32) for n, v in weights.items()},
        activity_change={n: np.stack(v).astype(np.float32) for n, v in change.items()},
        train_loss=np.array(loss_curve, np.float32),
        test_accuracy=np.array(acc_curve, np.float32),
        probe_stimuli=task.probe_images.astype(np.float32),
        probe_labels=task.probe_y.copy(),
        metadata={"run_id": spec.run_id, "rule": get_rule(spec.rule).name, "seed": spec.seed,
                  "architecture": spec.architecture, "paradigm": spec.paradigm},
    )
