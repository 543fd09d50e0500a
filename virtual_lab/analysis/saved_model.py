"""Saved decoders: a fitted rule decoder with what it expects, stored in the skops format (no pickle).

``virtual-lab decode ... --save model.skops`` stores, after the cross-validated evaluation, the decoder fitted
on *all* networks together with everything needed to ask it about a recording made elsewhere
(``virtual-lab identify``):

- the observables and the feature names it expects, in their order (timepoint-major, then the depth
  one-hot), and the training steps of its timepoints;
- the rig preset it was trained under (name, file, every setting, what it measures and in which form:
  dF/F, spike counts or layer outputs) and the number of units it saw per layer;
- the training population (rules and networks per rule, the conditions the sessions vary in, where they
  came from);
- its cross-validated network-level confusion matrix and accuracy;
- an out-of-distribution detector (:class:`OODModel`) with a threshold calibrated on held-out networks;
- the virtual_lab and scikit-learn versions.

Loading (:func:`load_model`) lists the file's types with :func:`skops.io.get_untrusted_types` *before*
anything is constructed, refuses a file whose types are outside skops's defaults and
:data:`TRUSTED_TYPES`, loads with exactly that trusted list, and then checks the structure (the estimator
is one of this package's decoders; the trees' node indices stay inside their arrays). Every failure is a
:class:`ModelFileError` with one line; no code from the file runs.

The out-of-distribution score of a network is the mean over its layers of the Mahalanobis distance of the
layer's observables (depth one-hot excluded) from the training layers, in the space standardized by the
training mean and standard deviation, with a Ledoit-Wolf shrunk covariance (Ledoit & Wolf 2004: well
conditioned when there are fewer training layers than features, which is the rule here). The threshold is
a high quantile (default 99%) of the scores of held-out networks: in every cross-validation split the
detector is fitted on the training networks and scores the test networks.

References
----------
Ledoit, O. & Wolf, M. (2004). A well-conditioned estimator for large-dimensional covariance matrices.
Journal of Multivariate Analysis 88, 365-411. doi:10.1016/S0047-259X(03)00096-4
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import FEATURE_NAME_DTYPE, FeatureTable
from virtual_lab.validation import check_fraction

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "OODModel", "SAVABLE_DECODERS", "SavedModel",
           "TRUSTED_TYPES", "fit_ood", "fit_saved_model", "load_model", "population_description", "rig_description",
           "save_model"]

FORMAT = "virtual_lab.saved_decoder"
FORMAT_VERSION = 1

#: Types a saved decoder may hold beyond those skops trusts by default. skops distrusts the tree storage of
#: random forests because a crafted file can put node indices out of range; :func:`load_model` checks them.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)

#: Decoders ``--save`` can store (the Conv1D MLP is a torch model, which skops cannot store safely).
SAVABLE_DECODERS = ("random_forest", "logistic", "linear_svm")

#: Pipeline steps a loaded decoder may have (class names), besides ``"passthrough"``.
_ALLOWED_STEPS = {"StandardScaler", "PCA", "RandomForestClassifier", "LogisticRegression", "SVC"}
_FINAL_FIT = 2**31 - 1  # "split index" of the fit on every network, for its decoder seed
_KEYS = ("format", "format_version", "estimator", "metadata_json", "ood_mean", "ood_scale", "ood_precision",
         "ood_columns", "ood_held_out_scores")


class ModelFileError(ValueError):
    """A model file that cannot be used: its one-line message says which file and why."""


# -- out-of-distribution detector ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class OODModel:
    """Mahalanobis distance from the training layers, with a threshold calibrated on held-out networks.

    Attributes
    ----------
    columns : ndarray of int64, shape (p,)
        Feature columns scored (the observables; the depth one-hot is left out).
    mean, scale : ndarray of float64, shape (p,)
        Training mean and standard deviation (1 where a column is constant).
    precision : ndarray of float64, shape (p, p)
        Inverse of the Ledoit-Wolf covariance of the standardized training layers.
    threshold : float
        ``quantile`` of ``held_out_scores`` (the next higher score: conservative).
    quantile : float
    held_out_scores : ndarray of float64
        Score of every test network of every cross-validation split.
    """

    columns: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    held_out_scores: np.ndarray = field(repr=False)

    def layer_scores(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``X`` (all the decoder's features), shape (n,)."""
        return _mahalanobis(np.asarray(X, dtype=np.float64)[:, self.columns], self.mean, self.scale, self.precision)

    def score(self, X: np.ndarray) -> float:
        """The score of one network: the mean distance of its layers (rows of ``X``)."""
        return float(np.mean(self.layer_scores(X)))

    def percentile(self, score: float) -> float:
        """Share (0-100) of the held-out simulated networks that scored at most ``score``."""
        return float(100.0 * np.mean(self.held_out_scores <= score))


def _mahalanobis(Z: np.ndarray, mean: np.ndarray, scale: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = (Z - mean) / scale
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))


def _fit_detector(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    covariance = LedoitWolf(assume_centered=True).fit((X - mean) / scale).covariance_
    return mean, scale, np.linalg.pinv(covariance, hermitian=True)


def _network_scores(X: np.ndarray, networks: np.ndarray, detector: tuple) -> np.ndarray:
    distances = _mahalanobis(X, *detector)
    return np.array([distances[networks == n].mean() for n in np.unique(networks)])


def fit_ood(table: FeatureTable, splits: Sequence[tuple[np.ndarray, np.ndarray]], quantile: float = 0.99) -> OODModel:
    """Fit the out-of-distribution detector on every network and calibrate its threshold on held-out ones.

    Parameters
    ----------
    table : FeatureTable
        The decoder's training table.
    splits : sequence of (train, test) example positions
        Grouped by network (as in :func:`~virtual_lab.analysis.splits.grouped_splits`).
    quantile : float, default=0.99
        Of the held-out networks' scores, taken as the threshold.

    Returns
    -------
    OODModel
    """
    quantile = check_fraction("quantile", quantile)
    columns = np.flatnonzero(table.feature_names["timepoint"] >= 0).astype(np.int64)
    X = np.asarray(table.X, dtype=np.float64)[:, columns]
    networks = np.asarray(table.network_id).astype(str)
    held_out = np.concatenate([_network_scores(X[test], networks[test], _fit_detector(X[train]))
                               for train, test in splits])
    mean, scale, precision = _fit_detector(X)
    threshold = float(np.quantile(held_out, quantile, method="higher"))
    return OODModel(columns, mean, scale, precision, threshold, float(quantile), held_out)


# -- the saved model ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SavedModel:
    """A fitted decoder with everything :func:`virtual_lab.analysis.identify.identify` needs.

    Attributes
    ----------
    estimator : sklearn.pipeline.Pipeline
        Fitted on every network of the training table.
    metadata : dict
        JSON-serializable: ``decoder``, ``features``, ``classes``, ``observables``, ``feature_names``
        (``[measure, function, statistic, timepoint]`` per column), ``n_timepoints``, ``checkpoint_steps``,
        ``rig``, ``population``, ``cross_validation``, ``ood``, ``versions``.
    ood : OODModel
    """

    estimator: Any
    metadata: Mapping[str, Any]
    ood: OODModel

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])

    @property
    def observables(self) -> tuple[str, ...]:
        return tuple(self.metadata["observables"])

    @property
    def feature_names(self) -> np.ndarray:
        """The expected columns as a FEATURE_NAME_DTYPE array."""
        return np.array([tuple(row) for row in self.metadata["feature_names"]], dtype=FEATURE_NAME_DTYPE)

    @property
    def n_timepoints(self) -> int:
        return int(self.metadata["n_timepoints"])

    @property
    def rig(self) -> Mapping[str, Any]:
        return self.metadata["rig"]

    def class_scores(self, X: np.ndarray) -> np.ndarray:
        """Class scores of each row (layer), shape (n, n_classes), as cross-validation combined them."""
        from virtual_lab.analysis.fitting import class_scores

        return class_scores(self.estimator, np.asarray(X, dtype=np.float64), self.classes)[0]

    def posterior(self, X: np.ndarray) -> dict[str, float]:
        """Posterior over rules of one network: its layers' class scores averaged (rows of ``X``)."""
        return dict(zip(self.classes, self.class_scores(X).mean(axis=0).tolist()))


def population_description(table: FeatureTable, recordings: Sequence[str] = ()) -> dict[str, Any]:
    """What the training population was: rules, networks per rule, and the conditions its sessions span.

    Returns
    -------
    dict
        ``n_networks``, ``n_layers`` (examples), ``networks_per_rule``, ``conditions`` (metadata key -> the
        distinct values, or ``{"min", "max", "n_distinct"}`` for a numeric key with more than 12) and
        ``recordings`` (what decode was given).
    """
    networks = np.asarray(table.network_id).astype(str)
    first = {}
    for index, network in enumerate(networks.tolist()):
        first.setdefault(network, index)
    metas = [table.metadata[i] for i in first.values()]
    rules = [str(table.rule[i]) for i in first.values()]
    conditions: dict[str, Any] = {}
    for key in ("family", "architecture", "task", "layer_sizes", "learning_rate", "batch_size", "n_steps",
                "learning_rate_scale", "width", "depth", "paradigm"):
        values = [m[key] for m in metas if key in m]
        if not values:
            continue
        distinct = sorted(set(values), key=str)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
        conditions[key] = ({"min": float(min(distinct)), "max": float(max(distinct)), "n_distinct": len(distinct)}
                           if numeric and len(distinct) > 12 else [v if numeric else str(v) for v in distinct])
    return {"n_networks": len(first), "n_layers": int(table.n_examples),
            "networks_per_rule": {r: rules.count(r) for r in sorted(set(rules))},
            "conditions": conditions, "recordings": [str(p) for p in recordings]}


def rig_description(session: str | os.PathLike, rig: str, seed: int = 0) -> dict[str, Any]:
    """The rig a decoder is trained under, as a saved model records it.

    Parameters
    ----------
    session : path-like
        A training session (observed once through the rig, for what the rig measures).
    rig : str
        ``"full"`` or a preset name / path.
    seed : int, default=0
        The rig seed of the decode run.

    Returns
    -------
    dict
        ``name``, ``path`` (the preset file, "" for ``full``), ``description``, ``settings`` (every
        ``stage.key`` with defaults filled in), ``seed``, ``measures``, ``activity_kind`` (``"dff"``,
        ``"spike_count"`` or ``"activation"``) and ``units_per_layer`` of that session.
    """
    from virtual_lab.analysis.session_tables import observe_session, read_session_arrays

    recording = observe_session(read_session_arrays(str(session)), rig, seed)
    out: dict[str, Any] = {"name": rig, "path": "", "description": "everything the network holds (no rig)",
                           "settings": {}}
    if rig != "full":
        from virtual_lab.rig.presets import load_preset

        preset = load_preset(rig)
        path = Path(preset.path)
        out = {"name": preset.name, "path": str(path.resolve()) if path.is_file() else str(preset.path),
               "description": preset.description,
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.parameters().items()}}
    return {**out, "seed": int(seed), "measures": list(recording.measures), "activity_kind": recording.activity_kind,
            "units_per_layer": {layer: int(recording.n_units(layer)) for layer in recording.layer_names}}


def _final_fit(table: FeatureTable, decoder: str, seed: int, param_grid: Any, test_fraction: float) -> Any:
    """The decoder fitted on every network (nested grid search over grouped inner splits with a grid)."""
    from virtual_lab.analysis.decoders import resolve_param_grid
    from virtual_lab.analysis.fitting import _decoder_seed, _run_split, _table_layout
    from virtual_lab.analysis.splits import grouped_splits

    grid, _ = resolve_param_grid(param_grid, decoder)
    y = np.asarray(table.rule).astype(str)
    everything = np.arange(table.n_examples)
    # the cross-validation's splits are 0 .. n_splits-1; the final fit takes a seed none of them has
    inner = (grouped_splits(table.network_id, y, n_splits=3, test_fraction=test_fraction,
                            seed=_decoder_seed(seed + 1, _FINAL_FIT)) if grid else None)
    output = _run_split(decoder, np.asarray(table.X, dtype=np.float64), y, everything, everything[:1],
                        tuple(sorted(set(y.tolist()))), _decoder_seed(seed, _FINAL_FIT), _table_layout(table),
                        grid, inner)
    return output["estimator"]


def fit_saved_model(table: FeatureTable, decoder: str, cross_validation: Any, *, rig: Mapping[str, Any],
                    features: str = "paper", seed: int = 0, n_splits: int = 10, test_fraction: float = 0.25,
                    param_grid: Any = None, recordings: Sequence[str] = (), ood_quantile: float = 0.99
                    ) -> SavedModel:
    """Fit the decoder on every network and gather what a saved model carries.

    Parameters
    ----------
    table : FeatureTable
        The table the decoder was cross-validated on (after ``--features``).
    decoder : str
        One of :data:`SAVABLE_DECODERS`.
    cross_validation : EvaluationResult
        Its cross-validated evaluation (the confusion matrix and accuracy are stored).
    rig : mapping
        JSON-serializable description of the rig (see ``rig_description`` in ``virtual-lab decode``).
    features, seed, n_splits, test_fraction, param_grid
        As given to the evaluation; the detector is calibrated on the same splits.
    recordings : sequence of str
        What the training sessions were read from.
    ood_quantile : float, default=0.99

    Returns
    -------
    SavedModel
    """
    from virtual_lab import __version__
    from virtual_lab.analysis.splits import grouped_splits

    if decoder not in SAVABLE_DECODERS:
        raise ValueError(f"--save stores decoders {', '.join(SAVABLE_DECODERS)}; {decoder!r} cannot be saved "
                         f"(a torch model skops cannot store safely)")
    estimator = _final_fit(table, decoder, seed, param_grid, test_fraction)
    splits = grouped_splits(table.network_id, table.rule, n_splits=n_splits, test_fraction=test_fraction, seed=seed)
    ood = fit_ood(table, splits, ood_quantile)
    summary = cross_validation.summary()
    steps = table.metadata[0].get("checkpoint_steps", ())
    import sklearn

    metadata = {
        "decoder": decoder, "features": features, "classes": sorted(set(np.asarray(table.rule).astype(str).tolist())),
        "observables": [o.name for o in table.observables], "n_timepoints": table.n_timepoints,
        "feature_names": [[str(r["measure"]), str(r["function"]), str(r["statistic"]), int(r["timepoint"])]
                          for r in table.feature_names],
        "checkpoint_steps": [int(s) for s in steps], "rig": dict(rig),
        "population": population_description(table, recordings),
        "cross_validation": {
            "classes": list(cross_validation.classes), "n_splits": summary["n_splits"],
            "test_fraction": summary["test_fraction"], "seed": summary["seed"],
            "network_confusion_counts": np.asarray(cross_validation.network_confusion_counts).tolist(),
            "network_confusion": summary["network_confusion"],
            "network_accuracy_mean": summary["network_accuracy_mean"],
            "network_accuracy_sem": summary["network_accuracy_sem"],
            "network_accuracy_wilson95": summary["network_accuracy_wilson95"], "chance": summary["chance"]},
        "ood": {"method": "mean over layers of the Mahalanobis distance (standardized observables, Ledoit-Wolf "
                          "covariance) from the training layers",
                "quantile": ood.quantile, "threshold": ood.threshold, "n_held_out": int(ood.held_out_scores.size)},
        "versions": {"virtual_lab": __version__, "scikit-learn": sklearn.__version__},
    }
    return SavedModel(estimator, metadata, ood)


def check_savable(decoder: str, filtered: bool, path: str | os.PathLike | None = None) -> None:
    """Raise (before any work) when ``decode --save`` cannot store what it was asked to fit, or not there."""
    if path is not None and Path(path).is_dir():
        raise ValueError(f"--save {path}: is a folder; give a file name such as model.skops")
    if decoder not in SAVABLE_DECODERS:
        raise ValueError(f"--save stores decoders {', '.join(SAVABLE_DECODERS)}; {decoder!r} cannot be saved "
                         f"(a torch model skops cannot store safely); put a savable --decoder first")
    if filtered:
        raise ValueError("--save stores the decoder of the main analysis, fitted on every network; "
                         "it cannot be combined with --train-filter / --test-filter")


def save_decoder(path: str | os.PathLike, table: FeatureTable, decoder: str, cross_validation: Any, *, rig: str,
                 rig_seed: int, session: str, **fit: Any) -> tuple[SavedModel, Path]:
    """``decode --save``: describe the rig (from ``session``), fit on every network, write ``path``.

    ``fit``: the keyword arguments of :func:`fit_saved_model` (features, seed, n_splits, ...).
    """
    model = fit_saved_model(table, decoder, cross_validation, rig=rig_description(session, rig, rig_seed), **fit)
    return model, save_model(model, path)


def save_model(model: SavedModel, path: str | os.PathLike) -> Path:
    """Write a saved model as a skops file, atomically (a temporary file renamed into place).

    Returns
    -------
    pathlib.Path
    """
    import skops.io as sio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "estimator": model.estimator,
             "metadata_json": json.dumps(model.metadata, sort_keys=True),
             "ood_mean": model.ood.mean, "ood_scale": model.ood.scale, "ood_precision": model.ood.precision,
             "ood_columns": model.ood.columns, "ood_held_out_scores": model.ood.held_out_scores}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sio.dump(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- loading -----------------------------------------------------------------------------------------
def _untrusted(path: Path) -> list[str]:
    """The file's types that are neither skops defaults nor :data:`TRUSTED_TYPES` (nothing is built)."""
    import skops.io as sio

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a skops model file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            if "schema.json" not in archive.namelist():
                raise ModelFileError(f"{path}: not a skops model file (no schema.json inside)")
        found = sio.get_untrusted_types(file=path)
    except ModelFileError:
        raise
    except Exception as error:  # any malformed schema: a clear line, never a traceback
        raise ModelFileError(f"{path}: not a readable skops model file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return sorted(set(found) - set(TRUSTED_TYPES))


def _check_trees(path: Path, estimator: Any, n_features: int) -> None:
    """Every tree's children and feature indices lie inside its arrays (what skops cannot check)."""
    for step in estimator.named_steps.values():
        for tree in getattr(step, "estimators_", []) if type(step).__name__ == "RandomForestClassifier" else []:
            t = tree.tree_
            n = int(t.node_count)
            left, right, feature = (np.asarray(a) for a in (t.children_left, t.children_right, t.feature))
            leaf = left == -1
            nodes = np.arange(n)
            ok = (left.shape == right.shape == feature.shape == (n,) and np.array_equal(leaf, right == -1)
                  and np.all((left[~leaf] > nodes[~leaf]) & (left[~leaf] < n))
                  and np.all((right[~leaf] > nodes[~leaf]) & (right[~leaf] < n))
                  and np.all((feature[~leaf] >= 0) & (feature[~leaf] < n_features)))
            if not ok or int(t.n_features) != n_features:
                raise ModelFileError(f"{path}: a tree of the random forest has node indices outside its arrays "
                                     f"(a damaged or tampered file); refusing to use it")


def _checked(path: Path, state: Any) -> SavedModel:
    from sklearn.pipeline import Pipeline

    if not isinstance(state, dict) or state.get("format") != FORMAT or set(state) != set(_KEYS):
        raise ModelFileError(f"{path}: a skops file, but not a virtual_lab saved decoder (written by "
                             f"'virtual-lab decode --save')")
    if not isinstance(state["format_version"], int) or state["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"{path}: saved-decoder format version {state['format_version']!r} is newer than "
                             f"this virtual_lab reads ({FORMAT_VERSION}); update virtual_lab")
    estimator = state["estimator"]
    steps = estimator.steps if isinstance(estimator, Pipeline) else None
    if not steps or any(s != "passthrough" and type(s).__name__ not in _ALLOWED_STEPS for _, s in steps):
        raise ModelFileError(f"{path}: the stored decoder is not one of virtual_lab's decoders")
    try:
        metadata = json.loads(state["metadata_json"])
        n_features = len(metadata["feature_names"])
        columns = np.asarray(state["ood_columns"], dtype=np.int64)
        p = columns.size
        arrays = [np.asarray(state[k], dtype=np.float64) for k in ("ood_mean", "ood_scale", "ood_precision")]
        if (arrays[0].shape != (p,) or arrays[1].shape != (p,) or arrays[2].shape != (p, p)
                or (p and (columns.min() < 0 or columns.max() >= n_features))
                or int(getattr(estimator, "n_features_in_", n_features)) != n_features):
            raise ValueError("inconsistent shapes")
        ood = OODModel(columns, *arrays, threshold=float(metadata["ood"]["threshold"]),
                       quantile=float(metadata["ood"]["quantile"]),
                       held_out_scores=np.asarray(state["ood_held_out_scores"], dtype=np.float64))
        model = SavedModel(estimator, metadata, ood)
        if len(model.feature_names) != n_features or model.n_timepoints < 1 or not str(model.rig["name"]):
            raise ValueError("feature names, timepoints or rig missing")
        if sorted(model.classes) != sorted(np.asarray(estimator.classes_).astype(str).tolist()):
            raise ValueError("the classes stored differ from the decoder's")
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ModelFileError(f"{path}: saved decoder is damaged ({type(error).__name__}: {error})") from None
    _check_trees(path, estimator, n_features)
    return model


def load_model(path: str | os.PathLike) -> SavedModel:
    """Read a model written by :func:`save_model`, trusting only skops's defaults and :data:`TRUSTED_TYPES`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    SavedModel

    Raises
    ------
    ModelFileError
        (a ValueError) with one line: no such file, not a skops file, types outside the trusted list (listed;
        nothing is built), not a virtual_lab decoder, a newer format, or damaged contents.
    """
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    untrusted = _untrusted(path)
    if untrusted:
        raise ModelFileError(f"{path}: refusing to load: it holds types outside the trusted list "
                             f"({', '.join(untrusted)}); nothing from it was run")
    try:
        state = sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as error:
        raise ModelFileError(f"{path}: cannot load the saved decoder ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return _checked(path, state)
