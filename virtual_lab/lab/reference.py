"""A plain one-network-at-a-time PyTorch reference for the population engine.

Each network is an ``nn.Module`` trained with ``torch.optim`` and autograd; feedback alignment and
information alignment use a custom autograd function whose backward pass multiplies by ``B`` instead of
``W^T``. It exists to check the batched engine (tests) and to time it (benchmark); it is deliberately
written independently of :mod:`virtual_lab.lab.train` except for sharing the initialization, data order
and checkpoint schedule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from virtual_lab.lab.record import GroundTruth, depth_positions
from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.train import RunSpec, batch_order, checkpoint_schedule, init_parameters


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
    """An MLP whose layers send errors back through W (backprop) or through a feedback matrix B."""

    def __init__(self, spec: RunSpec):
        super().__init__()
        weights, biases, feedback = init_parameters(spec.layer_sizes, spec.seed)
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases):
            layer = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                layer.weight.copy_(w)
                layer.bias.copy_(b)
            self.layers.append(layer)
        self.feedback = nn.ParameterList([nn.Parameter(f.clone()) for f in feedback])
        self.uses_feedback = get_rule(spec.rule).feedback != "transpose"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if self.uses_feedback:
                h = _FeedbackLinear.apply(x, layer.weight, layer.bias, self.feedback[i])
            else:
                h = layer(x)
            x = h if i == last else torch.relu(h)
            outs.append(x)
        return outs


def _optimizer(rule_optimizer: str, params, lr: float) -> torch.optim.Optimizer:
    if rule_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)


def train_reference(spec: RunSpec, task: Task) -> GroundTruth:
    """Train one network the plain way and record the same checkpoints as the engine.

    The layer-wise activity change is computed with autograd here (the engine uses the closed form), which
    makes the comparison a check of that formula too.
    """
    rule = get_rule(spec.rule)
    model = ReferenceMLP(spec)
    optimizer = _optimizer(rule.optimizer, [p for layer in model.layers for p in layer.parameters()],
                           spec.learning_rate)
    feedback_optimizer = None
    if rule.feedback == "information_alignment":
        feedback_optimizer = _optimizer(rule.optimizer, list(model.feedback), spec.learning_rate)
    order = batch_order(spec.seed, len(task.train_y), spec.batch_size, spec.n_epochs)
    schedule = checkpoint_schedule(order.shape[0], spec.n_checkpoints, spec.checkpoint_spacing)
    train_x, train_y = torch.as_tensor(task.train_x), torch.as_tensor(task.train_y)
    probe_x, probe_y = torch.as_tensor(task.probe_x), torch.as_tensor(task.probe_y)
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
        acc_curve.append(float((x.argmax(1) == probe_y).float().mean()))
        with torch.no_grad():
            loss_curve.append(float(nn.functional.cross_entropy(model(train_x)[-1], train_y)))

    checkpoints = set(schedule.tolist())
    for step in range(order.shape[0] + 1):
        if step in checkpoints:
            record()
        if step == order.shape[0]:
            break
        idx = order[step]
        x, y = train_x[idx], train_y[idx]
        outs = model(x)
        loss = nn.functional.cross_entropy(outs[-1], y)
        optimizer.zero_grad()
        loss.backward()
        if feedback_optimizer is not None:
            feedback_optimizer.zero_grad()
            inputs = [x] + [o.detach() for o in outs[:-1]]
            local = 0.0
            for layer, b, xl in zip(model.layers, model.feedback, inputs):
                yl = xl @ layer.weight.detach().t()
                r_amp = -(yl * (xl @ b.t())).sum(1).mean()
                r_null = ((yl @ b) ** 2).sum(1).mean()
                r_decay = (layer.weight.detach() ** 2).sum() + (b ** 2).sum()
                local = local + spec.ia_alpha * r_amp + spec.ia_beta * r_null + spec.ia_gamma * r_decay
            local.backward()
            feedback_optimizer.step()
        optimizer.step()

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
