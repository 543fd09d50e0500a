"""Power analysis: how many neurons, at what noise, over how many sessions -- chosen on some networks,
confirmed on others -- and how often the verdict over M animals is right.

For every point of a grid -- units recorded per layer x measurement noise x number of sessions (checkpoints
observed over learning) -- the sessions are observed through the rig (several rig seeds), the paper's
observables are extracted, the decoder is cross-validated with splits grouped by network, and the accuracy
gets a network-level bootstrap interval. The networks are first split once (stratified by rule, seeded,
stored; :mod:`~virtual_lab.analysis.power.confirm`) into a *selection* part, on which the grid is
cross-validated and the protocol chosen, and a disjoint *confirmation* part, on which every answer is
measured, so that the answer carries no selection bias. The answers (:mod:`~virtual_lab.analysis.power.answers`):
the recommended protocol with its confirmed accuracy; the accuracy when the animal's condition (learning-rate
multiplier, width, task...) was not simulated (``holdout``); the smallest protocol for each pair of rules;
the probability that the posterior verdict over M animals sharing one rule is right
(:mod:`~virtual_lab.analysis.power.verdict`); each with its interval and the assumptions it rests on.

How the work is shared across the grid
--------------------------------------
The built-in rigs, and the presets made of paper steps only, are the paper-equivalent rig of
:func:`virtual_lab.rig.observe` (same seeds, same values; ``apply_preset`` splits a rig seed into stage
seeds the same way, :func:`virtual_lab.rig.rig_stage_seeds`): for one rig seed and network, the units kept
at ``n`` units are those :func:`virtual_lab.rig.keep_units` keeps (the first ``n`` of one permutation per
layer: nested subsets), the noise is the rig's own standard-normal draw per (seed, layer, checkpoint,
measure) scaled by each noise level, and the observables of every checkpoint are computed once and then
indexed for every session count. So each session is read once (in worker processes, a bounded number at a
time), reduced to a small ``(rig seeds, units, noise, layers, checkpoints, observables)`` float32 array, and
dropped; memory grows with the number of networks only through those arrays. :func:`compute_grid_features`
is that reduction; ``tests/test_power.py`` checks it equals ``compute_observables(observe(...))`` and
``compute_observables(apply_preset(...))`` exactly at every grid point.

Modality presets (spiking, sorting, tracking, calcium imaging, EM, spine imaging) go through the general
path, :func:`compute_preset_grid_features`: at every (rig seed, units, noise, sessions) point the session is
observed with :func:`virtual_lab.rig.presets.apply_preset` itself -- the grid's units replace the preset's
``[units]`` stage, its sessions the ``[checkpoints]`` count, and its noise axis sets one preset parameter
(extra Gaussian noise relative to each measure's SD, ``noise.sd``, by default; or e.g.
``calcium.noise_level``) -- so nothing is shared but nothing is approximated either. It costs one preset
application per grid point and session; the observables are those the modality measures.

Statistics
----------
- **Grid accuracy** (selection networks): network level (a network's layers are combined into one
  prediction, see :func:`virtual_lab.analysis.evaluation.evaluate`), as the mean over networks of each
  network's fraction of correct predictions over all the splits and rig seeds in which it was a test network;
  interval: percentile bootstrap over networks (resampled with replacement within each rule), the same
  resamples at every grid point, so intervals of derived quantities (the smallest units reaching the target)
  come from the same resamples. Layers, stimuli and samples are never resampled: the network is the
  experimental unit. These are the estimates the protocol is chosen from: optimistic at the chosen point.
- **Confirmed accuracy**: at the chosen protocol, a decoder trained on every selection network decodes each
  confirmation network (once per rig seed); the mean over confirmation networks of each one's fraction
  correct, with a Wilson interval over confirmation networks (``accuracy * n`` successes in ``n`` trials)
  and a stratified bootstrap interval.
- **Chance**: with ``k`` rules and ``n`` networks, the central interval of ``Binomial(n, 1/k) / n`` and the
  one-sided p < .05 threshold (the smallest accuracy a binomial test over ``n`` networks calls better than
  chance), from :mod:`virtual_lab.stats`.
- **M animals**: the posterior over rules from M animals' predictions, with the confirmation networks'
  smoothed confusion as the likelihood and a uniform prior; P(the argmax is right), exact over every count
  vector of predictions, with a bootstrap interval over confirmation networks.
  (:func:`animals_to_certify`, the number of test networks whose Wilson bound would certify a decoder's
  accuracy, answers a decoder-validation question, not the experimentalist's; it is kept as a helper.)

The coverage of the confirmed interval at the recommended protocol (true accuracy near the target) is
checked by ``scripts/power_coverage.py`` (fresh networks and fresh rig seeds per repeat, the true accuracy
measured on a large independent cohort; see the README).
"""

from __future__ import annotations

from virtual_lab.analysis.power.analysis import power_analysis
from virtual_lab.analysis.power.checks import short_rule
from virtual_lab.analysis.power.grid import compute_grid_features
from virtual_lab.analysis.power.presets import (
    DEFAULT_NOISE_PARAM, POWER_STAGES, RIG_PRESETS, compute_preset_grid_features, general_rig, resolve_rig,
)
from virtual_lab.analysis.power.confirm import confirmed_accuracy, split_networks
from virtual_lab.analysis.power.recommend import animals_to_certify
from virtual_lab.analysis.power.result import PowerResult
from virtual_lab.analysis.power.sources import read_session_arrays
from virtual_lab.analysis.power.verdict import (
    DEFAULT_ANIMALS, animals_table, count_vectors, smoothed_confusion, verdict_accuracy,
)
from virtual_lab.stats import binomial_chance, wilson_interval  # re-exported: virtual_lab.stats is their one place

__all__ = ["DEFAULT_ANIMALS", "DEFAULT_NOISE_PARAM", "POWER_STAGES", "PowerResult", "RIG_PRESETS", "animals_table",
           "animals_to_certify", "binomial_chance", "compute_grid_features", "compute_preset_grid_features",
           "confirmed_accuracy", "count_vectors", "general_rig", "power_analysis", "read_session_arrays",
           "resolve_rig", "short_rule", "smoothed_confusion", "split_networks", "verdict_accuracy",
           "wilson_interval"]

