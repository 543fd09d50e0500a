"""The one split of a rig seed into the seeds of the rig's stochastic stages.

Every way of observing a session -- :func:`virtual_lab.rig.observe`, :func:`virtual_lab.rig.apply_preset` and
the power analysis's grid -- gives each stage the seed :func:`rig_stage_seeds` derives from the rig seed, so
the same rig seed keeps the same units, synapses and noise whichever of them observes the session, and
changing one stage's parameters never changes another stage's draws (a new noise level keeps the same units).

Stage ``i`` of :data:`RIG_STAGES` gets child ``i`` of ``numpy.random.SeedSequence(seed)`` (the seeds
``SeedSequence(seed).spawn(n)`` gives), as a 63-bit int. The first four are the order ``observe()`` has
always used, so its seeds, and every recording made with it, are unchanged.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from virtual_lab.seeding import resolve_seed

__all__ = ["RIG_STAGES", "rig_stage_seeds"]

#: The rig's stochastic stages, in the order of their seeds (new stages are appended, never inserted).
RIG_STAGES = ("units", "synapses", "noise", "checkpoints", "spiking", "sorting", "tracking", "calcium", "em",
              "spines")


def rig_stage_seeds(seed: int | None, stages: Iterable[str] = RIG_STAGES) -> dict[str, int]:
    """The seed of each rig stage, derived from one rig seed.

    Parameters
    ----------
    seed : int or None
        Rig seed (>= 0); None draws one.
    stages : iterable of str, default=RIG_STAGES
        Stages to derive seeds for, names from :data:`RIG_STAGES`.

    Returns
    -------
    dict of str to int
        Stage -> its seed in [0, 2**63). A stage's seed depends only on ``seed`` and the stage, never on
        which other stages are asked for.

    Raises
    ------
    ValueError
        An unknown stage name.

    Examples
    --------
    >>> seeds = rig_stage_seeds(7, ("units", "noise"))
    >>> seeds["units"] == rig_stage_seeds(7)["units"]
    True
    >>> seeds["units"] != seeds["noise"]
    True
    """
    seed = resolve_seed(seed)
    out = {}
    for stage in stages:
        if stage not in RIG_STAGES:
            raise ValueError(f"unknown rig stage {stage!r}; stages: {', '.join(RIG_STAGES)}")
        child = np.random.SeedSequence(seed, spawn_key=(RIG_STAGES.index(stage),))
        out[stage] = int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))
    return out
