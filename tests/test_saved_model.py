"""Saved decoders (`decode --save`, skops): what they carry, identical predictions in a fresh process, and files
that are not trusted saved decoders refused with one line and no code run."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from virtual_lab.testing import mock_ground_truth

pytest.importorskip("skops")

from virtual_lab.analysis.saved_model import (FORMAT, ModelFileError, OODModel, SavedModel, fit_ood,  # noqa: E402
                                              fit_saved_model, load_model, save_model)

RIG = "2p-gcamp6s"
OPTIONS = ["--rig", RIG, "--n-splits", "2", "--jobs", "1", "--no-behaviour", "-q"]
DECODE = [*OPTIONS, "--decoder", "logistic"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two rules x three networks, a logistic decoder saved by `decode --save`."""
    from virtual_lab.cli import main
    from virtual_lab.sessions import GROUND_TRUTH_SESSION_ID, session_path, write_session

    root = tmp_path_factory.mktemp("saved")
    sessions = root / "sessions"
    for r, rule in enumerate(("sgdm", "adam")):
        for k in range(3):
            gt = mock_ground_truth(rule=rule, seed=10 * r + k, run_id=f"m{r}x{k}", n_checkpoints=9)
            write_session(gt, session_path(sessions, gt.run_id, GROUND_TRUTH_SESSION_ID), protocol_name="mock")
    model = root / "model.skops"
    assert main(["decode", str(sessions), *DECODE, "--output-dir", str(root / "decode"), "--save", str(model)]) == 0
    return {"root": root, "sessions": sessions, "model": model,
            "summary": json.loads((root / "decode" / "summary.json").read_text())}


def _table(sessions):
    from virtual_lab.analysis.session_tables import rig_observables, tables_from_sessions

    kept = rig_observables(str(sessions), [RIG])[RIG][0]
    return tables_from_sessions(str(sessions), [RIG], {RIG: kept})[0][RIG]


def _one_line_error(model, cwd, capsys):
    """``virtual-lab identify`` with ``model``: exit status 2 and one line on stderr, no traceback."""
    from virtual_lab.cli import main

    assert main(["identify", str(cwd / "any.nwb"), "--model", str(model)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtual-lab: error: ") and captured.out == ""
    return lines[0]


def test_saved_model_carries_what_identify_needs(trained, capsys):
    model = load_model(trained["model"])
    meta = model.metadata
    [analysis] = trained["summary"]["analyses"]
    assert meta["decoder"] == "logistic" and meta["features"] == "paper" and model.classes == ("adam", "sgdm")
    assert model.observables == ("actabs_mean", "actabs_median", "actabs_norm", "actabs_thirdquartile",
                                 "actraw_mean", "actraw_median", "actraw_norm", "actraw_thirdquartile")
    names = model.feature_names
    assert len(names) == 7 * 8 + 3 and model.n_timepoints == 7 and list(names["timepoint"][-3:]) == [-1] * 3
    assert [str(n) for n in names["statistic"][:8]] == [o.split("_")[1] for o in model.observables]
    assert meta["rig"]["name"] == RIG and meta["rig"]["activity_kind"] == "dff" and meta["rig"]["measures"] == ["act"]
    assert meta["rig"]["settings"]["calcium.noise_level"] == 2.0 and meta["rig"]["path"].endswith(f"{RIG}.toml")
    assert meta["population"]["networks_per_rule"] == {"adam": 3, "sgdm": 3}
    assert meta["population"]["conditions"]["architecture"] == ["mlp"]
    cv = meta["cross_validation"]
    assert cv["network_confusion"] == analysis["summary"]["network_confusion"]
    assert np.sum(cv["network_confusion_counts"]) == analysis["summary"]["n_splits"] * 2  # one test network per rule
    assert meta["versions"]["virtual_lab"] and meta["ood"]["quantile"] == 0.99
    assert model.ood.threshold == pytest.approx(np.quantile(model.ood.held_out_scores, 0.99, method="higher"))


def test_fresh_process_gives_identical_predictions(trained, tmp_path):
    table = _table(trained["sessions"])
    fitted = fit_saved_model(table, "logistic", _cross_validation(table), rig={"name": RIG}, n_splits=2)
    expected = fitted.estimator.predict_proba(table.X)
    np.save(tmp_path / "X.npy", table.X)
    code = ("import sys, numpy as np; from virtual_lab.analysis.saved_model import load_model; "
            "m = load_model(sys.argv[1]); X = np.load(sys.argv[2]); "
            "np.save(sys.argv[3], m.estimator.predict_proba(X)); print(m.ood.score(X[:3]))")
    done = subprocess.run([sys.executable, "-c", code, str(trained["model"]), str(tmp_path / "X.npy"),
                           str(tmp_path / "P.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "P.npy"), expected)
    assert float(done.stdout) == fitted.ood.score(table.X[:3])


def _cross_validation(table):
    from virtual_lab.analysis.evaluation import evaluate

    return evaluate(table, "logistic", n_splits=2)


def test_files_that_are_not_saved_decoders_fail_with_one_line(trained, tmp_path, capsys):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    (tmp_path / "text.skops").write_text("not a model")
    with zipfile.ZipFile(tmp_path / "zip.skops", "w") as archive:
        archive.writestr("readme.txt", "a zip, not a skops file")
    sio.dump(LogisticRegression(), tmp_path / "plain.skops")
    expected = {"text.skops": "not a skops model file (not a zip archive)",
                "zip.skops": "not a skops model file (no schema.json inside)",
                "plain.skops": "a skops file, but not a virtual_lab saved decoder",
                "missing.skops": "no such model file"}
    for name, message in expected.items():
        line = _one_line_error(tmp_path / name, tmp_path, capsys)
        assert message in line and name in line


def _tampered(source, target, edit):
    """Copy a skops file with its schema edited by ``edit(schema)``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        schema = json.loads(original.read("schema.json"))
        edit(schema)
        for name in original.namelist():
            copy.writestr(name, json.dumps(schema) if name == "schema.json" else original.read(name))
    return target


def test_a_tampered_model_runs_no_code(trained, tmp_path, capsys, monkeypatch):
    """A type outside the trusted list, importable here, whose module leaves a marker when imported and whose
    object leaves one when built: refused in one line, neither marker written, the module never imported."""
    marker = tmp_path / "RAN"
    (tmp_path / "evilmod.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        f"class Evil:\n    def __setstate__(self, state):\n        pathlib.Path({str(marker)!r}).write_text('built')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def inject(schema):
        scaler = schema["content"]["estimator"]["content"]["content"]["steps"]["content"][0]["content"][1]
        assert scaler["__class__"] == "StandardScaler"
        scaler["__class__"], scaler["__module__"] = "Evil", "evilmod"

    tampered = _tampered(trained["model"], tmp_path / "tampered.skops", inject)
    line = _one_line_error(tampered, tmp_path, capsys)
    assert "outside the trusted list (evilmod.Evil)" in line and "nothing from it was run" in line
    with pytest.raises(ModelFileError, match="evilmod.Evil"):
        load_model(tampered)
    assert not marker.exists() and "evilmod" not in sys.modules


def test_a_forest_with_node_indices_out_of_range_is_refused(tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 6)), np.repeat(["a", "b"], 20)
    forest = Pipeline([("classifier", RandomForestClassifier(n_estimators=3, random_state=0))]).fit(X, y)
    meta = {"feature_names": [["act", "raw", "mean", t] for t in range(6)], "n_timepoints": 6, "classes": ["a", "b"],
            "rig": {"name": "test"}, "ood": {"threshold": 1.0, "quantile": 0.99}}
    ood = OODModel(np.arange(6), np.zeros(6), np.ones(6), np.eye(6), 1.0, 0.99, np.ones(3))
    path = save_model(SavedModel(forest, meta, ood), tmp_path / "forest.skops")
    assert load_model(path).estimator.predict(X).tolist() == forest.predict(X).tolist()
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        files = {name: archive.read(name) for name in archive.namelist()}
    nodes_file = _first_tree_nodes(schema)
    import io

    nodes = np.load(io.BytesIO(files[nodes_file]), allow_pickle=False)
    nodes["left_child"][0] = 10**6  # an index far outside the node array
    buffer = io.BytesIO()
    np.save(buffer, nodes, allow_pickle=False)
    files[nodes_file] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "bad-forest.skops", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="node indices outside its arrays"):
        load_model(tmp_path / "bad-forest.skops")


def _first_tree_nodes(node):
    if isinstance(node, dict):
        if node.get("__class__") == "Tree":
            return node["content"]["content"]["nodes"]["file"]
        values = node.values()
    elif isinstance(node, list):
        values = node
    else:
        return None
    return next((found for found in map(_first_tree_nodes, values) if found), None)


def test_save_refuses_what_it_cannot_store_before_any_work(trained, tmp_path, capsys):
    from virtual_lab.cli import main

    for extra, message in ((["--decoder", "conv1d"], "cannot be saved"),
                           (["--decoder", "logistic", "--train-filter", "rule=adam"],
                            "cannot be combined with --train-filter")):
        args = ["decode", str(trained["sessions"]), *OPTIONS, *extra, "--output-dir", str(tmp_path / "d"),
                "--save", str(tmp_path / "m.skops")]
        assert main(args) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "m.skops").exists() and not (tmp_path / "d" / "decode.csv").exists()


def test_ood_threshold_is_calibrated_on_held_out_networks():
    from virtual_lab.analysis.observables import FeatureTable, feature_names_for
    from virtual_lab.analysis.splits import grouped_splits

    rng = np.random.default_rng(1)
    n_networks, n_layers = 40, 3
    names = feature_names_for(["actraw_mean", "actabs_norm"], 3)
    X = np.hstack([rng.normal(size=(n_networks * n_layers, 6)), np.tile(np.eye(3), (n_networks, 1))])
    networks = np.repeat([f"n{i}" for i in range(n_networks)], n_layers)
    rules = np.repeat(np.array(["a", "b"] * (n_networks // 2)), n_layers)
    table = FeatureTable(X, rules, networks, np.tile(["l1", "l2", "l3"], n_networks),
                         np.tile(["early", "middle", "deep"], n_networks), tuple({} for _ in networks), names)
    ood = fit_ood(table, grouped_splits(networks, rules, n_splits=10, seed=0), quantile=0.9)
    assert ood.columns.tolist() == list(range(6)) and ood.held_out_scores.size == 10 * 10
    assert ood.threshold == np.quantile(ood.held_out_scores, 0.9, method="higher")
    fresh = rng.normal(size=(200 * n_layers, 9))
    fresh_scores = [ood.score(fresh[i:i + n_layers]) for i in range(0, len(fresh), n_layers)]
    assert 0.8 <= np.mean(np.array(fresh_scores) <= ood.threshold) <= 0.99  # about the 90% asked for
    assert ood.score(fresh[:3] * 1e3) > 100 * ood.threshold and ood.percentile(ood.score(fresh[:3] * 1e3)) == 100.0
    assert FORMAT == "virtual_lab.saved_decoder"
