"""Sessions of the power analysis: where they are (:func:`virtual_lab.sessions.find_sessions`), what the rig needs
of each (:func:`virtual_lab.sessions.read_session` with the h5py engine), layout checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from virtual_lab.sessions import find_sessions, read_session
from virtual_lab.types import GroundTruth

logger = logging.getLogger(__name__)


#: The arrays the rig needs from a session (probe stimuli are not read).
POWER_ARRAYS = ("activations", "weights", "activity_change")


def read_session_arrays(path: str | os.PathLike) -> GroundTruth:
    """Read what the rig needs from a ground-truth session: ``read_session(path, engine="h5py",
    arrays=POWER_ARRAYS)`` (activations, weights, activity change, checkpoint steps, performance, metadata;
    h5py alone, no pynwb object mapping).

    Returns
    -------
    GroundTruth
        ``probe_stimuli`` is an empty (S, 0) array.
    """
    return read_session(path, engine="h5py", arrays=POWER_ARRAYS)


def _layout_problem(ground_truth: GroundTruth, plan: Mapping[str, Any]) -> str:
    layout = plan["layout"]
    if ground_truth.n_checkpoints != layout["n_checkpoints"]:
        return (f"{ground_truth.n_checkpoints} checkpoints where the first session has {layout['n_checkpoints']}")
    for layer, size in zip(plan["layers"], layout["layer_sizes"]):
        if layer not in ground_truth.layer_names:
            return f"no layer {layer!r}"
        if ground_truth.activations[layer].shape[2] != size:
            return f"layer {layer!r} has {ground_truth.activations[layer].shape[2]} units, not {size}"
    return ""


def _readable_first(sources: list[GroundTruth | Path]) -> list[GroundTruth | Path]:
    """The sources with the first one that reads in front (its layout is the reference): a file damaged inside
    its arrays stays in the list, to be named and skipped when every session is read; the others keep their
    order."""
    for index, source in enumerate(sources):
        if isinstance(source, GroundTruth):
            break
        try:
            read_session_arrays(source)
            break
        except (OSError, KeyError, ValueError, TypeError) as error:
            logger.info("taking the layout from another session: %s", error)
    else:
        raise ValueError(f"recordings: none of the {len(sources)} session file(s) reads; first: {sources[0]}")
    return [sources[index], *sources[:index], *sources[index + 1:]]


def _session_sources(recordings: Any) -> list[GroundTruth | Path]:
    """In-memory sessions as given; files and folders through :func:`virtual_lab.sessions.find_sessions`
    (damaged, foreign, incomplete and temporary files skipped with one warning each); the first source reads."""
    if isinstance(recordings, (str, os.PathLike)):
        return _readable_first(list(find_sessions(recordings).complete))
    items = list(recordings)
    if not items:
        raise ValueError("recordings must not be empty")
    for item in items:
        if not isinstance(item, (GroundTruth, str, os.PathLike)):
            raise TypeError(f"recordings must be a folder, session paths or GroundTruth objects, got "
                            f"{type(item).__name__}")
    paths = [item for item in items if not isinstance(item, GroundTruth)]
    if not paths:
        return items
    found = find_sessions(paths, allow_empty=len(paths) < len(items))
    complete = set(found.complete)
    sources: list[GroundTruth | Path] = []
    for item in items:
        if isinstance(item, GroundTruth):
            sources.append(item)
        elif Path(item).resolve() in complete:
            sources.append(Path(item).resolve())
    return _readable_first(sources) if sources else sources


def _first_layout(source: GroundTruth | Path) -> tuple[GroundTruth | None, dict[str, Any]]:
    gt = source if isinstance(source, GroundTruth) else read_session_arrays(source)
    return gt, {"layer_names": gt.layer_names, "depth_positions": gt.depth_positions,
                "layer_sizes_all": tuple(gt.activations[l].shape[2] for l in gt.layer_names),
                "n_checkpoints": gt.n_checkpoints, "checkpoint_steps": gt.checkpoint_steps.tolist()}
