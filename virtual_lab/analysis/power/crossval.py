"""Stage 2 of the power analysis: cross-validate every grid point on a set of networks, tally each network's
correct and tested decodings, and bootstrap the accuracy over networks.

The examples of one grid point are built from the reduced features (:class:`_Examples`), each (networks,
units, noise, sessions, rig seed) task is cross-validated in a worker (:func:`_decode_grid`), the outputs are
tallied per network (:func:`_tally`), and :func:`_bootstrap` turns the tallies into the grid accuracy with a
percentile interval over networks (stratified by rule, the same resamples at every grid point).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import feature_names_for
from virtual_lab.analysis.power.grid import _Grid
from virtual_lab.stats import stratified_bootstrap_indices
from virtual_lab.types import DEPTH_POSITIONS

logger = logging.getLogger(__name__)


# -- decoding one grid point -----------------------------------------------------------------------------------------
def _decode_point(X: np.ndarray, rule: np.ndarray, network: np.ndarray, layer: np.ndarray, depth: np.ndarray,
                  feature_names: np.ndarray, decoder: Any, n_splits: int, test_fraction: float,
                  split_seed: int) -> dict[str, Any]:
    from virtual_lab.analysis.evaluation import evaluate
    from virtual_lab.analysis.observables import FeatureTable
    from virtual_lab.progress import quiet

    finite = np.isfinite(X).all(axis=1)
    n_dropped = int((~finite).sum())
    table = FeatureTable(X=X[finite].astype(np.float64), rule=rule[finite], network_id=network[finite],
                         layer=layer[finite], depth_position=depth[finite],
                         metadata=tuple({} for _ in range(int(finite.sum()))), feature_names=feature_names)
    with quiet():  # the grid's own bar reports; one per grid point would drown it
        result = evaluate(table, decoder, n_splits=n_splits, test_fraction=test_fraction, seed=split_seed, n_jobs=1)
    test_counts = [sum(1 for p in result.predictions if p["split"] == s) for s in range(result.n_splits)]
    return {"network_accuracy": result.network_accuracy, "network_balanced_accuracy": result.network_balanced_accuracy,
            "layer_accuracy": result.layer_accuracy, "n_test_networks": test_counts,
            "predictions": [(p["network_id"], p["predicted_rule"], bool(p["correct"])) for p in result.predictions],
            "confusion": result.network_confusion_counts, "classes": result.classes, "n_dropped": n_dropped,
            "n_networks": result.n_networks}


def _progress(total: int, description: str, enabled: bool):
    from virtual_lab.progress import progress_bar

    return progress_bar(total=total, desc=description, unit="items", enabled=enabled)


@dataclass(frozen=True)
class _Networks:
    """The networks decoded, in table order: rule, id and run metadata of each, the rules told apart, and
    those dropped (diverged; unreadable files as ``path: reason``)."""

    rules: np.ndarray
    ids: np.ndarray
    classes: tuple[str, ...]
    diverged: list[str]
    metadata: tuple[dict[str, Any], ...] = ()
    unreadable: tuple[str, ...] = ()


def _point_block(features: Any, grid: _Grid, general: bool, u_i: int, n_i: int, s_i: int, r: int,
                 positions: np.ndarray) -> np.ndarray:
    """Features of some networks at one grid point and rig repeat, shape (n, L, K, O)."""
    if general:
        return features[s_i][positions, r, u_i, n_i]
    return features[positions, r, u_i, n_i][:, :, grid.columns(grid.session_values[s_i]), :]


class _Examples:
    """The example columns (rule, network, layer, depth, one-hot depth) of every network, and the decoding
    matrix of a subset of them at one grid point."""

    def __init__(self, networks: _Networks, grid: _Grid, plan: Mapping[str, Any], features: Any):
        self.n_layers = len(grid.layers)
        self.grid, self.features, self.general = grid, features, bool(plan.get("general"))
        self.rules, self.ids = networks.rules, networks.ids
        self.names = {k: feature_names_for(plan["observables"], k) for k in grid.session_values}

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        n, n_layers = len(positions), self.n_layers
        layer_col = np.tile(np.array(self.grid.layers, dtype=str), n)
        depth_col = np.tile(np.array(self.grid.depth, dtype=str), n)
        onehot = np.zeros((n * n_layers, len(DEPTH_POSITIONS)))
        onehot[np.arange(n * n_layers), [DEPTH_POSITIONS.index(d) for d in depth_col]] = 1.0
        return (np.repeat(self.rules[positions], n_layers), np.repeat(self.ids[positions], n_layers), layer_col,
                depth_col, onehot)

    def matrix(self, u_i: int, n_i: int, s_i: int, r: int, positions: np.ndarray) -> tuple[np.ndarray, ...]:
        """(X, rule, network, layer, depth, feature names) of ``positions`` at one point and repeat."""
        rule_col, net_col, layer_col, depth_col, onehot = self.rows(positions)
        block = _point_block(self.features, self.grid, self.general, u_i, n_i, s_i, r, positions)
        X = np.hstack([block.reshape(len(positions) * self.n_layers, -1).astype(np.float64), onehot])
        return X, rule_col, net_col, layer_col, depth_col, self.names[self.grid.session_values[s_i]]


def _decode_grid(tasks: Sequence[tuple[str, int, int, int, int]], examples: _Examples,
                 subsets: Mapping[str, np.ndarray], decoder: Any, n_splits: int, test_fraction: float,
                 split_seeds: Sequence[int], n_workers: int, progress: bool) -> list[dict[str, Any]]:
    """Stage 2: cross-validate every (networks, units, noise, sessions, rig seed) task (in workers), in task
    order; ``subsets`` maps each task's first entry to the networks (positions) it decodes."""
    from joblib import Parallel, delayed

    def job(name, u_i, n_i, s_i, r):
        X, rule_col, net_col, layer_col, depth_col, names = examples.matrix(u_i, n_i, s_i, r, subsets[name])
        return delayed(_decode_point)(X, rule_col, net_col, layer_col, depth_col, names, decoder, n_splits,
                                      test_fraction, split_seeds[r])

    outputs = []
    parallel = Parallel(n_jobs=n_workers, return_as="generator", pre_dispatch="2*n_jobs")
    with _progress(len(tasks), "power: decoding grid points", progress) as bar:
        for output in parallel(job(*task) for task in tasks):
            outputs.append(output)
            bar.update(1)
    return outputs


@dataclass
class _Tally:
    """Per-network correct and tested counts and confusion counts of one set of networks over the grid."""

    classes: tuple[str, ...]
    correct: np.ndarray  # (U, Z, S, N)
    tested: np.ndarray  # (U, Z, S, N)
    confusion: np.ndarray  # (U, Z, S, k, k)


def _tally(tasks: Sequence[tuple[str, int, int, int, int]], outputs: Sequence[Mapping[str, Any]], grid: _Grid,
           networks: _Networks, rig_seed_list: Sequence[int], split_seeds: Sequence[int], decoder: Any,
           subset_classes: Mapping[str, tuple[str, ...]]) -> tuple[list[dict[str, Any]], dict[str, _Tally]]:
    """Tidy rows and, per set of networks, per-network correct and tested counts and confusion counts."""
    u_index = {v: grid.units.index(v) for v in grid.unit_values}
    s_index = {v: grid.sessions.index(v) for v in grid.session_values}
    position_of = {n: i for i, n in enumerate(networks.ids.tolist())}
    tallies = {name: _Tally(classes, np.zeros((*grid.shape, len(networks.ids))),
                            np.zeros((*grid.shape, len(networks.ids))),
                            np.zeros((*grid.shape, len(classes), len(classes)), dtype=np.int64))
               for name, classes in subset_classes.items()}
    decoder_name = str(decoder if isinstance(decoder, str) else type(decoder).__name__)
    rows = []
    for (name, u_i, n_i, s_i, r), output in zip(tasks, outputs):
        units, noise, k = grid.unit_values[u_i], grid.noise[n_i], grid.session_values[s_i]
        point = (u_index[units], n_i, s_index[k])
        counts = grid.unit_counts[u_i] or grid.sizes
        tally = tallies[name]
        for split in range(len(output["network_accuracy"])):
            rows.append({"rules": name, "units": units, "noise": noise, "sessions": k, "repeat": r,
                         "rig_seed": rig_seed_list[r], "split": split, "split_seed": split_seeds[r],
                         "units_per_layer": ";".join(map(str, counts)), "decoder": decoder_name,
                         "n_networks": output["n_networks"], "n_test_networks": output["n_test_networks"][split],
                         "network_accuracy": float(output["network_accuracy"][split]),
                         "network_balanced_accuracy": float(output["network_balanced_accuracy"][split]),
                         "layer_accuracy": float(output["layer_accuracy"][split])})
        for network, _, ok in output["predictions"]:
            position = position_of[network]
            tally.tested[point + (position,)] += 1
            tally.correct[point + (position,)] += ok
        tally.confusion[point] += output["confusion"]
        if output["n_dropped"]:
            logger.warning("%s: units=%s noise=%s sessions=%s repeat %d: dropped %d example(s) with non-finite "
                           "features", name, units, noise, k, r, output["n_dropped"])
    return rows, tallies


def _bootstrap(tally: _Tally, networks: _Networks, members: np.ndarray, seed: int, n_bootstrap: int,
               confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy, its interval and its replicates at every grid point: a bootstrap over the networks
    ``members`` (positions), stratified by rule, with the same resamples at every grid point."""
    correct, tested = tally.correct[..., members], tally.tested[..., members]
    shape, n_net = correct.shape[:-1], correct.shape[-1]
    rng = np.random.default_rng(seed)
    resample = stratified_bootstrap_indices(networks.rules[members], n_bootstrap, rng, classes=list(tally.classes))
    accuracy = np.full(shape, np.nan)
    boot = np.full((*shape, n_bootstrap), np.nan)
    for index in np.ndindex(shape):
        seen_n = tested[index]
        if not seen_n.any():
            continue
        per_network = np.divide(correct[index], seen_n, out=np.full(n_net, np.nan), where=seen_n > 0)
        accuracy[index] = float(np.nanmean(per_network))
        with warnings.catch_warnings():  # a resample of only never-tested networks (very few splits): NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            boot[index] = np.nanmean(per_network[resample], axis=1)
    alpha = 1 - confidence
    ci_low, ci_high = np.full(shape, np.nan), np.full(shape, np.nan)
    valid = ~np.isnan(accuracy)
    ci_low[valid], ci_high[valid] = np.nanquantile(boot[valid], [alpha / 2, 1 - alpha / 2], axis=-1)
    return accuracy, ci_low, ci_high, boot
