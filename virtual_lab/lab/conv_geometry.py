"""Layer geometry of the convolutional architectures (numpy only, no torch).

What each weight layer of the small CNN and the narrow ResNet is -- channels, kernel, stride, padding, input
and output shapes, in recorded order -- and the one computation on a layer's kernels that needs no training
stack: ``conv(1, W)``, the convolution of an all-ones input (:func:`conv_input_sums`, from the fixed geometry of
:func:`input_coverage`). The engine (:mod:`virtual_lab.lab.conv`), the session-size estimate of a sweep and the
rig (which recomputes the activity change over kept units) all read the geometry from here, so the rig never
needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

CONV_ARCHITECTURES = ("cnn", "resnet")

#: Channels used when a spec leaves ``channels`` empty.
DEFAULT_CHANNELS = {"cnn": (16, 32, 32), "resnet": (16, 32)}

KERNEL_SIZE = 3


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


def resolve_channels(architecture: str, channels: Sequence[int]) -> tuple[int, ...]:
    """The channels of an architecture as integers (:data:`DEFAULT_CHANNELS` when empty), checked."""
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
    channels = resolve_channels(architecture, channels)
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
    channels = resolve_channels(architecture, channels)
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


def input_coverage(layer: ConvLayer) -> tuple[np.ndarray, np.ndarray]:
    """Which kernel offsets of a conv layer read a pixel inside the image, along each spatial axis.

    ``conv(1, W)_{o,y,x} = sum_{a,b} (sum_c W_{o,c,a,b}) rows[a, y] cols[b, x]``: an output unit at the edge
    sees fewer inputs through the zero padding. The geometry depends on the layer only, never on its weights.

    Parameters
    ----------
    layer : ConvLayer
        A ``"conv"`` layer.

    Returns
    -------
    rows : ndarray, shape (k, H_out), float64
        1 where kernel row ``a`` of output row ``y`` reads a row inside the image, else 0.
    cols : ndarray, shape (k, W_out), float64
        The same for kernel column ``b`` and output column ``x``.

    Examples
    --------
    >>> layer = conv_layers("cnn", (1,), (1, 3, 3), 2)[0]
    >>> input_coverage(layer)[0]
    array([[0., 1., 1.],
           [1., 1., 1.],
           [1., 1., 0.]])
    """
    if layer.kind != "conv":
        raise ValueError(f"input_coverage needs a conv layer; {layer.name!r} is {layer.kind!r}")
    k = layer.kernel_size

    def inside(n_out: int, n_in: int) -> np.ndarray:
        index = np.arange(n_out)[None, :] * layer.stride + np.arange(k)[:, None] - layer.padding
        return ((index >= 0) & (index < n_in)).astype(np.float64)

    return inside(layer.out_shape[1], layer.in_shape[1]), inside(layer.out_shape[2], layer.in_shape[2])


def conv_input_sums(layer: ConvLayer, weights: np.ndarray) -> np.ndarray:
    """``sum_i dh_j/dx_i`` of every output unit of a conv layer: ``conv(1, W)`` without bias.

    The convolution of an all-ones input with each kernel; units at the edges see fewer inputs through the
    zero padding. Summed in float64 and returned as float32 (torch's float32 ``conv2d`` of the same input
    agrees to float32 rounding).

    Parameters
    ----------
    layer : ConvLayer
        A ``"conv"`` layer.
    weights : ndarray, shape (T, C_out, C_in * k * k) or (T, C_out, C_in, k, k)
        The layer's kernels at ``T`` checkpoints (as sessions store them).

    Returns
    -------
    ndarray, shape (T, C_out * H_out * W_out), float32
        Units flattened channel-major, as the layer's recorded outputs.

    Examples
    --------
    >>> layer = conv_layers("cnn", (1,), (1, 3, 3), 2)[0]
    >>> conv_input_sums(layer, np.ones((1, 1, 9))).reshape(3, 3)
    array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]], dtype=float32)
    """
    if layer.kind != "conv":
        raise ValueError(f"conv_input_sums needs a conv layer; {layer.name!r} is {layer.kind!r}")
    k = layer.kernel_size
    weights = np.asarray(weights)
    kernels = weights.reshape(len(weights), layer.n_out, layer.n_in, k, k).sum(axis=2, dtype=np.float64)
    sums = np.einsum("toab,ay,bx->toyx", kernels, *input_coverage(layer))
    return sums.reshape(len(weights), -1).astype(np.float32)
