"""The power analysis itself: read and reduce every session (stage 1), decode every grid point (stage 2,
:mod:`~virtual_lab.analysis.power.crossval`), choose and confirm the protocol (stage 3), collect the answers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.observables import Observable
from virtual_lab.analysis.power.answers import _animals_answer, _holdout_answer, _pair_answers, _sentences
from virtual_lab.analysis.power.checks import (
    _check_counts, _check_fraction, _float_list, _int_list, _requested_observables, _resolve_layers, _resolve_rules,
    _rig_seed_list,
)
from virtual_lab.analysis.power.confirm import confirmed_accuracy, fit_once, split_networks
from virtual_lab.analysis.power.crossval import _bootstrap, _decode_grid, _Examples, _Networks, _progress, _tally
from virtual_lab.analysis.power.grid import _Grid, _supported_grid, compute_grid_features
from virtual_lab.analysis.power.presets import (
    DEFAULT_NOISE_PARAM, _measured_observables, _power_rig, compute_preset_grid_features,
)
from virtual_lab.analysis.power.recommend import _choose, _operating_index, _recommend, _thresholds
from virtual_lab.analysis.power.result import PowerResult
from virtual_lab.analysis.power.sources import _first_layout, _layout_problem, _session_sources, read_session_arrays
from virtual_lab.analysis.power.verdict import DEFAULT_ANIMALS
from virtual_lab.seeding import derive_seed, resolve_seed
from virtual_lab.stats import binomial_chance
from virtual_lab.types import DEPTH_POSITIONS, GroundTruth

logger = logging.getLogger(__name__)


def _reduce_session(source: GroundTruth | str | os.PathLike, plan: dict[str, Any]) -> dict[str, Any]:
    """Read one session (when given a path) and reduce it to its grid features (runs in a worker)."""
    if isinstance(source, GroundTruth):
        ground_truth = source
    else:
        try:
            ground_truth = read_session_arrays(source)
        except (OSError, KeyError, ValueError, TypeError) as error:  # damaged since it was found: skip it
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            return {"run_id": "", "rule": "", "diverged": False, "source": str(source), "features": None,
                    "problem": "", "unreadable": f"{type(error).__name__}: {text}", "metadata": {}}
    info = {"run_id": ground_truth.run_id, "rule": ground_truth.rule, "diverged": ground_truth.diverged,
            "source": "" if isinstance(source, GroundTruth) else str(source), "features": None, "problem": "",
            "unreadable": "", "metadata": dict(ground_truth.metadata)}
    if plan["rules"] is not None and ground_truth.rule not in plan["rules"]:
        return info
    problem = _layout_problem(ground_truth, plan)
    if problem:
        info["problem"] = problem
        return info
    if ground_truth.diverged:
        return info
    if plan.get("general"):
        info["features"] = compute_preset_grid_features(ground_truth, plan)
        return info
    info["features"] = compute_grid_features(
        ground_truth, unit_counts=plan["unit_counts"], noise_sds=plan["noise"],
        checkpoint_indices=plan["checkpoints"], rig_seeds=plan["rig_seeds"], layers=plan["layers"],
        noise_relative=plan["noise_relative"], synapse_fraction=plan["synapse_fraction"],
        observables=plan["observables"], noise_measures=plan["noise_measures"])
    return info


def power_analysis(recordings: Any, units: Sequence[int], noise: Sequence[float], sessions: Sequence[int], *,
                   rules: Sequence[str] | str | None = None, target: float = 0.9, n_splits: int = 10,
                   test_fraction: float = 0.25, rig: str | Mapping[str, Any] | None = None,
                   rig_seeds: int | Sequence[int] = 2, decoder: str | Any = "linear_svm", seed: int | None = 0,
                   cap_units: bool = False, layers: Sequence[str] | None = None,
                   observables: str | Sequence[Observable | str] = "admissible", confidence: float = 0.95,
                   n_bootstrap: int = 2000, n_jobs: int = -1, progress: bool = False,
                   noise_param: str | None = None, confirm_fraction: float = 0.5,
                   confirm_networks: Sequence[str] | None = None, holdout: str | None = None,
                   holdout_bins: int | None = None, pairs: bool = True,
                   animals: Sequence[int] = DEFAULT_ANIMALS) -> PowerResult:
    """Simulate the experiment over a grid of recording protocols, say which one suffices, and confirm it.

    The networks are split once (stratified by rule, seeded, stored) into a *selection* part, on which every
    grid point is cross-validated (grouped by network) and the protocol chosen, and a disjoint
    *confirmation* part: at the chosen protocol a decoder trained on the selection networks decodes each
    confirmation network, and that accuracy (with a Wilson interval over confirmation networks) is the
    answer. The same confirmation decodings give the M-animals verdict (the probability that the posterior
    over rules from M animals' predictions names the right rule); ``holdout`` adds the accuracy on a
    condition left out of training, ``pairs`` the smallest protocol separating each pair of rules.

    Parameters
    ----------
    recordings : str, path, sequence of paths or sequence of GroundTruth
        Ground-truth sessions: a folder (every ``*_ses-groundtruth.nwb`` below it), files, or in-memory
        sessions. Files are found with :func:`virtual_lab.sessions.find_sessions` (damaged, foreign and
        temporary files skipped with a warning); sessions are read one at a time in worker processes and
        reduced to features.
    units : sequence of int
        Units recorded per layer. A value above a layer's size is skipped with a message unless
        ``cap_units`` (then that layer records all its units; values that become identical are skipped).
    noise : sequence of float
        Measurement noise SD (relative to each measure's SD for the rig presets with ``noise_relative``), or
        the values of ``noise_param``.
    sessions : sequence of int
        Checkpoints observed over learning, evenly spaced, first and last included. Values above the
        recorded number of checkpoints are skipped with a message.
    rules : sequence of str or str, optional
        Rules to tell apart (full names or aliases ``fa``, ``ia``...); default all recorded rules. Two rules
        is the pairwise mode ("Hebbian or feedback alignment?").
    target : float, default=0.9
        Accuracy to reach, in (0, 1).
    n_splits : int, default=10
        Grouped cross-validation splits per grid point and rig seed.
    test_fraction : float, default=0.25
    rig : str or dict, optional
        Rig preset (see :func:`resolve_rig`); default ``"paper"``. Modality presets (``"2p-gcamp6s"``,
        ``"neuropixels-chronic"``, ``"em-snapshot"``...) and preset file paths take the general path (module
        docstring): slower, one preset application per grid point and session.
    rig_seeds : int or sequence of int, default=2
        Number of rig repeats (seeds derived from ``seed``) or explicit seeds. Each repeat draws new units
        and new noise for every network; one set serves every noise level.
    decoder : str or estimator, default="linear_svm"
        A name from :data:`virtual_lab.analysis.decoders.DECODERS` or a scikit-learn classifier. The linear
        SVM is the default here because a grid needs thousands of fits: on the quickstart it fits in a small
        fraction of the random forest's time (300 trees) at similar accuracy.
    seed : int or None, default=0
        Master seed (rig seeds, splits, decoders, bootstrap); None draws one, stored in ``provenance``.
    cap_units : bool, default=False
    layers : sequence of str, optional
        Layers recorded (default: all).
    observables : "admissible", "all" or sequence, default="admissible"
        With a rig preset, "admissible" and "all" keep those the preset measures (one line logged); a
        sequence naming one it cannot measure is an error.
    confidence : float, default=0.95
    n_bootstrap : int, default=2000
    n_jobs : int, default=-1
        Worker processes (-1: all cores) for reading sessions and for decoding grid points.
    progress : bool, default=False
    noise_param : str, optional
        The preset parameter the noise axis sets, as ``"stage.key"`` (e.g. ``"calcium.noise_level"``, the
        CASCADE noise level of a two-photon preset, or ``"spiking.window_s"``). Default: ``"noise.sd"``, extra
        Gaussian noise relative to each measure's SD after the modality. Only for rig presets of
        :mod:`virtual_lab.rig.presets`.
    confirm_fraction : float, default=0.5
        Fraction of each rule's networks kept out of the choice to confirm it, in (0, 1).
    confirm_networks : sequence of str, optional
        Run ids of the confirmation networks (e.g. a separately trained cohort) instead of a random
        ``confirm_fraction``; every other network selects.
    holdout : str, optional
        A metadata axis (``learning_rate_scale``, ``learning_rate``, ``width``, ``depth``, ``task``,
        ``architecture``, ... ; the derived keys of :data:`virtual_lab.analysis.tables.DERIVED_KEYS` are
        computed when a session does not store them): at the recommended protocol, each level in turn is left
        out of training (the decoder learns on the selection networks of the other levels) and its
        confirmation networks are decoded. The split is then stratified by level too.
    holdout_bins : int, optional
        Bins of a continuous holdout axis (see :func:`virtual_lab.analysis.holdout.holdout_levels`).
    pairs : bool, default=True
        For 3 or more rules, the pairwise table: for each pair, a decoder trained on those two rules only is
        cross-validated over the grid on the pair's selection networks, the pair's protocol chosen as the
        recommendation is, and confirmed on the pair's confirmation networks (about ``k(k-1)/2`` binary
        grids more work).
    animals : sequence of int, default=(1, 2, 3, 5, 10)
        Numbers of recorded animals of the M-animals verdict.

    Returns
    -------
    PowerResult

    Raises
    ------
    ValueError
        Invalid grid values, unknown rules or rig preset, or no grid point the recordings can support.
    """
    units, noise = _int_list("units", units, 1), _float_list("noise", noise)
    sessions = _int_list("sessions", sessions, 1)
    target, confidence = _check_fraction("target", target), _check_fraction("confidence", confidence)
    confirm_fraction = _check_fraction("confirm_fraction", confirm_fraction)
    _check_counts(n_splits, n_bootstrap, n_jobs)
    animals = _int_list("animals", animals, 1)
    seed = resolve_seed(seed)
    rig_seed_list = _rig_seed_list(seed, rig_seeds)
    named, observables = _requested_observables(observables)
    if isinstance(decoder, str):
        from virtual_lab.analysis.decoders import make_decoder
        make_decoder(decoder)  # did-you-mean on a typo, before any work
    rig_settings, has_checkpoints = _power_rig(rig, noise_param, noise, sessions)
    n_workers = (os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)

    sources = _session_sources(recordings)
    first_gt, layout = _first_layout(sources[0])
    grid = _supported_grid(units, noise, sessions, layout, _resolve_layers(layers, layout["layer_names"]), cap_units)
    plan = _plan(grid, rig_settings, rig_seed_list, observables, cap_units, has_checkpoints)
    if plan.get("general"):
        plan["observables"] = _measured_observables(first_gt, plan, observables, rig_settings["name"], explicit=named)
    # rules: from the first session's metadata we do not know all rules yet -> filter after reading
    if rules is not None and all(isinstance(s, GroundTruth) for s in sources):
        plan["rules"] = _resolve_rules(rules, sorted({s.rule for s in sources}))
    del first_gt

    networks, features = _read_networks(sources, plan, rules, n_workers, progress)  # stage 1
    settings = _Settings(target=target, confidence=confidence, n_splits=int(n_splits),
                         test_fraction=float(test_fraction), decoder=decoder, seed=seed,
                         rig_seeds=tuple(rig_seed_list), n_bootstrap=int(n_bootstrap), n_workers=n_workers,
                         progress=progress, confirm_fraction=confirm_fraction,
                         confirm_networks=None if confirm_networks is None else tuple(map(str, confirm_networks)),
                         holdout=holdout, holdout_bins=holdout_bins, pairs=bool(pairs), animals=animals,
                         rig=rig_settings, cap_units=bool(cap_units), n_sources=len(sources))
    return _analyse(features, networks, grid, plan, settings)


def _plan(grid: _Grid, rig_settings: Mapping[str, Any], rig_seed_list: Sequence[int],
          observables: Sequence[Observable], cap_units: bool, has_checkpoints: bool) -> dict[str, Any]:
    """What every worker needs to reduce one session to its grid features (picklable)."""
    plan = {"unit_counts": list(grid.unit_counts), "noise": grid.noise, "checkpoints": grid.checkpoints,
            "rig_seeds": tuple(rig_seed_list), "layers": grid.layers,
            "noise_relative": bool(rig_settings["noise_relative"]),
            "synapse_fraction": rig_settings["synapse_fraction"], "observables": tuple(observables), "rules": None,
            "noise_measures": tuple(rig_settings["noise_measures"]),
            "layout": {"n_checkpoints": grid.n_checkpoints, "layer_sizes": grid.sizes}}
    if rig_settings.get("general"):
        plan.update(general=True, preset=rig_settings["preset"], units=grid.unit_values,
                    sessions=grid.session_values, cap_units=bool(cap_units), noise_param=rig_settings["noise_param"],
                    has_checkpoints=has_checkpoints)
    return plan


@dataclass(frozen=True)
class _Settings:
    """Everything :func:`_analyse` needs besides the features (resolved and checked by power_analysis)."""

    target: float
    confidence: float
    n_splits: int
    test_fraction: float
    decoder: Any
    seed: int
    rig_seeds: tuple[int, ...]
    n_bootstrap: int
    n_workers: int
    progress: bool
    confirm_fraction: float
    confirm_networks: tuple[str, ...] | None
    holdout: str | None
    holdout_bins: int | None
    pairs: bool
    animals: tuple[int, ...]
    rig: Mapping[str, Any]
    cap_units: bool
    n_sources: int


def _read_networks(sources: Sequence[Any], plan: Mapping[str, Any], requested_rules: Any, n_workers: int,
                   progress: bool) -> tuple[_Networks, Any]:
    """Stage 1: read every session once (in workers) and reduce it to grid features.

    Returns the networks and their features: one (N, R, U, Z, L, T, O) array on the built-in rig path, one
    (N, R, U, Z, L, K, O) array per session count on the general path.
    """
    from joblib import Parallel, delayed

    in_memory = isinstance(sources[0], GroundTruth)
    parallel = Parallel(n_jobs=n_workers, return_as="generator", pre_dispatch="2*n_jobs",
                        prefer="threads" if in_memory else "processes")
    reduced, unreadable = [], []
    with _progress(len(sources), "power: observing sessions", progress) as bar:
        for info in parallel(delayed(_reduce_session)(source, plan) for source in sources):
            bar.update(1)
            if info["unreadable"]:
                logger.warning("skipping %s (unreadable: %s)", info["source"], info["unreadable"])
                unreadable.append(f"{info['source']}: {info['unreadable']}")
                continue
            if info["problem"]:
                raise ValueError(f"recordings: session {info['source'] or info['run_id']} does not match the "
                                 f"first session: {info['problem']}")
            reduced.append(info)
    diverged = [i["run_id"] for i in reduced if i["diverged"]]
    if diverged:
        logger.warning("dropped %d diverged network(s): %s", len(diverged), ", ".join(diverged))
    recorded_rules = sorted({i["rule"] for i in reduced})
    chosen_rules = _resolve_rules(requested_rules, recorded_rules) if requested_rules is not None else tuple(
        recorded_rules)
    used = [i for i in reduced if i["features"] is not None and i["rule"] in chosen_rules]
    ids = [i["run_id"] for i in used]
    if len(set(ids)) != len(ids):
        raise ValueError("recordings: two sessions have the same run id; each network must appear once")
    if plan.get("general"):
        features = [np.stack([i["features"][s_i] for i in used]) for s_i in range(len(plan["sessions"]))]
    else:
        features = np.stack([i["features"] for i in used])
    networks = _Networks(rules=np.array([i["rule"] for i in used], dtype=str), ids=np.array(ids, dtype=str),
                         classes=tuple(sorted(chosen_rules)), diverged=diverged,
                         metadata=tuple(i["metadata"] for i in used), unreadable=tuple(unreadable))
    return networks, features


def _pair_name(pair: Sequence[str]) -> str:
    return "|".join(pair)


def _holdout_levels(networks: _Networks, axis: str, bins: int | None) -> Any:
    """The levels of ``axis`` (one per network), as :func:`virtual_lab.analysis.holdout.holdout_levels` makes
    them for a decode: discrete values, or bins of a continuous axis."""
    from virtual_lab.analysis.holdout import holdout_levels
    from virtual_lab.analysis.observables import FEATURE_NAME_DTYPE, FeatureTable

    n = len(networks.ids)  # one row per network: holdout_levels reads only the metadata
    table = FeatureTable(X=np.zeros((n, 1)), rule=networks.rules, network_id=networks.ids,
                         layer=np.full(n, "network"), depth_position=np.full(n, DEPTH_POSITIONS[0]),
                         metadata=tuple(networks.metadata),
                         feature_names=np.array([("none", "none", "none", 0)], dtype=FEATURE_NAME_DTYPE))
    levels = holdout_levels(table, axis, bins)
    if len(levels.labels) < 2:
        raise ValueError(f"holdout {axis!r}: the networks have a single level ({levels.labels[0]}); nothing to "
                         f"hold out")
    return levels


def _confirmation_mask(networks: _Networks, settings: _Settings, levels: Any) -> np.ndarray:
    """Which networks confirm: the ones named, or a seeded split stratified by rule (and held-out level)."""
    if settings.confirm_networks is not None:
        named = set(settings.confirm_networks)
        unknown = sorted(named - set(networks.ids.tolist()))
        if unknown:
            raise ValueError(f"confirm_networks: {len(unknown)} run id(s) are not among the networks decoded, "
                             f"e.g. {unknown[0]!r}")
        mask = np.isin(networks.ids, list(named))
        for rule in networks.classes:
            on = mask[networks.rules == rule]
            if (~on).sum() < 2 or not on.any():
                raise ValueError(f"confirm_networks: rule {rule!r} has {(~on).sum()} selection and {on.sum()} "
                                 f"confirmation network(s); cross-validating the grid needs at least 2 per rule and "
                                 f"confirming at least 1")
        return mask
    strata = None if levels is None else levels.index
    return split_networks(networks.rules, settings.confirm_fraction, derive_seed(settings.seed, "confirm"), strata)


def _fit_jobs(examples: _Examples, networks: _Networks, grid: _Grid, point: tuple[int, int, int],
              train: np.ndarray, test: np.ndarray, settings: _Settings, key: tuple) -> list[tuple[tuple, Any]]:
    """One decoder per rig repeat trained on the networks ``train`` and scored on ``test`` at ``point``."""
    from joblib import delayed

    u_i, n_i, s_i = point
    uv_i = grid.unit_values.index(grid.units[u_i])
    sv_i = grid.session_values.index(grid.sessions[s_i])
    positions = np.sort(np.concatenate([train, test]))
    jobs = []
    for r in range(len(settings.rig_seeds)):
        X, rule_col, net_col, layer_col, depth_col, names = examples.matrix(uv_i, n_i, sv_i, r, positions)
        train_rows = np.isin(net_col, networks.ids[train])
        test_rows = np.isin(net_col, networks.ids[test])
        jobs.append((key + (r,), delayed(fit_once)(X, rule_col, net_col, layer_col, depth_col, names,
                                                   settings.decoder, train_rows, test_rows,
                                                   derive_seed(settings.seed, "confirm", r))))
    return jobs


def _run_fits(jobs: Sequence[tuple[tuple, Any]], settings: _Settings) -> dict[tuple, dict[str, Any]]:
    """Stage 3: the single train/test decodings (confirmation, held-out levels, pairs), in workers."""
    from joblib import Parallel

    results = {}
    parallel = Parallel(n_jobs=settings.n_workers, return_as="generator", pre_dispatch="2*n_jobs")
    with _progress(len(jobs), "power: confirming", settings.progress) as bar:
        for (key, _), output in zip(jobs, parallel(job for _, job in jobs)):
            results[key] = output
            if output["n_dropped"]:
                logger.warning("%s: dropped %d example(s) with non-finite features", key, output["n_dropped"])
            bar.update(1)
    return results


def _repeats(results: Mapping[tuple, Mapping[str, Any]], key: tuple, n_repeats: int) -> list[list[tuple]]:
    return [results[key + (r,)]["predictions"] for r in range(n_repeats) if key + (r,) in results]


@dataclass(frozen=True)
class _Selection:
    """Stage 2 on the selection networks: the grid's tidy rows, its accuracy with the bootstrap interval and
    replicates, its confusion counts, chance, the thresholds, the chosen protocol and its grid point, and the
    grid and choice of each pair of rules (``subsets``: the selection networks of each set of rules)."""

    rows: list[dict[str, Any]]
    accuracy: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    boot: np.ndarray
    confusion: np.ndarray
    chance: Any
    thresholds: list[Any]
    choice: Any
    per_noise: Any
    point: tuple[int, int, int]
    split_seeds: tuple[int, ...]
    subsets: dict[str, np.ndarray]
    pair_grids: dict[str, dict[str, Any]]


def _select(examples: _Examples, networks: _Networks, grid: _Grid, selection: np.ndarray,
            settings: _Settings) -> _Selection:
    """Stage 2: cross-validate the grid on the selection networks (all rules, and each pair of rules for the
    pairwise table), bootstrap its accuracy over networks, and choose the protocol (overall and per pair)."""
    classes, n_repeats, target = networks.classes, len(settings.rig_seeds), settings.target
    split_seeds = tuple(derive_seed(settings.seed, "splits", r) for r in range(n_repeats))
    subsets, subset_classes = {"all": selection}, {"all": classes}
    pair_list = list(combinations(classes, 2)) if settings.pairs and len(classes) > 2 else []
    for pair in pair_list:
        subsets[_pair_name(pair)] = selection[np.isin(networks.rules[selection], pair)]
        subset_classes[_pair_name(pair)] = tuple(pair)
    tasks = [(name, u_i, n_i, s_i, r) for name in subsets for u_i in range(len(grid.unit_values))
             for n_i in range(len(grid.noise)) for s_i in range(len(grid.session_values)) for r in range(n_repeats)]
    outputs = _decode_grid(tasks, examples, subsets, settings.decoder, settings.n_splits, settings.test_fraction,
                           split_seeds, settings.n_workers, settings.progress)
    rows, tallies = _tally(tasks, outputs, grid, networks, settings.rig_seeds, split_seeds, settings.decoder,
                           subset_classes)
    del outputs

    def bootstrap(name: str, *seed_parts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _bootstrap(tallies[name], networks, subsets[name], derive_seed(settings.seed, "bootstrap", *seed_parts),
                          settings.n_bootstrap, settings.confidence)

    accuracy, ci_low, ci_high, boot = bootstrap("all")
    choice, per_noise = _choose(grid.units, grid.noise, grid.sessions, accuracy, ci_low, target)
    pair_grids = {}
    for pair in pair_list:
        name = _pair_name(pair)
        acc, low, high, _ = bootstrap(name, name)
        pair_choice, _ = _choose(grid.units, grid.noise, grid.sessions, acc, low, target)
        pair_grids[name] = {"pair": pair, "accuracy": acc, "ci_low": low, "ci_high": high, "choice": pair_choice,
                            "point": _operating_index(pair_choice, acc)}
    return _Selection(
        rows=rows, accuracy=accuracy, ci_low=ci_low, ci_high=ci_high, boot=boot, confusion=tallies["all"].confusion,
        chance=binomial_chance(len(selection), len(classes), settings.confidence),
        thresholds=_thresholds(grid.units, grid.noise, grid.sessions, accuracy, ci_low, boot, target,
                               settings.confidence),
        choice=choice, per_noise=per_noise, point=_operating_index(choice, accuracy), split_seeds=split_seeds,
        subsets=subsets, pair_grids=pair_grids)


def _confirmation_jobs(examples: _Examples, networks: _Networks, grid: _Grid, chosen: _Selection,
                       selection: np.ndarray, confirmation: np.ndarray, levels: Any,
                       settings: _Settings) -> list[tuple[tuple, Any]]:
    """Stage 3's decodings at the chosen protocol: the confirmation networks, each held-out level (trained on
    the selection networks of the other levels), and each pair of rules at the pair's own protocol."""
    jobs = _fit_jobs(examples, networks, grid, chosen.point, selection, confirmation, settings, ("confirm",))
    if levels is not None:
        for level in range(len(levels.labels)):
            train = selection[levels.index[selection] != level]
            test = confirmation[levels.index[confirmation] == level]
            if len(test) and len(set(networks.rules[train].tolist())) >= 2:
                jobs += _fit_jobs(examples, networks, grid, chosen.point, train, test, settings, ("holdout", level))
    for name, g in chosen.pair_grids.items():
        test = confirmation[np.isin(networks.rules[confirmation], g["pair"])]
        jobs += _fit_jobs(examples, networks, grid, g["point"], chosen.subsets[name], test, settings, ("pair", name))
    return jobs


def _confirmations(fits: Mapping[tuple, Mapping[str, Any]], networks: _Networks, confirmation: np.ndarray,
                   levels: Any, pair_grids: Mapping[str, Mapping[str, Any]],
                   settings: _Settings) -> tuple[dict[str, Any], dict[int, Any] | None, dict[str, Any]]:
    """The confirmed accuracy (:func:`confirmed_accuracy`) at the chosen protocol, at each held-out level
    (None without a holdout axis) and for each pair of rules."""
    confirm_seed = derive_seed(settings.seed, "confirmation bootstrap")

    def confirmed(key: tuple, members: np.ndarray, classes: Sequence[str], seed: int) -> dict[str, Any]:
        return confirmed_accuracy(_repeats(fits, key, len(settings.rig_seeds)), networks.ids[members],
                                  networks.rules[members], classes, confidence=settings.confidence,
                                  n_bootstrap=settings.n_bootstrap, seed=seed)

    overall = confirmed(("confirm",), confirmation, networks.classes, confirm_seed)
    held = None if levels is None else {
        level: confirmed(("holdout", level), confirmation, networks.classes, derive_seed(confirm_seed, level))
        for level in range(len(levels.labels))}
    pairs = {}
    for name, g in pair_grids.items():
        in_pair = confirmation[np.isin(networks.rules[confirmation], g["pair"])]
        pairs[name] = confirmed(("pair", name), in_pair, g["pair"], derive_seed(confirm_seed, name))
    return overall, held, pairs


def _analyse(features: Any, networks: _Networks, grid: _Grid, plan: Mapping[str, Any],
             settings: _Settings) -> PowerResult:
    """Stages 2 and 3 on the reduced features: the grid on the selection networks, the choice, and the
    decodings that confirm it (with the held-out condition, the pairs and the M-animals verdict)."""
    classes, target, confidence = networks.classes, settings.target, settings.confidence
    levels = _holdout_levels(networks, settings.holdout, settings.holdout_bins) if settings.holdout else None
    confirm = _confirmation_mask(networks, settings, levels)
    selection, confirmation = np.flatnonzero(~confirm), np.flatnonzero(confirm)
    examples = _Examples(networks, grid, plan, features)
    chosen = _select(examples, networks, grid, selection, settings)  # stage 2
    fits = _run_fits(_confirmation_jobs(examples, networks, grid, chosen, selection, confirmation, levels, settings),
                     settings)  # stage 3
    confirmed, held, pair_confirmed = _confirmations(fits, networks, confirmation, levels, chosen.pair_grids,
                                                     settings)
    point = chosen.point
    confirmed["point"] = {"units": grid.units[point[0]], "noise": grid.noise[point[1]],
                          "sessions": grid.sessions[point[2]]}
    noise_param = settings.rig.get("noise_param")
    recommendation = _recommend(grid.units, grid.noise, grid.sessions, chosen.accuracy, chosen.ci_low,
                                chosen.ci_high, confirmed["confusion"], classes, target, confidence,
                                settings.rig["name"], chosen.chance, chosen.choice, chosen.per_noise, confirmed,
                                len(selection), " x signal SD" if settings.rig["noise_relative"] else "",
                                noise_name=None if noise_param in (None, DEFAULT_NOISE_PARAM) else noise_param)
    animals = _animals_answer(confirmed, classes, settings.animals, settings.n_bootstrap, confidence,
                              derive_seed(settings.seed, "animals"))
    holdout = None if levels is None else _holdout_answer(
        settings.holdout, levels, held, confirmed, networks, confirmation, classes, settings,
        derive_seed(settings.seed, "animals", "holdout"))
    pairs = _pair_answers(chosen.pair_grids, pair_confirmed, grid, settings)
    provenance = _provenance(grid, plan, settings, networks, levels is not None, chosen.split_seeds)
    answers = _sentences(recommendation, holdout, pairs, animals, settings, len(selection), len(confirmation),
                         networks)
    return PowerResult(classes=classes, units=grid.units, noise=grid.noise, sessions=grid.sessions,
                       accuracy=chosen.accuracy, ci_low=chosen.ci_low, ci_high=chosen.ci_high, bootstrap=chosen.boot,
                       confusion=chosen.confusion, rows=tuple(chosen.rows), skipped=grid.skipped,
                       chance=chosen.chance, thresholds=tuple(chosen.thresholds), recommendation=recommendation,
                       target=target, confidence=confidence, n_networks=len(networks.ids),
                       networks=tuple(networks.ids.tolist()), provenance=provenance,
                       selection_networks=tuple(networks.ids[selection].tolist()),
                       confirmation_networks=tuple(networks.ids[confirmation].tolist()), confirmation=confirmed,
                       holdout=holdout, pairs=tuple(pairs), animals=animals, answers=answers)


def _provenance(grid: _Grid, plan: Mapping[str, Any], settings: _Settings, networks: _Networks, held_out: bool,
                split_seeds: Sequence[int]) -> dict[str, Any]:
    """Resolved seeds, rig, decoder and grid settings, sources, the network split and version of one analysis."""
    from virtual_lab import __version__

    seed, rig_settings, decoder = settings.seed, settings.rig, settings.decoder
    noise_param = rig_settings.get("noise_param")
    return {
        "seed": seed, "rig_seeds": list(settings.rig_seeds), "split_seeds": list(split_seeds),
        "bootstrap_seed": derive_seed(seed, "bootstrap"), "n_bootstrap": settings.n_bootstrap,
        "confirm_seed": derive_seed(seed, "confirm"),
        "confirm_decoder_seeds": [derive_seed(seed, "confirm", r) for r in range(len(settings.rig_seeds))],
        "network_rig_seed": ("derive_seed(rig_seed, run_id), split into one seed per rig stage by "
                             "virtual_lab.rig.rig_stage_seeds, as observe() and apply_preset split it"),
        "noise_axis": noise_param or ("noise SD (x signal SD)" if rig_settings["noise_relative"] else "noise SD"),
        "rig": rig_settings, "decoder": decoder if isinstance(decoder, str) else type(decoder).__name__,
        "n_splits": int(settings.n_splits), "test_fraction": float(settings.test_fraction),
        "cap_units": bool(settings.cap_units), "layers": list(grid.layers), "layer_sizes": list(grid.sizes),
        "observables": [o.name for o in plan["observables"]], "checkpoint_spacing": "even",
        "n_checkpoints_recorded": grid.n_checkpoints, "n_sessions_read": settings.n_sources,
        "diverged_dropped": networks.diverged, "virtual_lab_version": __version__,
        "accuracy": "network level; mean over networks of each network's fraction correct over its test splits "
                    "and rig repeats",
        "interval": f"{settings.confidence:.0%} percentile bootstrap over networks, stratified by rule",
        "selection": ("networks split once, stratified by rule" + (f" and {settings.holdout}" if held_out else "")
                      + (f", {settings.confirm_fraction:.0%} of each rule's networks confirming" if
                         settings.confirm_networks is None else ", confirmation networks given")),
        "unreadable_skipped": list(networks.unreadable), "holdout_axis": settings.holdout,
    }
