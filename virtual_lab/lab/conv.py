"""Batched population engine for convolutional networks: a small KNet-like CNN and a narrow ResNet.

The engine follows :func:`virtual_lab.lab.train.train_population` (same contract, same optimizers, same
checkpoint schedule and data order), with convolutional layers batched as *grouped convolutions*: the
activations of ``N`` networks are laid out as ``[B, N*C, H, W]`` and each network's kernel bank
``[C_out, C_in, k, k]`` is one group of a ``[N*C_out, C_in, k, k]`` weight, so every network only ever sees its
own channels. The backward pass is written by hand: a layer's error reaches its input through a transposed
convolution (:func:`torch.nn.grad.conv2d_input`) with the rule's *backward kernel* -- ``W`` for backprop, a
fixed random ``B`` for feedback alignment, a ``B`` trained by its layer-local loss for information
alignment, a ``B`` that receives ``W``'s update for Kolen-Pollack, ``sign(W) * sign_symmetry_scale(fan_in)``
for sign symmetry -- and weight gradients come from :func:`torch.nn.grad.conv2d_weight` with
``groups=N``. An identity shortcut passes the error unchanged for every rule; a projection shortcut is a
weight layer like the others (its error goes back through its own backward kernel), and the error of a
block's sum reaches both branches unchanged. Direct feedback alignment, Hebbian learning and node
perturbation have no convolutional definition here (:data:`virtual_lab.lab.rules.CONV_RULES`).

Two paradigms, as in :func:`virtual_lab.lab.train.train_population`: supervised (cross-entropy on the labels;
``fc`` gives the logits) and self-supervised contrastive (SimCLR-style; see :mod:`virtual_lab.lab.contrastive`):
every step each network sees two augmented views of every image of its batch, drawn from its own generator
(:func:`virtual_lab.lab.contrastive.make_views`, stream ``derive_seed(seed, "augment")``), in one forward pass
of ``2B`` images; ``fc`` is then the projection head (``layer_sizes[-1]`` its width) and its error is
``dNT-Xent/dz`` (:func:`virtual_lab.lab.contrastive.nt_xent`, the run's temperature), which every rule carries
back along its usual path. The representation read out is the one feeding ``fc``: the flattened output of the
last conv layer (``"cnn"``) or the globally pooled output of the last block (``"resnet"``).

Architectures (neither uses batch normalization)
    ``"cnn"`` (KNet-like; ``channels = (c1, c2, ..., cL)``, default ``(16, 32, 32)``)
        ``conv1`` 3x3 stride 1 pad 1 (C_in -> c1), ReLU; ``conv2`` 3x3 stride 2 pad 1 (c1 -> c2), ReLU;
        ``conv3`` 3x3 stride 2 pad 1 (c2 -> c3), ReLU (every further conv layer like ``conv2``); flatten
        (channel-major, as ``nn.Flatten`` on ``[B, C, H, W]``); ``fc`` -> n_outputs (linear).
    ``"resnet"`` (narrow; ``channels = (c1, c2, ...)``, one per stage, default ``(16, 32)``)
        ``conv1`` stem 3x3 stride 1 pad 1 (C_in -> c1), ReLU. ``block1`` (BasicBlock without batch norm):
        ``block1_conv1`` 3x3 (c1 -> c1), ReLU, ``block1_conv2`` 3x3 (c1 -> c1), added to the block input
        (identity shortcut), ReLU. ``block2`` (and every further stage): ``block2_conv1`` 3x3 stride 2
        (c1 -> c2), ReLU, ``block2_conv2`` 3x3 (c2 -> c2), added to ``block2_shortcut`` (1x1 stride-2
        projection conv of the block input, with bias), ReLU. Global average pool; ``fc`` -> n_outputs
        (linear).

Recorded layers are every weight layer, in forward order (a block's shortcut after its second conv, as in
torchvision's ``named_modules``). What each records as its *output*:

* a plain conv layer (``conv*``, ``block*_conv1``): ``relu(conv(x, W) + b)``;
* a block's second conv (``block*_conv2``): the block output ``relu(conv(x, W) + b + shortcut)``;
* a projection shortcut (``block*_shortcut``): its linear output ``conv1x1(x, W) + b``;
* ``fc``: the logits.

Outputs are flattened to units channel-major, ``(C*H*W)``; weights are stored as ``(C_out, C_in*kh*kw)``
(``fc``: ``(out, in)``) so sessions and observables treat them like MLP layers; the kernel shapes are in the
metadata (``kernel_shapes``). The layer-wise activity change of layer ``l`` with input ``x`` (the tensor its
weights multiply) is ``g_b = (1/n_out) sum_j sum_i dy_bj/dx_bi``, with a block's shortcut held fixed; for a
ReLU conv layer that is ``(1/n_out) sum_j relu'(h_bj) conv(1, W)_j`` (``h`` the pre-activation including the
shortcut, ``conv(1, W)`` the convolution of an all-ones input without bias, which sees the zero padding),
for a linear layer ``(1/n_out) sum_j conv(1, W)_j``.

Information alignment's local loss for a conv layer with input ``x`` and ``y = conv(x, W)`` (no bias, ``W``
fixed) is ``R = alpha R_amp + beta R_null + gamma R_decay`` with ``R_amp = -E[<y, conv(x, B)>] / P``,
``R_null = E||conv_transpose(y, B)||^2 / P``, ``R_decay = ||W||^2 + ||B||^2`` (``P`` the number of output
positions of the layer) -- the MLP definition with the matrix products replaced by the convolution and its
adjoint, and every output position counted as one example: a 1x1 convolution then has exactly the local loss
of a linear layer applied to the ``batch * P`` positions. (Summing over positions instead, as this module did
before version 0.2, weights ``R_amp`` and ``R_null`` ``P`` times more than the decay that holds ``B`` back,
and 2 of 6 CNN IA networks diverged at Kunin et al.'s coefficients, 3 of 6 at ten times them; averaged, none
did: ``python scripts/ia_diagnostics.py conv-ablation``.)
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from virtual_lab.lab.contrastive import (augment_generator, centroid_predict, class_sums, evaluation_views,
                                         make_views, nt_xent_loss)
from virtual_lab.lab.conv_geometry import (CONV_ARCHITECTURES, ConvLayer, conv_input_shape, conv_layers,
                                          resolve_channels, task_images)
from virtual_lab.lab.conv_network import (_activity_change, _backward, _conv, _conv_input_grad, _conv_weight_grad,
                                          _forward, _input_sums, _population_images, _shared_images, _Tape,
                                          _to_features)
from virtual_lab.lab.population import (_alive_rows, _check_cohort, _check_paradigm, _contrastive_metadata,
                                        _example_losses, _mark_diverged, _mask, _objective, _PopulationState,
                                        _Recorder, _timings, _training_steps, _uniform, check_dtype,
                                        export_final_state)
from virtual_lab.lab.rules import CONV_RULES, get_rule, undefined_reason  # noqa: F401 (CONV_RULES: public)
from virtual_lab.lab.spec import (RunSpec, checkpoint_schedule, eval_subset_indices, eval_subset_metadata,
                                  rule_metadata, run_metadata)
from virtual_lab.lab.tasks import Task
from virtual_lab.seeding import derive_seed
from virtual_lab.types import GroundTruth


#: Images per chunk of a recording pass are chosen so that one layer's activations hold at most this many floats:
#: on a CPU 2**20 (4 MiB of float32), so a chunk's tensors are reused from the allocator's heap checkpoint after
#: checkpoint (larger ones come back as fresh pages every time, and their page faults cost more than the
#: arithmetic); on other devices :data:`_DEVICE_CHUNK_FLOATS`.
_CHUNK_FLOATS = 2 ** 20
_DEVICE_CHUNK_FLOATS = 2 ** 22


def init_conv_parameters(layers: Sequence[ConvLayer], seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                         list[torch.Tensor]]:
    """One network's initial weights, biases and feedback kernels.

    PyTorch's ``nn.Conv2d`` / ``nn.Linear`` default, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = C_in*k*k``, for W and b; every feedback kernel B is a further independent draw from the same
    distribution. All draws come from the network's ``"init"`` stream in a fixed order (W then b of every
    layer in forward order, then every B), so initial W does not depend on the rule.

    Parameters
    ----------
    layers : sequence of ConvLayer
        From :func:`conv_layers`.
    seed : int

    Returns
    -------
    weights : list of Tensor, shapes (C_out, C_in, k, k) or (out, in)
    biases : list of Tensor, shapes (C_out,) or (out,)
    feedback : list of Tensor, shapes as weights
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "init"))
    weights, biases = [], []
    for layer in layers:
        bound = 1.0 / math.sqrt(layer.fan_in)
        weights.append(_uniform(layer.weight_shape, bound, generator))
        biases.append(_uniform((layer.n_out,), bound, generator))
    feedback = [_uniform(layer.weight_shape, 1.0 / math.sqrt(layer.fan_in), generator) for layer in layers]
    return weights, biases, feedback


def _population_views(x: torch.Tensor, image_shape: Sequence[int],
                      generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Two augmented views of every network's flat batch, laid out as ``[2B, N*C, H, W]``.

    ``x`` is ``(N, B, D)`` in the task's flat layout; network ``n``'s views come from
    :func:`virtual_lab.lab.contrastive.make_views` with ``generators[n]`` only (rows ``[0, B)`` view 1,
    ``[B, 2B)`` view 2), then take the image layout of :func:`task_images`.
    """
    views = make_views(x, tuple(image_shape), generators)  # (N, 2B, D)
    c, h, w = conv_input_shape(image_shape)
    n, m = views.shape[:2]
    images = views.reshape(n, m, *tuple(image_shape))
    if len(image_shape) == 3:  # channels-last -> channels-first
        images = images.permute(1, 0, 4, 2, 3)
    else:
        images = images.transpose(0, 1)
    return images.reshape(m, n * c, h, w).contiguous()  # a permuted colour batch would be channels-last


def _check_specs(specs: Sequence[RunSpec], task: Task) -> None:
    """Raise ``ValueError`` unless the runs form one convolutional cohort that fits ``task``."""
    _check_cohort(specs)
    first = specs[0]
    if first.architecture not in CONV_ARCHITECTURES:
        raise ValueError(f"train_conv_population trains the architectures {', '.join(CONV_ARCHITECTURES)}; got "
                         f"{first.architecture!r} (MLPs train with virtual_lab.lab.train.train_population)")
    _check_paradigm(first.paradigm)
    if len(first.layer_sizes) != 2:
        raise ValueError(f"for a {first.architecture!r} network layer_sizes is (n_inputs, n_outputs); got "
                         f"{first.layer_sizes} (the conv widths go in RunSpec.channels)")
    for spec in specs:
        reason = undefined_reason(spec.rule, first.architecture, first.paradigm)
        if reason:
            raise ValueError(reason)
    if first.paradigm == "contrastive":  # fc is the projection head: any width
        if task.name != first.task or task.n_features != first.layer_sizes[0]:
            raise ValueError(f"task {task.name!r} ({task.n_features} inputs) does not match the contrastive runs "
                             f"(task {first.task!r}, layer sizes {first.layer_sizes}: inputs, projection width)")
    elif task.name != first.task or task.n_features != first.layer_sizes[0] or task.n_classes != first.layer_sizes[-1]:
        raise ValueError(f"task {task.name!r} ({task.n_features} inputs, {task.n_classes} classes) does not match "
                         f"the runs (task {first.task!r}, layer sizes {first.layer_sizes})")


def _chunk_floats(device: torch.device) -> int:
    return _CHUNK_FLOATS if device.type == "cpu" else _DEVICE_CHUNK_FLOATS


def _chunks(n_items: int, n_nets: int, layers: Sequence[ConvLayer], device: torch.device) -> list[slice]:
    """Consecutive chunks of ``n_items`` images for a pass of ``n_nets`` networks, as few as
    :func:`_chunk_floats` allows and of equal sizes (within one), so no chunk is a small remainder."""
    per_item = n_nets * max(max(layer.n_units, int(np.prod(layer.in_shape))) for layer in layers)
    size = max(1, _chunk_floats(device) // per_item)
    n_chunks = -(-n_items // size)
    edges = [i * n_items // n_chunks for i in range(n_chunks + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


class _ProbeRecord:
    """One checkpoint's probe responses and activity changes of every layer, filled chunk by chunk.

    On the CPU with every network alive the chunks go straight into the recorder's float32 rows of checkpoint
    ``k`` (no further copy); otherwise into buffers on the device, which :meth:`store` moves to the recorder with
    one transfer per array (not one synchronizing copy per chunk and layer).
    """

    def __init__(self, recorder: _Recorder, k: int, alive: slice | np.ndarray, device: torch.device,
                 dtype: torch.dtype):
        self.k, self.alive = k, alive
        self.arrays = recorder.activations + recorder.change
        self.direct = device.type == "cpu" and isinstance(alive, slice)
        self.buffers = [torch.from_numpy(a[:, k]) if self.direct else
                        torch.empty(a[:, k].shape, dtype=dtype, device=device) for a in self.arrays]
        n_layers = len(recorder.activations)
        #: per layer: ``[N, n_probe, n_units]`` responses and ``[N, n_probe]`` activity changes
        self.responses, self.changes = self.buffers[:n_layers], self.buffers[n_layers:]

    def store(self) -> None:
        """Write what the buffers hold into the recorder (rows of the networks alive only)."""
        if not self.direct:
            for array, buffer in zip(self.arrays, self.buffers):
                array[self.alive, self.k] = buffer.cpu().numpy()[self.alive]


def _metadata_shapes(layers: Sequence[ConvLayer]) -> dict[str, str]:
    def dims(shape: Sequence[int]) -> str:
        return "x".join(map(str, shape))

    return {
        "kernel_shapes": ";".join(f"{layer.name}:{dims(layer.weight_shape)}" for layer in layers),
        "output_shapes": ";".join(f"{layer.name}:{dims(layer.out_shape)}" for layer in layers),
        "strides": ",".join(str(layer.stride) for layer in layers),
        "paddings": ",".join(str(layer.padding) for layer in layers),
        "input_shape": dims(layers[0].in_shape),
    }


class _ConvPopulation:
    """One population of convolutional networks while it trains: stacked parameters, every rule's mechanics,
    data and recorder."""

    def __init__(self, specs: Sequence[RunSpec], task: Task, device: torch.device, dtype: torch.dtype):
        first = specs[0]
        self.specs, self.task, self.dev, self.dtype = specs, task, device, dtype
        self.architecture = first.architecture
        self.channels = resolve_channels(self.architecture, first.channels)
        self.layers = conv_layers(self.architecture, self.channels, conv_input_shape(task.image_shape),
                                  first.layer_sizes[-1])
        self.n_layers = len(self.layers)
        self.rules = [get_rule(s.rule) for s in specs]
        self.n_nets = len(specs)
        self.n_train = len(task.train_y)
        self.contrastive = first.paradigm == "contrastive"
        state = _PopulationState.create(specs, self.rules, [init_conv_parameters(self.layers, s.seed) for s in specs],
                                        self.n_train, device, dtype)
        self.weights, self.biases, self.feedback = state.weights, state.biases, state.feedback
        self.orders, self.optimizer = state.orders, state.optimizer
        self.n_steps = self.orders.shape[1]
        self.schedule = checkpoint_schedule(self.n_steps, first.n_checkpoints, first.checkpoint_spacing)
        self._init_backward()
        self._init_feedback_updates(state)
        self._init_data(state)
        self.active = torch.ones(self.n_nets, dtype=torch.float32, device=device)
        self.diverged_step = np.full(self.n_nets, -1, dtype=np.int64)
        self.recorder = _Recorder(self.n_nets, len(self.schedule), self.n_probe,
                                  [layer.n_units for layer in self.layers],
                                  [(layer.n_out, layer.fan_in) for layer in self.layers])
        self.eye = None if self.contrastive else torch.eye(first.layer_sizes[-1], dtype=dtype, device=device)

    def _init_backward(self) -> None:
        """One rule standing for each backward path (rules of one path share its backward matrix), and its
        networks."""
        self.path_rules: dict[str, object] = {}
        for rule in self.rules:
            self.path_rules.setdefault(rule.backward_path, rule)
        self.path_masks = {path: _mask(self.rules, lambda r, path=path: r.backward_path == path, self.dev)
                           for path in self.path_rules}

    def _init_feedback_updates(self, state: _PopulationState) -> None:
        """Feedback kernels with their own update (information alignment, Kolen-Pollack): their optimizers
        update copies, written back into ``feedback`` after every step."""
        rules, dev = self.rules, self.dev
        self.ia_index = torch.nonzero(_mask(rules, lambda r: r.feedback_update == "local_loss", dev)).flatten()
        self.ia_optimizer = state.subset_optimizer(self.ia_index) if len(self.ia_index) else None
        if self.ia_optimizer is not None:
            ia_specs = [self.specs[i] for i in self.ia_index.tolist()]
            self.ia_coef = [state.column([getattr(s, name) for s in ia_specs])
                            for name in ("ia_alpha", "ia_beta", "ia_gamma")]
        self.kp_index = torch.nonzero(_mask(rules, lambda r: r.feedback_update == "weight_update", dev)).flatten()
        self.kp_optimizer = state.subset_optimizer(self.kp_index) if len(self.kp_index) else None

    def _init_data(self, state: _PopulationState) -> None:
        task, dev, dtype = self.task, self.dev, self.dtype
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.train_images = torch.as_tensor(task_images(task.train_x, task.image_shape, np_dtype), device=dev)
        self.train_y = torch.as_tensor(task.train_y, device=dev)
        self.probe_images = torch.as_tensor(task_images(task.probe_x, task.image_shape, np_dtype), device=dev)
        self.probe_y = torch.as_tensor(task.probe_y, device=dev)
        self.n_probe = len(self.probe_y)
        subset = eval_subset_indices(self.n_train, self.specs[0].eval_subset, self.specs[0].task_seed)
        # the examples of the recorded training loss: a fixed subset of the training set, or all of it
        self.loss_images, self.loss_y = (self.train_images, self.train_y) if subset is None else (
            self.train_images[subset.to(dev)], self.train_y[subset.to(dev)])
        self.temperature = None
        if self.contrastive:
            self.train_flat = torch.as_tensor(np.asarray(task.train_x, dtype=np_dtype), device=dev)
            self.augment_generators = [augment_generator(s.seed) for s in self.specs]
            self.temperature = state.column([s.temperature for s in self.specs])
            # (2M, D): view 1, then view 2
            eval_flat = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype)
            self.eval_images = torch.as_tensor(task_images(eval_flat.numpy(), task.image_shape, np_dtype), device=dev)
            self.n_eval = self.eval_images.shape[0] // 2

    def _network_pass(self, images: torch.Tensor, weights: list | None = None, biases: list | None = None) -> _Tape:
        """The forward pass of every network (or of the networks of ``weights``) on the same images, for reading
        only (no pre-activations kept, ReLUs in place)."""
        weights = self.weights if weights is None else weights
        biases = self.biases if biases is None else biases
        return _forward(self.architecture, self.layers, _shared_images(images, weights[0].shape[0]), weights,
                        biases, keep_pre=False)

    # -- one training step -------------------------------------------------------------------------------
    def step(self, step: int) -> None:
        """Training step ``step`` of every network (diverged ones are left out of every update)."""
        idx = self.orders[:, step]
        if self.contrastive:  # both views in one pass: images [0, B) view 1, [B, 2B) view 2
            x, y = _population_views(self.train_flat[idx], self.task.image_shape, self.augment_generators), None
        else:
            x, y = _population_images(self.train_images, idx), self.train_y[idx]
        tape = _forward(self.architecture, self.layers, x, self.weights, self.biases)
        loss, _, error = _objective(tape.outs[-1], y, self.eye, self.temperature)
        self.active = active = _mark_diverged(loss, self.active, self.diverged_step, self.specs, step)
        batch = x.shape[0]
        grad_w, grad_b = _backward(self.architecture, self.layers, error, tape, self._backward_kernel)
        if self.ia_optimizer is not None:
            self.ia_optimizer.step(self._ia_gradients(tape, batch), active.index_select(0, self.ia_index))
            for l in range(self.n_layers):
                self.feedback[l].index_copy_(0, self.ia_index, self.ia_optimizer.params[l])
        if self.kp_optimizer is not None:
            self.kp_optimizer.step([g.index_select(0, self.kp_index) for g in grad_w],
                                   active.index_select(0, self.kp_index))
            for l in range(self.n_layers):
                self.feedback[l].index_copy_(0, self.kp_index, self.kp_optimizer.params[l])
        self.optimizer.step(grad_w + grad_b, active)

    def _backward_kernel(self, l: int) -> torch.Tensor:
        """Every network's backward kernel of layer ``l`` (W, B, sign(W), ...), by its rule's backward matrix."""
        weights, feedback, fan_in = self.weights, self.feedback, self.layers[l].fan_in
        if len(self.path_rules) == 1:
            (rule,) = self.path_rules.values()
            return rule.backward_matrix(weights[l], feedback[l], fan_in)
        shape = (-1,) + (1,) * (weights[l].dim() - 1)
        back = None
        for path, rule in self.path_rules.items():
            kernel = rule.backward_matrix(weights[l], feedback[l], fan_in)
            back = kernel if back is None else torch.where(self.path_masks[path].view(shape), kernel, back)
        return back

    def _ia_gradients(self, tape: _Tape, batch: int) -> list[torch.Tensor]:
        """Gradient of information alignment's local loss with respect to every B (W held fixed)."""
        alpha, beta, gamma = self.ia_coef
        ia_index, grads = self.ia_index, []
        k = len(ia_index)
        for l, layer in enumerate(self.layers):
            b = self.ia_optimizer.params[l]
            w = self.weights[l].index_select(0, ia_index)
            shape = (-1,) + (1,) * (b.dim() - 1)
            if layer.kind == "fc":
                x = tape.inputs[l].index_select(0, ia_index)
                y = torch.bmm(x, w.transpose(1, 2))
                amp = -torch.bmm(y.transpose(1, 2), x) / batch
                null = 2 * torch.bmm(y.transpose(1, 2), torch.bmm(y, b)) / batch
            else:
                x = tape.inputs[l].reshape(batch, self.n_nets, layer.n_in, *tape.inputs[l].shape[2:])
                x = x.index_select(1, ia_index).reshape(batch, k * layer.n_in, *tape.inputs[l].shape[2:])
                y = _conv(x, w, None, layer)
                positions = y[0, 0].numel()
                amp = -_conv_weight_grad(x, y, layer, k) / (batch * positions)
                back = _conv_input_grad(y, b, x.shape, layer)
                null = 2 * _conv_weight_grad(back, y, layer, k) / (batch * positions)
            grads.append(alpha.view(shape) * amp + beta.view(shape) * null + gamma.view(shape) * 2 * b)
        return grads

    # -- checkpoints ---------------------------------------------------------------------------------------
    def record(self, k: int) -> None:
        """Record checkpoint ``k`` of every network still training.

        One pass over the probes, in chunks, gives the responses, the activity change (``conv(1, W)`` of every
        layer formed once for all chunks) and the accuracy; one over the loss examples gives the loss.
        """
        n_nets, layers, recorder = self.n_nets, self.layers, self.recorder
        alive = _alive_rows(self.active)
        centroids = self._train_centroids() if self.contrastive else None
        sums = _input_sums(layers, self.weights)
        probes = _ProbeRecord(recorder, k, alive, self.dev, self.dtype)
        correct = torch.zeros(n_nets, device=self.dev)
        for part in _chunks(self.n_probe, n_nets, layers, self.dev):
            tape = self._network_pass(self.probe_images[part])
            for l, change in enumerate(_activity_change(layers, tape, sums)):
                probes.responses[l][:, part] = tape.outs[l] if layers[l].kind == "fc" else _to_features(
                    tape.outs[l], n_nets)
                probes.changes[l][:, part] = change
            if self.contrastive:  # the representation feeding the projection head
                predicted = centroid_predict(centroids, tape.inputs[-1])
            else:
                predicted = tape.outs[-1].argmax(2)
            correct += (predicted == self.probe_y[part]).float().sum(1)
        probes.store()
        for l in range(self.n_layers):
            recorder.weights[l][alive, k] = self.weights[l].reshape(n_nets, layers[l].n_out, -1).cpu().numpy()[alive]
        t_loss = time.perf_counter()
        loss = (self._evaluation_loss() if self.contrastive else self._train_loss()).cpu()
        recorder.loss_seconds += time.perf_counter() - t_loss
        recorder.train_loss[alive, k] = loss.numpy()[alive]
        recorder.test_accuracy[alive, k] = (correct / self.n_probe).cpu().numpy()[alive]

    def _train_loss(self) -> torch.Tensor:
        """Mean cross-entropy of every network on the training set or its evaluation subset, accumulated in
        float64 over chunks."""
        total_loss = torch.zeros(self.n_nets, dtype=torch.float64, device=self.dev)
        n_loss = len(self.loss_y)
        for part in _chunks(n_loss, self.n_nets, self.layers, self.dev):
            logits = self._network_pass(self.loss_images[part]).outs[-1]
            total_loss += _example_losses(logits, self.loss_y[part].expand(self.n_nets, -1)).sum(1).double()
        return (total_loss / n_loss).float()

    def _train_centroids(self) -> torch.Tensor:
        """Class sums of the normalized representations (fc's input) of the unaugmented training set."""
        n_classes = self.task.n_classes
        sums = torch.zeros(self.n_nets, n_classes, self.layers[-1].n_in, dtype=self.dtype, device=self.dev)
        for part in _chunks(self.n_train, self.n_nets, self.layers, self.dev):
            features = self._network_pass(self.train_images[part]).inputs[-1]
            sums += class_sums(features, self.train_y[part], n_classes)
        return sums

    def _evaluation_loss(self) -> torch.Tensor:
        """NT-Xent of every network on the fixed evaluation pairs.

        Networks go in chunks (each needs its (2M)^2 similarities), each chunk's images in chunks as usual.
        """
        n_nets, n_eval, layers = self.n_nets, self.n_eval, self.layers
        n_images = 2 * n_eval
        per_chunk = max(1, _chunk_floats(self.dev) // max(n_images * n_images, n_images * layers[-1].n_out))
        losses = []
        for start in range(0, n_nets, per_chunk):
            nets = slice(start, min(start + per_chunk, n_nets))
            size = nets.stop - nets.start
            w, b = [p[nets] for p in self.weights], [p[nets] for p in self.biases]
            z = torch.cat([self._network_pass(self.eval_images[part], w, b).outs[-1]
                           for part in _chunks(n_images, size, layers, self.dev)], 1)
            losses.append(nt_xent_loss(z[:, :n_eval], z[:, n_eval:], self.temperature[nets]))
        return torch.cat(losses)

    def results(self) -> list[GroundTruth]:
        """Every network's ground truth with its metadata, in the callers' order."""
        layers, architecture = self.layers, self.architecture
        names = tuple(layer.name for layer in layers)
        shapes = _metadata_shapes(layers)
        if self.contrastive:  # the recorded layer whose output (flattened, or globally pooled) feeds the head
            representation = (layers[-2].name, "flatten") if architecture == "cnn" else (
                [n for n in names if n.endswith("_conv2")][-1], "global_average")
        results = []
        for i, spec in enumerate(self.specs):
            rule = self.rules[i]
            metadata = run_metadata(spec, rule, self.n_steps, int(self.diverged_step[i]))
            metadata.update(architecture=architecture, layer_sizes=",".join(map(str, spec.layer_sizes)),
                            channels=",".join(map(str, self.channels)),
                            nonlinearities=",".join(layer.nonlinearity for layer in layers), batch_norm=False,
                            **shapes)
            if self.contrastive:
                metadata.update(_contrastive_metadata(spec, self.task, layers[-1].n_out, representation[0],
                                                      self.n_eval, pooling=representation[1]))
            else:
                metadata.update(eval_subset_metadata(spec, self.n_train))
            metadata.update(rule_metadata(spec, rule))
            results.append(self.recorder.ground_truth(i, names, self.schedule, self.task, metadata))
        return results


def train_conv_population(specs: Sequence[RunSpec], task: Task, *, device: str = "cpu",
                          progress: Callable[[int], None] | None = None, final_state: dict | None = None,
                          timings: dict | None = None, dtype: torch.dtype = torch.float32) -> list[GroundTruth]:
    """Train a population of convolutional networks of one architecture in one batched computation.

    The contract of :func:`virtual_lab.lab.train.train_population`, for ``architecture`` ``"cnn"`` or
    ``"resnet"`` (see the module docstring for the layers, what each records and the rules' definitions).

    Parameters
    ----------
    specs : sequence of RunSpec
        The runs; they must share :attr:`RunSpec.cohort_key`, use a rule of :data:`CONV_RULES`, and have
        ``layer_sizes = (n_inputs, n_outputs)``; ``channels`` gives the conv widths (empty: the defaults).
        ``n_outputs`` is the number of classes for ``paradigm="supervised"`` and the projection width for
        ``paradigm="contrastive"`` (temperatures may differ between the networks).
    task : Task
        The task every run trains on; its inputs are images of ``task.image_shape`` (``(H, W)`` greyscale or
        ``(H, W, C)`` channels-last).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    progress : callable, optional
        Called with the number of network-steps just completed (the population size, once per step).
    final_state : dict, optional
        If given, filled with the final stacked parameters as numpy arrays: ``"weights"`` (conv layers
        ``[N, C_out, C_in, k, k]``, fc ``[N, out, in]``), ``"biases"``, ``"feedback"`` (shaped as the weights) and
        ``"direct_feedback"`` (always empty here).
    timings : dict, optional
        If given, filled with wall-clock seconds: ``"total"``, ``"record"`` (checkpoint recording) and
        ``"record_loss"`` (the part of ``"record"`` that computes the loss).
    dtype : torch.dtype, default=torch.float32
        Compute dtype, ``torch.float32`` or ``torch.float64``, as in
        :func:`~virtual_lab.lab.train.train_population` (random draws are float32 in both; the recorded ground
        truth is float32, ``final_state`` of this dtype).

    Returns
    -------
    list of GroundTruth
        One per spec, in order. ``activations[layer]`` has shape (T, S, C*H*W) (fc: (T, S, out)),
        ``weights[layer]`` (T, C_out, C_in*k*k) (fc: (T, out, in)), ``activity_change[layer]`` (T, S), all on
        the unaugmented probes. Supervised runs record the cross-entropy on the training set, or on its fixed
        subset of :attr:`RunSpec.eval_subset` examples (``train_loss``), and the probe accuracy of the logits
        (``test_accuracy``); contrastive runs the NT-Xent on the fixed evaluation pairs, identical for every
        network of the task (:func:`virtual_lab.lab.contrastive.evaluation_views`), and the nearest-class-centroid
        (cosine) accuracy of the representation feeding ``fc``, centroids from the unaugmented training set.

    Raises
    ------
    ValueError
        If the specs do not form one cohort, name a rule without a convolutional version (or, for the
        contrastive paradigm, without a contrastive one), or do not match the task, or ``dtype`` is not
        float32 or float64.
    """
    t_start = time.perf_counter()
    clock = {"record": 0.0}
    check_dtype(dtype)
    if not specs:
        return []
    _check_specs(specs, task)
    population = _ConvPopulation(specs, task, torch.device(device), dtype)
    with torch.no_grad():
        for step in _training_steps(population.n_steps, population.schedule, population.record, clock):
            population.step(step)
            if progress is not None:
                progress(population.n_nets)
    if final_state is not None:
        export_final_state(final_state, population.weights, population.biases, population.feedback, [])
    results = population.results()
    _timings(timings, t_start, clock, population.recorder)
    return results
