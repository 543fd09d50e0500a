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


def test_benchmark_reports_the_recording_share_with_the_evaluation_subset_and_the_whole_training_set():
    from virtual_lab.bench import recording_share

    result = run_benchmark(n_networks=2, hidden_sizes=(8,), n_epochs=1, n_checkpoints=3, n_probe=50, n_threads=1,
                           n_reference_networks=1, n_reference_steps=2, peak_size=64, eval_subset=100)
    rec = result["recording"]
    assert result["config"]["eval_subset"] == rec["eval_subset"] == 100 and rec["n_loss_examples"] == 100
    assert rec["record_fraction"] == pytest.approx(result["engine"]["record_fraction"])
    assert rec["checkpoint_cost_steps"] > 0 and 0 < rec["checkpoint_loss_s"] < rec["checkpoint_s"]
    # the whole training set (1,747 examples) instead of 100: the loss part of a checkpoint scaled by 17.47
    assert rec["full_pass_checkpoint_s"] == pytest.approx(rec["checkpoint_s"] + rec["checkpoint_loss_s"] * 16.47)
    assert rec["full_pass_record_fraction"] == pytest.approx(
        recording_share(rec["full_pass_checkpoint_cost_steps"], rec["steps_per_checkpoint"]))
    quickstart = rec["quickstart_density"]  # 2,520 steps, 21 checkpoints
    assert quickstart["steps_per_checkpoint"] == pytest.approx(2520 / 21)
    assert quickstart["record_fraction"] == pytest.approx(
        recording_share(rec["checkpoint_cost_steps"], 2520 / 21))
    assert "whole training set" in format_benchmark(result)
    whole = run_benchmark(n_networks=1, hidden_sizes=(8,), n_epochs=1, n_checkpoints=2, n_probe=50, n_threads=1,
                          n_reference_networks=1, n_reference_steps=2, peak_size=64, eval_subset=0)
    assert whole["recording"]["n_loss_examples"] == whole["recording"]["n_train"] == 1797 - 50
    assert whole["recording"]["full_pass_checkpoint_s"] == pytest.approx(whole["recording"]["checkpoint_s"])


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
    assert main(["bench", "--eval-subset", "-1"]) == 2
    assert "--eval-subset must be >= 0" in capsys.readouterr().err


def test_bench_runs_as_a_script_without_the_cli(capsys):
    from virtual_lab.commands.bench import main as bench_main

    assert bench_main(["--hidden-sizes", "8,x"]) == 2
    assert "--hidden-sizes must be comma-separated positive integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m virtual_lab.commands.bench --architectures mlp" in capsys.readouterr().out


def test_bench_times_decode_with_an_empty_then_a_warm_cache(tmp_path, capsys):
    from virtual_lab.commands.bench import decode_timings
    from virtual_lab.sessions import write_session
    from virtual_lab.testing import mock_ground_truth

    recordings = tmp_path / "sessions"
    for seed in range(8):
        gt = mock_ground_truth(("sgdm", "adam")[seed % 2], seed=seed, n_checkpoints=4)
        write_session(gt, recordings / f"sub-{gt.run_id}_ses-groundtruth.nwb")
    decode = decode_timings(recordings, 1, ("--decoder", "logistic", "--n-splits", "2", "--no-behaviour",
                                            "--jobs", "1"))
    assert decode["repeats"] == 1 and len(decode["runs"]) == 1
    assert decode["first_s"] > 0 and decode["second_s"] > 0
    assert decode["speedup"] == pytest.approx(decode["first_s"] / decode["second_s"])
    assert 0 < decode["second_features_s"] and 0 < decode["first_features_s"]
    assert not (recordings / ".cache").exists()  # a temporary cache: the recordings are left as they were
    assert main(["bench", "--decode", str(tmp_path / "absent")]) == 2
    assert "--decode" in capsys.readouterr().err
