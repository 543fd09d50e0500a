"""Tests of the batched convolutional population engine (virtual_lab.lab.conv) against its reference."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virtual_lab.lab.conv import CONV_RULES, init_conv_parameters, train_conv_population
from virtual_lab.lab.conv_geometry import (CONV_ARCHITECTURES, DEFAULT_CHANNELS, conv_input_shape, conv_layer_names,
                                           conv_layers, task_images)
from virtual_lab.lab.conv_reference import ReferenceConvNet, train_conv_reference
from virtual_lab.lab.rules import get_rule, sign_symmetry_scale
from virtual_lab.lab.tasks import Task
from virtual_lab.lab.spec import RunSpec, batch_order
from virtual_lab.lab.train import train_population

TINY = {"cnn": (4, 4, 4), "resnet": (4, 6)}
STRONG_IA = {"ia_alpha": 0.05, "ia_beta": 0.02, "ia_gamma": 0.005}  # B moves visibly and stays bounded


def spec(rule, architecture="cnn", seed=0, lr=None, **kw):
    kw.setdefault("n_epochs", 1)
    kw.setdefault("batch_size", 128)
    kw.setdefault("n_checkpoints", 3)
    kw.setdefault("channels", TINY[architecture])
    kw.setdefault("weight_decay", get_rule(rule).default_weight_decay)
    kw.setdefault("layer_sizes", (64, 10))
    return RunSpec(rule=rule, learning_rate=lr if lr is not None else get_rule(rule).default_learning_rate * 5,
                   seed=seed, n_probe=50, architecture=architecture, **kw)


# Engine-vs-reference comparisons run both sides in float64. Two float32 implementations of one run round
# differently (~3e-8), and once in a while a pre-activation within rounding of zero lands on the other side of
# a ReLU, which changes that step's update by a finite amount (Adam's normalization amplifies it), so float32
# trajectories part visibly within 10 steps on some CPUs. float64's ~1e-16 differences cannot reach a ReLU
# boundary or Adam's eps: the trajectories agree to float32 resolution. The recorded arrays are float32, so
# equal float64 values may still round one ulp (1.2e-7 relative) apart, hence rtol=1e-6; atol=1e-9 for
# values that cancel to ~0 on both sides (final_state, float64 on both sides, is compared with the same).
F64 = {"rtol": 1e-6, "atol": 1e-9}


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def small_digits(digits):
    """The digits task with its first 640 training images (fast, and few ReLU near-ties)."""
    return dataclasses.replace(digits, train_x=digits.train_x[:640], train_y=digits.train_y[:640])


@pytest.fixture(scope="module")
def mixed(small_digits):
    """One mixed float64 population per architecture: every conv rule, its own seed and rate (IA's B moves
    visibly)."""
    cache = {}

    def get(architecture):
        if architecture not in cache:
            specs = [spec(r, architecture, seed=10 + i, batch_size=64,
                          **(STRONG_IA if r == "information_alignment" else {}))
                     for i, r in enumerate(CONV_RULES)]
            state = {}
            cache[architecture] = specs, train_conv_population(specs, small_digits, final_state=state,
                                                               dtype=torch.float64), state
        return cache[architecture]

    return get


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
@pytest.mark.parametrize("rule", CONV_RULES)
def test_population_equals_one_at_a_time_reference(rule, architecture, mixed, small_digits):
    specs, results, state = mixed(architecture)
    i = CONV_RULES.index(rule)
    reference_state = {}
    batched, reference = results[i], train_conv_reference(specs[i], small_digits, final_state=reference_state,
                                                          dtype=torch.float64)
    assert batched.layer_names == reference.layer_names
    for layer in batched.layer_names:
        # initialization: the same float32 draws on both sides
        np.testing.assert_array_equal(batched.weights[layer][0], reference.weights[layer][0])
        np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], **F64)
        np.testing.assert_allclose(batched.activations[layer], reference.activations[layer], **F64)
        np.testing.assert_allclose(batched.activity_change[layer], reference.activity_change[layer], **F64)
    for l in range(len(batched.layer_names)):  # the feedback kernels and biases followed the same trajectory too
        np.testing.assert_allclose(state["feedback"][l][i], reference_state["feedback"][l], **F64)
        np.testing.assert_allclose(state["biases"][l][i], reference_state["biases"][l], **F64)
        np.testing.assert_allclose(state["weights"][l][i], reference_state["weights"][l], **F64)
    np.testing.assert_allclose(batched.train_loss, reference.train_loss, **F64)
    np.testing.assert_array_equal(batched.test_accuracy, reference.test_accuracy)
    assert batched.test_accuracy[-1] > batched.test_accuracy[0] or batched.train_loss[-1] < batched.train_loss[0]


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
def test_feedback_alignment_keeps_fixed_random_feedback(architecture, mixed):
    specs, results, state = mixed(architecture)
    i = CONV_RULES.index("feedback_alignment")
    layers = conv_layers(architecture, specs[i].channels, (1, 8, 8), 10)
    w0, _, b0 = init_conv_parameters(layers, specs[i].seed)
    for l, layer in enumerate(layers):
        np.testing.assert_array_equal(state["feedback"][l][i], b0[l].numpy())  # B never changes
        assert not np.allclose(state["feedback"][l][i], state["weights"][l][i])  # and is not W
    # B is an independent draw: nearly orthogonal to W in the default-width layers
    w0, _, b0 = init_conv_parameters(conv_layers(architecture, (), (1, 8, 8), 10), 3)
    assert max(abs(cosine(w, b)) for w, b in zip(w0, b0)) < 0.2


def test_kolen_pollack_aligns_feedback_with_weights(digits):
    kp = spec("kolen_pollack", "cnn", seed=4, lr=0.1, weight_decay=0.02, batch_size=32, n_epochs=2, n_checkpoints=2,
              channels=(8, 8, 8))
    state = {}
    gt = train_conv_population([kp, dataclasses.replace(kp, rule="sgdm", seed=5)], digits, final_state=state)[0]
    layers = conv_layers("cnn", kp.channels, (1, 8, 8), 10)
    w0, _, b0 = init_conv_parameters(layers, kp.seed)
    for l, layer in enumerate(layers):
        before = cosine(w0[l], b0[l])
        after = cosine(gt.weights[layer.name][-1], state["feedback"][l][0])
        assert after > max(before + 0.5, 0.9), layer.name  # the angle between B and W falls towards 0


def test_sign_symmetry_sends_the_error_through_sign_of_w(digits):
    # one step on one large batch: conv1's update needs every later layer's transposed convolution
    ss = spec("sign_symmetry", "cnn", seed=6, lr=0.1, batch_size=1024, n_checkpoints=2)
    gt = train_conv_population([ss], digits)[0]
    layers = conv_layers("cnn", ss.channels, (1, 8, 8), 10)
    w, b, _ = init_conv_parameters(layers, ss.seed)
    images = torch.as_tensor(task_images(digits.train_x, digits.image_shape))
    idx = batch_order(ss.seed, len(digits.train_y), ss.batch_size, ss.n_epochs)[0]
    x, y = images[idx], torch.as_tensor(digits.train_y)[idx]
    inputs, pre = [x], []
    for l, layer in enumerate(layers[:-1]):
        pre.append(F.conv2d(inputs[-1], w[l], b[l], layer.stride, layer.padding))
        inputs.append(torch.relu(pre[-1]))
    logits = inputs[-1].flatten(1) @ w[-1].t() + b[-1]
    error = (torch.softmax(logits, 1) - F.one_hot(y, 10)) / len(y)

    def gradient_of_conv1(backward):
        delta = (error @ backward(len(layers) - 1)).view_as(inputs[-1])
        for l in reversed(range(len(layers) - 1)):
            delta = delta * (pre[l] > 0)
            if l == 0:
                return torch.nn.grad.conv2d_weight(x, w[0].shape, delta, layers[0].stride, layers[0].padding)
            layer = layers[l]
            out_pad = inputs[l].shape[2] - ((delta.shape[2] - 1) * layer.stride - 2 * layer.padding + 3)
            delta = F.conv_transpose2d(delta, backward(l), None, layer.stride, layer.padding, out_pad)

    sign = gradient_of_conv1(lambda l: torch.sign(w[l]) * sign_symmetry_scale(layers[l].fan_in))
    exact = gradient_of_conv1(lambda l: w[l])
    expected = (w[0] - 0.1 * 1.9 * sign).reshape(4, -1)  # first Nesterov step: (1 + momentum) * gradient
    np.testing.assert_allclose(gt.weights["conv1"][1], expected.numpy(), atol=1e-6)
    assert not np.allclose(gt.weights["conv1"][1], (w[0] - 0.1 * 1.9 * exact).reshape(4, -1).numpy(), atol=1e-5)


def test_information_alignment_moves_feedback_by_its_local_loss_only(digits):
    strong = spec("information_alignment", "resnet", seed=5, ia_alpha=0.5, ia_beta=0.0, ia_gamma=0.0)
    frozen = spec("information_alignment", "resnet", seed=5, ia_alpha=0.0, ia_beta=0.0, ia_gamma=0.0)
    fa = spec("feedback_alignment", "resnet", seed=5)
    state = {}
    # float64: the frozen IA network and FA's sit at different positions of the batched computation, so their
    # float32 roundings differ (3e-8 after 13 steps here, more where one crosses a ReLU boundary); in float64
    # they agree to float32 resolution
    results = train_conv_population([strong, frozen, fa], digits, final_state=state, dtype=torch.float64)
    layers = conv_layers("resnet", strong.channels, (1, 8, 8), 10)
    _, _, b0 = init_conv_parameters(layers, 5)
    for l, layer in enumerate(layers):
        np.testing.assert_array_equal(state["feedback"][l][1], b0[l].numpy())  # zero loss -> B is FA's B
        np.testing.assert_allclose(results[1].weights[layer.name], results[2].weights[layer.name], **F64)  # = FA
        moved = state["feedback"][l][0] - b0[l].numpy()
        assert np.abs(moved).max() > 1e-3
        assert np.sum(moved * state["weights"][l][0]) > 0  # R_amp pulls B towards W


@pytest.mark.parametrize("architecture", CONV_ARCHITECTURES)
def test_activity_change_equals_its_autograd_definition(architecture, digits):
    s = spec("sgdm", architecture, seed=2)
    gt = train_conv_population([s], digits)[0]
    model = ReferenceConvNet(s, (1, 8, 8))  # the same initial parameters
    with torch.no_grad():
        model(torch.as_tensor(task_images(digits.probe_x[:3], digits.image_shape)))
    for name in gt.layer_names:
        x_in, y_out, shortcut = model.tape[name]
        for b in range(3):  # g_b = (1/n_out) sum_j sum_i dy_bj/dx_bi from the full Jacobian of stimulus b
            function = model.layer_function(name, None if shortcut is None else shortcut[b:b + 1])
            jacobian = torch.autograd.functional.jacobian(lambda v: function(v.unsqueeze(0))[0], x_in[b])
            expected = jacobian.sum().item() / y_out[b].numel()
            assert gt.activity_change[name][0, b] == pytest.approx(expected, rel=1e-4, abs=1e-6), name


def test_recorded_shapes_names_and_metadata(digits):
    cnn = train_conv_population([spec("adam", "cnn")], digits)[0]
    assert cnn.layer_names == conv_layer_names("cnn", TINY["cnn"]) == ("conv1", "conv2", "conv3", "fc")
    assert cnn.depth_positions == ("early", "middle", "deep", "deep")
    units = {"conv1": 4 * 8 * 8, "conv2": 4 * 4 * 4, "conv3": 4 * 2 * 2, "fc": 10}
    synapses = {"conv1": (4, 1 * 9), "conv2": (4, 4 * 9), "conv3": (4, 4 * 9), "fc": (10, 16)}
    for name in cnn.layer_names:
        assert cnn.activations[name].shape == (3, 50, units[name])
        assert cnn.weights[name].shape == (3, *synapses[name])
        assert cnn.activity_change[name].shape == (3, 50)
    assert cnn.metadata["kernel_shapes"] == "conv1:4x1x3x3;conv2:4x4x3x3;conv3:4x4x3x3;fc:10x16"
    assert cnn.metadata["channels"] == "4,4,4" and cnn.metadata["architecture"] == "cnn"
    mlp_keys = set(train_population([dataclasses.replace(spec("adam", "cnn"), architecture="mlp", channels=(),
                                                         layer_sizes=(64, 8, 10))], digits)[0].metadata)
    assert mlp_keys <= set(cnn.metadata)

    resnet = train_conv_population([spec("adam", "resnet")], digits)[0]
    assert resnet.layer_names == ("conv1", "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
                                  "block2_shortcut", "fc")
    shapes = dict(item.split(":") for item in resnet.metadata["output_shapes"].split(";"))
    assert shapes["block1_conv2"] == "4x8x8" and shapes["block2_shortcut"] == "6x4x4" and shapes["fc"] == "10"
    assert resnet.weights["block2_shortcut"].shape == (3, 6, 4) and resnet.weights["fc"].shape == (3, 10, 6)
    assert resnet.activations["block2_conv2"].shape == (3, 50, 6 * 4 * 4)
    assert np.all(resnet.activations["block2_conv2"] >= 0)  # a block output is after its ReLU
    assert np.any(resnet.activations["block2_shortcut"] < 0)  # the projection is linear
    assert conv_layer_names("resnet") == conv_layer_names("resnet", DEFAULT_CHANNELS["resnet"])


def test_image_layout_and_channels_last_tasks():
    assert conv_input_shape((8, 8)) == (1, 8, 8) and conv_input_shape((32, 32, 3)) == (3, 32, 32)
    with pytest.raises(ValueError, match="image"):
        conv_input_shape((64,))
    flat = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, -1)
    images = task_images(flat, (4, 5, 3))
    assert images.shape == (2, 3, 4, 5)
    assert images[1, 2, 3, 4] == flat.reshape(2, 4, 5, 3)[1, 3, 4, 2]  # (h, w, c) -> [c, h, w]

    rng = np.random.default_rng(0)
    x = rng.random((300, 8 * 8 * 3), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    task = Task("cifar10", x[:260], y[:260], x[260:], y[260:], (8, 8, 3), 10, 0)
    s = spec("feedback_alignment", "resnet", seed=1, task="cifar10", layer_sizes=(192, 10), batch_size=64)
    s = dataclasses.replace(s, n_probe=40)
    batched, reference = train_conv_population([s], task)[0], train_conv_reference(s, task)
    assert batched.weights["conv1"].shape == (3, 4, 3 * 9) and batched.probe_stimuli.shape == (40, 8, 8, 3)
    # the default float32 path: 4 steps of feedback alignment, too few for rounding to grow (measured 1.2e-7,
    # with avx2 and with ATEN_CPU_CAPABILITY=default); a layout error would differ by O(0.1)
    for name in batched.layer_names:
        np.testing.assert_allclose(batched.activations[name], reference.activations[name], atol=1e-5)


@pytest.mark.parametrize("rule", ["direct_feedback_alignment", "hebbian", "node_perturbation", "oja"])
def test_rules_without_a_convolutional_version_are_rejected(rule, digits):
    with pytest.raises(ValueError, match=r"has no convolutional version.*sgdm.*sign_symmetry") as info:
        train_conv_population([spec("sgdm"), spec(rule)], digits)
    assert get_rule(rule).name in str(info.value)


def test_invalid_populations_are_rejected(digits):
    with pytest.raises(ValueError, match="cohort_key"):
        train_conv_population([spec("sgdm"), spec("sgdm", batch_size=64)], digits)
    with pytest.raises(ValueError, match="architectures cnn, resnet"):
        train_conv_population([dataclasses.replace(spec("sgdm"), architecture="mlp")], digits)
    with pytest.raises(ValueError, match=r"\(n_inputs, n_outputs\)"):
        train_conv_population([spec("sgdm", layer_sizes=(64, 32, 10))], digits)
    with pytest.raises(ValueError, match="does not match"):
        train_conv_population([spec("sgdm", layer_sizes=(64, 5))], digits)
    assert train_conv_population([], digits) == []


def test_divergent_run_is_marked_and_does_not_affect_neighbours(digits):
    good = [spec("sgdm", "resnet", seed=7), spec("adam", "resnet", seed=8)]
    bad = spec("sgdm", "resnet", seed=9, lr=1e8)
    alone = train_conv_population(good, digits)
    mixed = train_conv_population([good[0], bad, good[1]], digits)
    assert mixed[1].diverged and mixed[1].metadata["diverged_step"] >= 0
    assert not mixed[0].diverged and not mixed[2].diverged
    for a, m in zip(alone, [mixed[0], mixed[2]]):
        for layer in a.layer_names:
            np.testing.assert_allclose(a.weights[layer], m.weights[layer], atol=1e-6)
            np.testing.assert_allclose(a.activations[layer], m.activations[layer], atol=1e-5)
        np.testing.assert_allclose(a.train_loss, m.train_loss, atol=1e-6)
    assert np.isnan(mixed[1].test_accuracy[-1]) and np.isnan(mixed[1].weights["conv1"][-1]).all()


def test_training_is_deterministic_and_reports_progress_and_timings(digits):
    specs = [spec("kolen_pollack", "resnet", seed=1), spec("information_alignment", "resnet", seed=2)]
    calls, timings = [], {}
    first = train_conv_population(specs, digits, progress=calls.append, timings=timings)
    second = train_conv_population(specs, digits)
    for a, b in zip(first, second):
        for layer in a.layer_names:
            np.testing.assert_array_equal(a.activations[layer], b.activations[layer])
            np.testing.assert_array_equal(a.weights[layer], b.weights[layer])
    assert calls == [2] * first[0].metadata["n_steps"]
    assert 0 < timings["record"] < timings["total"]


def test_every_conv_rule_learns_digits_at_its_default_learning_rate(digits):
    specs = [RunSpec(rule=r, learning_rate=get_rule(r).default_learning_rate, batch_size=32, n_epochs=3, seed=i,
                     layer_sizes=(64, 10), n_probe=50, n_checkpoints=2, architecture="cnn",
                     weight_decay=get_rule(r).default_weight_decay) for i, r in enumerate(CONV_RULES)]
    results = train_conv_population(specs, digits)
    for gt in results:
        assert gt.metadata["channels"] == ",".join(map(str, DEFAULT_CHANNELS["cnn"]))
        assert gt.test_accuracy[-1] > 0.5 > gt.test_accuracy[0], gt.rule  # chance is 0.1
        assert gt.train_loss[-1] < gt.train_loss[0], gt.rule


def test_library_does_not_touch_global_rng(digits):
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    train_conv_population([spec("feedback_alignment", "resnet")], digits)
    assert torch.rand(1) == expected_torch and np.random.rand() == expected_np


def test_conv_session_round_trips_through_nwb(tmp_path, mixed):
    from virtual_lab.sessions import read_session, validate_session, write_session

    _, results, _ = mixed("resnet")
    gt = results[CONV_RULES.index("kolen_pollack")]
    path = write_session(gt, tmp_path / "conv.nwb")
    assert validate_session(path) == []
    for engine in ("pynwb", "h5py"):
        back = read_session(path, engine=engine)
        assert back.layer_names == gt.layer_names and back.depth_positions == gt.depth_positions
        assert dict(back.metadata) == dict(gt.metadata)
        for layer in gt.layer_names:
            np.testing.assert_array_equal(back.activations[layer], gt.activations[layer])
            np.testing.assert_array_equal(back.weights[layer], gt.weights[layer])
            np.testing.assert_array_equal(back.activity_change[layer], gt.activity_change[layer])
        np.testing.assert_array_equal(back.train_loss, gt.train_loss)
        np.testing.assert_array_equal(back.probe_stimuli, gt.probe_stimuli)


def test_information_alignment_counts_every_output_position_as_one_example():
    """A 1x1 convolution's local loss is that of a linear layer applied to the batch x positions "examples"
    (the conv loss is averaged over positions, as the MLP's is over examples, so gamma weighs the same)."""
    from types import SimpleNamespace

    from virtual_lab.lab.conv_geometry import ConvLayer
    from virtual_lab.lab.conv_reference import _information_alignment_loss

    gen = torch.Generator().manual_seed(3)
    batch, n_in, n_out, side = 5, 3, 4, 6
    x = torch.randn(batch, n_in, side, side, generator=gen, dtype=torch.float64)
    w = torch.randn(n_out, n_in, 1, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(n_out, n_in, 1, 1, generator=gen, dtype=torch.float64)
    conv = ConvLayer(name="conv1", kind="conv", n_in=n_in, n_out=n_out, kernel_size=1, stride=1, padding=0,
                     in_shape=(n_in, side, side), out_shape=(n_out, side, side), nonlinearity="relu")
    fc = dataclasses.replace(conv, kind="fc", in_shape=(n_in,), out_shape=(n_out,))
    coefficients = RunSpec(rule="information_alignment", learning_rate=0.02, batch_size=batch, n_epochs=1, seed=0,
                           ia_alpha=0.3, ia_beta=0.2, ia_gamma=0.1)
    as_conv = SimpleNamespace(plan=[conv], layers={"conv1": SimpleNamespace(weight=w)}, feedback={"conv1": b},
                              tape={"conv1": (x,)})
    examples = x.permute(0, 2, 3, 1).reshape(batch * side * side, n_in)  # one row per (image, position)
    as_linear = SimpleNamespace(plan=[fc], layers={"conv1": SimpleNamespace(weight=w[:, :, 0, 0])},
                                feedback={"conv1": b[:, :, 0, 0]}, tape={"conv1": (examples,)})
    conv_loss = _information_alignment_loss(as_conv, coefficients)
    linear_loss = _information_alignment_loss(as_linear, coefficients)
    assert float(conv_loss) == pytest.approx(float(linear_loss), rel=1e-12)
    # a sum over positions would weigh the amp and null terms side * side = 36 times more than the decay
    decay = 0.1 * float((w ** 2).sum() + (b ** 2).sum())
    assert abs(float(conv_loss) - decay) > 1e-3
