import numpy as np
import pytest

from virtual_lab.lab.tasks import (TASK_DIMENSIONS, TASKS, TORCHVISION_TASKS, load_task, load_torchvision_task,
                                   make_teacher_task, task_dimensions)


def write_idx(path, array):
    """An IDX file as the MNIST distribution (and torchvision's raw/ folder) holds it."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_tiny_dataset(root, name, n_train=60, n_test=40, seed=0):
    """Tiny random data in torchvision's on-disk layout; returns (train images, train labels, test ...)."""
    import pickle

    rng = np.random.default_rng(seed)
    shape = (28, 28) if name != "cifar10" else (3, 32, 32)
    arrays = [rng.integers(0, 256, (n, *shape), dtype=np.uint8) for n in (n_train, n_test)]
    labels = [np.arange(n) % 10 for n in (n_train, n_test)]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        parts = np.array_split(np.arange(n_train), 5)
        for i, part in enumerate(parts, 1):
            entry = {"data": arrays[0][part].reshape(len(part), -1), "labels": labels[0][part].tolist()}
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry))
        entry = {"data": arrays[1].reshape(n_test, -1), "labels": labels[1].tolist()}
        (folder / "test_batch").write_bytes(pickle.dumps(entry))
    else:
        raw = root / TORCHVISION_TASKS[name][0] / "raw"
        raw.mkdir(parents=True)
        write_idx(raw / "train-images-idx3-ubyte", arrays[0])
        write_idx(raw / "train-labels-idx1-ubyte", labels[0])
        write_idx(raw / "t10k-images-idx3-ubyte", arrays[1])
        write_idx(raw / "t10k-labels-idx1-ubyte", labels[1])
    return arrays[0], labels[0], arrays[1], labels[1]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_task_reads_the_on_disk_format(name, tmp_path):
    train_x, train_y, test_x, test_y = write_tiny_dataset(tmp_path, name)
    task = load_torchvision_task(name, n_probe=20, seed=2, root=tmp_path)
    assert (task.n_features, task.n_classes) == TASK_DIMENSIONS[name]
    assert len(task.train_y) == 60 and task.train_x.max() <= 1.0
    np.testing.assert_array_equal(task.train_y, train_y)
    expected = train_x if name != "cifar10" else train_x.transpose(0, 2, 3, 1)  # CIFAR channels-last
    np.testing.assert_allclose(task.train_x[7], expected[7].reshape(-1) / 255.0, rtol=1e-6)
    # probes: class-balanced draws from the test split
    assert np.bincount(task.probe_y, minlength=10).tolist() == [2] * 10
    rows = {tuple(r) for r in (test_x if name != "cifar10" else test_x.transpose(0, 2, 3, 1)).reshape(40, -1)}
    assert all(tuple(np.rint(p * 255).astype(np.uint8)) in rows for p in task.probe_x)
    assert task.probe_images.shape == (20, *TORCHVISION_TASKS[name][1])
    sub = load_torchvision_task(name, n_probe=20, seed=2, root=tmp_path, n_train=25)
    assert len(sub.train_y) == 25


def test_tiny_mnist_is_valid_for_torchvision(tmp_path):
    # the fixture is the real format: torchvision itself reads it back
    torchvision = pytest.importorskip("torchvision")
    train_x, train_y, _, _ = write_tiny_dataset(tmp_path, "mnist")
    dataset = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)
    np.testing.assert_array_equal(dataset.data.numpy(), train_x)
    np.testing.assert_array_equal(dataset.targets.numpy(), train_y)


def test_missing_torchvision_data_says_where_to_put_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="MNIST.*VIRTUAL_LAB_DATA"):
        load_torchvision_task("mnist", root=tmp_path)
    write_tiny_dataset(tmp_path, "fashion_mnist")
    monkeypatch.setenv("VIRTUAL_LAB_DATA", str(tmp_path))
    assert load_task("fashion_mnist", n_probe=10).n_features == 784


@pytest.mark.parametrize("name", [t for t in TASKS if t not in TORCHVISION_TASKS])
def test_every_task_matches_its_declared_dimensions(name):
    task = load_task(name, n_probe=50, seed=1)
    assert (task.n_features, task.n_classes) == TASK_DIMENSIONS[name] == task_dimensions(name)
    assert task.name == name and task.probe_x.shape == (50, task.n_features)
    assert task.train_x.dtype == np.float32 and task.train_y.dtype == np.int64
    assert np.bincount(task.probe_y, minlength=task.n_classes).min() == 5  # class-balanced probes


def test_teacher_labels_are_a_function_of_the_inputs():
    # the defining property of a teacher task: a fixed network maps inputs to labels; a student that sees the
    # teacher's hidden features separates the classes perfectly, and seeds give identical or different tasks
    a, b, c = make_teacher_task(n_probe=50, seed=3), make_teacher_task(n_probe=50, seed=3), make_teacher_task(50, 4)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.train_y, b.train_y)
    assert not np.array_equal(a.train_x, c.train_x)
    rng = np.random.default_rng((3, 29))
    w1 = rng.normal(0, 1 / np.sqrt(64), (64, 32))
    w2 = rng.normal(0, 1 / np.sqrt(32), (32, 10))
    x = np.concatenate([a.train_x, a.probe_x]).astype(np.float64)
    y = np.concatenate([a.train_y, a.probe_y])
    scores = np.tanh(x @ w1) @ w2
    z = (scores - scores.mean(0)) / scores.std(0)
    assert (z.argmax(1) == y).mean() > 0.99  # float32 rounding of x may flip a near-tie
    assert np.bincount(y, minlength=10).min() > 100  # roughly balanced classes


def test_unknown_task_error_names_the_closest():
    with pytest.raises(ValueError, match=r"^task='teachr' is not available; did you mean 'teacher'\? \(available: digits, "
                                         r"gaussian_clusters, teacher, mnist, fashion_mnist, cifar10\)$"):
        load_task("teachr")
    with pytest.raises(ValueError, match=r"^task='mnist2' is not available; did you mean 'mnist'\? \(available: digits, "):
        task_dimensions("mnist2")


def test_protocol_task_root_reaches_the_training_workers(tmp_path, monkeypatch):
    from virtual_lab.sweeps.run import run_sweep
    from virtual_lab.protocol import parse_protocol

    write_tiny_dataset(tmp_path / "data", "cifar10", n_train=40, n_test=40)
    monkeypatch.delenv("VIRTUAL_LAB_DATA", raising=False)
    protocol = parse_protocol({
        "name": "tiny-cifar", "output_dir": str(tmp_path / "rec"),
        "task": {"name": "cifar10", "root": "data", "n_probe": 20},  # relative to the protocol file
        "network": {"architecture": "cnn", "channels": [2, 2, 2]},
        "training": {"n_epochs": 1, "batch_size": 8, "n_checkpoints": 2},
        "sweep": {"rules": ["sgdm"], "n_seeds": 1}}, str(tmp_path / "p.toml"))
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.ok and len(result.session_paths) == 1
    from virtual_lab.sessions import read_session

    gt = read_session(result.session_paths[0])
    assert gt.probe_stimuli.shape == (20, 32, 32, 3) and gt.metadata["architecture"] == "cnn"
