"""Property-based mutation of the bundled quickstart protocol (Hypothesis).

One key of the quickstart is set to an invalid value -- NaN, an infinity, a negative number, zero where a
positive one is needed, a fraction of 1.0 where the range is open, the wrong type, an unknown choice, an empty
list -- or an unknown key is added: ``load_protocol`` must raise a one-line :class:`ProtocolError` naming the
key, and ``virtual-lab check`` must exit 2 with that one line on stderr, no traceback, and nothing written.
Set to a value in its range instead, the protocol must pass both. What each key allows is written out here
from the protocol's documentation (the comments of quickstart.toml and the keys' help), not read from the
loader's checks. Examples are derandomized and bounded, so the test is deterministic and takes well under 60 s.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from virtual_lab.cli import main  # noqa: E402
from virtual_lab.protocol import PROTOCOL_DIR, ProtocolError, load_protocol  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QUICKSTART = tomllib.loads(PROTOCOL_DIR.joinpath("quickstart.toml").read_text(encoding="utf-8"))
RULE_NAMES = ("sgd", "sgdm", "adam", "feedback_alignment", "information_alignment", "kolen_pollack", "sign_symmetry",
              "direct_feedback_alignment", "hebbian", "node_perturbation", "fa", "ia", "kp", "ss", "dfa", "oja", "np")
SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NAN, INF = float("nan"), float("inf")
WRONG_TYPES = st.one_of(st.text(max_size=6), st.booleans(), st.lists(st.integers(-9, 9), max_size=2),
                        st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=1))
NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@dataclass(frozen=True)
class Int:
    low: int
    valid_high: int

    def invalid(self):
        return st.one_of(st.integers(min_value=-2**63, max_value=self.low - 1), st.floats(), WRONG_TYPES)

    def valid(self):
        return st.integers(self.low, self.valid_high)


@dataclass(frozen=True)
class Real:
    low: float
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    valid_high: float = 5.0

    def invalid(self):
        below = st.floats(max_value=self.low if self.low_open else self.low - 1e-6, allow_nan=False)
        bad = [st.sampled_from([NAN, INF, -INF]), below, st.text(max_size=6), st.booleans(), st.lists(st.floats())]
        if self.high is not None:
            bad.append(st.floats(min_value=self.high if self.high_open else self.high + 1e-6, allow_nan=False))
        return st.one_of(bad)

    def valid(self):
        low = self.low + 1e-3 if self.low_open else self.low
        return st.floats(low, self.valid_high, allow_nan=False, allow_infinity=False)


@dataclass(frozen=True)
class Choice:
    options: tuple
    valid_options: tuple = ()

    def invalid(self):
        return st.one_of(NAMES.filter(lambda text: text not in self.options), st.integers(-2**63, 2**63 - 1),
                         st.floats())

    def valid(self):
        return st.sampled_from(self.valid_options or self.options)


@dataclass(frozen=True)
class Bool:
    def invalid(self):
        return st.one_of(st.integers(0, 1), st.sampled_from(["true", "false", "yes"]), st.floats())

    def valid(self):
        return st.booleans()


@dataclass(frozen=True)
class Text:
    def invalid(self):
        return st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                         st.lists(st.text(max_size=3), max_size=2))

    def valid(self):
        return st.text("abcdefghijklmnopqrstuvwxyz .,-", max_size=30)


@dataclass(frozen=True)
class FolderName:
    def invalid(self):
        return st.one_of(st.sampled_from(["", "a/b", "a b", ".hidden", "back\\slash"]), st.integers(-9, 9),
                         st.booleans())

    def valid(self):
        return st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)


@dataclass(frozen=True)
class Items:
    """A list: ``item`` describes each element; ``valid_items`` the valid lists drawn."""

    item: object
    valid_items: object
    min_len: int = 1

    def invalid(self):
        bad_item = self.item.invalid()
        return st.one_of(st.lists(bad_item, min_size=1, max_size=3), st.integers(-9, 9), st.text(max_size=4),
                         *([st.just([])] if self.min_len else []))

    def valid(self):
        return self.valid_items


QUICK_RULES = ("sgdm", "adam", "feedback_alignment", "information_alignment")
DECODERS = ("random_forest", "linear_svm", "logistic", "conv1d")

#: Each mutable key of the quickstart (a path into its TOML) -> what it allows.
KEYS = {
    ("name",): FolderName(),
    ("seed",): Int(0, 10**6),
    ("description",): Text(),
    ("task", "name"): Choice(("digits", "gaussian_clusters", "teacher", "mnist", "fashion_mnist", "cifar10"),
                             ("digits", "gaussian_clusters")),
    ("task", "n_probe"): Int(10, 400),
    ("task", "seed"): Int(0, 10**6),
    ("network", "architecture"): Choice(("mlp", "cnn", "resnet"), ("mlp",)),
    ("network", "hidden_sizes"): Items(Int(1, 256), st.lists(st.integers(1, 256), min_size=1, max_size=3)),
    ("training", "n_epochs"): Int(1, 200),
    ("training", "batch_size"): Int(1, 512),
    ("training", "n_checkpoints"): Int(2, 40),  # valid draws from 7: the sparse rig observes 7 of them
    ("training", "checkpoint_spacing"): Choice(("linear", "log")),
    ("training", "device"): Choice(("cpu", "cuda"), ("cpu",)),  # cuda: tests/test_validation_cli.py
    ("sweep", "rules"): Items(Choice(RULE_NAMES), st.lists(st.sampled_from(QUICK_RULES), min_size=2, max_size=4,
                                                           unique=True)),
    ("sweep", "learning_rate_scales"): Items(Real(0, low_open=True), st.lists(
        st.sampled_from([0.1, 0.25, 0.5, 0.71, 1.0, 1.41, 2.0, 4.0]), min_size=1, max_size=4, unique=True)),
    ("sweep", "n_seeds"): Int(1, 10),
    ("rules", "information_alignment", "learning_rate"): Real(0, valid_high=1.0),
    ("rules", "information_alignment", "ia_alpha"): Real(0, valid_high=1.0),
    ("rules", "information_alignment", "ia_beta"): Real(0, valid_high=1.0),
    ("rules", "information_alignment", "ia_gamma"): Real(0, valid_high=1.0),
    ("rig", 1, "unit_fraction"): Real(0, low_open=True, high=1.0, valid_high=1.0),
    ("rig", 1, "synapse_fraction"): Real(0, low_open=True, high=1.0, valid_high=1.0),
    ("rig", 1, "noise_sd"): Real(0),
    ("rig", 1, "noise_relative"): Bool(),
    ("rig", 1, "n_checkpoints"): Int(0, 21),
    ("rig", 1, "checkpoint_spacing"): Choice(("even", "random", "early", "late")),
    ("rig", 1, "seed"): Int(0, 10**6),
    ("decoder", "models"): Items(Choice(DECODERS), st.lists(st.sampled_from(DECODERS), min_size=1, max_size=4,
                                                            unique=True)),
    ("decoder", "n_splits"): Int(2, 50),
    ("decoder", "test_fraction"): Real(0, low_open=True, high=1.0, high_open=True, valid_high=0.95),
    ("decoder", "observables"): Choice(("admissible", "all")),
    ("decoder", "controls"): Bool(),
    ("decoder", "n_permutations"): Int(0, 99),
    ("decoder", "seed"): Int(0, 10**6),
}
#: Tables of the quickstart an unknown key can be added to ("" is the top level).
TABLES = ("", "task", "network", "training", "sweep", "decoder", "rules.information_alignment", "rig[0]")


def dotted(path: tuple) -> str:
    """``("rig", 1, "noise_sd")`` -> ``"rig[1].noise_sd"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):  # a JSON string is a TOML basic string once DEL is escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict) -> str:
    """Top-level values first (inline), then one [table] per section with inline values."""
    top = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in data.items()
           if not isinstance(v, dict) or k == "rules"]
    tables = [f"[{k}]\n" + "\n".join(f"{json.dumps(kk)} = {toml_value(vv)}" for kk, vv in v.items())
              for k, v in data.items() if isinstance(v, dict) and k != "rules"]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def mutated(path: tuple, value) -> dict:
    data = json.loads(json.dumps(QUICKSTART))
    table = data
    for part in path[:-1]:
        table = table[part]
    table[path[-1]] = value
    return data


def with_unknown_key(table: str, key: str) -> tuple[dict, str]:
    data = json.loads(json.dumps(QUICKSTART))
    target = data
    if table == "rig[0]":
        target = data["rig"][0]
    elif table:
        for part in table.split("."):
            target = target.setdefault(part, {})
    target[key] = 1
    return data, f"{table}.{key}" if table else key


def _run_check(capsys, data: dict) -> tuple[Path, int, str, str, list[Path]]:
    """Write ``data`` as a protocol in a fresh folder (sessions to go there too) and run ``virtual-lab check``."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
        data = {**data, "output_dir": str(Path(folder) / "recordings")}
        path = Path(folder) / "p.toml"
        path.write_text(to_toml(data), encoding="utf-8")
        capsys.readouterr()
        error = None
        try:
            load_protocol(path)
        except ProtocolError as err:
            error = str(err)
        code = main(["check", str(path)])
        out, err = capsys.readouterr()
        written = sorted(p for p in Path(folder).rglob("*") if p != path)
        return error, code, out, err.strip(), written


def assert_refused(capsys, data: dict, key: str) -> None:
    error, code, out, err, written = _run_check(capsys, data)
    pattern = rf": {re.escape(key)}(\[\d+\])?: "
    assert error is not None and "\n" not in error and re.search(pattern, error), (key, error)
    assert code == 2, (key, code, out, err)
    assert err.startswith("virtual-lab: error: ") and "\n" not in err and "Traceback" not in err, err
    assert re.search(pattern, err), (key, err)
    assert written == [] and "valid" not in out


def _is_valid_value(path: tuple, value) -> bool:
    """What the cross-key rules allow on top of each key's own range (one key is mutated at a time)."""
    if path == ("training", "n_checkpoints"):
        return value >= 7  # rig[1] observes 7 checkpoints
    return True


@SETTINGS
@given(data=st.data())
def test_invalid_mutations_are_refused_in_one_line(capsys, data):
    path = data.draw(st.sampled_from(sorted(KEYS, key=dotted)), label="key")
    value = data.draw(KEYS[path].invalid(), label="value")
    hypothesis.event(dotted(path))
    assert_refused(capsys, mutated(path, value), dotted(path))


@SETTINGS
@given(table=st.sampled_from(TABLES), key=NAMES)
def test_unknown_keys_are_refused_in_one_line(capsys, table, key):
    data, name = with_unknown_key(table, key)
    allowed = {
        "": QUICKSTART.keys() | {"storage"},
        "rig[0]": {"name", "unit_fraction", "n_units", "synapse_fraction", "noise_sd", "noise_relative",
                   "n_checkpoints", "checkpoint_spacing", "seed", "preset"},
    }
    hypothesis.assume(key not in allowed.get(table, ()) and not _known(table, key))
    assert_refused(capsys, data, name)


def _known(table: str, key: str) -> bool:
    from virtual_lab.protocol import (DecoderSection, NetworkSection, RuleSection, SweepSection, TaskSection,
                                      TrainingSection)

    sections = {"task": TaskSection, "network": NetworkSection, "training": TrainingSection, "sweep": SweepSection,
                "decoder": DecoderSection, "rules.information_alignment": RuleSection}
    return table in sections and key in sections[table].__dataclass_fields__


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_valid_mutations_pass_validation(capsys, data):
    path = data.draw(st.sampled_from(sorted(KEYS, key=dotted)), label="key")
    value = data.draw(KEYS[path].valid().filter(lambda v: _is_valid_value(path, v)), label="value")
    hypothesis.event(dotted(path))
    error, code, out, err, written = _run_check(capsys, mutated(path, value))
    assert error is None, error
    assert code == 0 and "): valid" in out, (code, err)
    assert written == []


def test_the_quickstart_itself_passes_and_a_mutation_fails_in_a_subprocess(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(to_toml({**QUICKSTART, "output_dir": str(tmp_path / "recordings")}), encoding="utf-8")
    assert load_protocol(path).name == "quickstart"
    bad = mutated(("rig", 1, "noise_sd"), NAN)
    path.write_text(to_toml({**bad, "output_dir": str(tmp_path / "recordings")}), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "virtual_lab", "check", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"virtual-lab: error: {path}: rig[1].noise_sd: nan is out of range (allowed: >= 0)"
    assert sorted(tmp_path.iterdir()) == [path]
