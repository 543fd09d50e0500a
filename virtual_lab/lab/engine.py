"""One entry point for every population engine: the MLP engine or the convolutional one, by architecture."""

from __future__ import annotations

from typing import Sequence

from virtual_lab.lab.tasks import Task
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population


def train_cohort(specs: Sequence[RunSpec], task: Task, **kwargs) -> list:
    """Train runs that share :attr:`RunSpec.cohort_key` with the engine of their architecture.

    ``"mlp"`` runs train in :func:`virtual_lab.lab.train.train_population`, ``"cnn"`` and ``"resnet"`` runs in
    :func:`virtual_lab.lab.conv.train_conv_population`; keyword arguments (``device``, ``progress``,
    ``final_state``, ``timings``, ``dtype``) pass through. Returns one
    :class:`~virtual_lab.types.GroundTruth` per spec.
    """
    if not specs:
        return []
    architecture = specs[0].architecture
    if architecture == "mlp":
        return train_population(specs, task, **kwargs)
    from virtual_lab.lab.conv import train_conv_population

    return train_conv_population(specs, task, **kwargs)
