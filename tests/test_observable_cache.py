"""The on-disk observable cache of decode: served on a second pass, recomputed when a session changes."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from virtual_lab.analysis.observable_cache import (ObservableCache, code_fingerprint, default_cache_dir,
                                                   rig_fingerprint)
from virtual_lab.analysis.observables import ADMISSIBLE_OBSERVABLES
from virtual_lab.analysis.session_tables import tables_from_sessions
from virtual_lab.cli import main
from virtual_lab.sessions import read_session, write_session
from virtual_lab.testing import mock_ground_truth

RULES = ("sgdm", "adam")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Eight small sessions of two rules, in one folder."""
    root = tmp_path_factory.mktemp("cache") / "sessions"
    for seed in range(8):
        gt = mock_ground_truth(RULES[seed % 2], seed=seed, n_checkpoints=9)
        write_session(gt, root / f"sub-{gt.run_id}_ses-groundtruth.nwb")
    return root


@pytest.fixture()
def folder(sessions, tmp_path):
    """A private copy of the sessions (tests change files and caches)."""
    return shutil.copytree(sessions, tmp_path / "sessions")


def tables(folder, rigs=("full",), seed=0, cache=True):
    stats = {}
    out = tables_from_sessions(str(folder), rigs, seed=seed, cache_dir=default_cache_dir(folder) if cache else None,
                               cache_stats=stats)
    return out, stats


def assert_same_tables(a, b):
    for rig in a[0]:
        first, second = a[0][rig], b[0][rig]
        np.testing.assert_array_equal(first.X, second.X)
        np.testing.assert_array_equal(first.feature_names, second.feature_names)
        for name in ("rule", "network_id", "layer", "depth_position"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        assert first.metadata == second.metadata
        for c1, c2 in zip(a[1][rig], b[1][rig]):
            assert (c1.run_id, c1.rule, dict(c1.metadata)) == (c2.run_id, c2.rule, dict(c2.metadata))
            np.testing.assert_array_equal(c1.source.train_loss, c2.source.train_loss)
            np.testing.assert_array_equal(c1.checkpoint_indices, c2.checkpoint_indices)


def test_second_pass_is_served_from_the_cache_and_equals_the_first(folder):
    first, stats = tables(folder, rigs=("full", "paper-gaussian"))
    assert stats == {"computed": 16, "cached": 0}
    assert len(list(default_cache_dir(folder).glob("*.npz"))) == 16
    second, stats = tables(folder, rigs=("full", "paper-gaussian"))
    assert stats == {"computed": 0, "cached": 16}
    assert_same_tables(first, second)
    uncached, stats = tables(folder, rigs=("full", "paper-gaussian"), cache=False)
    assert stats == {"computed": 16, "cached": 0}
    assert_same_tables(first, uncached)
    # another rig seed is another observation of every session; the cached rig seed stays cached
    _, stats = tables(folder, rigs=("full", "paper-gaussian"), seed=1)
    assert stats == {"computed": 16, "cached": 0}
    _, stats = tables(folder, rigs=("full",), seed=0)
    assert stats == {"computed": 0, "cached": 8}


def test_a_changed_session_is_recomputed(folder):
    tables(folder)
    path = sorted(folder.glob("*.nwb"))[3]
    gt = read_session(path)
    changed = dataclasses.replace(gt, train_loss=np.asarray(gt.train_loss) * 2)
    write_session(changed, path)
    (tables_out, curves), stats = tables(folder)
    assert stats == {"computed": 1, "cached": 7}
    curve = next(c for c in curves["full"] if c.run_id == gt.run_id)
    np.testing.assert_allclose(curve.source.train_loss, np.asarray(gt.train_loss) * 2)
    _, stats = tables(folder)
    assert stats == {"computed": 0, "cached": 8}


def test_a_moved_folder_keeps_its_cache_and_the_new_paths(folder, tmp_path):
    tables(folder)
    moved = shutil.move(str(folder), str(tmp_path / "moved"))
    (out, _), stats = tables(moved)
    assert stats == {"computed": 0, "cached": 8}
    assert all(m["session_path"].startswith(str(moved)) for m in out["full"].metadata)


def test_an_unreadable_entry_is_computed_and_written_again(folder):
    tables(folder)
    entry = sorted(default_cache_dir(folder).glob("*.npz"))[0]
    entry.write_bytes(b"not an npz file")
    _, stats = tables(folder)
    assert stats == {"computed": 1, "cached": 7}
    _, stats = tables(folder)
    assert stats == {"computed": 0, "cached": 8}
    assert not list(default_cache_dir(folder).glob(".*.tmp"))  # no temporary file left behind


def test_key_names_session_content_rig_seed_observables_and_code(tmp_path):
    cache = ObservableCache(tmp_path)
    base = cache.key("ab" * 32, "full", 0, ADMISSIBLE_OBSERVABLES)
    assert base == cache.key("ab" * 32, "full", 0, [o.name for o in ADMISSIBLE_OBSERVABLES])
    others = {cache.key("cd" * 32, "full", 0, ADMISSIBLE_OBSERVABLES),
              cache.key("ab" * 32, "paper-gaussian", 0, ADMISSIBLE_OBSERVABLES),
              cache.key("ab" * 32, "full", 1, ADMISSIBLE_OBSERVABLES),
              cache.key("ab" * 32, "full", 0, ADMISSIBLE_OBSERVABLES[:5])}
    assert base not in others and len(others) == 4
    assert len(code_fingerprint()) == 16
    # a preset given as a file: its text is part of the key
    preset = tmp_path / "my-rig.toml"
    preset.write_text('unit_fraction = 0.5\n')
    before = rig_fingerprint(str(preset))
    rig_fingerprint.cache_clear()
    preset.write_text('unit_fraction = 0.25\n')
    assert rig_fingerprint(str(preset)) != before


def test_decode_uses_the_cache_unless_told_not_to(folder, tmp_path):
    args = ["decode", str(folder), "--decoder", "logistic", "--n-splits", "2", "--no-behaviour", "--jobs", "1", "-q"]

    def summary(name):
        return json.loads((tmp_path / name / "summary.json").read_text())["observable_cache"]

    assert main([*args, "--output-dir", str(tmp_path / "a"), "--no-cache"]) == 0
    assert summary("a") == {"dir": None, "computed": 8, "cached": 0}
    assert not default_cache_dir(folder).exists()
    assert main([*args, "--output-dir", str(tmp_path / "b")]) == 0
    assert summary("b") == {"dir": str(default_cache_dir(folder)), "computed": 8, "cached": 0}
    assert main([*args, "--output-dir", str(tmp_path / "c")]) == 0
    assert summary("c") == {"dir": str(default_cache_dir(folder)), "computed": 0, "cached": 8}
    assert (tmp_path / "b" / "decode.csv").read_text() == (tmp_path / "c" / "decode.csv").read_text()


def test_a_cache_that_cannot_be_written_leaves_decoding_as_it_was(folder, caplog):
    blocker = folder / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    for _ in range(2):
        stats = {}
        out = tables_from_sessions(str(folder), ["full"], cache_dir=blocker / "observables", cache_stats=stats)
        assert stats == {"computed": 8, "cached": 0} and len(out[1]["full"]) == 8
    warnings = [r for r in caplog.records if "could not write the observable cache" in r.getMessage()
                and r.levelname == "WARNING"]
    assert len(warnings) == 1  # once, not once per session
