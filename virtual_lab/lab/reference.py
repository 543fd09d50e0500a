"""A plain one-network-at-a-time PyTorch reference for the population engine.

Each network is an ``nn.Module`` trained with ``torch.optim``; backward-based rules use autograd, with a
custom autograd function whose backward pass multiplies by ``B`` (feedback alignment, information
alignment, Kolen-Pollack) or by ``sign(W)`` (sign symmetry) instead of ``W^T``; direct feedback alignment
injects ``e @ D_l`` as the gradient of each hidden pre-activation. Hebbian and node-perturbation updates are
written out per network and handed to ``torch.optim`` as ``.grad``. The contrastive paradigm uses the same
augmented views as the engine (:func:`virtual_lab.lab.contrastive.make_views` on the network's own
generator) and an autograd NT-Xent written as a cross-entropy over the masked similarity matrix. It
exists to check the batched engine (tests) and to time it (benchmark); it is deliberately written independently of
:mod:`virtual_lab.lab.train` except for sharing the initialization, data order, checkpoint schedule and
random streams (and, for contrastive runs, the view augmentation) and the subset of training examples whose loss
is recorded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from virtual_lab.lab.contrastive import augment_generator, check_contrastive_rule, evaluation_views, make_views
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.lab.rules import SGD_MOMENTUM, get_rule, sign_symmetry_scale
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.population import check_dtype
from virtual_lab.lab.spec import RunSpec, batch_order, checkpoint_schedule, eval_subset_indices
from virtual_lab.lab.train import init_direct_feedback, init_parameters, perturbation_generator


class _FeedbackLinear(torch.autograd.Function):
    """y = x W^T + b, with the input gradient sent back through B instead of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback = ctx.saved_tensors
        return grad_out @ feedback, grad_out.t() @ x, grad_out.sum(0), None


class ReferenceMLP(nn.Module):
    """An MLP whose layers send errors back through W (backprop), a feedback matrix B or sign(W).

    ``forward`` returns every layer's output; for direct feedback alignment, Hebbian learning and node
    perturbation each layer's input is detached (no error flows between layers), and ``pre`` holds the
    pre-activations of the last forward pass. Parameters are drawn in float32 (as the engine's) and held in
    ``dtype``.
    """

    def __init__(self, spec: RunSpec, dtype: torch.dtype = torch.float32):
        super().__init__()
        weights, biases, feedback = init_parameters(spec.layer_sizes, spec.seed)
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases):
            layer = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)
            with torch.no_grad():
                layer.weight.copy_(w)
                layer.bias.copy_(b)
            self.layers.append(layer)
        self.feedback = nn.ParameterList([nn.Parameter(f.to(dtype).clone()) for f in feedback])
        self.path = get_rule(spec.rule).backward_path
        if self.path not in ("W", "B", "sign", "direct", "none"):  # written out here, independently of the engine
            raise ValueError(f"the reference has no implementation of backward path {self.path!r}")
        self.pre: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, self.pre = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if self.path == "B":  # fixed (FA), trained by a local loss (IA), updated like W (KP)
                h = _FeedbackLinear.apply(x, layer.weight, layer.bias, self.feedback[i])
            elif self.path == "sign":
                back = torch.sign(layer.weight.detach()) * sign_symmetry_scale(layer.weight.shape[1])
                h = _FeedbackLinear.apply(x, layer.weight, layer.bias, back)
            elif self.path in ("direct", "none"):
                h = layer(x.detach())
            else:
                h = layer(x)
            self.pre.append(h)
            x = h if i == last else torch.relu(h)
            outs.append(x)
        return outs


def _optimizer(rule_optimizer: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The rule's ``torch.optim`` optimizer, with the fused kernels (``fused=True``, the fastest on CPU too)."""
    if rule_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if rule_optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay, fused=True)


def _node_perturbation_grads(model: ReferenceMLP, x: torch.Tensor, y: torch.Tensor, sd: float,
                             generator: torch.Generator) -> None:
    """Set every parameter's .grad to node perturbation's estimate (two forward passes, no backward)."""
    n_layers = len(model.layers)
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x)[-1], y, reduction="none")
        a, noise, presyn = x, [], []
        for i, layer in enumerate(model.layers):
            xi = torch.randn((x.shape[0], layer.out_features), generator=generator).to(x.dtype) * sd
            presyn.append(a)
            noise.append(xi)
            h = a @ layer.weight.t() + layer.bias + xi
            a = h if i == n_layers - 1 else torch.relu(h)
        change = nn.functional.cross_entropy(a, y, reduction="none") - clean
        coef = change / sd ** 2 / x.shape[0]
        for layer, xi, a_in in zip(model.layers, noise, presyn):
            layer.weight.grad = (coef[:, None] * xi).t() @ a_in
            layer.bias.grad = (coef[:, None] * xi).sum(0)


def nt_xent_autograd(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of one network's projections ``z`` (2B, D), rows [0, B) view 1 and [B, 2B) view 2.

    Cross-entropy over the cosine-similarity matrix divided by the temperature, each row's own entry masked
    out, the target of row ``i`` being the other view of the same image.
    """
    n = z.shape[0]
    u = nn.functional.normalize(z, dim=1)
    sim = (u @ u.t() / temperature).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    target = torch.arange(n).roll(n // 2)
    return nn.functional.cross_entropy(sim, target)


class ReferenceTrainer:
    """One network, its ``torch.optim`` optimizers and its rule's random streams; :meth:`step` trains it.

    Parameters
    ----------
    spec : RunSpec
    image_shape : tuple of int, optional
        Shape of one stimulus as an image; required for the contrastive paradigm (views are augmented images).
    dtype : torch.dtype, default=torch.float32
        Compute dtype (float32 or float64); parameters and random streams are drawn in float32 and cast, as
        the engine's. :meth:`step` expects batches of this dtype.
    """

    def __init__(self, spec: RunSpec, image_shape: tuple[int, ...] | None = None,
                 dtype: torch.dtype = torch.float32):
        check_dtype(dtype)
        self.spec = spec
        self.rule = rule = get_rule(spec.rule)
        self.contrastive = spec.paradigm == "contrastive"
        self.augment_generator = None
        if self.contrastive:
            check_contrastive_rule(rule.name)
            if image_shape is None:
                raise ValueError("the contrastive paradigm needs image_shape to augment the stimuli")
            self.image_shape = tuple(image_shape)
            self.augment_generator = augment_generator(spec.seed)
        self.model = ReferenceMLP(spec, dtype)
        self.optimizer = _optimizer(rule.optimizer, [p for layer in self.model.layers for p in layer.parameters()],
                                    spec.learning_rate, spec.weight_decay)
        self.feedback_optimizer = None
        if rule.feedback_update != "fixed":  # B learns: by IA's local loss or by W's update (KP)
            self.feedback_optimizer = _optimizer(rule.optimizer, list(self.model.feedback), spec.learning_rate,
                                                 spec.weight_decay)
        self.direct = None
        if rule.backward_path == "direct":
            self.direct = [d.to(dtype) for d in init_direct_feedback(spec.layer_sizes, spec.seed)]
        self.generator = perturbation_generator(spec.seed) if rule.update == "node_perturbation" else None

    def step(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """One training step on a batch ``x`` (B, in), ``y`` (B,) (``y`` unused by the contrastive paradigm)."""
        rule, spec, model, optimizer = self.rule, self.spec, self.model, self.optimizer
        n_layers = len(model.layers)
        optimizer.zero_grad()
        if rule.update == "node_perturbation":
            _node_perturbation_grads(model, x, y, spec.perturbation_sd, self.generator)
            optimizer.step()
            return
        if self.contrastive:  # the network sees both views: x becomes (2B, in)
            x = make_views(x.unsqueeze(0), self.image_shape, [self.augment_generator])[0]
            outs = model(x)
            loss = nt_xent_autograd(outs[-1], spec.temperature)
        else:
            outs = model(x)
            loss = nn.functional.cross_entropy(outs[-1], y)
        if rule.update == "hebbian":
            loss.backward()  # reaches the readout only: every layer's input is detached
            for i in range(n_layers - 1):
                layer, x_in, y_out = model.layers[i], ([x] + outs)[i].detach(), outs[i].detach()
                oja = y_out.t() @ x_in - (y_out.t() @ y_out) @ layer.weight.detach()
                layer.weight.grad = -oja / x.shape[0]
                layer.bias.grad = torch.zeros_like(layer.bias)
        elif rule.backward_path == "direct":
            (error,) = torch.autograd.grad(loss, model.pre[-1], retain_graph=True)
            grads = [(error @ d) * (h > 0) for d, h in zip(self.direct, model.pre[:-1])]
            torch.autograd.backward(model.pre, grads + [error])
        else:
            loss.backward()
        if self.feedback_optimizer is not None:
            self.feedback_optimizer.zero_grad()
            if rule.feedback_update == "weight_update":  # Kolen-Pollack
                for layer, b in zip(model.layers, model.feedback):
                    b.grad = layer.weight.grad.clone()  # B receives W's update (torch.optim adds the decay)
            else:
                inputs = [x] + [o.detach() for o in outs[:-1]]
                local = 0.0
                for layer, b, xl in zip(model.layers, model.feedback, inputs):
                    yl = xl @ layer.weight.detach().t()
                    r_amp = -(yl * (xl @ b.t())).sum(1).mean()
                    r_null = ((yl @ b) ** 2).sum(1).mean()
                    r_decay = (layer.weight.detach() ** 2).sum() + (b ** 2).sum()
                    local = local + spec.ia_alpha * r_amp + spec.ia_beta * r_null + spec.ia_gamma * r_decay
                local.backward()
            self.feedback_optimizer.step()
        optimizer.step()


def train_reference(spec: RunSpec, task: Task, dtype: torch.dtype = torch.float32) -> GroundTruth:
    """Train one network the plain way and record the same checkpoints as the engine.

    The layer-wise activity change is computed with autograd here (the engine uses the closed form), which
    makes the comparison a check of that formula too. Supervised runs record the cross-entropy on the examples
    of :func:`~virtual_lab.lab.spec.eval_subset_indices` (the engine's). Contrastive runs record the NT-Xent on
    the evaluation pairs and the nearest-class-centroid accuracy of the last hidden layer, computed here class by
    class.

    Parameters
    ----------
    spec : RunSpec
    task : Task
    dtype : torch.dtype, default=torch.float32
        Compute dtype (float32 or float64), as the engine's ``dtype``; the recorded arrays are float32.

    Returns
    -------
    GroundTruth
    """
    trainer = ReferenceTrainer(spec, task.image_shape, dtype)
    rule, model = trainer.rule, trainer.model
    order = batch_order(spec.seed, len(task.train_y), spec.batch_size, spec.n_epochs)
    schedule = checkpoint_schedule(order.shape[0], spec.n_checkpoints, spec.checkpoint_spacing)
    train_x, train_y = torch.as_tensor(task.train_x).to(dtype), torch.as_tensor(task.train_y)
    probe_x, probe_y = torch.as_tensor(task.probe_x).to(dtype), torch.as_tensor(task.probe_y)
    eval_x = None
    if trainer.contrastive:
        eval_x = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype)
    subset = eval_subset_indices(len(train_y), spec.eval_subset, spec.task_seed)
    loss_x, loss_y = (train_x, train_y) if subset is None else (train_x[subset], train_y[subset])
    n_layers = len(model.layers)
    names = tuple(f"fc{i + 1}" for i in range(n_layers))
    acts = {n: [] for n in names}
    weights = {n: [] for n in names}
    change = {n: [] for n in names}
    loss_curve, acc_curve = [], []

    def record() -> None:
        x = probe_x.clone()
        for i, layer in enumerate(model.layers):
            x_in = x.detach().requires_grad_(True)
            h = x_in @ layer.weight.detach().t() + layer.bias.detach()
            y = h if i == n_layers - 1 else torch.relu(h)
            (grad,) = torch.autograd.grad(y.sum(), x_in)
            change[names[i]].append(grad.sum(1).numpy() / y.shape[1])
            acts[names[i]].append(y.detach().numpy())
            weights[names[i]].append(layer.weight.detach().numpy().copy())
            x = y.detach()
        if trainer.contrastive:
            with torch.no_grad():
                train_rep = nn.functional.normalize(model(train_x)[-2], dim=1)
                centroids = torch.stack([train_rep[train_y == c].mean(0) for c in range(task.n_classes)])
                probe_rep = nn.functional.normalize(model(probe_x)[-2], dim=1)
                cosine = probe_rep @ nn.functional.normalize(centroids, dim=1).t()
                acc_curve.append(float((cosine.argmax(1) == probe_y).float().mean()))
                loss_curve.append(float(nt_xent_autograd(model(eval_x)[-1], spec.temperature)))
            return
        acc_curve.append(float((x.argmax(1) == probe_y).float().mean()))
        with torch.no_grad():
            loss_curve.append(float(nn.functional.cross_entropy(model(loss_x)[-1], loss_y)))

    checkpoints = set(schedule.tolist())
    for step in range(order.shape[0] + 1):
        if step in checkpoints:
            record()
        if step == order.shape[0]:
            break
        idx = order[step]
        trainer.step(train_x[idx], train_y[idx])

    return GroundTruth(
        layer_names=names,
        depth_positions=depth_positions(n_layers),
        checkpoint_steps=schedule,
        activations={n: np.stack(v).astype(np.float32) for n, v in acts.items()},
        weights={n: np.stack(v).astype(np.float32) for n, v in weights.items()},
        activity_change={n: np.stack(v).astype(np.float32) for n, v in change.items()},
        train_loss=np.array(loss_curve, np.float32),
        test_accuracy=np.array(acc_curve, np.float32),
        probe_stimuli=task.probe_images.astype(np.float32),
        probe_labels=task.probe_y.copy(),
        metadata={"run_id": spec.run_id, "rule": rule.name, "seed": spec.seed},
    )
