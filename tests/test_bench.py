import json

import pytest

from virtual_lab.bench import format_benchmark, model_flops_per_step, rule_flops_per_step, run_benchmark
from virtual_lab.cli import main


def test_model_flops_counts_forward_weight_gradient_and_error_propagation():
    # 64-128-10 at batch 32: layer 1 forward + weight gradient (no error to the input), layer 2 all three
    assert model_flops_per_step((64, 128, 10), 32) == 4 * 32 * 64 * 128 + 6 * 32 * 128 * 10


def test_rule_flops_add_what_each_rule_computes():
    macs, b = [64 * 128, 128 * 10], 32
    base = model_flops_per_step((64, 128, 10), b)
    for rule in ("sgd", "sgdm", "adam", "feedback_alignment", "kolen_pollack", "sign_symmetry"):
        assert rule_flops_per_step(macs, b, rule) == base
    # IA: four more products per layer for the local loss on B
    assert rule_flops_per_step(macs, b, "information_alignment") == base + 8 * b * sum(macs)
    # DFA: the output error (10 units) reaches the 128 hidden units directly instead of through layer 2
    assert rule_flops_per_step(macs, b, "direct_feedback_alignment", hidden_units=[128], n_outputs=10) \
        == base - 2 * b * 128 * 10 + 2 * b * 10 * 128
    # node perturbation: two forward passes and the update, no backward pass
    assert rule_flops_per_step(macs, b, "node_perturbation") == 6 * b * sum(macs)


def test_tiny_cnn_benchmark():
    result = run_benchmark(architecture="cnn", channels=(2, 2, 2), n_networks=2, n_epochs=1, n_checkpoints=2,
                           n_probe=50, n_threads=1, n_reference_networks=1, n_reference_steps=2, peak_size=64)
    assert result["config"]["architecture"] == "cnn" and result["config"]["network"].startswith("CNN conv1 1->2")
    # conv1 3x3 1->2 at 8x8, conv2 2->2 at 4x4, conv3 2->2 at 2x2, fc 8->10: multiply-adds per example
    macs = [64 * 2 * 9, 16 * 2 * 18, 4 * 2 * 18, 8 * 10]
    expected = sum(rule_flops_per_step(macs, 64, r) for r in ("sgdm", "adam")) / 2
    assert result["engine"]["flops_per_network_step"] == pytest.approx(expected)
    assert result["speedup"] > 0 and 0 < result["fraction_of_peak"]


def test_tiny_benchmark_reports_every_figure():
    result = run_benchmark(n_networks=4, hidden_sizes=(16,), n_epochs=1, n_checkpoints=3, n_probe=50,
                           n_threads=1, n_reference_networks=2, n_reference_steps=5, peak_size=128)
    assert result["config"]["layer_sizes"] == [64, 16, 10] and result["config"]["n_steps"] == (1797 - 50) // 64
    for key in ("network_steps_per_s", "achieved_flops"):
        assert result["engine"][key] > 0 and result["reference"][key] > 0
    assert 0 < result["engine"]["record_fraction"] < 1
    assert result["speedup"] == pytest.approx(result["engine"]["network_steps_per_s"]
                                              / result["reference"]["network_steps_per_s"])
    assert result["fraction_of_peak"] == pytest.approx(result["engine"]["achieved_flops"]
                                                       / result["matmul_peak_flops"])
    assert "speedup" in format_benchmark(result)
    json.dumps(result)


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "b" / "bench.json"
    code = main(["bench", "--architectures", "mlp", "--networks", "2", "--hidden-sizes", "8", "--epochs", "1",
                 "--threads", "1", "--reference-networks", "1", "--reference-steps", "3", "--peak-size", "64",
                 "--output", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["mlp"]["config"]["n_networks"] == 2
    assert "written" in capsys.readouterr().out


def test_bench_command_rejects_bad_sizes(capsys):
    assert main(["bench", "--hidden-sizes", "8,x"]) != 0
    assert "hidden" in capsys.readouterr().err.lower()
    assert main(["bench", "--architectures", "mlp,transformer"]) != 0
    assert "--architectures" in capsys.readouterr().err


def test_bench_runs_as_a_script_without_the_cli(capsys):
    from virtual_lab.commands.bench import main as bench_main

    assert bench_main(["--hidden-sizes", "8,x"]) == 2
    assert "--hidden-sizes must be comma-separated positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m virtual_lab.commands.bench --architectures mlp" in capsys.readouterr().out
