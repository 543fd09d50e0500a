"""The virtual recording rig: a lazy :class:`Recording` view and pure, seeded transforms over it."""

from virtual_lab.rig.recording import Recording
from virtual_lab.rig.transforms import add_noise, keep_checkpoints, keep_synapses, keep_units, observe

__all__ = ["Recording", "add_noise", "keep_checkpoints", "keep_synapses", "keep_units", "observe"]
