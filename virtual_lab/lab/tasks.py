"""Tasks: training data plus the fixed probe set shown at every checkpoint.

The default task is scikit-learn's bundled 8x8 ``digits`` (1,797 images, 10 classes, offline); synthetic
tasks are generated from their seed: ``gaussian_clusters`` (isotropic clusters around random class means) and
``teacher`` (labels given by a fixed random teacher network, the classic student-teacher setting). A task
splits its data once, from its own seed, into a training set and a held-out *probe set*: the stimuli
presented at every checkpoint (the "stimulus presentations" of a recording session). Accuracy is measured
on the probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virtual_lab.validation import check_choice

TASKS = ("digits", "gaussian_clusters", "teacher", "mnist", "fashion_mnist", "cifar10")

#: (n_features, n_classes) of every task, known without loading its data.
TASK_DIMENSIONS = {"digits": (64, 10), "gaussian_clusters": (64, 10), "teacher": (64, 10), "mnist": (784, 10),
                   "fashion_mnist": (784, 10), "cifar10": (3072, 10)}

#: Image datasets read from torchvision's on-disk layout under a local root: folder, image shape.
TORCHVISION_TASKS = {"mnist": ("MNIST", (28, 28)), "fashion_mnist": ("FashionMNIST", (28, 28)),
                     "cifar10": ("cifar-10-batches-py", (32, 32, 3))}

#: Environment variable naming the local data root of the torchvision tasks.
DATA_ROOT_VARIABLE = "VIRTUAL_LAB_DATA"

#: Training examples whose loss every checkpoint records by default (``RunSpec.eval_subset``, ``[training]
#: eval_subset``; the subset itself: :func:`virtual_lab.lab.spec.eval_subset_indices`). 256 of digits' 1,597:
#: on 16 MLPs x 11 checkpoints the log10 loss stayed within 0.13 of the whole set's (median 0.03 at the end,
#: rank correlation of final losses 0.985), and a checkpoint of the benchmark's MLP population costs 1.7
#: training steps instead of 4-8.
EVAL_SUBSET = 256


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


def make_teacher_task(n_probe: int = 200, seed: int = 0, n_features: int = 64, n_classes: int = 10,
                      n_hidden: int = 32, n_samples: int = 2000) -> Task:
    """Synthetic task: Gaussian inputs labelled by a fixed random teacher network.

    The teacher is a one-hidden-layer tanh network with Gaussian weights (variance 1/fan-in); each class
    score is standardized over the samples before the argmax, so classes are roughly balanced.

    Parameters
    ----------
    n_probe : int, default=200
    seed : int, default=0
        Seed of the teacher, the inputs and the split.
    n_features, n_classes, n_hidden, n_samples : int

    Returns
    -------
    Task
        Inputs of shape (n_samples - n_probe, n_features) for training; stimuli shown as 8x8 images when
        ``n_features`` is 64.

    Examples
    --------
    >>> task = make_teacher_task(n_probe=50, seed=1, n_samples=500)
    >>> task.train_x.shape, task.n_classes
    ((450, 64), 10)
    """
    rng = np.random.default_rng((seed, 29))
    w1 = rng.normal(0, 1 / np.sqrt(n_features), (n_features, n_hidden))
    w2 = rng.normal(0, 1 / np.sqrt(n_hidden), (n_hidden, n_classes))
    x = rng.normal(0, 1, (n_samples, n_features))
    scores = np.tanh(x @ w1) @ w2
    scores = (scores - scores.mean(0)) / scores.std(0)
    y = scores.argmax(1).astype(np.int64)
    train_x, train_y, probe_x, probe_y = _split(x.astype(np.float32), y, n_probe, seed)
    side = int(np.sqrt(n_features))
    shape = (side, side) if side * side == n_features else (n_features,)
    return Task("teacher", train_x, train_y, probe_x, probe_y, shape, n_classes, seed)


def _read_idx(path: Path) -> np.ndarray:
    """An array in the IDX format of the MNIST files (optionally gzipped)."""
    import gzip

    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(str(folder / name))


def _read_mnist_like(folder: Path) -> tuple[np.ndarray, ...]:
    raw = folder / "raw"
    return tuple(_read_idx(_find(raw, f)) for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def _read_cifar10(folder: Path) -> tuple[np.ndarray, ...]:
    import pickle

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(str(path))
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images = np.asarray(entry["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(entry["labels"], np.int64)

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), test_x, test_y


def load_torchvision_task(name: str, n_probe: int = 200, seed: int = 0, *, root: str | Path | None = None,
                          n_train: int = 0, download: bool = False) -> Task:
    """MNIST, Fashion-MNIST or CIFAR-10 from torchvision's on-disk layout under a local root.

    Training examples come from the dataset's training split (all of them, or a seeded subsample of
    ``n_train``); the probe set is a class-balanced, seeded draw from its test split. Pixels are scaled to
    [0, 1] and flattened (CIFAR-10 channels-last, so a probe stimulus is a (32, 32, 3) RGB image).

    Parameters
    ----------
    name : {"mnist", "fashion_mnist", "cifar10"}
    n_probe : int, default=200
    seed : int, default=0
        Seed of the training subsample and of the probe draw.
    root : str or Path, optional
        Folder holding ``MNIST/raw/``, ``FashionMNIST/raw/`` or ``cifar-10-batches-py/`` (what
        ``torchvision.datasets`` writes); default ``$VIRTUAL_LAB_DATA``, else ``~/.cache/virtual_lab/data``.
    n_train : int, default=0
        Training examples to keep (0 = all).
    download : bool, default=False
        Download missing files with ``torchvision.datasets`` (opt-in; needs network access).

    Returns
    -------
    Task
        ``train_x`` of shape (n_train, 784) or (n_train, 3072), float32.

    Raises
    ------
    FileNotFoundError
        If the files are missing and ``download`` is false (the message names the folder expected).
    """
    import os

    if name not in TORCHVISION_TASKS:
        raise ValueError(f"name must be one of {', '.join(TORCHVISION_TASKS)}; got {name!r}")
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    folder_name, image_shape = TORCHVISION_TASKS[name]
    root = Path(root if root is not None else os.environ.get(DATA_ROOT_VARIABLE, "~/.cache/virtual_lab/data"))
    root = root.expanduser()
    reader = _read_cifar10 if name == "cifar10" else _read_mnist_like
    try:
        train_x, train_y, test_x, test_y = reader(root / folder_name)
    except FileNotFoundError as err:
        if not download:
            raise FileNotFoundError(f"task {name!r}: missing {err.args[0]} (torchvision layout under root {root}); "
                                    f"set ${DATA_ROOT_VARIABLE} to the folder holding {folder_name}/, or pass "
                                    f"download=True") from None
        import torchvision

        dataset = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
                   "cifar10": torchvision.datasets.CIFAR10}[name]
        for train in (True, False):
            dataset(str(root), train=train, download=True)
        train_x, train_y, test_x, test_y = reader(root / folder_name)
    train_y, test_y = train_y.astype(np.int64), test_y.astype(np.int64)
    if n_train:
        if n_train > len(train_y):
            raise ValueError(f"n_train={n_train} exceeds the {len(train_y)} training images of {name!r}")
        keep = np.sort(np.random.default_rng((seed, 31)).choice(len(train_y), n_train, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]
    _, _, probe_x, probe_y = _split(test_x, test_y, n_probe, seed)
    flat = int(np.prod(image_shape))
    return Task(name, (train_x.reshape(len(train_x), flat) / 255.0).astype(np.float32), train_y,
                (probe_x.reshape(len(probe_x), flat) / 255.0).astype(np.float32), probe_y, image_shape, 10, seed)


def task_image_shape(name: str) -> tuple[int, ...]:
    """Shape of one of a task's stimuli as an image, without loading it: ``(H, W)`` or ``(H, W, C)``."""
    if name in TORCHVISION_TASKS:
        return TORCHVISION_TASKS[name][1]
    n_features = task_dimensions(name)[0]
    side = int(np.sqrt(n_features))
    return (side, side) if side * side == n_features else (n_features,)


def task_dimensions(name: str) -> tuple[int, int]:
    """``(n_features, n_classes)`` of a task, without loading it."""
    return TASK_DIMENSIONS[check_choice("task", name, TASK_DIMENSIONS)]


def load_task(name: str, n_probe: int = 200, seed: int = 0, *, root: str | Path | None = None,
              download: bool = False) -> Task:
    """Load a task by name (one of :data:`TASKS`).

    The torchvision tasks read from ``root`` (default ``$VIRTUAL_LAB_DATA``) and download only when asked
    (see :func:`load_torchvision_task`); the other tasks ignore ``root`` and ``download``.
    """
    check_choice("task", name, TASKS)
    if name == "digits":
        return load_digits_task(n_probe, seed)
    if name == "gaussian_clusters":
        return make_gaussian_clusters_task(n_probe, seed)
    if name == "teacher":
        return make_teacher_task(n_probe, seed)
    return load_torchvision_task(name, n_probe, seed, root=root or None, download=download)
