"""Rig presets: files, loading, overrides, errors, and presets named in a protocol."""

import re

import numpy as np
import pytest

from virtual_lab.lab.rules import RULES
from virtual_lab.protocol import ProtocolError, parse_protocol
from virtual_lab.rig import apply_preset, available_presets, load_preset
from virtual_lab.rig.presets import PRESET_DIR, RigPreset
from virtual_lab.testing import mock_ground_truth

EXPECTED = {"paper-gaussian", "neuropixels-acute", "neuropixels-chronic", "2p-gcamp6s", "2p-gcamp6f", "2p-jgcamp8m",
            "em-snapshot", "spine-imaging"}


@pytest.fixture(scope="module")
def gt():
    return mock_ground_truth(layer_sizes=(16, 40, 30, 4), n_checkpoints=8, n_stimuli=20)


def test_bundled_presets_load_and_every_parameter_is_commented():
    assert EXPECTED <= set(available_presets())
    for name in available_presets():
        preset = load_preset(name)
        assert preset.name == name and preset.description
        for line in (PRESET_DIR / f"{name}.toml").read_text().splitlines():
            if re.match(r"^\s*[A-Za-z_]+\s*=", line) and not line.startswith(("name", "description")):
                assert "#" in line, f"{name}: parameter without a comment (unit and source): {line}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_preset_observes_a_session(gt, name):
    rec = apply_preset(gt, name, seed=1)
    assert rec.provenance[0]["step"] == "preset" and rec.provenance[0]["name"] == name
    assert all(isinstance(entry["seed"], int) for entry in rec.provenance)
    for layer in gt.layer_names:
        if "act" in rec.measures:
            assert rec.activations(layer).shape[:2] == (rec.n_checkpoints, gt.n_stimuli)
        if "weight" in rec.measures:
            assert rec.weights(layer).shape[0] == rec.n_checkpoints


def test_overrides_and_noise_level_keep_the_same_units(gt):
    base = apply_preset(gt, "paper-gaussian", seed=4)
    louder = apply_preset(gt, "paper-gaussian", seed=4, noise_sd=2.0)
    fewer = apply_preset(gt, "paper-gaussian", seed=4, n_units=3, n_checkpoints=3)
    for layer in gt.layer_names:
        np.testing.assert_array_equal(base.unit_indices[layer], louder.unit_indices[layer])
        assert fewer.n_units(layer) == 3
    assert fewer.n_checkpoints == 3
    quiet = apply_preset(gt, "2p-gcamp6s", seed=4, calcium__noise_level=0.5)
    assert quiet.activity_steps[-1].noise_level == 0.5
    variant = load_preset("2p-gcamp6s").with_params({"calcium.indicator": "GCaMP6f"})
    assert variant.parameters()["calcium.indicator"] == "GCaMP6f"


def test_impossible_requests_name_the_parameter_value_and_what_is_available(gt):
    with pytest.raises(ValueError, match=r"preset='2p-gcamp6' is not available; did you mean '2p-gcamp6s'\?.*available: "):
        load_preset("2p-gcamp6")
    with pytest.raises(ValueError, match=r"n_units=50 is more than layer 'fc1' has \(40 units available\)"):
        apply_preset(gt, "paper-gaussian", n_units=50)
    with pytest.raises(ValueError, match=r"n_checkpoints=30 is more than were recorded \(8 available\)"):
        apply_preset(gt, "neuropixels-chronic", n_checkpoints=30)
    with pytest.raises(ValueError, match=r"^sd=-0.1 is out of range \(allowed: >= 0\)$"):
        apply_preset(gt, "paper-gaussian", noise_sd=-0.1)
    with pytest.raises(ValueError, match=r"indicator='GCaMP7' is not available.*GCaMP6s, GCaMP6f, jGCaMP8m"):
        apply_preset(gt, "2p-gcamp6s", calcium__indicator="GCaMP7")
    with pytest.raises(ValueError, match=r"unknown rig parameter 'noise'; did you mean 'noise_sd'"):
        apply_preset(gt, "paper-gaussian", noise=0.1)
    with pytest.raises(ValueError, match=r"unknown key calcium.noise; did you mean 'calcium.noise_level'"):
        RigPreset("x", stages={"calcium": {"noise": 1.0}})
    with pytest.raises(ValueError, match=r"unknown rig stage \[spikng\]; did you mean 'spiking'"):
        RigPreset("x", stages={"spikng": {}})


def test_a_protocol_names_a_preset_and_overrides_it(gt):
    from virtual_lab.pipeline import observe_with_rig

    protocol = parse_protocol({"name": "p", "rig": [{"name": "np", "preset": "neuropixels-chronic", "n_checkpoints": 3},
                                                    {"name": "plain", "unit_fraction": 0.5}]})
    rig = protocol.rig[0]
    assert rig.preset == "neuropixels-chronic" and "n_checkpoints" in rig.given_keys
    rec = observe_with_rig(gt, rig)
    assert rec.n_checkpoints == 3 and rec.activity_kind == "spike_count"
    assert observe_with_rig(gt, rig).provenance == rec.provenance
    assert observe_with_rig(gt, protocol.rig[1]).n_units("fc1") == 20
    with pytest.raises(ProtocolError, match=r"rig\[0\]\.preset: preset='neuropixel' is not available; did you mean"):
        parse_protocol({"name": "p", "rig": [{"name": "np", "preset": "neuropixel"}]})


def test_no_rule_name_in_preset_files():
    text = " ".join((PRESET_DIR / f"{name}.toml").read_text().lower() for name in available_presets())
    assert not [rule for rule in RULES if len(rule) > 3 and rule in text]
