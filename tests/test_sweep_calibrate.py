"""Learning-curve-matched design: curve distances, the choice of each rule's multiplier, pilots, storage."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from virtual_lab.protocol import ProtocolError, load_protocol, parse_protocol
from virtual_lab.sweeps import calibrate
from virtual_lab.sweeps.calibrate import (CALIBRATION_NAME, calibrate_from_curves, calibrate_learning_rates,
                                          choose_candidate, curve_distance, pilot_specs, read_calibration)
from virtual_lab.sweeps.expand import expand_sweep
from virtual_lab.sweeps.plan import plan_sweep

ROOT = Path(__file__).resolve().parents[1]
T = np.linspace(0, 1, 11)


def network(speed, final_loss=0.05):
    """(train_loss, test_accuracy) of a made-up network that learns at ``speed``."""
    accuracy = 0.1 + 0.85 * (1 - np.exp(-speed * T * 5))
    loss = 2.3 * (final_loss / 2.3) ** (1 - np.exp(-speed * T * 5))
    return loss, accuracy


def test_curve_distance_is_the_larger_rms_difference_of_the_mean_curves():
    a = [(np.array([1.0, 1.0, 0.1]), np.array([0.1, 0.5, 0.9])), (np.array([1.0, 1.0, 0.1]), np.array([0.1, 0.7, 0.9]))]
    b = [(np.array([1.0, 1.0, 1.0]), np.array([0.1, 0.6, 0.6]))]
    acc, loss, distance = curve_distance(a, b)
    assert acc == pytest.approx(math.sqrt(0.3 ** 2 / 3))  # mean of a: 0.1, 0.6, 0.9
    assert loss == pytest.approx(math.sqrt(1 / 3))  # log10 0.1 - log10 1 = -1 at the last checkpoint
    assert distance == max(acc, loss)
    diverged = [(np.array([1.0, np.nan, np.nan]), np.array([0.1, np.nan, np.nan]))]
    assert curve_distance(a + diverged, b) == (acc, loss, distance)  # a diverged network is left out
    assert curve_distance(diverged, b)[2] == math.inf
    assert curve_distance(a, a) == (0.0, 0.0, 0.0)


def test_choose_candidate_takes_the_smallest_distance_and_breaks_ties_towards_one():
    assert choose_candidate([0.5, 1.0, 2.0], [0.3, 0.2, 0.1]) == 2
    assert choose_candidate([0.5, 1.0, 2.0], [0.1, 0.1, 0.1]) == 1
    assert choose_candidate([0.5, 2.0], [0.1, 0.1]) == 0  # equally far from 1: the first
    assert choose_candidate([0.5, 1.0], [math.inf, math.inf]) == 1


def test_calibration_picks_the_candidate_whose_curves_match_the_reference():
    # the reference learns at speed 1; "slow" learns at speed s x multiplier, so multiplier 1/s matches exactly
    reference = [network(1.0), network(1.0)]
    candidates = (0.5, 1.0, 2.0, 4.0)
    curves = {"slow": {m: [network(0.5 * m)] * 2 for m in candidates},       # exact match at 2x
              "far": {m: [network(0.05 * m, final_loss=0.5)] * 2 for m in candidates}}  # never close
    bases = {"ref": 0.02, "slow": 0.001, "far": 0.01}
    result = calibrate_from_curves("ref", 0.05, bases, reference, curves)
    assert result.scales == {"ref": 1.0, "slow": 2.0, "far": 4.0}
    slow = result.rules["slow"]
    distances = [c.distance for c in slow.candidates]
    assert slow.distance == 0.0 == min(distances) and slow.tolerance_met
    assert distances == [curve_distance(curves["slow"][m], reference)[2] for m in candidates]
    assert slow.chosen_learning_rate == pytest.approx(0.002)
    far = result.rules["far"]
    assert far.distance == min(c.distance for c in far.candidates) > 0.05 and not far.tolerance_met
    assert not result.tolerance_met
    (message,) = result.warnings()
    assert message.startswith("match_curves: far's learning curves stay") and "above the tolerance 0.05" in message
    assert "largest candidate" in message  # the best one is at the edge: widen the range
    again = calibrate_from_curves("ref", 0.05, bases, reference, curves)
    assert again == result


def tiny(tmp_path, **match):
    return parse_protocol({
        "name": "cal", "seed": 3, "output_dir": str(tmp_path), "task": {"n_probe": 20},
        "network": {"hidden_sizes": [8]}, "training": {"n_epochs": 2, "batch_size": 64, "n_checkpoints": 5},
        "sweep": {"rules": ["sgdm", "adam"], "n_seeds": 2,
                  "match_curves": {"reference": "sgdm", "candidates": [0.5, 4.0], "n_pilots": 1, **match}}})


def test_pilots_have_their_own_seeds_and_the_sweep_needs_the_calibration(tmp_path):
    protocol = tiny(tmp_path)
    pilots = pilot_specs(protocol, 64, 10)
    assert [(rule, scale) for rule, scale, _ in pilots] == [("sgdm", 1.0), ("adam", 0.5), ("adam", 4.0)]
    assert pilots[2][2].learning_rate == pytest.approx(0.004)
    with pytest.raises(ValueError, match="calibrate first"):
        plan_sweep(protocol)
    specs = expand_sweep(protocol, 64, 10, {"sgdm": 1.0, "adam": 4.0})
    assert not {s.seed for s in specs} & {s.seed for _, _, s in pilots}
    adam = [s for s in specs if s.rule == "adam"]
    assert all(s.learning_rate == pytest.approx(0.004) and s.calibrated_scale == 4.0 == s.learning_rate_scale
               for s in adam)
    with pytest.raises(ValueError, match="no calibrated scale for adam"):
        expand_sweep(protocol, 64, 10, {"sgdm": 1.0})
    with pytest.raises(ValueError, match="has no \\[sweep.match_curves\\]"):
        expand_sweep(parse_protocol({}), 64, 10, {"sgdm": 2.0})


def test_calibration_trains_pilots_stores_the_table_and_is_deterministic(tmp_path, monkeypatch):
    from virtual_lab.sessions import read_session_metadata
    from virtual_lab.sweeps.run import run_sweep

    protocol = tiny(tmp_path / "a")
    result = run_sweep(protocol, n_workers=0, progress=False)
    assert result.ok and result.n_trained == 4
    calibration = result.plan.calibration
    stored = json.loads((protocol.recordings_dir / CALIBRATION_NAME).read_text())
    assert stored["reference"] == "sgdm" and stored["candidates"] == [0.5, 4.0] and stored["n_pilot_networks"] == 3
    adam = stored["rules"]["adam"]
    distances = [c["distance"] for c in adam["candidates"]]
    assert adam["chosen_scale"] == [0.5, 4.0][int(np.argmin(distances))] == calibration.scales["adam"]
    assert adam["distance"] == min(distances)
    assert adam["tolerance_met"] == (adam["distance"] <= 0.05)
    assert len(adam["candidates"][0]["accuracy"]) == 5  # the mean curves, one value per checkpoint
    assert read_calibration(protocol.recordings_dir / CALIBRATION_NAME).scales == calibration.scales
    assert list(result.plan.caveats) == calibration.warnings()
    for spec in result.plan.specs:
        metadata = read_session_metadata(result.plan.paths[spec.run_id])
        assert metadata["calibrated_scale"] == calibration.scales[spec.rule]
        assert metadata["learning_rate"] == pytest.approx(protocol.base_learning_rate(spec.rule)
                                                          * calibration.scales[spec.rule])
    # a second run reads the calibration back instead of training pilots, and reuses every session
    monkeypatch.setattr(calibrate, "_run_pilots", lambda *a, **k: pytest.fail("pilots trained again"))
    again = run_sweep(protocol, n_workers=0, progress=False)
    assert again.n_reused == 4 and again.plan.calibration.scales == calibration.scales
    monkeypatch.undo()
    # the same protocol elsewhere gives the same distances; other settings are calibrated again
    elsewhere = calibrate_learning_rates(tiny(tmp_path / "b"), n_workers=0, progress=False)
    assert elsewhere.rules == calibration.rules
    stricter = calibrate_learning_rates(tiny(tmp_path / "a", tolerance=1e-9), n_workers=0, progress=False)
    assert stricter.key != calibration.key and not stricter.tolerance_met and stricter.warnings()


@pytest.mark.parametrize("match, message", [
    ({"reference": "adm"}, "sweep.match_curves.reference: 'adm' is not one of sweep.rules; did you mean 'adam'?"),
    ({"tolerance": 0}, "sweep.match_curves.tolerance: 0.0 is out of range (allowed: > 0)"),
    ({"candidates": [1.0]}, "sweep.match_curves.candidates: expected at least 2 item(s)"),
    ({"candidates": [0.5, -1.0]}, "sweep.match_curves.candidates[1]: -1.0 is out of range"),
    ({"n_pilots": 0}, "sweep.match_curves.n_pilots: 0 is out of range (allowed: >= 1)"),
    ({"referense": "sgdm"}, "did you mean 'sweep.match_curves.reference'?"),
])
def test_match_curves_errors_are_one_line(match, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol({"sweep": {"rules": ["sgdm", "adam"], "match_curves": match}}, "bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: ") and message in text and "\n" not in text


def test_matched_protocol_is_quickstart_scale_and_commented():
    protocol = load_protocol("matched")
    match = protocol.sweep.match_curves
    assert match.reference == "sgdm" and protocol.sweep.rules == ("sgdm", "adam", "feedback_alignment",
                                                                  "information_alignment")
    assert parse_protocol({"sweep": {"rules": ["fa", "sgdm"], "match_curves": {"reference": "fa"}}}
                          ).sweep.match_curves.reference == "feedback_alignment"
    n_pilots = len(pilot_specs(protocol, 64, 10))
    n_runs = len(expand_sweep(protocol, 64, 10, {rule: 1.0 for rule in protocol.sweep.rules}))
    assert n_pilots == 62 and n_runs == 64 and n_pilots + n_runs <= 130
    for line in (ROOT / "protocols" / "matched.toml").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"parameter without a comment: {line!r}"
