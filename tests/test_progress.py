"""Progress reporting: plain lines in a log file, a heartbeat while nothing advances, every stage of a run."""

import io
import time

from virtual_lab.progress import progress_bar, progress_enabled, quiet


def _lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text, "a log file gets whole lines, not carriage-return refreshes"
    return [line for line in text.splitlines() if line]


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    bar = progress_bar(total=4, desc="training", unit="network-steps", stream=stream, interval_s=0.05)
    for _ in range(4):
        time.sleep(0.06)
        bar.update(1)
    bar.close()
    lines = _lines(stream)
    assert lines[0].startswith("training: 0/4 network-steps")
    assert lines[-1].startswith("training: 4/4 network-steps (100%)")
    assert all("ETA" in line for line in lines)


def test_heartbeat_repeats_the_line_while_nothing_advances():
    stream = io.StringIO()
    bar = progress_bar(total=10, desc="decoding", unit="splits", stream=stream, interval_s=0.2)
    bar.update(1)
    time.sleep(1.3)  # one long split: the elapsed time changes, so the heartbeat writes new lines
    bar.close()
    lines = [line for line in _lines(stream) if line.startswith("decoding: 1/10")]
    assert len(lines) >= 2, lines
    assert len(lines) <= 1.3 / 0.2 + 2, lines  # one line per interval, not one per heartbeat check


def test_quiet_turns_every_bar_off():
    stream = io.StringIO()
    assert progress_enabled()
    with quiet():
        assert not progress_enabled()
        assert sum(progress_bar(range(3), desc="x", stream=stream)) == 3
        with quiet(True):  # an inner block may switch it back on
            assert progress_enabled()
    assert progress_enabled()
    assert stream.getvalue() == ""
    assert sum(progress_bar(range(3), desc="x", stream=stream, enabled=False)) == 3
    assert stream.getvalue() == ""


def test_a_run_reports_every_stage(tmp_path, capfd):
    from test_pipeline import TINY

    from virtual_lab.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace('models = ["logistic"]', 'models = ["logistic"]\nn_permutations = 2'))
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "--workers", "0"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err
    for stage in ("training: ", "network-steps", "sessions written 12/12", "observing (rig full)",
                  "observing (rig noisy)", "decoding (logistic)", "controls: ", "permutation test: "):
        assert stage in err, stage
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    assert "observing" not in capfd.readouterr().err
