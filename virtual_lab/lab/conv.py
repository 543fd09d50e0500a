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
fixed) is ``R = alpha R_amp + beta R_null + gamma R_decay`` with ``R_amp = -E[<y, conv(x, B)>]``,
``R_null = E||conv_transpose(y, B)||^2``, ``R_decay = ||W||^2 + ||B||^2`` -- the MLP definition with the
matrix products replaced by the convolution and its adjoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from virtual_lab.lab.contrastive import (augment_generator, centroid_predict, check_contrastive_rule, class_sums,
                                         evaluation_views, make_views, nt_xent_loss)
from virtual_lab.types import GroundTruth, depth_positions
from virtual_lab.lab.rules import CONV_RULES, PARADIGMS, get_rule
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.train import (RunSpec, _example_losses, _mark_diverged, _mask, _objective, _PopulationState,
                                   _training_steps, check_dtype, checkpoint_schedule, export_final_state,
                                   run_metadata, sign_symmetry_scale)
from virtual_lab.seeding import derive_seed


CONV_ARCHITECTURES = ("cnn", "resnet")

#: Channels used when a spec leaves ``channels`` empty.
DEFAULT_CHANNELS = {"cnn": (16, 32, 32), "resnet": (16, 32)}

KERNEL_SIZE = 3

#: Images per chunk are chosen so that one layer's activations hold at most this many floats.
_CHUNK_FLOATS = 2 ** 22


@dataclass(frozen=True)
class ConvLayer:
    """One weight layer of a convolutional network.

    Attributes
    ----------
    name : str
        Stable layer name, e.g. ``"conv2"`` or ``"block2_shortcut"``.
    kind : {"conv", "fc"}
    n_in, n_out : int
        Input and output channels (``fc``: features).
    kernel_size, stride, padding : int
        Square kernel size, stride and zero padding (``fc``: 1, 1, 0).
    in_shape, out_shape : tuple of int
        ``(C, H, W)`` of one example's input and output (``fc``: ``(features,)``).
    nonlinearity : {"relu", "linear"}
        Applied to the recorded output.
    """

    name: str
    kind: str
    n_in: int
    n_out: int
    kernel_size: int
    stride: int
    padding: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    nonlinearity: str

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """``(C_out, C_in, k, k)``, or ``(out, in)`` for ``fc``."""
        if self.kind == "fc":
            return (self.n_out, self.n_in)
        return (self.n_out, self.n_in, self.kernel_size, self.kernel_size)

    @property
    def fan_in(self) -> int:
        return self.n_in * self.kernel_size * self.kernel_size

    @property
    def n_units(self) -> int:
        return int(np.prod(self.out_shape))


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _resolve_channels(architecture: str, channels: Sequence[int]) -> tuple[int, ...]:
    if architecture not in CONV_ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(CONV_ARCHITECTURES)}; got {architecture!r}")
    channels = tuple(int(c) for c in channels) or DEFAULT_CHANNELS[architecture]
    if any(c < 1 for c in channels):
        raise ValueError(f"channels must be positive integers; got {channels}")
    return channels


def conv_layer_names(architecture: str, channels: Sequence[int] = ()) -> tuple[str, ...]:
    """Recorded layer names of a convolutional architecture, in forward order.

    Parameters
    ----------
    architecture : {"cnn", "resnet"}
    channels : sequence of int, default=()
        ``"cnn"``: one per conv layer; ``"resnet"``: one per stage. Empty means :data:`DEFAULT_CHANNELS`.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> conv_layer_names("cnn", (16, 32, 32))
    ('conv1', 'conv2', 'conv3', 'fc')
    >>> conv_layer_names("resnet", (16, 32))
    ('conv1', 'block1_conv1', 'block1_conv2', 'block2_conv1', 'block2_conv2', 'block2_shortcut', 'fc')
    """
    channels = _resolve_channels(architecture, channels)
    if architecture == "cnn":
        return tuple(f"conv{i + 1}" for i in range(len(channels))) + ("fc",)
    names = ["conv1"]
    for s in range(len(channels)):
        names += [f"block{s + 1}_conv1", f"block{s + 1}_conv2"] + ([f"block{s + 1}_shortcut"] if s else [])
    return tuple(names) + ("fc",)


def conv_input_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of a task's images: ``(H, W)`` is greyscale, ``(H, W, C)`` channels-last (CIFAR-10).

    Examples
    --------
    >>> conv_input_shape((8, 8)), conv_input_shape((32, 32, 3))
    ((1, 8, 8), (3, 32, 32))
    """
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    raise ValueError(f"a convolutional network needs image inputs of shape (H, W) or (H, W, C); the task's "
                     f"image shape is {shape}")


def task_images(x: np.ndarray, image_shape: Sequence[int], dtype: type = np.float32) -> np.ndarray:
    """Flattened task inputs ``(n, prod(image_shape))`` as images ``(n, C, H, W)`` of ``dtype`` (default float32)."""
    c, h, w = conv_input_shape(image_shape)
    images = np.asarray(x, dtype=dtype).reshape(len(x), *tuple(image_shape))
    if len(image_shape) == 3:
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images.reshape(len(x), c, h, w))


def conv_layers(architecture: str, channels: Sequence[int], input_shape: Sequence[int],
                n_outputs: int) -> tuple[ConvLayer, ...]:
    """Every weight layer of a convolutional network, in forward (= recorded) order.

    Parameters
    ----------
    architecture : {"cnn", "resnet"}
    channels : sequence of int
        Empty means :data:`DEFAULT_CHANNELS`.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image (see :func:`conv_input_shape`).
    n_outputs : int

    Returns
    -------
    tuple of ConvLayer
    """
    channels = _resolve_channels(architecture, channels)
    c, h, w = (int(s) for s in input_shape)
    k = KERNEL_SIZE
    layers = []

    def conv(name: str, c_out: int, stride: int, kernel: int = k, nonlinearity: str = "relu",
             shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
        c_in, h_in, w_in = shape if shape is not None else (c, h, w)
        pad = kernel // 2
        out = (c_out, _out_size(h_in, kernel, stride, pad), _out_size(w_in, kernel, stride, pad))
        layers.append(ConvLayer(name, "conv", c_in, c_out, kernel, stride, pad, (c_in, h_in, w_in), out,
                                nonlinearity))
        return out

    if architecture == "cnn":
        for i, c_out in enumerate(channels):
            c, h, w = conv(f"conv{i + 1}", c_out, 1 if i == 0 else 2)
        n_features = c * h * w
    else:
        c, h, w = conv("conv1", channels[0], 1)
        for s, c_out in enumerate(channels):
            stride = 1 if s == 0 else 2
            block_in = (c, h, w)
            c, h, w = conv(f"block{s + 1}_conv1", c_out, stride)
            c, h, w = conv(f"block{s + 1}_conv2", c_out, 1)
            if s:
                conv(f"block{s + 1}_shortcut", c_out, stride, kernel=1, nonlinearity="linear", shape=block_in)
        n_features = c
    layers.append(ConvLayer("fc", "fc", n_features, int(n_outputs), 1, 1, 0, (n_features,), (int(n_outputs),),
                            "linear"))
    return tuple(layers)


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


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


# ------------------------------------------------------------------------------------ batched primitives
# Conv activations of a population: [B, N*C, H, W]; conv parameters [N, C_out, C_in, k, k]; fc inputs [N, B, F].


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: ConvLayer) -> torch.Tensor:
    n = weight.shape[0]
    return F.conv2d(x, weight.reshape(n * layer.n_out, *weight.shape[2:]),
                    None if bias is None else bias.reshape(-1), layer.stride, layer.padding, groups=n)


def _conv_input_grad(delta: torch.Tensor, kernel: torch.Tensor, input_shape: Sequence[int],
                     layer: ConvLayer) -> torch.Tensor:
    """The error at a conv layer's input: the transposed convolution of ``delta`` with ``kernel``."""
    n = kernel.shape[0]
    return torch.nn.grad.conv2d_input(list(input_shape), kernel.reshape(n * layer.n_out, *kernel.shape[2:]), delta,
                                      layer.stride, layer.padding, groups=n)


def _conv_weight_grad(x: torch.Tensor, delta: torch.Tensor, layer: ConvLayer, n: int) -> torch.Tensor:
    """``dL/dW`` of every network, ``[N, C_out, C_in, k, k]``, from the layer input and its error."""
    shape = (n * layer.n_out, layer.n_in, layer.kernel_size, layer.kernel_size)
    grad = torch.nn.grad.conv2d_weight(x, shape, delta, layer.stride, layer.padding, groups=n)
    # contiguous: the fused optimizer kernels read a gradient in its parameter's layout, ignoring its strides
    # (channels-last activations give a channels-last gradient)
    return grad.contiguous().view(n, *layer.weight_shape)


def _to_features(a: torch.Tensor, n: int) -> torch.Tensor:
    """[B, N*C, H, W] -> [N, B, C*H*W] (channel-major per network)."""
    return a.reshape(a.shape[0], n, -1).transpose(0, 1)


def _from_features(d: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """[N, B, C*H*W] -> [B, N*C, H, W]."""
    n, b = d.shape[:2]
    c, h, w = shape
    return d.transpose(0, 1).reshape(b, n * c, h, w)


@dataclass
class _Tape:
    """What one forward pass leaves for the backward pass and the recorder, one entry per layer.

    ``inputs[l]``: the tensor layer ``l``'s weights multiply; ``pre[l]``: the pre-activation (conv + bias,
    plus the shortcut for a block's second conv); ``outs[l]``: the recorded output. Conv tensors are
    ``[B, N*C, H, W]``, ``fc`` tensors ``[N, B, F]``.
    """

    inputs: list
    pre: list
    outs: list


def _forward(architecture: str, layers: Sequence[ConvLayer], x: torch.Tensor, weights: list[torch.Tensor],
             biases: list[torch.Tensor]) -> _Tape:
    """Batched forward pass of ``N`` networks on ``x`` ``[B, N*C, H, W]``."""
    n = weights[0].shape[0]
    index = {layer.name: i for i, layer in enumerate(layers)}
    tape = _Tape([None] * len(layers), [None] * len(layers), [None] * len(layers))

    def apply(name: str, a: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        i = index[name]
        h = _conv(a, weights[i], biases[i], layers[i])
        if skip is not None:
            h = h + skip
        y = torch.relu(h) if layers[i].nonlinearity == "relu" else h
        tape.inputs[i], tape.pre[i], tape.outs[i] = a, h, y
        return y

    if architecture == "cnn":
        a = x
        for layer in layers[:-1]:
            a = apply(layer.name, a)
        features = _to_features(a, n)
    else:
        a = apply("conv1", x)
        s = 1
        while f"block{s}_conv1" in index:
            mid = apply(f"block{s}_conv1", a)
            shortcut = apply(f"block{s}_shortcut", a) if f"block{s}_shortcut" in index else a
            a = apply(f"block{s}_conv2", mid, skip=shortcut)
            s += 1
        features = a.mean((2, 3)).view(a.shape[0], n, -1).transpose(0, 1)
    logits = torch.baddbmm(biases[-1].unsqueeze(1), features, weights[-1].transpose(1, 2))
    tape.inputs[-1], tape.pre[-1], tape.outs[-1] = features, logits, logits
    return tape


def _backward(architecture: str, layers: Sequence[ConvLayer], error: torch.Tensor, tape: _Tape,
              backward_kernel: Callable[[int], torch.Tensor]) -> tuple[list, list]:
    """Send the output error backward and form every layer's weight and bias (pseudo-)gradient.

    Parameters
    ----------
    error : Tensor, shape (N, B, n_outputs)
        d loss / d logits, already divided by the batch size.
    tape : _Tape
        The forward pass on the same batch.
    backward_kernel : callable
        ``l -> [N, *weight_shape]``: what carries layer ``l``'s error to its input.

    Returns
    -------
    grad_w : list of Tensor, shapes (N, *weight_shape)
    grad_b : list of Tensor, shapes (N, n_out)
    """
    n = error.shape[0]
    n_layers = len(layers)
    index = {layer.name: i for i, layer in enumerate(layers)}
    grad_w, grad_b = [None] * n_layers, [None] * n_layers
    grad_w[-1] = torch.bmm(error.transpose(1, 2), tape.inputs[-1])
    grad_b[-1] = error.sum(1)
    d_features = torch.bmm(error, backward_kernel(n_layers - 1))  # [N, B, F]

    def through(i: int, delta_pre: torch.Tensor, send: bool = True) -> torch.Tensor | None:
        """Gradients of conv layer i from the error at its pre-activation; the error at its input."""
        layer = layers[i]
        grad_w[i] = _conv_weight_grad(tape.inputs[i], delta_pre, layer, n)
        grad_b[i] = delta_pre.sum((0, 2, 3)).view(n, layer.n_out)
        if not send:
            return None
        return _conv_input_grad(delta_pre, backward_kernel(i), tape.inputs[i].shape, layer)

    def relu_mask(i: int, delta_out: torch.Tensor) -> torch.Tensor:
        return delta_out * (tape.pre[i] > 0) if layers[i].nonlinearity == "relu" else delta_out

    if architecture == "cnn":
        delta = _from_features(d_features, layers[-2].out_shape)
        for i in reversed(range(n_layers - 1)):
            delta = through(i, relu_mask(i, delta), send=i > 0)
        return grad_w, grad_b

    n_stages = sum(1 for layer in layers if layer.name.startswith("block") and layer.name.endswith("_conv1"))
    height, width = tape.outs[index[f"block{n_stages}_conv2"]].shape[2:]
    c = d_features.shape[2]
    # global average pooling: every position receives 1/(H*W) of the pooled feature's error
    delta = (d_features.transpose(0, 1).reshape(error.shape[1], n * c, 1, 1) / (height * width)).expand(
        -1, -1, height, width)
    s = n_stages
    while s >= 1:
        i1, i2 = index[f"block{s}_conv1"], index[f"block{s}_conv2"]
        d_pre = relu_mask(i2, delta)  # error at the block's pre-activation (conv2 + shortcut)
        d_mid = relu_mask(i1, through(i2, d_pre))
        d_in = through(i1, d_mid)
        if f"block{s}_shortcut" in index:
            d_in = d_in + through(index[f"block{s}_shortcut"], d_pre)
        else:
            d_in = d_in + d_pre  # identity shortcut: the error passes unchanged, for every rule
        delta = d_in
        s -= 1
    through(index["conv1"], relu_mask(index["conv1"], delta), send=False)
    return grad_w, grad_b


def _activity_change(layers: Sequence[ConvLayer], tape: _Tape, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Exact layer-wise activity change of every layer, ``[N, S]`` each (see the module docstring)."""
    changes = []
    for i, layer in enumerate(layers):
        w = weights[i]
        n = w.shape[0]
        if layer.kind == "fc":
            deriv = torch.ones_like(tape.pre[i])  # [N, S, out]: fc is linear
            changes.append(torch.einsum("nbo,no->nb", deriv, w.sum(2)) / layer.n_out)
            continue
        ones = torch.ones((1, n * layer.n_in, *layer.in_shape[1:]), dtype=w.dtype, device=w.device)
        total = _conv(ones, w, None, layer)  # sum_i dh_j/dx_i for every output unit j: [1, N*C, H, W]
        if layer.nonlinearity == "relu":
            per_unit = (tape.pre[i] > 0).to(w.dtype) * total
        else:
            per_unit = total.expand(tape.pre[i].shape[0], -1, -1, -1)
        changes.append(_to_features(per_unit, n).sum(2) / layer.n_units)
    return changes


def _population_images(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each network's batch ``images[index[n]]`` laid out as ``[B, N*C, H, W]``."""
    x = images[index]  # [N, B, C, H, W]
    n, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, n * c, h, w)


def _shared_images(images: torch.Tensor, n: int) -> torch.Tensor:
    """The same images for every network: ``[B, C, H, W]`` -> ``[B, N*C, H, W]``."""
    return images.repeat(1, n, 1, 1)


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
    keys = {s.cohort_key for s in specs}
    if len(keys) > 1:
        raise ValueError("all runs of one population must share architecture, batch size, epochs, task and "
                         "checkpoints; group them by RunSpec.cohort_key first")
    first = specs[0]
    if first.architecture not in CONV_ARCHITECTURES:
        raise ValueError(f"train_conv_population trains the architectures {', '.join(CONV_ARCHITECTURES)}; got "
                         f"{first.architecture!r} (MLPs train with virtual_lab.lab.train.train_population)")
    if first.paradigm not in PARADIGMS:
        raise ValueError(f"paradigm must be one of {', '.join(PARADIGMS)}; got {first.paradigm!r}")
    if len(first.layer_sizes) != 2:
        raise ValueError(f"for a {first.architecture!r} network layer_sizes is (n_inputs, n_outputs); got "
                         f"{first.layer_sizes} (the conv widths go in RunSpec.channels)")
    for spec in specs:
        name = get_rule(spec.rule).name
        if name not in CONV_RULES:
            raise ValueError(f"learning rule {name!r} has no convolutional version; rules for the "
                             f"{first.architecture!r} architecture: {', '.join(CONV_RULES)}")
        if first.paradigm == "contrastive":
            check_contrastive_rule(name)
    if first.paradigm == "contrastive":  # fc is the projection head: any width
        if task.name != first.task or task.n_features != first.layer_sizes[0]:
            raise ValueError(f"task {task.name!r} ({task.n_features} inputs) does not match the contrastive runs "
                             f"(task {first.task!r}, layer sizes {first.layer_sizes}: inputs, projection width)")
    elif task.name != first.task or task.n_features != first.layer_sizes[0] or task.n_classes != first.layer_sizes[-1]:
        raise ValueError(f"task {task.name!r} ({task.n_features} inputs, {task.n_classes} classes) does not match "
                         f"the runs (task {first.task!r}, layer sizes {first.layer_sizes})")


def _chunks(n_items: int, n_nets: int, layers: Sequence[ConvLayer]) -> list[slice]:
    per_item = n_nets * max(max(layer.n_units, int(np.prod(layer.in_shape))) for layer in layers)
    size = max(1, _CHUNK_FLOATS // per_item)
    return [slice(i, min(i + size, n_items)) for i in range(0, n_items, size)]


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
        If given, filled with wall-clock seconds: ``"total"`` and ``"record"`` (checkpoint recording).
    dtype : torch.dtype, default=torch.float32
        Compute dtype, ``torch.float32`` or ``torch.float64``, as in
        :func:`~virtual_lab.lab.train.train_population` (random draws are float32 in both; the recorded ground
        truth is float32, ``final_state`` of this dtype).

    Returns
    -------
    list of GroundTruth
        One per spec, in order. ``activations[layer]`` has shape (T, S, C*H*W) (fc: (T, S, out)),
        ``weights[layer]`` (T, C_out, C_in*k*k) (fc: (T, out, in)), ``activity_change[layer]`` (T, S), all on
        the unaugmented probes. Supervised runs record the cross-entropy on the training set (``train_loss``)
        and the probe accuracy of the logits (``test_accuracy``); contrastive runs the NT-Xent on the fixed
        evaluation pairs, identical for every network of the task
        (:func:`virtual_lab.lab.contrastive.evaluation_views`), and the nearest-class-centroid (cosine)
        accuracy of the representation feeding ``fc``, centroids from the unaugmented training set.

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
    first = specs[0]
    architecture = first.architecture
    channels = _resolve_channels(architecture, first.channels)
    input_shape = conv_input_shape(task.image_shape)
    layers = conv_layers(architecture, channels, input_shape, first.layer_sizes[-1])
    n_layers = len(layers)
    rules = [get_rule(s.rule) for s in specs]
    dev = torch.device(device)
    n_nets = len(specs)
    n_train = len(task.train_y)
    contrastive = first.paradigm == "contrastive"

    state = _PopulationState.create(specs, rules, [init_conv_parameters(layers, s.seed) for s in specs], n_train,
                                    dev, dtype)
    weights, biases, feedback, orders = state.weights, state.biases, state.feedback, state.orders
    optimizer, column = state.optimizer, state.column
    n_steps = orders.shape[1]
    schedule = checkpoint_schedule(n_steps, first.n_checkpoints, first.checkpoint_spacing)

    uses_w = _mask(rules, lambda r: r.feedback == "transpose", dev)
    all_transpose = bool(uses_w.all())
    is_sign = _mask(rules, lambda r: r.feedback == "sign_symmetry", dev)
    any_sign = bool(is_sign.any())

    def backward_kernel(l: int) -> torch.Tensor:
        if all_transpose:
            return weights[l]
        shape = (-1,) + (1,) * (weights[l].dim() - 1)
        back = torch.where(uses_w.view(shape), weights[l], feedback[l])
        if any_sign:
            scale = sign_symmetry_scale(layers[l].fan_in)
            back = torch.where(is_sign.view(shape), torch.sign(weights[l]) * scale, back)
        return back

    ia_index = torch.nonzero(_mask(rules, lambda r: r.feedback == "information_alignment", dev)).flatten()
    ia_optimizer = state.subset_optimizer(ia_index) if len(ia_index) else None
    if ia_optimizer is not None:
        ia_specs = [specs[i] for i in ia_index.tolist()]
        ia_coef = [column([getattr(s, name) for s in ia_specs]) for name in ("ia_alpha", "ia_beta", "ia_gamma")]
    kp_index = torch.nonzero(_mask(rules, lambda r: r.feedback == "kolen_pollack", dev)).flatten()
    kp_optimizer = state.subset_optimizer(kp_index) if len(kp_index) else None

    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    train_images = torch.as_tensor(task_images(task.train_x, task.image_shape, np_dtype), device=dev)
    train_y = torch.as_tensor(task.train_y, device=dev)
    probe_images = torch.as_tensor(task_images(task.probe_x, task.image_shape, np_dtype), device=dev)
    probe_y = torch.as_tensor(task.probe_y, device=dev)
    n_probe = len(probe_y)
    temperature = None
    if contrastive:
        train_flat = torch.as_tensor(np.asarray(task.train_x, dtype=np_dtype), device=dev)
        augment_generators = [augment_generator(s.seed) for s in specs]
        temperature = column([s.temperature for s in specs])
        # (2M, D): view 1, then view 2
        eval_flat = evaluation_views(task.train_x, task.image_shape, task.seed, dtype=dtype)
        eval_images = torch.as_tensor(task_images(eval_flat.numpy(), task.image_shape, np_dtype), device=dev)
        n_eval = eval_images.shape[0] // 2
    active = torch.ones(n_nets, dtype=torch.float32, device=dev)
    diverged_step = np.full(n_nets, -1, dtype=np.int64)

    n_t = len(schedule)
    rec_acts = [np.full((n_nets, n_t, n_probe, layer.n_units), np.nan, np.float32) for layer in layers]
    rec_weights = [np.full((n_nets, n_t, layer.n_out, layer.fan_in), np.nan, np.float32) for layer in layers]
    rec_change = [np.full((n_nets, n_t, n_probe), np.nan, np.float32) for _ in layers]
    rec_loss = np.full((n_nets, n_t), np.nan, np.float32)
    rec_accuracy = np.full((n_nets, n_t), np.nan, np.float32)

    def record(k: int) -> None:
        alive = active.bool().cpu().numpy()
        centroids = train_centroids() if contrastive else None
        correct = torch.zeros(n_nets, device=dev)
        for part in _chunks(n_probe, n_nets, layers):
            tape = _forward(architecture, layers, _shared_images(probe_images[part], n_nets), weights, biases)
            changes = _activity_change(layers, tape, weights)
            for l, layer in enumerate(layers):
                out = tape.outs[l] if layer.kind == "fc" else _to_features(tape.outs[l], n_nets)
                rec_acts[l][alive, k, part] = out.cpu().numpy()[alive]
                rec_change[l][alive, k, part] = changes[l].cpu().numpy()[alive]
            if contrastive:  # the representation feeding the projection head
                predicted = centroid_predict(centroids, tape.inputs[-1])
            else:
                predicted = tape.outs[-1].argmax(2)
            correct += (predicted == probe_y[part]).float().sum(1)
        for l in range(n_layers):
            rec_weights[l][alive, k] = weights[l].reshape(n_nets, layers[l].n_out, -1).cpu().numpy()[alive]
        if contrastive:
            rec_loss[alive, k] = evaluation_loss().cpu().numpy()[alive]
        else:
            total_loss = torch.zeros(n_nets, dtype=torch.float64, device=dev)
            for part in _chunks(n_train, n_nets, layers):
                logits = _forward(architecture, layers, _shared_images(train_images[part], n_nets), weights,
                                  biases).outs[-1]
                total_loss += _example_losses(logits, train_y[part].expand(n_nets, -1)).sum(1).double()
            rec_loss[alive, k] = (total_loss / n_train).float().cpu().numpy()[alive]
        rec_accuracy[alive, k] = (correct / n_probe).cpu().numpy()[alive]

    def train_centroids() -> torch.Tensor:
        """Class sums of the normalized representations (fc's input) of the unaugmented training set."""
        sums = torch.zeros(n_nets, task.n_classes, layers[-1].n_in, dtype=dtype, device=dev)
        for part in _chunks(n_train, n_nets, layers):
            features = _forward(architecture, layers, _shared_images(train_images[part], n_nets), weights,
                                biases).inputs[-1]
            sums += class_sums(features, train_y[part], task.n_classes)
        return sums

    def evaluation_loss() -> torch.Tensor:
        """NT-Xent of every network on the fixed evaluation pairs.

        Networks go in chunks (each needs its (2M)^2 similarities), each chunk's images in chunks as usual.
        """
        n_images = 2 * n_eval
        per_chunk = max(1, _CHUNK_FLOATS // max(n_images * n_images, n_images * layers[-1].n_out))
        losses = []
        for start in range(0, n_nets, per_chunk):
            nets = slice(start, min(start + per_chunk, n_nets))
            size = nets.stop - nets.start
            w, b = [p[nets] for p in weights], [p[nets] for p in biases]
            z = torch.cat([_forward(architecture, layers, _shared_images(eval_images[part], size), w, b).outs[-1]
                           for part in _chunks(n_images, size, layers)], 1)
            losses.append(nt_xent_loss(z[:, :n_eval], z[:, n_eval:], temperature[nets]))
        return torch.cat(losses)

    def ia_gradients(tape: _Tape, batch: int) -> list[torch.Tensor]:
        """Gradient of information alignment's local loss with respect to every B (W held fixed)."""
        alpha, beta, gamma = ia_coef
        grads = []
        k = len(ia_index)
        for l, layer in enumerate(layers):
            b = ia_optimizer.params[l]
            w = weights[l].index_select(0, ia_index)
            shape = (-1,) + (1,) * (b.dim() - 1)
            if layer.kind == "fc":
                x = tape.inputs[l].index_select(0, ia_index)
                y = torch.bmm(x, w.transpose(1, 2))
                amp = -torch.bmm(y.transpose(1, 2), x) / batch
                null = 2 * torch.bmm(y.transpose(1, 2), torch.bmm(y, b)) / batch
            else:
                x = tape.inputs[l].reshape(batch, n_nets, layer.n_in, *tape.inputs[l].shape[2:])
                x = x.index_select(1, ia_index).reshape(batch, k * layer.n_in, *tape.inputs[l].shape[2:])
                y = _conv(x, w, None, layer)
                amp = -_conv_weight_grad(x, y, layer, k) / batch
                back = _conv_input_grad(y, b, x.shape, layer)
                null = 2 * _conv_weight_grad(back, y, layer, k) / batch
            grads.append(alpha.view(shape) * amp + beta.view(shape) * null + gamma.view(shape) * 2 * b)
        return grads

    eye = None if contrastive else torch.eye(first.layer_sizes[-1], dtype=dtype, device=dev)
    with torch.no_grad():
        for step in _training_steps(n_steps, schedule, record, clock):
            idx = orders[:, step]
            if contrastive:  # both views in one pass: images [0, B) view 1, [B, 2B) view 2
                x, y = _population_views(train_flat[idx], task.image_shape, augment_generators), None
            else:
                x, y = _population_images(train_images, idx), train_y[idx]
            tape = _forward(architecture, layers, x, weights, biases)
            loss, _, error = _objective(tape.outs[-1], y, eye, temperature)
            active = _mark_diverged(loss, active, diverged_step, specs, step)
            batch = x.shape[0]
            grad_w, grad_b = _backward(architecture, layers, error, tape, backward_kernel)
            if ia_optimizer is not None:
                ia_optimizer.step(ia_gradients(tape, batch), active.index_select(0, ia_index))
                for l in range(n_layers):
                    feedback[l].index_copy_(0, ia_index, ia_optimizer.params[l])
            if kp_optimizer is not None:
                kp_optimizer.step([g.index_select(0, kp_index) for g in grad_w], active.index_select(0, kp_index))
                for l in range(n_layers):
                    feedback[l].index_copy_(0, kp_index, kp_optimizer.params[l])
            optimizer.step(grad_w + grad_b, active)
            if progress is not None:
                progress(n_nets)

    if final_state is not None:
        export_final_state(final_state, weights, biases, feedback, [])
    names = tuple(layer.name for layer in layers)
    shapes = _metadata_shapes(layers)
    if contrastive:  # the recorded layer whose output (flattened, or globally pooled) feeds the projection head
        representation = (layers[-2].name, "flatten") if architecture == "cnn" else (
            [n for n in names if n.endswith("_conv2")][-1], "global_average")
    results = []
    for i, spec in enumerate(specs):
        rule = rules[i]
        metadata = run_metadata(spec, rule, n_steps, int(diverged_step[i]))
        metadata.update(architecture=architecture, layer_sizes=",".join(map(str, spec.layer_sizes)),
                        channels=",".join(map(str, channels)),
                        nonlinearities=",".join(layer.nonlinearity for layer in layers), batch_norm=False, **shapes)
        if contrastive:
            metadata.update(temperature=float(spec.temperature), augment_seed=int(derive_seed(spec.seed, "augment")),
                            projection_width=int(layers[-1].n_out), representation_layer=representation[0],
                            representation_pooling=representation[1], n_eval_pairs=int(n_eval),
                            eval_seed=int(derive_seed(task.seed, "contrastive_eval")))
        if rule.feedback == "information_alignment":
            metadata.update(ia_alpha=float(spec.ia_alpha), ia_beta=float(spec.ia_beta), ia_gamma=float(spec.ia_gamma))
        results.append(GroundTruth(
            layer_names=names,
            depth_positions=depth_positions(n_layers),
            checkpoint_steps=schedule.copy(),
            activations={n: rec_acts[l][i] for l, n in enumerate(names)},
            weights={n: rec_weights[l][i] for l, n in enumerate(names)},
            activity_change={n: rec_change[l][i] for l, n in enumerate(names)},
            train_loss=rec_loss[i],
            test_accuracy=rec_accuracy[i],
            probe_stimuli=task.probe_images.astype(np.float32),
            probe_labels=task.probe_y.copy(),
            metadata=metadata,
        ))
    if timings is not None:
        timings["total"] = time.perf_counter() - t_start
        timings["record"] = clock["record"]
    return results
