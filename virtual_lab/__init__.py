"""virtual_lab: simulated neuroscience experiments for identifying learning rules.

Train populations of small networks under known learning rules (:mod:`virtual_lab.lab`), write each
training run as an NWB recording session (:mod:`virtual_lab.sessions`), observe it through a virtual
recording rig (:mod:`virtual_lab.rig`), and decode the learning rule from the paper's observables
(:mod:`virtual_lab.analysis`), after Nayebi, Srivastava, Ganguli & Yamins, "Identifying Learning Rules
From Neural Network Observables", NeurIPS 2020 (arXiv:2010.11765).

Importing this package is cheap: torch, pynwb and scikit-learn are imported only where needed.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]
