import subprocess
import sys
from pathlib import Path

import pytest

from virtual_lab.cli import main
from virtual_lab.protocol import ProtocolError, load_protocol, parse_protocol

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_protocol_loads():
    protocol = load_protocol(ROOT / "protocols" / "quickstart.toml")
    assert protocol.name == "quickstart"
    assert protocol.sweep.rules == ("sgdm", "adam", "feedback_alignment", "information_alignment")
    n_runs = len(protocol.sweep.rules) * len(protocol.sweep.learning_rate_scales) * protocol.sweep.n_seeds
    assert n_runs >= 96
    assert [r.name for r in protocol.rig] == ["full", "sparse-noisy"]


def test_every_quickstart_parameter_has_a_comment():
    for line in (ROOT / "protocols" / "quickstart.toml").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"parameter without a comment: {line!r}"


@pytest.mark.parametrize("data, message", [
    ({"trainig": {}}, "trainig: unknown key; did you mean 'training'?"),
    ({"training": {"n_epoch": 3}}, "training.n_epoch: unknown key; did you mean 'training.n_epochs'?"),
    ({"training": {"n_epochs": "3"}}, "training.n_epochs: expected an integer, got string '3'"),
    ({"training": {"n_epochs": 0}}, "training.n_epochs: 0 is out of range (allowed: >= 1)"),
    ({"sweep": {"rules": ["sgdmm"]}}, "sweep.rules[0]: 'sgdmm' is not allowed; did you mean 'sgdm'?"),
    ({"rig": [{"unit_fraction": 1.5}]}, "rig[0].unit_fraction: 1.5 is out of range"),
    ({"rig": [{"noise_sd": -1}]}, "rig[0].noise_sd: -1.0 is out of range (allowed: >= 0)"),
    ({"rules": {"sgdm": {"learning_rte": 0.1}}}, "did you mean 'rules.sgdm.learning_rate'?"),
    ({"sweep": {"rules": ["fa", "feedback_alignment"]}}, "each rule may appear once"),
    ({"name": "a/b"}, "name: 'a/b' must be a non-empty folder name"),
])
def test_protocol_errors_are_precise(data, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data, "bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: ") and message in text and "\n" not in text


def test_aliases_resolve():
    assert parse_protocol({"sweep": {"rules": ["fa", "ia"]}}).sweep.rules == ("feedback_alignment",
                                                                            "information_alignment")


@pytest.mark.parametrize("content, message", [
    (None, "no such protocol file"),
    ("name = [", "not valid TOML"),
    ("[training]\nn_epochs = 'many'\n", "training.n_epochs: expected an integer"),
])
def test_cli_reports_bad_protocol_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "p.toml"
    if content is not None:
        path.write_text(content)
    code = main(["run", str(path)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("virtual-lab: error: ") and message in err and "\n" not in err and "Traceback" not in err


def test_console_script_help_shows_an_example():
    out = subprocess.run([sys.executable, "-m", "virtual_lab", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example:" in out.stdout and "virtual-lab run protocols/quickstart.toml" in out.stdout


def test_import_is_light():
    code = ("import sys, virtual_lab, virtual_lab.protocol, virtual_lab.rig, virtual_lab.cli; "
            "heavy = [m for m in ('torch', 'pynwb', 'sklearn', 'h5py') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("data, message", [
    ({"network": {"architecture": "cnn"}, "sweep": {"rules": ["sgdm", "hebbian"]}},
     "sweep.rules: rule 'hebbian' has no convolutional version"),
    ({"sweep": {"architectures": ["mlp", "resnet"], "rules": ["direct_feedback_alignment"]}},
     "rule 'direct_feedback_alignment' has no convolutional version (architecture 'resnet'"),
    ({"training": {"paradigm": "contrastive"}, "sweep": {"rules": ["node_perturbation"]}},
     "not defined for the contrastive paradigm"),
    ({"network": {"architecture": "cnn", "channels": [8, 8]}}, "network.channels: architecture 'cnn' needs 3"),
    ({"sweep": {"paradigms": ["supervised", "selfsupervised"]}}, "did you mean 'supervised'"),
])
def test_undefined_rule_architecture_paradigm_pairs_are_rejected(data, message):
    with pytest.raises(ProtocolError) as err:
        parse_protocol(data, "p.toml")
    assert message in str(err.value)


def test_sweep_crosses_architectures_and_paradigms(tmp_path):
    from virtual_lab.sweeps.expand import expand_sweep

    protocol = parse_protocol({"sweep": {"rules": ["sgdm", "feedback_alignment"], "architectures": ["mlp", "cnn"],
                                         "paradigms": ["supervised", "contrastive"], "n_seeds": 1},
                               "network": {"hidden_sizes": [32], "channels": [4, 8, 8], "projection_size": 16},
                               "task": {"root": "data"}}, str(tmp_path / "p.toml"))
    assert protocol.task.root == str(tmp_path / "data")  # relative to the protocol file
    specs = expand_sweep(protocol, 64, 10)
    assert len(specs) == 2 * 2 * 2
    shapes = {(s.architecture, s.paradigm): (s.layer_sizes, s.channels) for s in specs}
    assert shapes[("mlp", "supervised")] == ((64, 32, 10), ())
    assert shapes[("mlp", "contrastive")] == ((64, 32, 16), ())
    assert shapes[("cnn", "supervised")] == ((64, 10), (4, 8, 8))
    assert shapes[("cnn", "contrastive")] == ((64, 16), (4, 8, 8))
    assert len({s.seed for s in specs}) == len(specs) and len({s.run_id for s in specs}) == len(specs)
    # a sweep that crosses neither keeps the defaults (and so the run ids of earlier versions)
    plain = expand_sweep(parse_protocol({"sweep": {"rules": ["sgdm"], "n_seeds": 1}}), 64, 10)
    assert plain[0].architecture == "mlp" and plain[0].paradigm == "supervised" and plain[0].channels == ()


def test_storage_attribution_keys():
    protocol = parse_protocol({"storage": {"experimenter": ["Doe, Jane", "Roe, Richard A."],
                                           "institution": "Virtual University", "lab": "Rule Lab"}})
    assert protocol.storage.session_attribution() == {
        "experimenter": ("Doe, Jane", "Roe, Richard A."), "institution": "Virtual University", "lab": "Rule Lab"}
    # defaults: the sessions name the in-silico experimenter and no institution or lab
    assert parse_protocol({}).storage.session_attribution() == {"experimenter": None, "institution": "", "lab": ""}
    commented = [line.lstrip("# ").split("=")[0].strip() for line in
                 (ROOT / "protocols" / "quickstart.toml").read_text().splitlines() if line.startswith("# ") and "=" in line]
    assert {"experimenter", "institution", "lab"} <= set(commented)  # documented, commented out, in the quickstart


@pytest.mark.parametrize("storage, message", [
    ({"experimenter": ["Jane Doe"]}, "storage.experimenter[0]: 'Jane Doe' is not in the DANDI form 'Last, First'"),
    ({"experimenter": "Doe, Jane"}, "storage.experimenter: expected a list, got string 'Doe, Jane'"),
    ({"experimenter": ["Doe, Jane", "Doe, Jane"]}, "storage.experimenter: items must be unique"),
    ({"experimentor": ["Doe, Jane"]}, "storage.experimentor: unknown key; did you mean 'storage.experimenter'?"),
    ({"institute": "X"}, "storage.institute: unknown key; did you mean 'storage.institution'?"),
    ({"lab": 3}, "storage.lab: expected a string, got integer 3"),
])
def test_storage_attribution_errors_are_precise(storage, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol({"storage": storage}, "bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: ") and message in text and "\n" not in text


@pytest.mark.parametrize("data, message", [
    ({"rig": [{"noise_sd": float("nan")}]}, "rig[0].noise_sd: nan is out of range (allowed: >= 0)"),
    ({"rig": [{"noise_sd": float("inf")}]}, "rig[0].noise_sd: inf is out of range (allowed: >= 0)"),
    ({"rig": [{"unit_fraction": float("nan")}]}, "rig[0].unit_fraction: nan is out of range (allowed: > 0 and <= 1)"),
    ({"sweep": {"learning_rate_scales": [1.0, float("-inf")]}}, "sweep.learning_rate_scales[1]: -inf is out of range"),
    ({"rules": {"ia": {"ia_gamma": float("nan")}}}, "rules.ia.ia_gamma: nan is out of range"),
    ({"sweep": {"match_curves": {"tolerance": float("inf")}}}, "sweep.match_curves.tolerance: inf is out of range"),
    ({"decoder": {"test_fraction": 1.0}}, "decoder.test_fraction: 1.0 is out of range (allowed: > 0 and < 1)"),
    ({"decoder": {"test_fraction": 0}}, "decoder.test_fraction: 0.0 is out of range (allowed: > 0 and < 1)"),
    ({"rig": [{"n_checkpoints": 99}]}, "rig[0].n_checkpoints: 99 checkpoints observed, but the protocol records 21 "
                                       "(training.n_checkpoints); allowed: 0 (all) to 21"),
    ({"training": {"n_checkpoints": 5}, "rig": [{"name": "a"}, {"name": "b", "preset": "2p-gcamp6f"}]},
     "rig[1].preset: 7 checkpoints observed, but the protocol records 5"),
    ({"rig": [{"preset": "em-snapshot", "n_checkpoints": 3}]},
     "rig[0]: the keys given do not fit preset 'em-snapshot'"),
    ({"training": {"device": "gpu"}}, "training.device: 'gpu' is not allowed; did you mean 'cpu'? (allowed: cpu, cuda)"),
    ({"training": {"xyz": 1}}, "training.xyz: unknown key (allowed: "),
])
def test_non_finite_values_fractions_and_rig_checkpoints_are_refused(data, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocol(data, "bad.toml")
    text = str(info.value)
    assert text.startswith("bad.toml: ") and message in text and "\n" not in text


def test_protocol_errors_carry_file_and_key():
    from virtual_lab.validation import InputError

    with pytest.raises(InputError) as info:
        parse_protocol({"rig": [{"name": "a"}, {"noise_sd": float("nan")}]}, "bad.toml")
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, ValueError)
    assert (info.value.source, info.value.key) == ("bad.toml", "rig[1].noise_sd")
    # a preset rig within the recorded checkpoints, with its checkpoint count overridden, is fine
    protocol = parse_protocol({"training": {"n_checkpoints": 5},
                               "rig": [{"name": "np", "preset": "neuropixels-chronic", "n_checkpoints": 3}]})
    assert protocol.rig[0].preset_overrides() == {"n_checkpoints": 3}


def test_protocol_modules_stay_small():
    import virtual_lab.protocol as package

    for path in Path(package.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name
