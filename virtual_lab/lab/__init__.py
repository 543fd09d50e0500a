"""The lab: tasks, networks, learning rules and the population training engine.

Submodules import torch; this package's ``__init__`` does not.
"""
