"""Self-supervised contrastive learning (SimCLR-style) for the population engine.

Each training step shows a network two randomly augmented *views* of every image of its batch; the network's
last layer is a *projection head* whose outputs ``z`` are compared by the NT-Xent loss (normalized
temperature-scaled cross-entropy; Chen et al., ICML 2020): every one of the ``2B`` views must pick out its
partner among the other ``2B - 1`` views by cosine similarity. No label is used for training. The
representation a recording (and the accuracy read-out) looks at is the last *hidden* layer, the layer before
the projection head, as in SimCLR.

Everything here is batched over a population of ``N`` networks (leading axis), and every network draws its
augmentations from its own ``torch.Generator`` (stream ``derive_seed(seed, "augment")``), so a network's
views do not depend on which other networks train beside it.

Rules. Contrastive training needs an error at the projection head, ``dNT-Xent/dz``, which every
backward-based rule carries to the hidden layers in its own way (backprop through ``W``, feedback alignment
and its variants through ``B``, sign symmetry through ``sign(W)``, direct feedback alignment through fixed
random projections): :data:`CONTRASTIVE_RULES`. ``hebbian`` and ``node_perturbation`` are excluded: the
Hebbian rule's hidden layers ignore the objective and its readout is the delta rule for softmax class units
(it needs class targets), and node perturbation correlates a per-example reward change with per-example noise,
whereas the NT-Xent loss of an example depends on every other view of the batch (a perturbation of one view
changes every anchor's loss), so neither rule is defined for this objective.

References
----------
Chen, T., Kornblith, S., Norouzi, M. & Hinton, G. (2020). A simple framework for contrastive learning of
visual representations. ICML. https://doi.org/10.48550/arXiv.2002.05709
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from virtual_lab.lab.rules import CONTRASTIVE_RULES, get_rule, undefined_reason  # noqa: F401 (public here too)
from virtual_lab.seeding import derive_seed

#: Default NT-Xent temperature (SimCLR's CIFAR-10 setting).
TEMPERATURE = 0.5

#: Training images in the fixed evaluation pair set (fewer when the training set is smaller).
N_EVAL_PAIRS = 256

#: Uniform draws per view (crop scale, crop ratio, crop x, crop y, angle, shift x, shift y, brightness, contrast).
_N_UNIFORMS = 9

_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def check_contrastive_rule(rule: str) -> None:
    """Raise ``ValueError`` unless ``rule`` (a name or alias) is defined for the contrastive objective (its
    :attr:`~virtual_lab.lab.rules.Rule.paradigms`)."""
    rule_ = get_rule(rule)
    if "contrastive" not in rule_.paradigms:
        raise ValueError(undefined_reason(rule_.name, rule_.architectures[0], "contrastive"))


@dataclass(frozen=True)
class Augmentation:
    """Parameters of the random view transform (SimCLR-style, for small images).

    Attributes
    ----------
    crop_scale : tuple of float, default=(0.5, 1.0)
        Range of the crop's area as a fraction of the image (as ``RandomResizedCrop(scale=...)``).
    crop_ratio : tuple of float, default=(3/4, 4/3)
        Range of the crop's aspect ratio width/height, sampled log-uniformly.
    max_rotation_deg : float, default=15.0
        Rotation angle drawn from U(-max, max) degrees, counter-clockwise.
    max_translation : float, default=0.1
        Shift drawn from U(-max, max) as a fraction of the image width (x) and height (y).
    brightness : float, default=0.4
        Brightness factor drawn from U(1 - brightness, 1 + brightness), multiplies the image.
    contrast : float, default=0.4
        Contrast factor ``c`` drawn from U(1 - contrast, 1 + contrast): ``m + c (x - m)`` with ``m`` the image's
        (grey) mean, as torchvision's ``adjust_contrast``.
    noise_sd : float, default=0.0
        Standard deviation of additive Gaussian pixel noise (0 = none).
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotation_deg: float = 15.0
    max_translation: float = 0.1
    brightness: float = 0.4
    contrast: float = 0.4
    noise_sd: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1; got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high; got {self.crop_ratio}")
        for name in ("max_rotation_deg", "max_translation", "noise_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("brightness", "contrast"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1; got {getattr(self, name)}")


#: The default view transform.
AUGMENTATION = Augmentation()


@dataclass(frozen=True)
class ViewParameters:
    """Explicit parameters of every view, each a tensor of shape (N, V, B).

    Attributes
    ----------
    crop_width, crop_height : Tensor
        Crop size as a fraction of the image width and height, in (0, 1].
    crop_x, crop_y : Tensor
        Crop centre in normalized coordinates ([-1, 1], 0 = image centre, +x right, +y down).
    angle_deg : Tensor
        Counter-clockwise rotation in degrees.
    shift_x, shift_y : Tensor
        Translation as a fraction of the image width and height (+x right, +y down).
    brightness, contrast : Tensor
        Multiplicative brightness and contrast factors (1 = unchanged).
    """

    crop_width: torch.Tensor
    crop_height: torch.Tensor
    crop_x: torch.Tensor
    crop_y: torch.Tensor
    angle_deg: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor

    @classmethod
    def identity(cls, n_nets: int, n_views: int, batch_size: int) -> "ViewParameters":
        """Parameters that leave every image unchanged."""
        ones = torch.ones(n_nets, n_views, batch_size)
        zeros = torch.zeros(n_nets, n_views, batch_size)
        return cls(ones, ones, zeros, zeros, zeros, zeros, zeros, ones, ones)


def augment_generator(seed: int) -> torch.Generator:
    """The generator of one network's augmentations (stream ``derive_seed(seed, "augment")``)."""
    return torch.Generator().manual_seed(derive_seed(seed, "augment"))


def sample_view_parameters(generators: Sequence[torch.Generator], n_views: int, batch_size: int,
                           image_hw: tuple[int, int], augmentation: Augmentation = AUGMENTATION, *,
                           dtype: torch.dtype = torch.float32) -> ViewParameters:
    """Draw every view's transform, one generator per network.

    Each network draws one ``torch.rand((n_views, batch_size, 9))`` from its generator (the fixed draw order of
    the uniforms is crop scale, crop ratio, crop x, crop y, angle, shift x, shift y, brightness, contrast).
    The crop follows ``RandomResizedCrop``: area fraction ``s ~ U(scale)``, aspect ratio ``r`` log-uniform in
    ``ratio``, width ``sqrt(s r)`` and height ``sqrt(s / r)`` of the image's (in pixels), position uniform over
    the image. Where torchvision redraws a crop that does not fit (and falls back to a centre crop), the crop's
    sides are clipped to the image here, so every view costs one draw. The uniforms are drawn in float32
    whatever ``dtype`` (the stream does not depend on it) and cast to ``dtype``, in which the parameters are
    computed.

    Returns
    -------
    ViewParameters
        Tensors of shape (N, n_views, batch_size) of ``dtype``, on the CPU.
    """
    u = torch.stack([torch.rand((n_views, batch_size, _N_UNIFORMS), generator=g) for g in generators]).to(dtype)
    aug = augmentation
    height, width = image_hw
    scale = aug.crop_scale[0] + (aug.crop_scale[1] - aug.crop_scale[0]) * u[..., 0]
    log_lo, log_hi = math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    crop_width = torch.sqrt(scale * ratio * height / width).clamp(max=1.0)
    crop_height = torch.sqrt(scale / ratio * width / height).clamp(max=1.0)

    def symmetric(v: torch.Tensor, bound: float) -> torch.Tensor:
        return (2 * v - 1) * bound

    return ViewParameters(
        crop_width=crop_width,
        crop_height=crop_height,
        crop_x=(1 - crop_width) * (2 * u[..., 2] - 1),
        crop_y=(1 - crop_height) * (2 * u[..., 3] - 1),
        angle_deg=symmetric(u[..., 4], aug.max_rotation_deg),
        shift_x=symmetric(u[..., 5], aug.max_translation),
        shift_y=symmetric(u[..., 6], aug.max_translation),
        brightness=1 + symmetric(u[..., 7], aug.brightness),
        contrast=1 + symmetric(u[..., 8], aug.contrast),
    )


def _affine_theta(params: ViewParameters, height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrices (..., 2, 3): output -> input in normalized coordinates.

    Output pixel ``p`` shows the crop at ``R^-1 (p - t)`` (rotation in pixel space, so non-square images rotate
    without shearing), and crop coordinate ``q`` lies at ``S q + c`` in the input.
    """
    angle = torch.deg2rad(params.angle_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width
    # inverse of a counter-clockwise rotation in y-down pixel coordinates, conjugated into normalized coords
    r00, r01, r10, r11 = cos, -sin * aspect, sin / aspect, cos
    sx, sy = params.crop_width, params.crop_height
    l00, l01, l10, l11 = sx * r00, sx * r01, sy * r10, sy * r11
    tx, ty = 2 * params.shift_x, 2 * params.shift_y
    o0 = params.crop_x - (l00 * tx + l01 * ty)
    o1 = params.crop_y - (l10 * tx + l11 * ty)
    return torch.stack([torch.stack([l00, l01, o0], -1), torch.stack([l10, l11, o1], -1)], -2)


def apply_view_parameters(images: torch.Tensor, params: ViewParameters,
                          noise: torch.Tensor | None = None) -> torch.Tensor:
    """Render every view of every image with explicit parameters.

    Geometry (crop, rotation, translation) is one bilinear ``grid_sample`` (``align_corners=False``, zeros
    outside the image, as torchvision's ``fill=0``); then brightness ``x b``, then contrast ``m + c (x - m)``
    around each view's grey mean ``m``, then additive ``noise``. Values are not clipped (torchvision clips
    float images to [0, 1]), so stimuli of any range, e.g. standardized synthetic tasks, stay linear.

    Parameters
    ----------
    images : Tensor, shape (N, B, H, W) or (N, B, C, H, W)
    params : ViewParameters
        Tensors of shape (N, V, B).
    noise : Tensor, shape (N, V, B, ...) like the output, optional
        Added last.

    Returns
    -------
    Tensor, shape (N, V, B, H, W) or (N, V, B, C, H, W)
    """
    greyscale = images.dim() == 4
    if images.dim() not in (4, 5):
        raise ValueError(f"images must have shape (N, B, H, W) or (N, B, C, H, W); got {tuple(images.shape)}")
    x = images.unsqueeze(2) if greyscale else images  # (N, B, C, H, W)
    n_nets, batch, channels, height, width = x.shape
    n_views = params.crop_width.shape[1]
    dev = images.device
    theta = _affine_theta(params, height, width).to(dev, images.dtype).reshape(-1, 2, 3)
    source = x.unsqueeze(1).expand(n_nets, n_views, batch, channels, height, width)
    source = source.reshape(-1, channels, height, width)
    grid = torch.nn.functional.affine_grid(theta, [source.shape[0], channels, height, width], align_corners=False)
    out = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.view(n_nets, n_views, batch, channels, height, width)
    factor_shape = (n_nets, n_views, batch, 1, 1, 1)
    out = out * params.brightness.to(dev, images.dtype).view(factor_shape)
    if channels == 3:
        grey = torch.tensordot(out, torch.tensor(_GREY_WEIGHTS, dtype=out.dtype, device=dev), dims=([3], [0]))
        mean = grey.mean((-2, -1)).view(factor_shape)
    else:
        mean = out.mean((-3, -2, -1)).view(factor_shape)
    contrast = params.contrast.to(dev, images.dtype).view(factor_shape)
    out = mean + contrast * (out - mean)
    if greyscale:
        out = out.squeeze(3)
    if noise is not None:
        out = out + noise
    return out


def augment(images: torch.Tensor, generators: Sequence[torch.Generator], *, n_views: int = 2,
            augmentation: Augmentation = AUGMENTATION) -> torch.Tensor:
    """Random SimCLR-style views of every network's images, batched over networks.

    Per view: a random resized crop (``RandomResizedCrop``-like), a small rotation and translation, brightness
    and contrast jitter and, when ``augmentation.noise_sd > 0``, Gaussian pixel noise, all rendered in one
    ``affine_grid``/``grid_sample`` call for the whole population (per-image torchvision calls on ``N * 2B``
    images every step would dominate training). Network ``i`` draws only from ``generators[i]``: first its
    transform parameters (:func:`sample_view_parameters`), then its noise ``torch.randn((n_views, B, ...))``.
    Views of float64 images are computed in float64 (from the same float32 draws), of any other images in
    float32.

    Parameters
    ----------
    images : Tensor, shape (N, B, H, W) or (N, B, C, H, W)
        Greyscale or channels-first images of each network's batch.
    generators : sequence of torch.Generator, length N
        One per network (see :func:`augment_generator`).
    n_views : int, default=2
    augmentation : Augmentation, default=AUGMENTATION

    Returns
    -------
    Tensor, shape (N, n_views, B, H, W) or (N, n_views, B, C, H, W)

    Examples
    --------
    >>> views = augment(torch.rand(3, 5, 8, 8), [augment_generator(s) for s in range(3)])
    >>> tuple(views.shape)
    (3, 2, 5, 8, 8)
    """
    if images.dim() not in (4, 5):
        raise ValueError(f"images must have shape (N, B, H, W) or (N, B, C, H, W); got {tuple(images.shape)}")
    if len(generators) != images.shape[0]:
        raise ValueError(f"need one generator per network: {images.shape[0]} networks, {len(generators)} generators")
    batch = images.shape[1]
    # the views of float64 images are computed in float64 from the same (float32) draws
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    params = sample_view_parameters(generators, n_views, batch, tuple(images.shape[-2:]), augmentation, dtype=dtype)
    noise = None
    if augmentation.noise_sd > 0:
        shape = (n_views, batch) + tuple(images.shape[2:])
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(images.device, images.dtype)
        noise = noise * augmentation.noise_sd
    return apply_view_parameters(images, params, noise)


def _to_images(x: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Flat stimuli (N, B, D) -> (N, B, H, W) or channels-first (N, B, C, H, W)."""
    if len(image_shape) == 2:
        return x.reshape(*x.shape[:2], *image_shape)
    if len(image_shape) == 3:  # tasks store colour images channels-last
        return x.reshape(*x.shape[:2], *image_shape).permute(0, 1, 4, 2, 3)
    raise ValueError(f"contrastive views need image stimuli (H, W) or (H, W, C); the task's stimuli have shape "
                     f"{tuple(image_shape)}")


def _to_flat(views: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    """Views (N, V, B, ...) -> flat (N, V * B, D) in the task's layout."""
    if len(image_shape) == 3:
        views = views.permute(0, 1, 2, 4, 5, 3)
    return views.reshape(views.shape[0], views.shape[1] * views.shape[2], -1)


def make_views(x: torch.Tensor, image_shape: tuple[int, ...], generators: Sequence[torch.Generator], *,
               augmentation: Augmentation = AUGMENTATION) -> torch.Tensor:
    """Two augmented views of flat stimuli, ready for a network: the first ``B`` rows view 1, the next view 2.

    Parameters
    ----------
    x : Tensor, shape (N, B, D)
        Flat stimuli with ``D = prod(image_shape)``.
    image_shape : tuple of int
        ``(H, W)``, or ``(H, W, C)`` for channels-last colour images (:attr:`Task.image_shape`).
    generators : sequence of torch.Generator, length N

    Returns
    -------
    Tensor, shape (N, 2B, D)
    """
    views = augment(_to_images(x, tuple(image_shape)), generators, n_views=2, augmentation=augmentation)
    return _to_flat(views, tuple(image_shape))


def evaluation_views(train_x: np.ndarray | torch.Tensor, image_shape: tuple[int, ...], task_seed: int, *,
                     n_pairs: int = N_EVAL_PAIRS, augmentation: Augmentation = AUGMENTATION,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed evaluation pair set: two augmented views of a fixed subset of training images.

    Drawn from one generator seeded by the task seed (stream ``derive_seed(task_seed, "contrastive_eval")``):
    first the subset (a permutation's first ``n_pairs``), then the views, so every network of a task is
    evaluated on the same pairs. The views are computed in ``dtype`` (float32 or float64) from the same draws.

    Returns
    -------
    Tensor, shape (2 * min(n_pairs, n_train), D), of ``dtype``
        First half view 1, second half view 2 (as :func:`make_views`).
    """
    train_x = torch.as_tensor(train_x).to(dtype)
    generator = torch.Generator().manual_seed(derive_seed(task_seed, "contrastive_eval"))
    chosen = torch.randperm(len(train_x), generator=generator)[: min(n_pairs, len(train_x))]
    return make_views(train_x[chosen].unsqueeze(0), image_shape, [generator], augmentation=augmentation)[0]


def _nt_xent_log_probabilities(z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor):
    """Shared part of the NT-Xent loss: normalized projections, norms, log-softmax over k != i, positives."""
    if z1.shape != z2.shape or z1.dim() != 3:
        raise ValueError(f"z1 and z2 must both have shape (N, B, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    batch = z1.shape[1]
    z = torch.cat([z1, z2], 1)
    norm = z.norm(dim=2, keepdim=True).clamp_min(1e-12)
    u = z / norm
    inv_tau = (1.0 / torch.as_tensor(temperature, dtype=z.dtype, device=z.device)).reshape(-1, 1, 1)
    sim = torch.bmm(u, u.transpose(1, 2)) * inv_tau
    n = 2 * batch
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(batch, n), torch.arange(batch)]).to(z.device)
    return torch.log_softmax(sim, dim=2), positive, u, norm, inv_tau


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor = TEMPERATURE
                 ) -> torch.Tensor:
    """NT-Xent loss only (no gradient), per network; see :func:`nt_xent`.

    Returns
    -------
    Tensor, shape (N,)
    """
    log_p, positive, _, _, _ = _nt_xent_log_probabilities(z1, z2, temperature)
    n = len(positive)
    return -log_p.gather(2, positive.view(1, n, 1).expand(log_p.shape[0], n, 1)).squeeze(2).mean(1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor = TEMPERATURE
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NT-Xent loss of SimCLR and its analytic gradient, per network.

    With ``u`` the L2-normalized projections of all ``2B`` views and ``s_ik = u_i . u_k / tau``, anchor ``i``'s
    loss is ``-s_{i,p(i)} + log sum_{k != i} exp(s_ik)`` (``p(i)``: the other view of the same image), and the
    loss is the mean over the ``2B`` anchors. Its gradient with respect to ``s`` is
    ``G = (P - Y) / 2B`` (``P``: softmax over ``k != i``, ``Y``: positives), hence
    ``dL/du = (G + G^T) u / tau`` and ``dL/dz = (dL/du - u (u . dL/du)) / ||z||``.

    Parameters
    ----------
    z1, z2 : Tensor, shape (N, B, D)
        Projections of view 1 and view 2 of the same B images.
    temperature : float or Tensor of shape (N,), default=TEMPERATURE

    Returns
    -------
    loss : Tensor, shape (N,)
    grad_z1, grad_z2 : Tensor, shape (N, B, D)

    References
    ----------
    Chen et al. (2020), eq. (1); https://doi.org/10.48550/arXiv.2002.05709

    Examples
    --------
    Two orthogonal images seen identically in both views: each anchor's loss is ``log(1 + 2 exp(-1 / tau))``.

    >>> z = torch.eye(2).unsqueeze(0)
    >>> loss, _, _ = nt_xent(z, z, 0.5)
    >>> round(float(loss[0]), 6) == round(math.log(1 + 2 * math.exp(-2)), 6)
    True
    """
    log_p, positive, u, norm, inv_tau = _nt_xent_log_probabilities(z1, z2, temperature)
    n_nets, n, _ = log_p.shape
    batch = n // 2
    loss = -log_p.gather(2, positive.view(1, n, 1).expand(n_nets, n, 1)).squeeze(2).mean(1)
    targets = torch.zeros((n, n), dtype=log_p.dtype, device=log_p.device)
    targets[torch.arange(n, device=log_p.device), positive] = 1.0
    g = (torch.exp(log_p) - targets) / n  # exp(log_p) is zero on the diagonal
    grad_u = torch.bmm(g + g.transpose(1, 2), u) * inv_tau
    grad_z = (grad_u - u * (u * grad_u).sum(2, keepdim=True)) / norm
    return loss, grad_z[:, :batch], grad_z[:, batch:]


def class_sums(representations: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sum of the unit-normalized representations of each class (accumulate over chunks, then normalize).

    Parameters
    ----------
    representations : Tensor, shape (N, n, D)
    labels : Tensor of int64, shape (n,)
    n_classes : int

    Returns
    -------
    Tensor, shape (N, n_classes, D)
    """
    u = torch.nn.functional.normalize(representations, dim=2)
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(u.dtype)  # (n, C)
    return torch.einsum("nc,bnd->bcd", onehot, u)


def centroid_predict(centroids: torch.Tensor, representations: torch.Tensor) -> torch.Tensor:
    """Class of the centroid with the highest cosine similarity to each representation.

    Parameters
    ----------
    centroids : Tensor, shape (N, C, D)
        Unnormalized class directions (e.g. :func:`class_sums`).
    representations : Tensor, shape (N, S, D)

    Returns
    -------
    Tensor of int64, shape (N, S)
    """
    c = torch.nn.functional.normalize(centroids, dim=2)
    u = torch.nn.functional.normalize(representations, dim=2)
    return torch.bmm(u, c.transpose(1, 2)).argmax(2)


def centroid_accuracy(train_representations: torch.Tensor, train_labels: torch.Tensor,
                      probe_representations: torch.Tensor, probe_labels: torch.Tensor,
                      n_classes: int | None = None) -> torch.Tensor:
    """Nearest-class-centroid (cosine) accuracy of a label-free representation, per network.

    Each class centroid is the mean of the class's unit-normalized training representations; a probe is
    assigned the class whose centroid has the highest cosine similarity with its representation. Labels are
    used only here, to read the representation out, never for training it.

    Parameters
    ----------
    train_representations : Tensor, shape (N, n_train, D)
    train_labels : Tensor of int64, shape (n_train,)
    probe_representations : Tensor, shape (N, S, D)
    probe_labels : Tensor of int64, shape (S,)
    n_classes : int, optional
        Default: ``max(label) + 1``.

    Returns
    -------
    Tensor, shape (N,)
        Fraction of probes classified correctly.

    Examples
    --------
    >>> train = torch.tensor([[[1., 0.], [2., 0.1], [0., 1.]]])
    >>> probe = torch.tensor([[[0.1, 3.], [5., 1.]]])
    >>> centroid_accuracy(train, torch.tensor([0, 0, 1]), probe, torch.tensor([1, 1])).tolist()
    [0.5]
    """
    train_labels = torch.as_tensor(train_labels, device=train_representations.device)
    probe_labels = torch.as_tensor(probe_labels, device=probe_representations.device)
    if n_classes is None:
        n_classes = int(max(int(train_labels.max()), int(probe_labels.max()))) + 1
    centroids = class_sums(train_representations, train_labels, n_classes)
    predicted = centroid_predict(centroids, probe_representations)
    return (predicted == probe_labels).float().mean(1)
