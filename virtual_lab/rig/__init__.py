"""The virtual recording rig: a lazy :class:`Recording` view and pure, seeded transforms over it.

Paper-exact steps (:mod:`~virtual_lab.rig.transforms`), modality models (:mod:`~virtual_lab.rig.spiking`,
:mod:`~virtual_lab.rig.calcium`, :mod:`~virtual_lab.rig.tracking`, :mod:`~virtual_lab.rig.synapses`), presets
(:mod:`~virtual_lab.rig.presets`: :func:`load_preset`, :func:`apply_preset`), the one split of a rig seed into
stage seeds (:func:`~virtual_lab.rig.seeds.rig_stage_seeds`, used by all of them) and NWB export
(:mod:`virtual_lab.rig.export`, imported on demand because it needs pynwb).
"""

from virtual_lab.rig.calcium import INDICATORS, calcium_imaging, calcium_kernel
from virtual_lab.rig.presets import RigPreset, apply_preset, available_presets, load_preset
from virtual_lab.rig.recording import Recording
from virtual_lab.rig.seeds import RIG_STAGES, rig_stage_seeds
from virtual_lab.rig.spiking import sort_spikes, spike_counts
from virtual_lab.rig.synapses import em_snapshot, spine_imaging
from virtual_lab.rig.tracking import track_units
from virtual_lab.rig.transforms import add_noise, keep_checkpoints, keep_synapses, keep_units, observe

__all__ = ["INDICATORS", "RIG_STAGES", "Recording", "RigPreset", "add_noise", "apply_preset", "available_presets",
           "calcium_imaging", "calcium_kernel", "em_snapshot", "keep_checkpoints", "keep_synapses", "keep_units",
           "load_preset", "observe", "rig_stage_seeds", "sort_spikes", "spike_counts", "spine_imaging",
           "track_units"]
