"""Mock factories for tests and tutorials (in the spirit of ``pynwb.testing.mock``).

Every argument has a default, so a test builds a valid object in one line. The values are random but
seeded; they are *not* the output of training (use :mod:`virtual_lab.lab.train` for that).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from virtual_lab.types import GroundTruth, depth_positions


def mock_ground_truth(
    rule: str = "sgdm",
    seed: int = 0,
    layer_sizes: Sequence[int] = (16, 12, 10, 4),
    n_checkpoints: int = 5,
    n_stimuli: int = 12,
    image_shape: tuple[int, int] = (4, 4),
    run_id: str | None = None,
) -> GroundTruth:
    """A small, valid :class:`GroundTruth` with seeded random content.

    Parameters
    ----------
    rule : str, default="sgdm"
        Rule name stored in the metadata.
    seed : int, default=0
        Seed of the random content.
    layer_sizes : sequence of int, default=(16, 12, 10, 4)
        Input size followed by each layer's output size; ``prod(image_shape)`` must equal the input size.
    n_checkpoints : int, default=5
    n_stimuli : int, default=12
    image_shape : tuple of int, default=(4, 4)
    run_id : str, optional
        Defaults to ``f"mock{seed}{rule}"``.

    Returns
    -------
    GroundTruth
    """
    rng = np.random.default_rng(seed)
    if int(np.prod(image_shape)) != layer_sizes[0]:
        raise ValueError("prod(image_shape) must equal layer_sizes[0]")
    n_layers = len(layer_sizes) - 1
    names = tuple(f"fc{i + 1}" for i in range(n_layers))
    steps = np.linspace(0, 100, n_checkpoints).astype(np.int64)
    stimuli = rng.random((n_stimuli, *image_shape), dtype=np.float32)
    n_classes = layer_sizes[-1]
    labels = rng.integers(0, n_classes, n_stimuli).astype(np.int64)
    activations, weights, change = {}, {}, {}
    for name, n_in, n_out in zip(names, layer_sizes[:-1], layer_sizes[1:]):
        weights[name] = rng.normal(0, 1 / np.sqrt(n_in), (n_checkpoints, n_out, n_in)).astype(np.float32)
        activations[name] = np.maximum(rng.normal(0, 1, (n_checkpoints, n_stimuli, n_out)), 0).astype(np.float32)
        change[name] = rng.normal(0, 0.1, (n_checkpoints, n_stimuli)).astype(np.float32)
    loss = np.linspace(2.3, 0.3, n_checkpoints).astype(np.float32)
    acc = np.linspace(0.1, 0.9, n_checkpoints).astype(np.float32)
    metadata = {
        "run_id": run_id or f"mock{seed}{rule}",
        "rule": rule,
        "family": "exact_gradient",
        "architecture": "mlp",
        "layer_sizes": ",".join(map(str, layer_sizes)),
        "task": "mock",
        "learning_rate": 0.01,
        "batch_size": 8,
        "seed": seed,
        "n_steps": int(steps[-1]),
        "diverged": False,
        "diverged_step": -1,
    }
    return GroundTruth(
        layer_names=names,
        depth_positions=depth_positions(n_layers),
        checkpoint_steps=steps,
        activations=activations,
        weights=weights,
        activity_change=change,
        train_loss=loss,
        test_accuracy=acc,
        probe_stimuli=stimuli,
        probe_labels=labels,
        metadata=metadata,
    )
