"""Tasks: training data plus the fixed probe set shown at every checkpoint.

The default task is scikit-learn's bundled 8x8 ``digits`` (1,797 images, 10 classes, offline). A task splits
its data once, from its own seed, into a training set and a held-out *probe set*: the stimuli presented at
every checkpoint (the "stimulus presentations" of a recording session). Accuracy is measured on the probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("digits", "gaussian_clusters")


@dataclass(frozen=True, eq=False)
class Task:
    """A supervised classification task.

    Attributes
    ----------
    name : str
    train_x : ndarray of float32, shape (n_train, n_features)
    train_y : ndarray of int64, shape (n_train,)
    probe_x : ndarray of float32, shape (n_probe, n_features)
    probe_y : ndarray of int64, shape (n_probe,)
    image_shape : tuple of int
        Shape of one stimulus as an image (for the NWB probe-stimulus series).
    n_classes : int
    seed : int
        Seed of the train/probe split (and of the data, for synthetic tasks).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    probe_x: np.ndarray
    probe_y: np.ndarray
    image_shape: tuple[int, ...]
    n_classes: int
    seed: int

    @property
    def n_features(self) -> int:
        return self.train_x.shape[1]

    @property
    def probe_images(self) -> np.ndarray:
        """Probe stimuli as images, shape (n_probe, *image_shape)."""
        return self.probe_x.reshape(len(self.probe_x), *self.image_shape)


def _split(x: np.ndarray, y: np.ndarray, n_probe: int, seed: int) -> tuple[np.ndarray, ...]:
    """Class-balanced held-out probe set of ``n_probe`` stimuli, the rest for training."""
    if not 0 < n_probe < len(y):
        raise ValueError(f"n_probe must be between 1 and {len(y) - 1}, got {n_probe}")
    rng = np.random.default_rng((seed, 17))
    classes = np.unique(y)
    per_class = np.full(len(classes), n_probe // len(classes))
    per_class[: n_probe % len(classes)] += 1
    probe = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, per_class)])
    probe = np.sort(probe)
    train = np.setdiff1d(np.arange(len(y)), probe)
    return x[train], y[train], x[probe], y[probe]


def load_digits_task(n_probe: int = 200, seed: int = 0) -> Task:
    """scikit-learn's 8x8 digits, scaled to [0, 1], with a class-balanced probe set.

    Parameters
    ----------
    n_probe : int, default=200
        Held-out probe stimuli.
    seed : int, default=0
        Seed of the probe/train split.

    Returns
    -------
    Task
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    train_x, train_y, probe_x, probe_y = _split(x, y, n_probe, seed)
    return Task("digits", train_x, train_y, probe_x, probe_y, (8, 8), 10, seed)


def make_gaussian_clusters_task(n_probe: int = 200, seed: int = 0, n_classes: int = 10, n_features: int = 64,
                                n_per_class: int = 180, separation: float = 1.5) -> Task:
    """Synthetic task: isotropic Gaussian clusters around random class means.

    Parameters
    ----------
    n_probe : int, default=200
    seed : int, default=0
        Seed of the data and of the split.
    n_classes, n_features, n_per_class : int
    separation : float, default=1.5
        Standard deviation of the class means (the noise has unit variance).

    Returns
    -------
    Task
    """
    rng = np.random.default_rng((seed, 23))
    means = rng.normal(0, separation, (n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (means[y] + rng.normal(0, 1, (len(y), n_features))).astype(np.float32)
    train_x, train_y, probe_x, probe_y = _split(x, y.astype(np.int64), n_probe, seed)
    side = int(np.sqrt(n_features))
    shape = (side, side) if side * side == n_features else (n_features,)
    return Task("gaussian_clusters", train_x, train_y, probe_x, probe_y, shape, n_classes, seed)


def load_task(name: str, n_probe: int = 200, seed: int = 0) -> Task:
    """Load a task by name (one of :data:`TASKS`)."""
    if name == "digits":
        return load_digits_task(n_probe, seed)
    if name == "gaussian_clusters":
        return make_gaussian_clusters_task(n_probe, seed)
    raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
