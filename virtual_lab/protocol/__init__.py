"""Protocol files: TOML in, frozen dataclasses out, with precise one-line errors.

A protocol names the task, the network, the training schedule, the sweep (a grid of rules x learning rates x
seeds, or ``sampling = "random"`` draws from ``[sweep.priors]``; optionally learning rates calibrated so every
rule's learning curves match a reference rule's, ``[sweep.match_curves]``), the rig settings to observe the
sessions through, and the decoders. ``load_protocol(path)`` reads a file with :mod:`tomllib` (or a bundled
protocol by name, :func:`available_protocols`); any unknown key, wrong type or out-of-range value raises
:class:`ProtocolError` naming the file, the dotted key, what was given, what is allowed and the closest valid key.

The package has two modules: :mod:`~virtual_lab.protocol.sections` (the dataclasses, each field with its help
and allowed values) and :mod:`~virtual_lab.protocol.load` (reading and checking files); every public name is
re-exported here, so ``from virtual_lab.protocol import load_protocol`` is the way in.
"""

from __future__ import annotations

from virtual_lab.protocol.load import (PROTOCOL_DIR, available_protocols, load_protocol, parse_protocol,
                                       protocol_file)
from virtual_lab.protocol.sections import (CONV_CHANNELS, PRIOR_AXES, PRIOR_DISTRIBUTIONS, SAMPLINGS,
                                           DecoderSection, MatchCurvesSection, NetworkSection, Prior, PriorAxis,
                                           Protocol, ProtocolError, RigSection, RuleSection, StorageSection,
                                           SweepSection, TaskSection, TrainingSection)

__all__ = ["CONV_CHANNELS", "PRIOR_AXES", "PRIOR_DISTRIBUTIONS", "PROTOCOL_DIR", "SAMPLINGS", "DecoderSection",
           "MatchCurvesSection", "NetworkSection", "Prior", "PriorAxis", "Protocol", "ProtocolError",
           "RigSection", "RuleSection", "StorageSection", "SweepSection", "TaskSection", "TrainingSection",
           "available_protocols", "load_protocol", "parse_protocol", "protocol_file"]
