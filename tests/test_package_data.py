"""Bundled protocols and rig presets: package data read with importlib.resources, one copy, usable by name."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest

from virtual_lab.cli import main
from virtual_lab.protocol import ProtocolError, available_protocols, load_protocol
from virtual_lab.rig.presets import available_presets, load_preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "virtual_lab" / "data"


def bundled_files() -> list[Path]:
    """Every file under virtual_lab/data in this checkout, relative to the package."""
    return sorted(p.relative_to(ROOT / "virtual_lab") for p in DATA.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts)


def test_every_bundled_file_is_found_through_importlib_resources():
    files = bundled_files()
    assert len([f for f in files if f.suffix == ".toml"]) >= 11
    package = importlib.resources.files("virtual_lab")
    for relative in files:
        resource = package.joinpath(*relative.parts)
        assert resource.is_file(), relative
        assert resource.read_bytes() == (ROOT / "virtual_lab" / relative).read_bytes(), relative
    assert available_protocols() == sorted(p.stem for p in (DATA / "protocols").glob("*.toml"))
    assert available_presets() == sorted(p.stem for p in (DATA / "protocols" / "rigs").glob("*.toml"))
    assert {"quickstart", "zoo", "paper"} <= set(available_protocols())


def test_setuptools_ships_every_bundled_file():
    """The package-data patterns of pyproject.toml match every file under virtual_lab/data (a wheel ships them)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["virtual_lab"]
    shipped = {p.relative_to(ROOT / "virtual_lab") for pattern in patterns for p in (ROOT / "virtual_lab").glob(pattern)}
    assert set(bundled_files()) == shipped


def test_the_repository_protocols_folder_is_a_link_to_the_package_data():
    link = ROOT / "protocols"
    assert link.is_symlink() and not Path(str(link.readlink())).is_absolute()
    assert link.resolve() == (DATA / "protocols").resolve()
    assert (link / "rigs" / "2p-gcamp6s.toml").is_file()


def test_bundled_protocols_and_presets_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no protocols/ here
    for name in available_protocols():
        protocol = load_protocol(name)
        assert protocol.name == name and Path(protocol.source).is_file()
        assert Path(protocol.source).resolve().parent == (DATA / "protocols").resolve()
    assert load_protocol("quickstart").recordings_dir == Path("recordings") / "quickstart"
    for name in available_presets():
        assert load_preset(name).name == name
    assert load_preset("2p-gcamp6s").stages["calcium"]["indicator"] == "GCaMP6s"
    with_rig = tmp_path / "study.toml"
    with_rig.write_text('name = "study"\n[[rig]]\nname = "2p"\npreset = "2p-gcamp6s"\n')
    assert load_protocol(with_rig).rig[0].preset == "2p-gcamp6s"


def test_a_local_file_wins_over_a_bundled_name_and_unknown_names_get_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").write_text('name = "mine"\n')
    assert load_protocol("quickstart").name == "mine"
    with pytest.raises(ProtocolError, match=r"^quickstrt: no such protocol file or bundled protocol; did you mean "
                                            r"'quickstart'\? \(bundled: matched, paper, quickstart, robust, unknowns, zoo\)$"):
        load_protocol("quickstrt")
    with pytest.raises(ProtocolError, match=r"^missing\.toml: no such protocol file$"):
        load_protocol("missing.toml")


def test_run_takes_a_bundled_protocol_name(tmp_path, monkeypatch, capsys):
    import virtual_lab.pipeline as pipeline

    seen = []

    class Done:
        ok = True

        def summary_text(self):
            return "done"

    def run_protocol(protocol, **kwargs):
        seen.append(protocol)
        return Done()

    monkeypatch.setattr(pipeline, "run_protocol", run_protocol)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "quickstart", "-q", "--train-only"]) == 0
    (protocol,) = seen
    assert protocol.name == "quickstart" and protocol.recordings_dir == Path("recordings") / "quickstart"
    assert main(["run", "quickstrt", "-q"]) == 2
    assert "did you mean 'quickstart'?" in capsys.readouterr().err


def test_protocols_command_lists_names_with_descriptions(capsys):
    assert main(["protocols"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in available_protocols():
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert line.split(None, 1)[1] == load_protocol(name).description
    assert main(["protocols", "quickstart"]) == 0
    assert capsys.readouterr().out == (DATA / "protocols" / "quickstart.toml").read_text(encoding="utf-8")
    assert main(["protocols", "nope"]) == 2
    assert "no such protocol file or bundled protocol" in capsys.readouterr().err


def test_rigs_command_lists_names_with_descriptions(capsys):
    assert main(["rigs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in available_presets():
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert line.split(None, 1)[1] == load_preset(name).description
    assert main(["rigs", "2p-gcamp6s"]) == 0
    assert capsys.readouterr().out == (DATA / "protocols" / "rigs" / "2p-gcamp6s.toml").read_text(encoding="utf-8")
    assert main(["rigs", "2p-gcamp6x"]) == 2
    assert "did you mean '2p-gcamp6s'?" in capsys.readouterr().err


@pytest.mark.parametrize("command, example", [("protocols", "virtual-lab protocols quickstart > my_study.toml"),
                                              ("rigs", "virtual-lab rigs 2p-gcamp6s > my_rig.toml"),
                                              ("run", "virtual-lab run quickstart")])
def test_help_ends_with_an_example(command, example):
    out = subprocess.run([sys.executable, "-m", "virtual_lab", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "example:" in out.stdout and example in out.stdout
    if command != "run":
        assert out.stdout.rstrip().endswith(example)
