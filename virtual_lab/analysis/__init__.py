"""Analysis: from recordings to a decoded learning rule.

- :mod:`virtual_lab.analysis.observables` -- the paper's per-layer, per-checkpoint observables
  (measures ``weight``/``act``/``gradavg`` x functions raw/sq/abs x statistics) and the feature table
  (one example = one layer of one network). numpy only.
- :mod:`virtual_lab.analysis.decoders` -- scikit-learn decoders by name (random forest, linear SVM,
  logistic regression).
- :mod:`virtual_lab.analysis.evaluation` -- cross-validation grouped by network, layer- and network-level
  accuracy, confusion matrices.

Importing this package imports none of its modules, so it stays free of scikit-learn and torch until a
decoder is actually needed.
"""
