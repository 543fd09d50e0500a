"""Population training engine for MLPs, with ground-truth checkpoint recording.

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

What a run is (:class:`~virtual_lab.lab.spec.RunSpec`, its batch order and checkpoints) lives in
:mod:`virtual_lab.lab.spec`, the optimizers in :mod:`virtual_lab.lab.optim`, and what this engine shares with the
convolutional one (stacked state, network order, objectives, the step loop, the recorder) in
:mod:`virtual_lab.lab.population`; this module holds the MLP's draws, forward and backward passes and the
training step of every rule.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from virtual_lab.lab.contrastive import (augment_generator, centroid_predict, check_contrastive_rule, class_sums,
                                         evaluation_views, make_views, nt_xent_loss)
from virtual_lab.lab.optim import _runs
from virtual_lab.lab.population import (_alive_rows, _check_cohort, _check_paradigm, _contrastive_metadata,
                                        _cross_entropy, _example_losses, _indices, _mark_diverged, _mask, _objective,
                                        _population_order, _PopulationState, _Recorder, _span, _timings,
                                        _training_steps, _uniform, check_dtype, export_final_state)
from virtual_lab.lab.rules import get_rule
from virtual_lab.lab.spec import (RunSpec, checkpoint_schedule, eval_subset_indices, eval_subset_metadata,
                                  rule_metadata, run_metadata)
from virtual_lab.lab.tasks import Task
from virtual_lab.seeding import derive_seed
from virtual_lab.types import GroundTruth


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


def _logits(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """The last layer's output of :func:`_forward` alone: no intermediate is kept (each ReLU in place)."""
    a = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        a = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))
        if i < len(weights) - 1:
            a.relu_()
    return a


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


#: Elements of the largest intermediate tensor of the contrastive read-outs (chunking bound, ~64 MB of float32).
_CHUNK_ELEMENTS = 2 ** 24


def _check_specs(specs: Sequence[RunSpec], task: Task) -> list:
    """Raise ``ValueError`` unless the runs form one MLP cohort that fits ``task``; return their rules."""
    _check_cohort(specs)
    first = specs[0]
    _check_paradigm(first.paradigm)
    if first.paradigm == "contrastive":  # the last layer is the projection head: any width, and a hidden layer
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
    if first.paradigm == "contrastive":
        for rule in rules:
            check_contrastive_rule(rule.name)
    return rules


class _MLPPopulation:
    """One MLP population while it trains: stacked parameters, every rule's mechanics, data and recorder.

    The networks come in population order (:func:`~virtual_lab.lab.population._population_order`): those of one
    optimizer, one backward path and one feedback update are contiguous, so every rule-specific step works on
    views of the stacked tensors.
    """

    def __init__(self, specs: Sequence[RunSpec], rules: list, task: Task, device: torch.device,
                 dtype: torch.dtype):
        self.specs, self.rules, self.task, self.dev, self.dtype = specs, rules, task, device, dtype
        self.contrastive = specs[0].paradigm == "contrastive"
        self.n_nets = len(specs)
        self.sizes = specs[0].layer_sizes
        self.n_layers = len(self.sizes) - 1
        self.n_train = len(task.train_y)
        state = _PopulationState.create(specs, rules, [init_parameters(self.sizes, s.seed) for s in specs],
                                        self.n_train, device, dtype)
        self.weights, self.biases, self.feedback = state.weights, state.biases, state.feedback
        self.orders, self.optimizer = state.orders, state.optimizer
        self.n_steps = self.orders.shape[1]
        self.schedule = checkpoint_schedule(self.n_steps, specs[0].n_checkpoints, specs[0].checkpoint_spacing)
        self._init_backward()
        self._init_feedback_updates(state)
        self._init_local_updates(state)
        self._init_data(state)
        self.active = torch.ones(self.n_nets, dtype=torch.float32, device=device)
        self.diverged_step = np.full(self.n_nets, -1, dtype=np.int64)
        sizes = self.sizes
        self.recorder = _Recorder(self.n_nets, len(self.schedule), len(self.probe_y), sizes[1:],
                                  list(zip(sizes[1:], sizes[:-1])))
        self.eye = None if self.contrastive else torch.eye(sizes[-1], dtype=dtype, device=device)

    def _init_backward(self) -> None:
        """What carries the error backward: contiguous runs of networks sharing a backward path, each with the
        rule that stands for the run (rules of one path share its backward matrix); DFA's direct matrices."""
        rules = self.rules
        self.paths = [(sl, rules[sl.start]) for sl, _ in _runs([r.backward_path for r in rules])]
        self.direct_feedback: list[torch.Tensor] = []
        if any(r.backward_path == "direct" for r in rules):
            drawn = [init_direct_feedback(self.sizes, s.seed) for s in self.specs]
            self.direct_feedback = [torch.stack([d[l] for d in drawn]).to(self.dev, self.dtype)
                                    for l in range(self.n_layers - 1)]
        self.any_backward = any(r.update == "backward" for r in rules)

    def _init_feedback_updates(self, state: _PopulationState) -> None:
        """Feedback matrices with their own update: by a local loss (information alignment), by W's update
        (Kolen-Pollack); their optimizers update views of ``feedback`` in place."""
        self.ia_span = _span([r.feedback_update == "local_loss" for r in self.rules])
        self.ia_optimizer = state.subset_optimizer(self.ia_span) if self.ia_span is not None else None
        if self.ia_optimizer is not None:
            self.ia_coef = [state.column([getattr(s, name) for s in self.specs[self.ia_span]]).view(-1, 1, 1)
                            for name in ("ia_alpha", "ia_beta", "ia_gamma")]
        self.kp_span = _span([r.feedback_update == "weight_update" for r in self.rules])
        self.kp_optimizer = state.subset_optimizer(self.kp_span) if self.kp_span is not None else None

    def _init_local_updates(self, state: _PopulationState) -> None:
        """Networks whose update is not a backward-propagated error: Hebbian, node perturbation."""
        self.hebb_index = _indices(_mask(self.rules, lambda r: r.update == "hebbian", self.dev))
        self.np_index = _indices(_mask(self.rules, lambda r: r.update == "node_perturbation", self.dev))
        self.np_generators = [perturbation_generator(self.specs[i].seed) for i in self.np_index.tolist()]
        if len(self.np_index):
            self.np_sd = state.column([self.specs[i].perturbation_sd for i in self.np_index.tolist()]).view(-1, 1, 1)

    def _init_data(self, state: _PopulationState) -> None:
        task, dev, dtype = self.task, self.dev, self.dtype
        self.train_x = torch.as_tensor(task.train_x, device=dev).to(dtype)
        self.train_y = torch.as_tensor(task.train_y, device=dev)
        self.probe_x = torch.as_tensor(task.probe_x, device=dev).to(dtype)
        self.probe_y = torch.as_tensor(task.probe_y, device=dev)
        self.temperature = None
        subset = eval_subset_indices(self.n_train, self.specs[0].eval_subset, self.specs[0].task_seed)
        # the examples of the recorded training loss: a fixed subset of the training set, or all of it
        self.loss_x, self.loss_y = (self.train_x, self.train_y) if subset is None else (
            self.train_x[subset.to(dev)], self.train_y[subset.to(dev)])
        if self.contrastive:
            self.augment_generators = [augment_generator(s.seed) for s in self.specs]
            self.temperature = state.column([s.temperature for s in self.specs])
            self.eval_x = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype).to(dev)
            self.n_eval = self.eval_x.shape[0] // 2

    # -- one training step -------------------------------------------------------------------------------
    def step(self, step: int) -> None:
        """Training step ``step`` of every network (diverged ones are left out of every update)."""
        idx = self.orders[:, step]
        y = self.train_y[idx]
        # contrastive: both views in one pass, rows [0, B) view 1 and [B, 2B) view 2
        x = (make_views(self.train_x[idx], self.task.image_shape, self.augment_generators) if self.contrastive
             else self.train_x[idx])
        pre, outs = _forward(x, self.weights, self.biases)
        loss, example_losses, error = _objective(outs[-1], y, self.eye, self.temperature)
        self.active = _mark_diverged(loss, self.active, self.diverged_step, self.specs, step)
        batch = x.shape[1]
        inputs = [x] + outs[:-1]
        grad_w, grad_b = self._gradients(error, inputs, pre)
        if len(self.hebb_index):
            self._hebbian(grad_w, grad_b, inputs, outs, batch)
        if len(self.np_index):
            self._node_perturbation(grad_w, grad_b, x, y, example_losses, batch)
        if self.ia_optimizer is not None:
            self.ia_optimizer.step(self._information_alignment(inputs, batch), self.active[self.ia_span])
        if self.kp_optimizer is not None:
            self.kp_optimizer.step([g[self.kp_span] for g in grad_w], self.active[self.kp_span])
        self.optimizer.step(grad_w + grad_b, self.active)

    def _gradients(self, error: torch.Tensor, inputs: list, pre: list) -> tuple[list, list]:
        """Every layer's (pseudo-)gradient from the error sent backward, or zeros (and the readout's delta rule)
        when no network sends one."""
        if self.any_backward:
            return _backward_pass(error, inputs, pre, lambda l, delta: self._send_back(l, delta, error))
        # only local and reward-based networks: no error is sent backward
        grad_w = [torch.zeros_like(w) for w in self.weights]
        grad_b = [torch.zeros_like(b) for b in self.biases]
        if len(self.hebb_index):  # the delta rule of the readout uses only its own input and error
            grad_w[-1] = torch.bmm(error.transpose(1, 2), inputs[-1])
            grad_b[-1] = error.sum(1)
        return grad_w, grad_b

    def _send_back(self, l: int, delta: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """Layer ``l``'s error carried to its input, each run of networks by its own rule."""
        weights, feedback, sizes, paths = self.weights, self.feedback, self.sizes, self.paths
        if len(paths) == 1 and paths[0][1].backward_matrix is not None:
            return torch.bmm(delta, paths[0][1].backward_matrix(weights[l], feedback[l], sizes[l]))
        out = torch.empty(delta.shape[0], delta.shape[1], sizes[l], dtype=self.dtype, device=self.dev)
        for sl, rule in paths:
            if rule.backward_matrix is not None:  # through W, B, sign(W), ...
                torch.bmm(delta[sl], rule.backward_matrix(weights[l][sl], feedback[l][sl], sizes[l]), out=out[sl])
            elif rule.backward_path == "direct":  # the output error, straight to hidden layer l - 1
                torch.bmm(error[sl], self.direct_feedback[l - 1][sl], out=out[sl])
            else:  # local and reward-based networks: their hidden updates do not use an error
                out[sl].zero_()
        return out

    def _hebbian(self, grad_w: list, grad_b: list, inputs: list, outs: list, batch: int) -> None:
        """Oja's rule for the hidden layers of the Hebbian networks (their readout keeps the delta rule)."""
        index = self.hebb_index
        for l in range(self.n_layers - 1):
            x_l = inputs[l].index_select(0, index)
            y_l = outs[l].index_select(0, index)
            w_l = self.weights[l].index_select(0, index)
            oja = torch.bmm(y_l.transpose(1, 2), x_l) - torch.bmm(torch.bmm(y_l.transpose(1, 2), y_l), w_l)
            grad_w[l].index_copy_(0, index, -oja / batch)
            grad_b[l].index_fill_(0, index, 0.0)

    def _node_perturbation(self, grad_w: list, grad_b: list, x: torch.Tensor, y: torch.Tensor,
                           example_losses: torch.Tensor, batch: int) -> None:
        """Node perturbation's estimate: a second, perturbed forward pass; loss change times noise."""
        index, sizes, np_sd = self.np_index, self.sizes, self.np_sd
        a = x.index_select(0, index)
        noise, presyn = [], []
        for l in range(self.n_layers):
            xi = torch.stack([torch.randn((batch, sizes[l + 1]), generator=g) for g in self.np_generators])
            xi = xi.to(self.dev, self.dtype) * np_sd
            presyn.append(a)
            noise.append(xi)
            h = torch.baddbmm(self.biases[l].index_select(0, index).unsqueeze(1), a,
                              self.weights[l].index_select(0, index).transpose(1, 2)) + xi
            a = h if l == self.n_layers - 1 else torch.relu(h)
        change = _example_losses(a, y.index_select(0, index)) - example_losses.index_select(0, index)
        coef = (change.unsqueeze(2) / (np_sd * np_sd)) / batch  # [k, B, 1]
        for l in range(self.n_layers):
            weighted = coef * noise[l]
            grad_w[l].index_copy_(0, index, torch.bmm(weighted.transpose(1, 2), presyn[l]))
            grad_b[l].index_copy_(0, index, weighted.sum(1))

    def _information_alignment(self, inputs: list, batch: int) -> list[torch.Tensor]:
        """Gradient of information alignment's local loss with respect to every B (W held fixed)."""
        span, grad_feedback = self.ia_span, []
        alpha, beta, gamma = self.ia_coef
        for l in range(self.n_layers):
            xl = inputs[l][span]
            bl = self.ia_optimizer.params[l]
            yl = torch.bmm(xl, self.weights[l][span].transpose(1, 2))
            amp = -torch.bmm(yl.transpose(1, 2), xl) / batch
            null = 2 * torch.bmm(yl.transpose(1, 2), torch.bmm(yl, bl)) / batch
            grad_feedback.append(alpha * amp + beta * null + gamma * 2 * bl)
        return grad_feedback

    # -- checkpoints ---------------------------------------------------------------------------------------
    def record(self, index: int) -> None:
        """Record checkpoint ``index`` of every network still training."""
        n_nets, weights, biases, sizes, recorder = self.n_nets, self.weights, self.biases, self.sizes, self.recorder
        alive = _alive_rows(self.active)
        with torch.no_grad():
            pre, outs = _forward(self.probe_x.expand(n_nets, -1, -1), weights, biases)
            for l in range(self.n_layers):
                recorder.activations[l][alive, index] = outs[l].cpu().numpy()[alive]
                recorder.weights[l][alive, index] = weights[l].cpu().numpy()[alive]
                deriv = (pre[l] > 0).to(self.dtype) if l < self.n_layers - 1 else torch.ones_like(pre[l])
                change = torch.einsum("nbo,no->nb", deriv, weights[l].sum(2)) / sizes[l + 1]
                recorder.change[l][alive, index] = change.cpu().numpy()[alive]
            if self.contrastive:
                accuracy = (centroid_predict(self._train_centroids(), outs[-2]) == self.probe_y).float().mean(1)
                t_loss = time.perf_counter()
                loss = self._evaluation_loss().cpu()
            else:
                accuracy = (outs[-1].argmax(2) == self.probe_y).float().mean(1)
                t_loss = time.perf_counter()
                logits = _logits(self.loss_x.expand(n_nets, -1, -1), weights, biases)
                loss = _cross_entropy(logits, self.loss_y.expand(n_nets, -1)).cpu()
            recorder.loss_seconds += time.perf_counter() - t_loss
        recorder.train_loss[alive, index] = loss.numpy()[alive]
        recorder.test_accuracy[alive, index] = accuracy.cpu().numpy()[alive]

    def _train_centroids(self) -> torch.Tensor:
        """Class sums of the normalized last-hidden-layer representations of the (unaugmented) training set."""
        n_nets, sizes, n_classes = self.n_nets, self.sizes, self.task.n_classes
        sums = torch.zeros(n_nets, n_classes, sizes[-2], dtype=self.dtype, device=self.dev)
        chunk = max(1, _CHUNK_ELEMENTS // (n_nets * max(sizes[1:-1])))
        for start in range(0, self.n_train, chunk):
            _, hidden = _forward(self.train_x[start:start + chunk].expand(n_nets, -1, -1), self.weights[:-1],
                                 self.biases[:-1])
            sums += class_sums(torch.relu(hidden[-1]), self.train_y[start:start + chunk], n_classes)
        return sums

    def _evaluation_loss(self) -> torch.Tensor:
        """NT-Xent of every network on the fixed evaluation pairs (networks in chunks: (2M)^2 similarities each)."""
        n_nets, n_eval, losses = self.n_nets, self.n_eval, []
        chunk = max(1, _CHUNK_ELEMENTS // (2 * n_eval) ** 2)
        for start in range(0, n_nets, chunk):
            part = slice(start, start + chunk)
            _, eval_outs = _forward(self.eval_x.expand(min(chunk, n_nets - start), -1, -1),
                                    [w[part] for w in self.weights], [b[part] for b in self.biases])
            z = eval_outs[-1]
            losses.append(nt_xent_loss(z[:, :n_eval], z[:, n_eval:], self.temperature[part]))
        return torch.cat(losses)

    def results(self) -> list[GroundTruth]:
        """Every network's ground truth with its metadata, in population order."""
        sizes, n_layers = self.sizes, self.n_layers
        nonlinearities = ",".join(["relu"] * (n_layers - 1) + ["linear"])
        names = tuple(f"fc{i + 1}" for i in range(n_layers))
        results = []
        for i, spec in enumerate(self.specs):
            rule = self.rules[i]
            metadata = run_metadata(spec, rule, self.n_steps, int(self.diverged_step[i]))
            metadata.update(architecture="mlp", layer_sizes=",".join(map(str, sizes)), nonlinearities=nonlinearities)
            if self.contrastive:
                metadata.update(_contrastive_metadata(spec, self.task, sizes[-1], names[-2], self.n_eval))
            else:
                metadata.update(eval_subset_metadata(spec, self.n_train))
            metadata.update(rule_metadata(spec, rule))
            results.append(self.recorder.ground_truth(i, names, self.schedule, self.task, metadata))
        return results


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
        If given, filled with wall-clock seconds: ``"total"``, ``"record"`` (checkpoint recording) and
        ``"record_loss"`` (the part of ``"record"`` that computes the loss).
    dtype : torch.dtype, default=torch.float32
        Compute dtype of parameters, activations and optimizer state: ``torch.float32`` or ``torch.float64``
        (:func:`check_dtype`). Random draws are float32 in both, so a float64 run starts from the same
        parameters, batches and noise; ``final_state`` holds arrays of this dtype, the recorded ground truth is
        float32.

    Returns
    -------
    list of GroundTruth
        One per spec, in order. Supervised runs record the cross-entropy on the training set, or on its fixed
        subset of :attr:`RunSpec.eval_subset` examples, the same for every network (``train_loss``;
        :func:`~virtual_lab.lab.spec.eval_subset_indices`), and the probe accuracy of the output layer
        (``test_accuracy``). Contrastive runs (``paradigm="contrastive"``; rules in
        :data:`virtual_lab.lab.contrastive.CONTRASTIVE_RULES`) record the NT-Xent loss on a fixed evaluation pair
        set, identical for every network of the task
        (:func:`virtual_lab.lab.contrastive.evaluation_views`), and the nearest-class-centroid (cosine)
        accuracy of the last hidden layer on the probes, centroids from the unaugmented training set.
        Activations, weights and activity change are recorded on the unaugmented probes in both paradigms.
    """
    t_start = time.perf_counter()
    clock = {"record": 0.0}
    check_dtype(dtype)
    if not specs:
        return []
    rules = _check_specs(specs, task)
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

    population = _MLPPopulation(specs, rules, task, torch.device(device), dtype)
    with torch.no_grad():
        for step in _training_steps(population.n_steps, population.schedule, population.record, clock):
            population.step(step)
            if progress is not None:
                progress(population.n_nets)
    if final_state is not None:
        export_final_state(final_state, population.weights, population.biases, population.feedback,
                           population.direct_feedback)
    results = population.results()
    _timings(timings, t_start, clock, population.recorder)
    return results
