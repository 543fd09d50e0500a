"""Unsupervised check: do runs cluster by learning rule without being told the labels?

Each network becomes one vector (its layers' features averaged within each depth position, the three
positions concatenated, so networks with different numbers of layers are comparable), standardized and
reduced with PCA; k-means or a Gaussian mixture clusters the networks, and the clusters are scored
against rule, family, architecture, task and paradigm with the adjusted Rand index (ARI) and normalized mutual
information (NMI). A 2-D embedding (the first two principal components) is plotted colored by each label.

References
----------
Hubert, L. & Arabie, P. (1985). Comparing partitions. Journal of Classification 2, 193-218.
doi:10.1007/BF01908075
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.observables import FeatureTable
from virtual_lab.types import DEPTH_POSITIONS
from virtual_lab.validation import check_choice

logger = logging.getLogger(__name__)

__all__ = ["CLUSTER_METHODS", "ClusteringResult", "cluster_runs", "network_vectors", "plot_embedding"]

CLUSTER_METHODS = ("kmeans", "gmm")
LABEL_KEYS = ("rule", "family", "architecture", "task", "paradigm")


def network_vectors(table: FeatureTable) -> tuple[np.ndarray, np.ndarray]:
    """One feature vector per network.

    Returns
    -------
    network_ids : ndarray of str, shape (n_networks,)
        Sorted.
    vectors : ndarray of float64, shape (n_networks, 3 * n_features)
        Mean of the network's layer features within each depth position (early, middle, deep), the three
        means concatenated; a position a network lacks is filled with the mean over its layers.
    """
    networks, inverse = np.unique(table.network_id, return_inverse=True)
    n_features = table.n_features
    out = np.zeros((len(networks), len(DEPTH_POSITIONS), n_features))
    count = np.zeros((len(networks), len(DEPTH_POSITIONS)))
    position = np.array([DEPTH_POSITIONS.index(p) if p in DEPTH_POSITIONS else 0 for p in table.depth_position])
    np.add.at(out, (inverse, position), table.X)
    np.add.at(count, (inverse, position), 1)
    overall = np.zeros((len(networks), n_features))
    np.add.at(overall, inverse, table.X)
    overall /= np.bincount(inverse)[:, None]
    filled = np.where(count[:, :, None] > 0, out / np.maximum(count, 1)[:, :, None], overall[:, None, :])
    return networks, filled.reshape(len(networks), -1)


@dataclass(frozen=True, eq=False)
class ClusteringResult:
    """Outcome of :func:`cluster_runs`.

    Attributes
    ----------
    method : str
    n_clusters : int
    network_ids : ndarray of str, shape (n_networks,)
    assignments : ndarray of int64, shape (n_networks,)
    embedding : ndarray of float64, shape (n_networks, 2)
        First two principal components of the standardized network vectors.
    labels : dict of str to ndarray of str, shape (n_networks,)
        Rule, family, architecture, task (those present in the metadata).
    scores : dict of str to dict
        Label -> ``{"ari": float, "nmi": float, "n_values": int}``; ARI/NMI are None for a label with
        a single value (nothing to recover).
    seed : int
    """

    method: str
    n_clusters: int
    network_ids: np.ndarray = field(repr=False)
    assignments: np.ndarray = field(repr=False)
    embedding: np.ndarray = field(repr=False)
    labels: dict[str, np.ndarray] = field(repr=False)
    scores: dict[str, dict[str, Any]]
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-serializable: ``method``, ``n_clusters``, ``n_networks``, ``seed``, ``scores``."""
        return {"method": self.method, "n_clusters": self.n_clusters, "n_networks": len(self.network_ids),
                "seed": self.seed, "scores": self.scores}


def cluster_runs(table: FeatureTable, method: str = "kmeans", n_clusters: int | None = None, seed: int = 0,
                 n_components: int = 10, label_keys: Sequence[str] = LABEL_KEYS) -> ClusteringResult:
    """Cluster networks from their features and score the clusters against known labels.

    Parameters
    ----------
    table : FeatureTable
    method : {"kmeans", "gmm"}, default="kmeans"
        k-means (10 restarts) or a Gaussian mixture (full covariance, 3 restarts).
    n_clusters : int, optional
        Default: the number of distinct rules.
    seed : int, default=0
    n_components : int, default=10
        PCA components clustered (at most n_networks - 1 and n_features).
    label_keys : sequence of str
        Labels to score: ``"rule"`` and metadata keys.

    Returns
    -------
    ClusteringResult

    Raises
    ------
    ValueError
        Fewer networks than clusters, or fewer than 2 clusters.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    check_choice("method", method, CLUSTER_METHODS)
    networks, vectors = network_vectors(table)
    if n_clusters is None:
        n_clusters = len(table.classes)
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2, got {n_clusters} (the table has {len(table.classes)} rule(s))")
    if len(networks) <= n_clusters:
        raise ValueError(f"clustering into {n_clusters} clusters needs more than {n_clusters} networks, got "
                         f"{len(networks)}")
    scaled = StandardScaler().fit_transform(vectors)
    scaled = scaled[:, np.isfinite(scaled).all(axis=0)]
    k = max(2, min(n_components, scaled.shape[1], len(networks) - 1))
    reduced = PCA(n_components=k, random_state=seed).fit_transform(scaled)
    if method == "kmeans":
        assignments = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(reduced)
    else:
        assignments = GaussianMixture(n_components=n_clusters, n_init=3, random_state=seed).fit(reduced).predict(reduced)
    first = np.unique(table.network_id, return_index=True)[1]
    labels: dict[str, np.ndarray] = {}
    scores: dict[str, dict[str, Any]] = {}
    for key in label_keys:
        if key == "rule":
            values = np.asarray(table.rule)[first].astype(str)
        else:
            column = table.metadata_column(key)[first]
            if all(v is None for v in column):
                continue
            values = np.array([str(v) for v in column])
        labels[key] = values
        n_values = len(np.unique(values))
        if n_values < 2:
            scores[key] = {"ari": None, "nmi": None, "n_values": n_values}
        else:
            scores[key] = {"ari": float(adjusted_rand_score(values, assignments)),
                           "nmi": float(normalized_mutual_info_score(values, assignments)), "n_values": n_values}
    return ClusteringResult(method=method, n_clusters=int(n_clusters), network_ids=networks,
                            assignments=np.asarray(assignments, dtype=np.int64), embedding=reduced[:, :2],
                            labels=labels, scores=scores, seed=int(seed))


def plot_embedding(result: ClusteringResult, path: str | Path) -> Path:
    """2-D embedding of the networks, one panel per label (and one for the clusters); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(key, values) for key, values in result.labels.items()] + [
        (f"{result.method} cluster", result.assignments.astype(str))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), squeeze=False)
    for ax, (key, values) in zip(axes[0], panels):
        for value in sorted(set(values.tolist())):
            mask = values == value
            ax.scatter(result.embedding[mask, 0], result.embedding[mask, 1], s=12, label=value, alpha=0.8)
        score = result.scores.get(key)
        title = key if not score or score["ari"] is None else f"{key}: ARI {score['ari']:.2f}, NMI {score['nmi']:.2f}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        if len(set(values.tolist())) <= 10:
            ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
