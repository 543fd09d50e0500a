"""The experiment and power reports: their words match their numbers, and their figures draw what they say."""

import tomllib
from types import SimpleNamespace

import numpy as np

from virtual_lab.analysis.power_figures import _target_outline
from virtual_lab.analysis.power_report import heatmap_caption
from virtual_lab.analysis.report import (
    CURVE_BAND,
    _learning_rate_text,
    learning_curve_bands,
    learning_rates,
    markdown_to_html,
    plot_learning_curves,
)
from virtual_lab.types import GroundTruth
from virtual_lab.protocol import parse_protocol

PROTOCOL = """
name = "words"
[sweep]
rules = ["sgdm", "adam"]
learning_rate_scales = [0.5, 1.0, 2.0]
n_seeds = 2
[rules.sgdm]
learning_rate = 0.02
"""


def _curve(rule: str, lr: float, loss, acc=None, steps=None, diverged: bool = False) -> GroundTruth:
    """A performance-only session (no layers), as the report receives them."""
    loss = np.asarray(loss, dtype=np.float32)
    steps = np.arange(len(loss), dtype=np.int64) * 10 if steps is None else np.asarray(steps, dtype=np.int64)
    acc = np.linspace(0.1, 0.9, len(loss)).astype(np.float32) if acc is None else np.asarray(acc, np.float32)
    return GroundTruth(layer_names=(), depth_positions=(), checkpoint_steps=steps, activations={}, weights={},
                       activity_change={}, train_loss=loss, test_accuracy=acc, probe_stimuli=np.zeros((0, 4)),
                       probe_labels=np.zeros(0, np.int64),
                       metadata={"rule": rule, "learning_rate": lr, "diverged": diverged, "run_id": f"{rule}{lr}"})


def test_report_names_the_multipliers_and_each_rules_rates():
    protocol = parse_protocol(tomllib.loads(PROTOCOL))
    sessions = [_curve(rule, base * scale, [2.0, 1.0]) for rule, base in (("adam", 0.001), ("sgdm", 0.02))
                for scale in (0.5, 1.0, 2.0) for _ in range(2)]
    rates = learning_rates(protocol, sessions)
    assert rates["scales"] == [0.5, 1.0, 2.0]
    assert list(rates["per_rule"]) == ["sgdm", "adam"]  # the report's rule order
    assert rates["per_rule"]["adam"] == [0.0005, 0.001, 0.002]
    assert _learning_rate_text(rates) == ("learning-rate multipliers 0.5x, 1x, 2x of each rule's base rate "
                                          "(SGDM 0.01/0.02/0.04; Adam 0.0005/0.001/0.002)")


def test_a_rate_that_is_no_protocol_multiplier_is_reported_as_a_rate_only():
    protocol = parse_protocol(tomllib.loads(PROTOCOL))
    sessions = [_curve("sgdm", 0.02, [2.0, 1.0]), _curve("sgdm", 0.03, [2.0, 1.0]), _curve("adam", 0.001, [2.0, 1.0])]
    rates = learning_rates(protocol, sessions)
    assert rates["scales"] is None
    text = _learning_rate_text(rates)
    assert text == "learning rates per rule: SGDM 0.02/0.03; Adam 0.001"
    assert "multiplier" not in text


def test_learning_curve_band_stays_within_the_recorded_values():
    # Adam-like losses spanning decades: mean - SD is below zero (the old band fell to 1e-7 on the log axis)
    losses = [[2.3, 1.0, 0.5, 1e-1], [2.3, 0.5, 1e-2, 1e-4], [2.3, 0.2, 1e-3, 1e-5], [2.3, 0.1, 1e-4, 1e-6]]
    sessions = [_curve("adam", 0.001, loss) for loss in losses] + [_curve("adam", 0.001, [9.0] * 4, diverged=True)]
    values = np.array(losses, dtype=np.float32).astype(float)  # as sessions store them
    assert (values.mean(0) - values.std(0))[-1] < 0  # the case that broke mean +/- SD
    x, bands, in_steps = learning_curve_bands(sessions, "train_loss")
    assert in_steps and np.array_equal(x, [0, 10, 20, 30])
    median, low, high, n = bands["adam"]
    assert n == 4  # the diverged run is left out
    assert np.all(low >= values.min(0) - 1e-12) and np.all(high <= values.max(0) + 1e-12)
    assert np.all(low > 0) and np.all(low <= median) and np.all(median <= high)
    np.testing.assert_allclose(low, np.quantile(values, CURVE_BAND[0], axis=0))


def test_learning_curves_of_runs_with_different_steps_use_the_fraction_of_training(tmp_path):
    sessions = [_curve("sgdm", 0.02, [2.0, 1.0, 0.1], steps=[0, 50, 100]),
                _curve("sgdm", 0.02, [2.0, 1.0, 0.1], steps=[0, 100, 200])]
    x, bands, in_steps = learning_curve_bands(sessions, "train_loss")
    assert not in_steps and np.allclose(x, [0, 0.5, 1])
    np.testing.assert_allclose(bands["sgdm"][0], [2.0, 1.0, 0.1], rtol=1e-6)
    assert plot_learning_curves(sessions, tmp_path / "curves.png").stat().st_size > 1000


def test_html_says_what_the_markdown_says():
    lines = ["# title", "", "Some *italic* and **bold** with `code *not italic*`.", "", "## Rigs", "",
             "- **full**: every unit", "- **noisy**: 25% of units", "", "| a | b |", "|---|---|", "| 1 ± 0 | x<y |",
             "", "![fig](fig.png)", "", "*What is drawn*: lines.", "", "After."]
    page = markdown_to_html(lines)
    assert "<h1>title</h1>" in page and "<h2>Rigs</h2>" in page
    assert "<i>italic</i>" in page and "<b>bold</b>" in page and "<code>code *not italic*</code>" in page
    assert "<ul><li><b>full</b>: every unit</li><li><b>noisy</b>: 25% of units</li></ul>" in page
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1 ± 0</td><td>x&lt;y</td></tr></table>" in page
    assert "<p><img src='fig.png' alt='fig'></p>\n<p class='caption'><i>What is drawn</i>: lines.</p>" in page
    assert "<p>After.</p>" in page


def test_heatmap_outline_and_caption_describe_what_is_drawn():
    reached = np.array([[False, True], [True, True]])
    segments = _target_outline(reached)
    # the L-shaped region of three cells has a perimeter of 8 cell edges
    assert len(segments) == 8
    assert [(0.5, -0.5), (1.5, -0.5)] in segments and [(-0.5, 0.5), (-0.5, 1.5)] in segments
    assert [(0.5, -0.5), (0.5, 0.5)] in segments  # between the unreached cell and its right neighbour

    def result(top):
        accuracy = np.array([[[0.5], [0.7]], [[np.nan], [top]]])
        return SimpleNamespace(accuracy=accuracy, target=0.9, confidence=0.95, provenance={"noise_axis": "noise SD"})

    assert "no cell reaches the 90% target" in heatmap_caption(result(0.85))
    caption = heatmap_caption(result(0.95))
    assert "white outline: the cells at or above the 90% target" in caption and "'skip'" in caption
    assert "white line" not in caption


def test_a_single_multiplier_is_named_in_the_singular():
    protocol = parse_protocol(tomllib.loads(PROTOCOL.replace("[0.5, 1.0, 2.0]", "[1.0]")))
    text = _learning_rate_text(learning_rates(protocol, [_curve("sgdm", 0.02, [1.0, 0.5])]))
    assert text == "learning-rate multiplier 1x of each rule's base rate (SGDM 0.02)"
