"""The experimentalist's questions, one answer each: the held-out condition, the pairs of rules, M animals.

Every answer is given at a protocol chosen on the selection networks and measured on the confirmation
networks (see :mod:`virtual_lab.analysis.power.confirm`), with its interval and the assumptions it rests on:

- **held-out condition** (:func:`_holdout_answer`): at the recommended protocol, each level of an axis
  (e.g. the learning-rate multiplier) in turn is left out of training -- the decoder learns on the
  selection networks of the other levels -- and the confirmation networks of that level are decoded: the
  accuracy when the test animal's condition was not simulated, per level, pooled, and at the worst level;
- **pairs** (:func:`_pair_answers`): for each pair of rules, a decoder trained on those two rules only (the
  question "is it A or B?" asked once the other rules are ruled out; restricting the all-rules confusion to
  the pair would either count errors towards a third rule against the pair or, conditioning on a
  prediction inside the pair, drop them -- neither answers that question), cross-validated over the grid
  on the pair's selection networks, its protocol chosen by the recommendation's own ordering, confirmed
  on the pair's confirmation networks;
- **M animals** (:func:`_animals_answer`): the probability that the posterior verdict over M animals
  sharing one rule is right (:mod:`virtual_lab.analysis.power.verdict`), from the confirmation networks'
  confusion.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from virtual_lab.analysis.power.checks import short_rule
from virtual_lab.analysis.power.verdict import animals_table
from virtual_lab.stats import wilson_interval

#: Keys whose distinct values describe the simulated conditions in the assumptions.
CONDITION_KEYS = ("task", "architecture", "width", "depth", "learning_rate_scale")


def _interval(values: Sequence[float | None]) -> str:
    low, high = values
    return "[-, -]" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _pair_label(pair: Sequence[str]) -> str:
    return f"{short_rule(pair[0])}-{short_rule(pair[1])}"


def _subset(confirmed: Mapping[str, Any], ids: set[str], classes: Sequence[str],
            confidence: float) -> dict[str, Any]:
    """Accuracy (and Wilson interval) of the confirmation networks ``ids`` within a confirmed result."""
    correct = [fractions[list(classes).index(rule)] for network, rule, fractions in
               zip(confirmed["networks"], confirmed["rules"], confirmed["per_network"]) if network in ids]
    if not correct:
        return {"accuracy": None, "wilson": [None, None], "n": 0}
    accuracy, n = float(np.mean(correct)), len(correct)
    return {"accuracy": accuracy, "wilson": list(wilson_interval(accuracy * n, n, confidence)), "n": n}


def _animals_answer(confirmed: Mapping[str, Any], classes: Sequence[str], animals: Sequence[int], n_bootstrap: int,
                    confidence: float, seed: int) -> dict[str, Any]:
    """The M-animals table from the confirmation networks' per-network predictions."""
    if not confirmed.get("per_network"):
        return {"table": [], "n_networks": 0, "pseudo_count": 1.0 / len(classes)}
    table = animals_table(np.asarray(confirmed["per_network"]), confirmed["rules"], classes, animals=animals,
                          n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return {"table": table, "n_networks": int(confirmed["n"]), "pseudo_count": 1.0 / len(classes),
            "likelihood": "confusion of the confirmation networks at the recommended protocol (networks weighted "
                          "by the fraction of rig repeats naming each rule), 1/k pseudo-count per cell",
            "prior": "uniform over the rules", "method": "exact enumeration of the predictions' count vectors",
            "interval": "bootstrap over confirmation networks (within rule), each replicate's rows drawn from "
                        "their Dirichlet posterior"}


def _holdout_answer(axis: str, levels: Any, held: Mapping[int, Mapping[str, Any]], confirmed: Mapping[str, Any],
                    networks: Any, confirmation: np.ndarray, classes: Sequence[str], settings: Any,
                    seed: int) -> dict[str, Any]:
    """Per level, pooled and worst-level accuracy of the recommended protocol on an unsimulated condition."""
    confidence = settings.confidence
    selection_levels = np.delete(levels.index, confirmation)
    rows = []
    for level, label in enumerate(levels.labels):
        ids = set(networks.ids[confirmation][levels.index[confirmation] == level].tolist())
        result = held[level]
        rows.append({"level": label, "position": levels.positions[level],
                     "n_test_networks": int(result["n"]),
                     "n_train_networks": int(np.sum(selection_levels != level)),
                     "accuracy": result["accuracy"], "wilson": result["wilson"], "bootstrap": result["bootstrap"],
                     "per_rule": result["per_rule"],
                     "in_distribution": _subset(confirmed, ids, classes, confidence)})
    tested = [(i, r) for i, r in enumerate(rows) if r["accuracy"] is not None]
    per_network, rules = [], []
    for level in range(len(levels.labels)):
        per_network += list(held[level]["per_network"])
        rules += list(held[level]["rules"])
    pooled: dict[str, Any] = {"accuracy": None, "wilson": [None, None], "n": 0}
    animals: dict[str, Any] = {"table": []}
    if per_network:
        fractions = np.asarray(per_network)
        correct = fractions[np.arange(len(rules)), [list(classes).index(r) for r in rules]]
        n = len(rules)
        pooled = {"accuracy": float(correct.mean()), "n": n,
                  "wilson": list(wilson_interval(float(correct.mean()) * n, n, confidence))}
        animals = {"table": animals_table(fractions, rules, classes, animals=settings.animals,
                                          n_bootstrap=settings.n_bootstrap, confidence=confidence, seed=seed),
                   "n_networks": n}
    worst = None
    if tested:
        worst_index = min(tested, key=lambda item: (item[1]["accuracy"], item[1]["wilson"][0]))[0]
        worst = dict(rows[worst_index])
    return {"axis": axis, "scale": levels.scale, "levels": rows, "pooled": pooled, "worst": worst,
            "in_distribution": {"accuracy": confirmed.get("accuracy"), "wilson": confirmed.get("wilson"),
                                "n": confirmed.get("n")},
            "animals": animals,
            "design": "each level left out in turn: the decoder trained on the selection networks of the other "
                      "levels, tested on the confirmation networks of the held-out level; the protocol itself "
                      "was chosen on the selection networks of every level"}


def _pair_answers(pair_grids: Mapping[str, Mapping[str, Any]], pair_confirmed: Mapping[str, Mapping[str, Any]],
                  grid: Any, settings: Any) -> list[dict[str, Any]]:
    """One row per pair of rules: its protocol (chosen on its selection networks), confirmed accuracy and
    category (``easy``, ``separable``, ``not confirmed``, ``not separated``), easiest first."""
    target = settings.target
    cheapest = (min(grid.unit_values), min(grid.session_values), max(grid.noise))
    out = []
    for name, g in pair_grids.items():
        u_i, n_i, s_i = g["point"]
        units, noise, sessions = grid.units[u_i], grid.noise[n_i], grid.sessions[s_i]
        confirmed = pair_confirmed[name]
        reached = g["choice"] is not None
        ok = confirmed.get("accuracy") is not None and confirmed["accuracy"] >= target
        if not reached:
            category = "not separated"
        elif not ok:
            category = "not confirmed"
        elif (units, sessions, noise) == cheapest:
            category = "easy"
        else:
            category = "separable"
        out.append({"pair": [short_rule(r) for r in g["pair"]], "rules": list(g["pair"]),
                    "label": _pair_label(g["pair"]),
                    "reached": reached, "basis": g["choice"][1] if reached else None,
                    "units": units, "sessions": sessions, "noise": noise, "category": category,
                    "selected": {"accuracy": float(g["accuracy"][u_i, n_i, s_i]),
                                 "ci": [float(g["ci_low"][u_i, n_i, s_i]), float(g["ci_high"][u_i, n_i, s_i])]},
                    "confirmed": {k: confirmed[k] for k in ("accuracy", "wilson", "bootstrap", "n", "per_rule")}})
    order = {"easy": 0, "separable": 1, "not confirmed": 2, "not separated": 3}
    return sorted(out, key=lambda p: (order[p["category"]], p["units"] * p["sessions"], p["sessions"], -p["noise"],
                                      -(p["confirmed"]["accuracy"] or 0)))


def _noise_text(noise: float, settings: Any) -> str:
    name = settings.rig.get("noise_param")
    if name not in (None, "noise.sd"):
        return f"{name} {noise:g}"
    return f"noise {noise:g}"


def _conditions(networks: Any) -> dict[str, list[Any]]:
    """The distinct values of :data:`CONDITION_KEYS` among the networks (derived keys computed)."""
    from virtual_lab.analysis.tables import derived_value

    out = {}
    for key in CONDITION_KEYS:
        values = {derived_value(m, key) for m in networks.metadata}
        values.discard(None)
        if values:
            out[key] = sorted(values, key=lambda v: (isinstance(v, str), v))
    return out


def _values_text(values: Sequence[Any]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _sentences(recommendation: Mapping[str, Any], holdout: Mapping[str, Any] | None,
               pairs: Sequence[Mapping[str, Any]], animals: Mapping[str, Any], settings: Any, n_selection: int,
               n_confirmation: int, networks: Any) -> dict[str, Any]:
    """One sentence per question, and the assumptions they rest on."""
    table = animals.get("table") or []
    return {"recommendation": recommendation["sentence"],
            "holdout": None if holdout is None else _holdout_sentence(holdout, settings.confidence),
            "pairs": _pairs_sentence(pairs, settings) if pairs else None,
            "animals": _animals_sentence(animals, holdout, settings.confidence) if table else None,
            "assumptions": _assumptions(holdout, bool(pairs), bool(table), settings, n_selection, n_confirmation,
                                        networks)}


def _holdout_sentence(holdout: Mapping[str, Any], confidence: float) -> str:
    """The held-out answer: pooled over the levels left out of training, and at the worst level."""
    pooled, worst = holdout["pooled"], holdout["worst"]
    labels = ", ".join(row["level"] for row in holdout["levels"])
    if pooled["accuracy"] is None or worst is None:
        return f"No level of {holdout['axis']} could be held out ({labels})."
    inside = worst["in_distribution"]
    inside_text = ("" if inside["accuracy"] is None else
                   f"; the same networks with their level simulated: {inside['accuracy']:.2f}")
    return (f"If the animal's {holdout['axis']} was not simulated (each of its {len(holdout['levels'])} levels "
            f"{labels} left out of training in turn, tested on that level's confirmation networks), the "
            f"recommended protocol gives {pooled['accuracy']:.2f} {_interval(pooled['wilson'])} over "
            f"{pooled['n']} networks; at the worst level, {worst['level']} ({worst['position']}), "
            f"{worst['accuracy']:.2f} {_interval(worst['wilson'])} over {worst['n_test_networks']} networks"
            f"{inside_text} ({confidence:.0%} Wilson intervals).")


def _pairs_sentence(pairs: Sequence[Mapping[str, Any]], settings: Any) -> str:
    """The pairwise answer: the pairs grouped by category (easy, separable with more, not confirmed, not
    separated)."""
    percent = f"{settings.target:.0%}"
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for p in pairs:
        groups.setdefault(p["category"], []).append(p)
    parts = []
    if "easy" in groups:
        first = groups["easy"][0]
        parts.append(f"easy (>= {percent}, confirmed, with the smallest tested protocol: {first['units']} "
                     f"neurons in {first['sessions']} sessions at {_noise_text(first['noise'], settings)}): "
                     + ", ".join(p["label"] for p in groups["easy"]))
    if "separable" in groups:
        parts.append("separable with more: " + "; ".join(
            f"{p['label']} ({p['units']} neurons, {p['sessions']} sessions, {_noise_text(p['noise'], settings)}: "
            f"{p['confirmed']['accuracy']:.2f} {_interval(p['confirmed']['wilson'])})"
            for p in groups["separable"]))
    if "not confirmed" in groups:
        parts.append(f"chosen but below {percent} on the confirmation networks: " + "; ".join(
            f"{p['label']} ({p['confirmed']['accuracy']:.2f} {_interval(p['confirmed']['wilson'])})"
            for p in groups["not confirmed"]))
    if "not separated" in groups:
        parts.append(f"not separated at {percent} by any tested protocol: " + "; ".join(
            f"{p['label']} (best {p['selected']['accuracy']:.2f}, confirmed "
            f"{(p['confirmed']['accuracy'] or 0):.2f} {_interval(p['confirmed']['wilson'])})"
            for p in groups["not separated"]))
    return ("Each pair of rules decoded by a decoder trained on those two rules only, its protocol chosen "
            "on their selection networks and confirmed on their confirmation networks -- "
            + "; ".join(parts) + ".")


def _animals_sentence(animals: Mapping[str, Any], holdout: Mapping[str, Any] | None, confidence: float) -> str:
    """The M-animals answer: P(the verdict is right) for each M, simulated and (with a holdout axis) held out."""
    cells = ", ".join(f"{row['p_correct']:.2f} {_interval(row['ci'])} with {row['animals']} "
                      f"animal{'s' if row['animals'] > 1 else ''}" for row in animals["table"])
    held = ((holdout or {}).get("animals") or {}).get("table") or []
    held_text = ""
    if held:
        held_text = (f"; if their {holdout['axis']} was not simulated (the held-out confusion, pooled over the "
                     f"left-out levels): " + ", ".join(
                         f"{row['p_correct']:.2f} {_interval(row['ci'])} with {row['animals']}" for row in held))
    return (f"If M recorded animals share one rule, the posterior verdict (uniform prior; likelihood: "
            f"the confusion of the {animals['n_networks']} confirmation networks) is right with "
            f"probability {cells}{held_text} ({confidence:.0%} bootstrap intervals; the animals' "
            f"predictions independent given the rule).")


def _assumptions(holdout: Mapping[str, Any] | None, pairs: bool, animals: bool, settings: Any, n_selection: int,
                 n_confirmation: int, networks: Any) -> list[str]:
    """The assumptions every answer rests on (conditions simulated, selection and confirmation, the animal as
    the unit), and those of the pairwise and M-animals answers when they are given."""
    conditions = _conditions(networks)
    simulated = "; ".join(f"{key} {_values_text(values)}" for key, values in conditions.items())
    held = (f"held out: {holdout['axis']}, one level at a time (only in the held-out answer)" if holdout is not None
            else "nothing held out: every answer assumes the animal's condition is one of those simulated")
    out = [
        f"Simulated conditions: {simulated or 'not recorded in the sessions'}; {held}.",
        f"The protocol was chosen on {n_selection} selection networks (grouped cross-validation over the grid) "
        f"and every reported accuracy measured on {n_confirmation} other networks that took no part in the "
        f"choice (decoder trained on the selection networks).",
        "Each network is one animal: intervals are over networks (Wilson), the rig (units kept, noise) redrawn "
        f"for {len(settings.rig_seeds)} repeat(s) per network.",
    ]
    if pairs:
        out.append(
            "Pairs are decoded by a decoder trained on the two rules only: it answers 'is it A or B?' once the other "
            "rules are ruled out; the all-rules confusion restricted to the pair would either count errors towards a "
            "third rule against the pair or, conditioning on a prediction inside the pair, drop them.")
    if animals:
        out.append(
            "M animals: independent animals sharing one rule, each decoded on its own; the likelihood is the "
            "confirmation networks' confusion with a 1/k pseudo-count per cell; uniform prior over the rules; ties "
            "count as a fair coin.")
    return out


def format_answers(result: Any) -> str:
    """The answers of a :class:`~virtual_lab.analysis.power.PowerResult` as plain text (what ``virtual-lab
    power`` prints): the recommendation, the held-out condition, the pairs, the M-animals table, the
    assumptions."""
    answers = result.answers
    lines = [answers.get("recommendation") or result.sentence]
    holdout = result.holdout
    if holdout is not None:
        lines += ["", answers["holdout"], f"  {'level':>14}  {'position':<13} {'held out':>24} {'simulated':>10}"]
        for row in holdout["levels"]:
            held = ("not tested" if row["accuracy"] is None else
                    f"{row['accuracy']:.2f} {_interval(row['wilson'])} n={row['n_test_networks']}")
            inside = row["in_distribution"]["accuracy"]
            lines.append(f"  {row['level']:>14}  {row['position']:<13} {held:>24} "
                         f"{'-' if inside is None else format(inside, '.2f'):>10}")
    if result.pairs:
        lines += ["", answers["pairs"], f"  {'pair':<12} {'units':>5} {'sessions':>8} {'noise':>6} "
                                        f"{'selected':>9} {'confirmed':>24}  category"]
        for p in result.pairs:
            confirmed = p["confirmed"]
            text = ("-" if confirmed["accuracy"] is None else
                    f"{confirmed['accuracy']:.2f} {_interval(confirmed['wilson'])} n={confirmed['n']}")
            lines.append(f"  {p['label']:<12} {p['units']:>5} {p['sessions']:>8} {p['noise']:>6g} "
                         f"{p['selected']['accuracy']:>9.2f} {text:>24}  {p['category']}")
    table = (result.animals or {}).get("table") or []
    if table:
        held_table = ((holdout or {}).get("animals") or {}).get("table") or []
        header = f"  {'animals':>7} {'P(verdict right)':>22}"
        if held_table:
            header += f" {'condition held out':>22}"
        lines += ["", answers["animals"], header]
        for i, row in enumerate(table):
            line = f"  {row['animals']:>7} {row['p_correct']:>9.2f} {_interval(row['ci']):>12}"
            if held_table:
                line += f" {held_table[i]['p_correct']:>9.2f} {_interval(held_table[i]['ci']):>12}"
            lines.append(line)
    lines += ["", "Assumptions:"] + [f"  - {a}" for a in answers.get("assumptions", [])]
    return "\n".join(lines)
