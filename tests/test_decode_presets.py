"""`virtual-lab decode --rig P` for every preset of protocols/rigs: each rig decodes the observables it measures,
and when no session is usable the error gives every session's reason."""

import dataclasses
import json

import numpy as np
import pytest

from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES, ALL_OBSERVABLES, Observable
from virtual_lab.rig.presets import available_presets, measured_observables
from virtual_lab.testing import mock_ground_truth

#: What each kind of bundled preset records (a preset file added later fails here until it is listed).
MEASURED = {"2p-gcamp6s": "activity", "2p-gcamp6f": "activity", "2p-jgcamp8m": "activity",
            "neuropixels-acute": "activity", "neuropixels-chronic": "activity", "em-snapshot": "weights",
            "spine-imaging": "weights", "paper-gaussian": None}


def _write(root, ground_truths):
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, session_path, write_session

    for gt in ground_truths:
        write_session(gt, session_path(root, gt.run_id, GROUND_TRUTH_SESSION_ID), protocol_name="mock")
    return root


@pytest.fixture(scope="module")
def tiny_sessions(tmp_path_factory):
    """Two rules x three networks, 9 checkpoints (enough for every preset's sessions)."""
    return _write(tmp_path_factory.mktemp("tiny"), [
        mock_ground_truth(rule=rule, seed=10 * r + k, run_id=f"m{r}x{k}", n_checkpoints=9)
        for r, rule in enumerate(("sgdm", "adam")) for k in range(3)])


def test_every_bundled_preset_is_covered():
    assert sorted(MEASURED) == available_presets()


@pytest.mark.parametrize("preset", available_presets())
def test_decode_works_through_every_preset(preset, tiny_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    out = tmp_path / preset
    code = main(["decode", str(tiny_sessions), "--rig", preset, "--decoder", "logistic", "--n-splits", "2",
                 "--jobs", "1", "--output-dir", str(out)])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    [analysis] = summary["analyses"]
    assert analysis["analysis"] == "main" and analysis["rig"] == preset
    for level in ("layer", "network"):
        assert 0.0 <= analysis["summary"][f"{level}_accuracy_mean"] <= 1.0
    assert summary["n_networks"][preset] == 6
    notes = [line for line in printed.splitlines() if line.startswith(f"rig {preset} measures")]
    if MEASURED[preset] is None:  # measures weights, activity and activity change: nothing left out
        assert notes == []
    else:
        [note] = notes  # one line says what the rig measures and how many observables are decoded
        n_kept = sum(o.measure == {"activity": "act", "weights": "weight"}[MEASURED[preset]]
                     for o in ADMISSIBLE_OBSERVABLES)
        assert note.startswith(f"rig {preset} measures {MEASURED[preset]} only: using its {n_kept} ")


def test_measured_observables_keeps_what_the_rig_records():
    kept, note = measured_observables(ALL_OBSERVABLES, ("act",), "2p-gcamp6s")
    assert {o.measure for o in kept} == {"act"} and len(kept) == 21
    assert note == ("rig 2p-gcamp6s measures activity only: using its 21 activity observables of the 45 asked "
                    "for (weights and activity change not measured)")
    kept, note = measured_observables(ADMISSIBLE_OBSERVABLES, ("weight", "act", "gradavg"), "full")
    assert kept == ADMISSIBLE_OBSERVABLES and note == ""
    asked = [Observable.from_name("actraw_mean"), Observable.from_name("weightabs_mean")]
    assert measured_observables(asked, ("act",), "x")[0] == (asked[0],)  # a default set: left out, not an error
    with pytest.raises(ValueError, match=r"^rig 'x' measures activity only \(act\); it cannot measure "
                                         r"weightabs_mean$"):
        measured_observables(asked, ("act",), "x", explicit=True)
    with pytest.raises(ValueError, match="measures weight, and none of the observables asked for uses it"):
        measured_observables(asked[:1], ("weight",), "em-snapshot")


def test_named_observables_the_rig_cannot_measure_are_a_one_line_error(tiny_sessions, tmp_path, capsys):
    from virtual_lab.cli import main

    args = ["decode", str(tiny_sessions), "--decoder", "logistic", "--n-splits", "2", "--jobs", "1",
            "--output-dir", str(tmp_path)]
    assert main([*args, "--rig", "2p-gcamp6s", "--observables", "actraw_mean,weightabs_mean"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("virtual-lab: error: rig '2p-gcamp6s' measures activity only (act); it cannot measure "
                   "weightabs_mean")
    assert main([*args, "--rig", "em-snapshot", "--control", "activations"]) == 2
    assert ("--control activations: no observable of activity is decoded through rig em-snapshot (only of weight)"
            in capsys.readouterr().err)
    # named observables it measures are decoded as given
    assert main([*args, "--rig", "2p-gcamp6s", "--observables", "actraw_mean,actabs_norm"]) == 0
    assert "measures activity only" not in capsys.readouterr().out


def test_no_usable_session_gives_every_sessions_reason_with_counts(tmp_path, capsys):
    from virtual_lab.cli import main

    diverged = [dataclasses.replace(mock_ground_truth(rule=rule, seed=k, run_id=f"d{rule}{k}", n_checkpoints=9),
                                    metadata={**mock_ground_truth(rule=rule, seed=k).metadata,
                                              "run_id": f"d{rule}{k}", "diverged": True, "diverged_step": 50})
                for rule in ("sgdm", "adam") for k in range(2)]
    broken = []
    for k in range(2):
        gt = mock_ground_truth(rule="adam", seed=20 + k, run_id=f"n{k}", n_checkpoints=9)
        broken.append(dataclasses.replace(gt, weights={name: np.full_like(w, np.nan) for name, w in
                                                       gt.weights.items()}))
    root = _write(tmp_path / "bad", diverged + broken)
    assert main(["decode", str(root), "--decoder", "logistic", "--jobs", "1", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("virtual-lab: error: no usable session for rig 'full': 4 sessions: network diverged; "
                   "2 sessions: no examples left: every example has a non-finite feature")
