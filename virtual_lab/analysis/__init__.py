"""Analysis: from recordings to a decoded learning rule.

- :mod:`virtual_lab.analysis.observables` -- the paper's per-layer, per-checkpoint observables
  (measures ``weight``/``act``/``gradavg`` x functions raw/sq/abs x statistics) and the feature table
  (one example = one layer of one network). numpy only.
- :mod:`virtual_lab.analysis.decoders` -- scikit-learn decoders by name (random forest, linear SVM,
  logistic regression).
- :mod:`virtual_lab.analysis.tables` -- tag, stack and filter feature tables by metadata;
  :mod:`virtual_lab.analysis.session_tables` -- feature tables from NWB session files, one per rig.
- :mod:`virtual_lab.analysis.splits` -- train/test splits grouped by network (or the paper's, by layer).
- :mod:`virtual_lab.analysis.fitting` -- one split: fit, predict, combine a network's layers.
- :mod:`virtual_lab.analysis.evaluation` -- cross-validation grouped by network, layer- and network-level
  accuracy, confusion matrices.
- :mod:`virtual_lab.analysis.permutation` -- network-level permutation test.
- :mod:`virtual_lab.analysis.generalization` -- train on one metadata filter, test on another; held-out
  architecture / task; grouped vs layer-level splits.
- :mod:`virtual_lab.analysis.holdout` -- leave one level (or bin) of an axis out: learning-rate multiplier,
  width, depth, task, rig...; interpolation vs extrapolation.
- :mod:`virtual_lab.analysis.feature_variants` -- scale-free variants of the observables (ratio to the
  initial value, share of the network's layers).
- :mod:`virtual_lab.analysis.behaviour` -- what the recording adds over the learning curves.
- :mod:`virtual_lab.analysis.controls` -- the reviewers' controls (observable class, temporal,
  performance, rule family) and the standard set of a report.

Importing this package imports none of its modules, so it stays free of scikit-learn and torch until a
decoder is actually needed.
"""
