"""The batched network pass of a population of convolutional networks: grouped convolutions, the forward
pass, the hand-written backward pass and the exact layer-wise activity change.

The architectures, what each layer records and how every rule's error reaches a layer's input are described in
:mod:`virtual_lab.lab.conv` (the engine that trains with these); the layer plan is
:func:`virtual_lab.lab.conv_geometry.conv_layers`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from virtual_lab.lab.conv_geometry import ConvLayer, input_coverage

# ------------------------------------------------------------------------------------ batched primitives
# Conv activations of a population: [B, N*C, H, W]; conv parameters [N, C_out, C_in, k, k]; fc inputs [N, B, F].


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: ConvLayer) -> torch.Tensor:
    """Every network's convolution of its own input, ``x`` ``[B, N*C_in, H, W]``, or of one input ``[B, C_in, H,
    W]`` shared by all (a dense convolution with ``N*C_out`` output channels: the same sums, no copies)."""
    n = weight.shape[0]
    groups = n if x.shape[1] == n * layer.n_in else 1
    if groups == 1 and x.shape[1] != layer.n_in:
        raise ValueError(f"{layer.name}: input of {x.shape[1]} channels for {n} networks of {layer.n_in} channels")
    return F.conv2d(x, weight.reshape(n * layer.n_out, *weight.shape[2:]),
                    None if bias is None else bias.reshape(-1), layer.stride, layer.padding, groups=groups)


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
             biases: list[torch.Tensor], keep_pre: bool = True) -> _Tape:
    """Batched forward pass of ``N`` networks on ``x`` ``[B, N*C, H, W]``, or on images ``[B, C, H, W]`` that every
    network sees (:func:`_shared_images`; then ``tape.inputs[0]`` is that shared tensor).

    With ``keep_pre=False`` (a pass that only reads outputs, no backward pass) every ReLU and shortcut sum works
    in place on the convolution's fresh output and ``tape.pre`` is left empty (``None``): half the memory traffic.
    """
    n = weights[0].shape[0]
    index = {layer.name: i for i, layer in enumerate(layers)}
    tape = _Tape([None] * len(layers), [None] * len(layers), [None] * len(layers))

    def apply(name: str, a: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        i = index[name]
        h = _conv(a, weights[i], biases[i], layers[i])
        if skip is not None:
            h = h + skip if keep_pre else h.add_(skip)
        if layers[i].nonlinearity != "relu":
            y = h
        else:
            y = torch.relu(h) if keep_pre else h.relu_()
        tape.inputs[i], tape.pre[i], tape.outs[i] = a, h if keep_pre else None, y
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
    tape.inputs[-1], tape.pre[-1], tape.outs[-1] = features, logits if keep_pre else None, logits
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


@functools.lru_cache(maxsize=64)
def _coverage(layer: ConvLayer, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv layer's fixed :func:`~virtual_lab.lab.conv_geometry.input_coverage` as tensors (made once)."""
    return tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in input_coverage(layer))


def _input_sums(layers: Sequence[ConvLayer], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """``sum_i dh_j/dx_i`` of every output unit ``j`` of every layer, ``[N, n_units]`` each (units channel-major).

    A conv layer's is ``conv(1, W)`` without bias, formed from the kernels summed over input channels and the
    layer's fixed geometry (:func:`~virtual_lab.lab.conv_geometry.input_coverage`: which offsets read inside the
    zero padding); ``fc``'s the row sums of ``W``. They depend on the weights only, so a checkpoint forms them
    once for all its chunks of probes.
    """
    sums = []
    for layer, w in zip(layers, weights):
        if layer.kind == "fc":
            sums.append(w.sum(2))
            continue
        rows, cols = _coverage(layer, w.dtype, w.device)
        sums.append(torch.einsum("noab,ay,bx->noyx", w.sum(2), rows, cols).reshape(w.shape[0], -1))
    return sums


def _activity_change(layers: Sequence[ConvLayer], tape: _Tape, sums: list[torch.Tensor]) -> list[torch.Tensor]:
    """Exact layer-wise activity change of every layer, ``[N, S]`` each (see the module docstring).

    ``sums`` is :func:`_input_sums` of the weights of the pass ``tape`` records (it reads ``tape.outs`` only, so
    the pass may be one with ``keep_pre=False``). A ReLU layer's ``relu'(h)`` is
    the sign of its output ``relu(h)`` -- 1 where ``h > 0``, 0 where ``h <= 0`` or NaN, as ``(h > 0)`` -- in one
    pass that is already of the floating dtype; a linear layer's change is the same for every example.
    """
    changes = []
    for i, layer in enumerate(layers):
        total = sums[i]  # [N, n_units]
        n = total.shape[0]
        batch = tape.outs[i].shape[1 if layer.kind == "fc" else 0]
        if layer.nonlinearity == "relu":
            slopes = torch.sign(tape.outs[i]).view(batch, n, -1)  # [S, N, n_units]
            change = slopes.mul_(total).sum(2).t()
        else:
            change = total.sum(1, keepdim=True).expand(n, batch)
        changes.append(change / layer.n_units)
    return changes


def _population_images(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each network's batch ``images[index[n]]`` laid out as ``[B, N*C, H, W]``."""
    x = images[index]  # [N, B, C, H, W]
    n, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, n * c, h, w)


def _shared_images(images: torch.Tensor, n: int) -> torch.Tensor:
    """The same images ``[B, C, H, W]`` for every network: the first layer convolves them once for all ``n``
    networks (:func:`_conv`'s shared input), so they are passed as they are, not repeated ``n`` times."""
    return images
