"""Answers of the power analysis: the smallest units reaching the target, the choice of the recommended
protocol (on the selection networks), confused rule pairs and the recommendation's sentence (with the
accuracy confirmed on the other networks). Intervals and chance levels come from :mod:`virtual_lab.stats`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from virtual_lab.analysis.power.checks import short_rule
from virtual_lab.stats import wilson_interval


def animals_to_certify(accuracy: float, target: float, confidence: float = 0.95,
                       max_animals: int = 1_000_000) -> int | None:
    """Smallest number of independent test networks whose Wilson lower bound at ``accuracy`` reaches ``target``.

    How many test networks would *validate the decoder* at that accuracy; not how many animals an
    experiment needs for a right verdict (that is :func:`virtual_lab.analysis.power.verdict.animals_table`).

    Parameters
    ----------
    accuracy : float
        The accuracy expected (observed) at the protocol.
    target : float
    confidence : float, default=0.95
    max_animals : int, default=1_000_000

    Returns
    -------
    int or None
        None when ``accuracy <= target`` (no number of animals certifies it) or more than ``max_animals``.

    Examples
    --------
    >>> animals_to_certify(1.0, 0.9)
    35
    """
    if not accuracy > target:
        return None
    if wilson_interval(accuracy * max_animals, max_animals, confidence)[0] < target:
        return None
    low, high = 1, max_animals  # the lower bound grows with n at fixed accuracy: bisect
    while low < high:
        middle = (low + high) // 2
        if wilson_interval(accuracy * middle, middle, confidence)[0] >= target:
            high = middle
        else:
            low = middle + 1
    return low


def _thresholds(units: Sequence[int], noise: Sequence[float], sessions: Sequence[int], accuracy: np.ndarray,
                ci_low: np.ndarray, boot: np.ndarray, target: float, confidence: float) -> list[dict[str, Any]]:
    out = []
    alpha = 1 - confidence
    for n_i, sd in enumerate(noise):
        for s_i, k in enumerate(sessions):
            acc = accuracy[:, n_i, s_i]
            valid = ~np.isnan(acc)
            if not valid.any():
                continue
            point = next((units[u] for u in range(len(units)) if valid[u] and acc[u] >= target), None)
            conservative = next((units[u] for u in range(len(units)) if valid[u] and ci_low[u, n_i, s_i] >= target),
                                None)
            # smallest units reaching the target in each bootstrap replicate (inf: none)
            reach = np.where(valid[:, None], boot[:, n_i, s_i, :] >= target, False)  # (U, B)
            first = np.where(reach.any(axis=0), np.argmax(reach, axis=0), -1)
            values = np.array([units[f] if f >= 0 else np.inf for f in first], dtype=np.float64)
            low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
            out.append({"noise": sd, "sessions": k, "units_point": point, "units_conservative": conservative,
                        "units_interval": [None if np.isinf(low) else int(low), None if np.isinf(high) else int(high)],
                        "fraction_of_bootstraps_reaching": float(np.mean(np.isfinite(values)))})
    return out


def _confused_pairs(confusion: np.ndarray, classes: Sequence[str], target: float) -> list[dict[str, Any]]:
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            total = confusion[i].sum() + confusion[j].sum()
            if total == 0:
                continue
            rate = float((confusion[i, j] + confusion[j, i]) / total)
            if rate > 0:
                pairs.append({"pair": [short_rule(classes[i]), short_rule(classes[j])], "confusion_rate": rate,
                              "confused": bool(1 - rate < target)})
    return sorted(pairs, key=lambda p: -p["confusion_rate"])


def _sessions(k: int) -> str:
    return "1 session" if k == 1 else f"{k} sessions"


def _choose(units: Sequence[int], noise: Sequence[float], sessions: Sequence[int], accuracy: np.ndarray,
            ci_low: np.ndarray, target: float) -> tuple[tuple[int, str, int, int] | None, list[tuple]]:
    """The recommended grid point: ``(noise index, basis, units index, sessions index)`` or None, and the
    per-noise choices.

    At each noise level the cheapest point (fewest units x sessions, then fewest sessions, then fewest
    units) whose interval lower bound reaches the target ("conservative"), else whose point estimate does
    ("point"); of those, the noisiest level with a conservative choice, else the noisiest with any.
    """
    def pick(bound: np.ndarray, n_i: int):
        best = None
        for u_i, u in enumerate(units):
            for s_i, k in enumerate(sessions):
                if np.isnan(accuracy[u_i, n_i, s_i]) or not bound[u_i, n_i, s_i] >= target:
                    continue
                key = (u * k, k, u)
                if best is None or key < best[0]:
                    best = (key, u_i, s_i)
        return best

    per_noise = []
    for n_i in range(len(noise)):
        for kind, bound in (("conservative", ci_low), ("point", accuracy)):
            chosen = pick(bound, n_i)
            if chosen is not None:
                per_noise.append((n_i, kind, chosen[1], chosen[2]))
                break
    conservative = [p for p in per_noise if p[1] == "conservative"]
    choice = max(conservative, key=lambda p: p[0]) if conservative else (
        max(per_noise, key=lambda p: p[0]) if per_noise else None)
    return choice, per_noise


def _operating_index(choice: tuple[int, str, int, int] | None, accuracy: np.ndarray) -> tuple[int, int, int]:
    """(units, noise, sessions) index of the chosen point, or of the best one when none reaches the target."""
    if choice is not None:
        n_i, _, u_i, s_i = choice
        return int(u_i), int(n_i), int(s_i)
    flat = np.where(np.isnan(accuracy), -np.inf, accuracy)
    u_i, n_i, s_i = np.unravel_index(int(np.argmax(flat)), flat.shape)
    return int(u_i), int(n_i), int(s_i)


def _interval_text(values: Sequence[float | None]) -> str:
    low, high = values
    return "[-, -]" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _confirmed_text(confirmed: dict[str, Any], confidence: float, target: float, reached: bool = True) -> str:
    """'confirmed on N networks that took no part in choosing: 0.93 [0.82, 0.98] (95% Wilson interval)' and
    what it means for the target."""
    if confirmed.get("accuracy") is None:
        return "no confirmation network could be decoded"
    text = (f"confirmed on {confirmed['n']} networks that took no part in choosing it: {confirmed['accuracy']:.2f} "
            f"{_interval_text(confirmed['wilson'])} ({confidence:.0%} Wilson interval over those networks)")
    if confirmed["accuracy"] < target:
        text += f", below the {target:.0%} target" + (": the selection estimate was optimistic" if reached else "")
    elif confirmed["wilson"][0] < target:
        text += f"; its lower bound is below the target with {confirmed['n']} confirmation networks"
    return text


def _recommend(units, noise, sessions, accuracy, ci_low, ci_high, confusion, classes, target, confidence, rig_name,
               chance, choice, per_noise, confirmed: dict[str, Any], n_selection: int, noise_unit: str = "",
               noise_name: str | None = None) -> dict[str, Any]:
    """The recommendation: the point chosen on the selection networks, reported with its confirmed accuracy.

    ``confusion`` is the confirmation networks' confusion at that point (true x predicted, network-weighted).
    """
    rules_text = "{" + ", ".join(short_rule(c) for c in classes) + "}"
    what = (f"To tell {short_rule(classes[0])} from {short_rule(classes[1])}" if len(classes) == 2
            else f"To identify {rules_text}")
    percent = f"{target:.0%}"
    table = [{"noise": noise[n_i], "basis": kind, "units": units[u_i], "sessions": sessions[s_i],
              "accuracy": float(accuracy[u_i, n_i, s_i]), "ci": [float(ci_low[u_i, n_i, s_i]),
                                                                   float(ci_high[u_i, n_i, s_i])]}
             for n_i, kind, u_i, s_i in per_noise]
    u_i, n_i, s_i = _operating_index(choice, accuracy)
    selected = {"accuracy": float(accuracy[u_i, n_i, s_i]),
                "ci": [float(ci_low[u_i, n_i, s_i]), float(ci_high[u_i, n_i, s_i])], "n": int(n_selection)}
    confirmed_public = {k: v for k, v in confirmed.items() if k not in ("per_network", "networks", "rules")}
    pairs = _confused_pairs(np.asarray(confusion), classes, target)
    confirmed_text = _confirmed_text(confirmed, confidence, target, reached=choice is not None)
    if choice is None:
        sentence = (f"No tested protocol reaches {percent} accuracy {what[0].lower() + what[1:]} using {rig_name}: "
                    f"the best on the {n_selection} selection networks was {selected['accuracy']:.2f} "
                    f"{_interval_text(selected['ci'])} with {units[u_i]} neurons per layer in "
                    f"{_sessions(sessions[s_i])} at {noise_name or 'noise'} {noise[n_i]:g}, {confirmed_text} "
                    f"(chance {chance['chance']:.2f}, significance threshold {chance['threshold']:.2f}).")
        return {"reached": False, "basis": None, "units": None, "sessions": None, "noise": None,
                "best": {"units": units[u_i], "noise": noise[n_i], "sessions": sessions[s_i],
                         "accuracy": selected["accuracy"], "ci": selected["ci"]},
                "selected": selected, "confirmed": confirmed_public,
                "confirmed_reaches_target": bool((confirmed.get("accuracy") or 0) >= target),
                "confused_pairs": pairs, "per_noise": table, "sentence": sentence}
    kind = choice[1]
    if noise_name is not None:
        noise_text = f" at {noise_name} = {noise[n_i]:g}"
    else:
        noise_text = (f" at measurement noise up to {noise[n_i]:g}{noise_unit}" if noise[n_i] > 0
                      else " without measurement noise")
    basis = "" if kind == "conservative" else (
        f"; only its point estimate reached the target: the lower bound was {ci_low[u_i, n_i, s_i]:.2f}")
    sentence = (f"{what} with >= {percent} accuracy using {rig_name}{noise_text}, record >= {units[u_i]} neurons "
                f"per layer in each of >= {_sessions(sessions[s_i])}: {confirmed_text}. Chosen on "
                f"{n_selection} other networks, whose cross-validated accuracy there was {selected['accuracy']:.2f} "
                f"{_interval_text(selected['ci'])}{basis}.")
    return {"reached": True, "basis": kind, "units": units[u_i], "sessions": sessions[s_i], "noise": noise[n_i],
            "accuracy": confirmed.get("accuracy"), "ci": confirmed.get("wilson"),
            "selected": selected, "confirmed": confirmed_public,
            "confirmed_reaches_target": bool((confirmed.get("accuracy") or 0) >= target),
            "confused_pairs": pairs, "per_noise": table, "sentence": sentence}
