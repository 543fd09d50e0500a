"""End to end: a tiny protocol through `virtual-lab run`, as a user would run it."""

import json
from pathlib import Path

import numpy as np
import pytest

from virtual_lab.cli import main
from virtual_lab.pipeline import decode_sessions, run_protocol, train_and_record
from virtual_lab.protocol import load_protocol, parse_protocol
from virtual_lab.sessions import inspect_sessions, read_neo, read_session, validate_session

TINY = """
name = "tiny"
seed = 7
[task]
n_probe = 40
[network]
hidden_sizes = [16]
[training]
n_epochs = 2
batch_size = 32
n_checkpoints = 4
[sweep]
learning_rate_scales = [1.0]
n_seeds = 3
[[rig]]
name = "full"
[[rig]]
name = "noisy"
unit_fraction = 0.5
noise_sd = 0.2
noise_relative = true
n_checkpoints = 3
[decoder]
models = ["logistic"]
n_splits = 3
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    path = root / "tiny.toml"
    path.write_text(TINY)
    code = main(["run", str(path), "--output-dir", str(root / "out"), "-q"])
    return code, root


def test_run_writes_sessions_and_report(tiny_run):
    code, root = tiny_run
    assert code == 0
    sessions = sorted((root / "out" / "tiny").glob("sub-*/sub-*_ses-groundtruth.nwb"))
    assert len(sessions) == 12
    report = root / "out" / "tiny" / "report"
    for name in ("report.md", "report.html", "summary.json", "accuracy.png", "confusion.png",
                 "learning_curves.png", "predictions.csv"):
        assert (report / name).is_file(), name
    summary = json.loads((report / "summary.json").read_text())
    rigs = {(e["rig"], e["decoder"], e["control"]) for e in summary["evaluations"]}
    assert ("full", "logistic", "") in rigs and ("noisy", "logistic", "") in rigs
    assert summary["networks_per_rule"] == {"sgdm": 3, "adam": 3, "feedback_alignment": 3,
                                            "information_alignment": 3}
    # two epochs are far shorter than IA's feedback time constant: the report says so
    (caveat,) = summary["caveats"]
    assert caveat.startswith("information_alignment: 3 of its 3 runs train fewer steps")
    assert f"## Caveats\n\n- {caveat}" in (report / "report.md").read_text()
    # the words match the numbers: one multiplier, and each rule's absolute rate
    rates = "learning-rate multiplier 1x of each rule's base rate (SGDM 0.02; Adam 0.001; FA 0.02; IA 0.02)"
    assert rates in (report / "report.md").read_text()
    assert summary["learning_rate_scales"] == [1.0]
    assert summary["learning_rates"] == {"sgdm": [0.02], "adam": [0.001], "feedback_alignment": [0.02],
                                         "information_alignment": [0.02]}
    page = (report / "report.html").read_text()
    assert rates.replace("'", "&#x27;") in page and "interquartile range" in page
    assert page.count("<p class='caption'>") == 3


def test_report_says_what_the_recording_adds_over_behaviour(tiny_run):
    _, root = tiny_run
    report = root / "out" / "tiny" / "report"
    summary = json.loads((report / "summary.json").read_text())
    behaviour = summary["beyond_behaviour"]
    assert behaviour["decoder"] == "logistic" and behaviour["rig"] == "full"
    rows = {row["what"]: row for row in behaviour["rows"]}
    assert list(rows) == ["learning curves alone", "observables alone", "learning curves + observables",
                          "observables, performance-matched", "learning curves alone, performance-matched"]
    # the rows the controls already ran are reused, not re-run: the same numbers as their evaluations
    evaluations = {(e["rig"], e["decoder"], e["control"]): e for e in summary["evaluations"]}
    for what, control in (("observables alone", ""), ("learning curves alone", "performance only")):
        assert rows[what]["network_accuracy_mean"] == evaluations[("full", "logistic", control)]["network_accuracy_mean"]
    assert rows["learning curves + observables"]["n_networks"] == 12
    md = (report / "report.md").read_text()
    section = md.split("## What the recording adds over behaviour")[1]
    assert "| logistic | full | learning curves alone | 12 |" in section
    assert "observables - curves:" in section
    assert "What the recording adds over behaviour</h2>" in (report / "report.html").read_text()


def test_sessions_are_valid_nwb(tiny_run):
    _, root = tiny_run
    folder = root / "out" / "tiny"
    messages = inspect_sessions(folder)
    bad = [m for m in messages if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION", "ERROR",
                                                      "PYNWB_VALIDATION")]
    assert not bad, bad[:3]
    first = sorted(folder.glob("sub-*/*.nwb"))[0]
    assert validate_session(first) == []
    block = read_neo(first)
    assert len(block.segments[0].analogsignals) == 2  # one activation series per layer


def test_rerun_reuses_sessions_and_fresh_folder_is_bit_identical(tiny_run, tmp_path):
    _, root = tiny_run
    protocol = load_protocol(root / "tiny.toml")
    import dataclasses

    again = run_protocol(dataclasses.replace(protocol, output_dir=str(root / "out")), progress=False)
    assert again.n_trained == 0 and again.n_reused == 12
    fresh = run_protocol(dataclasses.replace(protocol, output_dir=str(tmp_path)), progress=False)
    assert fresh.n_trained == 12
    for a, b in zip(again.session_paths, fresh.session_paths):
        assert a.name == b.name
        ga, gb = read_session(a), read_session(b)
        for layer in ga.layer_names:
            np.testing.assert_array_equal(ga.activations[layer], gb.activations[layer])
        assert a.read_bytes() == b.read_bytes()


def test_truncated_session_is_retrained(tiny_run, tmp_path):
    _, root = tiny_run
    protocol = parse_protocol({"name": "t2", "output_dir": str(tmp_path), "task": {"n_probe": 40},
                               "network": {"hidden_sizes": [8]}, "training": {"n_epochs": 1, "n_checkpoints": 3},
                               "sweep": {"rules": ["sgdm", "adam"], "n_seeds": 2},
                               "decoder": {"models": ["logistic"], "n_splits": 2}})
    _, paths, counts = train_and_record(protocol, progress=False)
    assert counts["trained"] == 4
    original = read_session(paths[0])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) // 2])
    _, paths2, counts2 = train_and_record(protocol, progress=False)
    assert counts2 == {"trained": 1, "reused": 3, "diverged": 0}
    retrained = read_session(paths2[0])
    # retrained alone rather than in its original population: equal within float tolerance
    for layer in original.layer_names:
        np.testing.assert_allclose(retrained.activations[layer], original.activations[layer], atol=1e-5)


def test_initialization_alone_does_not_reveal_the_rule(tmp_path):
    """The rule may only show through learning: decoding checkpoint 0 stays near chance (0.25)."""
    protocol = parse_protocol({
        "name": "init", "output_dir": str(tmp_path), "seed": 3, "task": {"n_probe": 30},
        "network": {"hidden_sizes": [12]}, "training": {"n_epochs": 2, "batch_size": 64, "n_checkpoints": 3},
        "sweep": {"n_seeds": 10},
        "decoder": {"models": ["random_forest"], "n_splits": 10, "controls": False}})
    gts, _, _ = train_and_record(protocol, progress=False)
    evaluations, _ = decode_sessions(protocol, gts, progress=False)
    init = [e for e in evaluations if e["control"]][0]["summary"]
    trained = [e for e in evaluations if not e["control"]][0]["summary"]
    # 40 networks, 10 test networks per split: a one-sided binomial bound for p=0.25 is ~0.5
    assert init["network_accuracy_mean"] < 0.5
    assert init["layer_accuracy_mean"] < 0.5
    assert trained["network_accuracy_mean"] > init["network_accuracy_mean"] + 0.2


def test_run_writes_a_manifest_and_status_reads_it(tiny_run, capsys):
    _, root = tiny_run
    folder = root / "out" / "tiny"
    manifest = json.loads((folder / "sweep_manifest.json").read_text())
    assert manifest["finished"] and manifest["protocol"] == "tiny"
    assert manifest["counts"] == {"complete": 12, "diverged": 0, "failed": 0, "pending": 0}
    assert main(["status", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["sgdm", "mlp"] and line.split()[2] == "3" for line in lines)
    assert lines[-1].split()[:2] == ["total", "12"]


def test_run_through_modality_presets_decodes_what_each_rig_measures(tmp_path):
    """A spiking or calcium rig measures activity only: `run` decodes from the observables it has."""
    protocol = parse_protocol({
        "name": "modal", "output_dir": str(tmp_path), "seed": 3, "task": {"n_probe": 40},
        "network": {"hidden_sizes": [16]}, "training": {"n_epochs": 1, "n_checkpoints": 8},
        "sweep": {"rules": ["sgdm", "adam"], "n_seeds": 3},
        "rig": [{"name": "ephys", "preset": "neuropixels-acute"}, {"name": "calcium", "preset": "2p-gcamp6s"}],
        "decoder": {"models": ["logistic"], "n_splits": 2, "controls": False}})
    result = run_protocol(protocol, progress=False)
    assert result.ok
    tables = {e["rig"]: e for e in result.evaluations if not e["control"]}
    assert set(tables) == {"ephys", "calcium"}
