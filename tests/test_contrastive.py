import dataclasses
import math

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from virtual_lab.lab.contrastive import (CONTRASTIVE_RULES, Augmentation, ViewParameters, apply_view_parameters,
                                         augment, augment_generator, centroid_accuracy, evaluation_views, make_views,
                                         nt_xent, nt_xent_loss, sample_view_parameters)
from virtual_lab.lab.reference import ReferenceTrainer, nt_xent_autograd, train_reference
from virtual_lab.lab.rules import ALL_RULES, get_rule
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import train_population

SIZES = (64, 24, 16, 12)  # projection width 12 != 10 classes


def spec(rule, seed=0, lr=None, **kw):
    # the rules' default rates, capped: plain SGD at 0.1 makes NT-Xent training chaotic (a 1e-7 change of the
    # initial weights grows to 1e-2 within an epoch), so no two float orders could agree
    lr = lr if lr is not None else min(get_rule(rule).default_learning_rate, 0.05)
    kw.setdefault("n_epochs", 1)
    kw.setdefault("batch_size", 32)
    kw.setdefault("n_checkpoints", 3)
    kw.setdefault("weight_decay", get_rule(rule).default_weight_decay)
    kw.setdefault("layer_sizes", SIZES)
    return RunSpec(rule=rule, learning_rate=lr, seed=seed, n_probe=50, paradigm="contrastive", **kw)


def full(value, shape=(1, 1, 1)):
    return torch.full(shape, float(value))


# --- NT-Xent ---------------------------------------------------------------------------------------------------

def test_nt_xent_loss_and_gradient_equal_autograd():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn((3, 5, 4), generator=gen, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn((3, 5, 4), generator=gen, dtype=torch.float64)
    temperature = torch.tensor([0.5, 0.1, 1.0], dtype=torch.float64)
    loss, g1, g2 = nt_xent(z1, z2, temperature)
    for i in range(3):
        a, b = z1[i].clone().requires_grad_(True), z2[i].clone().requires_grad_(True)
        expected = nt_xent_autograd(torch.cat([a, b]), float(temperature[i]))
        expected.backward()
        assert math.isclose(float(loss[i]), expected.item(), rel_tol=1e-12)
        np.testing.assert_allclose(g1[i].numpy(), a.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g2[i].numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature), loss, rtol=0, atol=0)
    # scaling a projection changes nothing (cosine similarity): its gradient is orthogonal to it
    np.testing.assert_allclose((g1 * z1).sum(2).numpy(), 0, atol=1e-12)


def test_nt_xent_known_values():
    e = torch.eye(2).unsqueeze(0)  # two orthogonal images
    # both views identical: each anchor sees its positive (cos 1) and two orthogonal negatives (cos 0)
    loss, _, _ = nt_xent(e, e, 0.5)
    assert float(loss[0]) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    # views swapped: the positive is orthogonal, one negative is identical to the anchor
    loss, _, _ = nt_xent(e, e.flip(1), 0.5)
    assert float(loss[0]) == pytest.approx(math.log(2 + math.exp(2)), rel=1e-6)
    # one image: the positive is the only candidate, so the loss is 0 and nothing moves
    z = torch.tensor([[[1.0, 2.0]]])
    loss, g1, g2 = nt_xent(z, -z, 0.5)
    assert float(loss[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(g1.abs().max()) == 0 and float(g2.abs().max()) == 0
    with pytest.raises(ValueError, match="shape"):
        nt_xent(torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))


# --- augmentation ----------------------------------------------------------------------------------------------

def test_augment_is_seeded_per_network_and_shape_preserving():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand((2, 6, 8, 8), generator=gen)
    same = images[:1].expand(2, -1, -1, -1)

    def views(x, seeds, **kw):
        return augment(x, [augment_generator(s) for s in seeds], **kw)

    first = views(images, [3, 4])
    assert first.shape == (2, 2, 6, 8, 8)
    torch.testing.assert_close(first, views(images, [3, 4]), rtol=0, atol=0)  # deterministic per seed
    # a network's views do not depend on its neighbours (what lets the engine equal the reference)
    torch.testing.assert_close(views(images[:1], [3])[0], first[0], rtol=0, atol=0)
    two = views(same, [3, 5])
    assert (two[0] - two[1]).abs().max() > 0.05  # different networks/seeds -> different views
    assert (first[0, 0] - first[0, 1]).abs().max() > 0.05  # the two views differ
    assert (first[0, 0] - images[0]).abs().max() > 0.05  # and differ from the image
    colour = views(torch.rand((2, 4, 3, 6, 10), generator=gen), [3, 4], n_views=3,
                   augmentation=Augmentation(noise_sd=0.1))
    assert colour.shape == (2, 3, 4, 3, 6, 10)
    with pytest.raises(ValueError, match="one generator per network"):
        views(images, [3])


def test_float64_views_come_from_the_same_draws(digits):
    gen = torch.Generator().manual_seed(3)
    images = torch.rand((2, 6, 8, 8), generator=gen)
    single = augment(images, [augment_generator(3), augment_generator(4)])
    double = augment(images.double(), [augment_generator(3), augment_generator(4)])
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=0, atol=1e-5)  # the same transforms
    assert (double - single.double()).abs().max() > 0  # computed in float64, not cast from float32
    torch.testing.assert_close(augment(images[1:].double(), [augment_generator(4)])[0], double[1], rtol=0, atol=0)
    flat = evaluation_views(digits.train_x, digits.image_shape, digits.seed, n_pairs=8, dtype=torch.float64)
    assert flat.dtype == torch.float64
    torch.testing.assert_close(flat.float(), evaluation_views(digits.train_x, digits.image_shape, digits.seed,
                                                              n_pairs=8), rtol=0, atol=1e-5)


def test_identity_parameters_give_identity():
    images = torch.rand((2, 3, 6, 8))
    out = apply_view_parameters(images, ViewParameters.identity(2, 2, 3))
    torch.testing.assert_close(out, images.unsqueeze(1).expand(-1, 2, -1, -1, -1), rtol=0, atol=1e-6)
    colour = torch.rand((1, 2, 3, 5, 5))
    torch.testing.assert_close(apply_view_parameters(colour, ViewParameters.identity(1, 1, 2))[:, 0], colour,
                               rtol=0, atol=1e-6)
    # zero-width ranges are the identity too (full area at the image's own aspect ratio, width / height)
    still = Augmentation(crop_scale=(1.0, 1.0), crop_ratio=(8 / 6, 8 / 6), max_rotation_deg=0, max_translation=0,
                         brightness=0, contrast=0)
    torch.testing.assert_close(augment(images, [augment_generator(0), augment_generator(1)], augmentation=still),
                               images.unsqueeze(1).expand(-1, 2, -1, -1, -1), rtol=0, atol=1e-6)


def test_fixed_transforms_equal_torchvision():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand((1, 1, 6, 8), generator=gen)  # non-square: rotation must not shear
    ident = ViewParameters.identity(1, 1, 1)
    bilinear = TF.InterpolationMode.BILINEAR
    rotated = apply_view_parameters(image, dataclasses.replace(ident, angle_deg=full(30)))[0, 0, 0]
    torch.testing.assert_close(rotated, TF.rotate(image[0], 30.0, interpolation=bilinear)[0], rtol=0, atol=1e-5)
    shifted = apply_view_parameters(image, dataclasses.replace(ident, shift_x=full(2 / 8), shift_y=full(-1 / 6)))
    expected = TF.affine(image[0], angle=0.0, translate=[2, -1], scale=1.0, shear=[0.0, 0.0], interpolation=bilinear)
    torch.testing.assert_close(shifted[0, 0, 0], expected[0], rtol=0, atol=1e-5)
    # a pure crop (rows 2..5, columns 1..6) resized back to 6x8: torchvision crops first and replicates the
    # crop's edge, the grid samples the true neighbouring pixels, so they agree away from the border
    top, left, h, w = 2, 1, 4, 6
    crop = dataclasses.replace(ident, crop_width=full(w / 8), crop_height=full(h / 6),
                               crop_x=full((2 * left + w) / 8 - 1), crop_y=full((2 * top + h) / 6 - 1))
    ours = apply_view_parameters(image, crop)[0, 0, 0]
    theirs = TF.resized_crop(image[0], top, left, h, w, [6, 8], antialias=False)[0]
    torch.testing.assert_close(ours[1:-1, 1:-1], theirs[1:-1, 1:-1], rtol=0, atol=1e-5)
    # brightness then contrast (values chosen so torchvision's [0, 1] clipping never acts)
    jitter = dataclasses.replace(ident, brightness=full(1.2), contrast=full(0.7))
    grey = 0.2 + 0.5 * image
    torch.testing.assert_close(apply_view_parameters(grey, jitter)[0, 0, 0],
                               TF.adjust_contrast(TF.adjust_brightness(grey[0], 1.2), 0.7)[0], rtol=0, atol=1e-6)
    rgb = 0.2 + 0.5 * torch.rand((1, 1, 3, 6, 8), generator=gen)
    torch.testing.assert_close(apply_view_parameters(rgb, jitter)[0, 0, 0],
                               TF.adjust_contrast(TF.adjust_brightness(rgb[0, 0], 1.2), 0.7), rtol=0, atol=1e-6)


def test_sampled_parameters_follow_the_augmentation_ranges():
    aug = Augmentation()
    p = sample_view_parameters([augment_generator(0), augment_generator(1)], 2, 500, (8, 8), aug)
    area = p.crop_width * p.crop_height
    assert float(area.min()) >= aug.crop_scale[0] - 1e-6 and float(area.max()) <= 1 + 1e-6
    assert float(p.crop_width.max()) <= 1 and float(p.crop_height.max()) <= 1
    assert float((p.crop_x.abs() - (1 - p.crop_width)).max()) <= 1e-6  # the crop stays inside the image
    assert float(p.angle_deg.abs().max()) <= aug.max_rotation_deg and float(p.angle_deg.std()) > 5
    assert float(p.shift_x.abs().max()) <= aug.max_translation
    assert 0.6 <= float(p.brightness.min()) and float(p.brightness.max()) <= 1.4
    with pytest.raises(ValueError, match="crop_scale"):
        Augmentation(crop_scale=(0.0, 1.0))


def test_evaluation_views_are_fixed_by_the_task_seed(digits):
    a = evaluation_views(digits.train_x, digits.image_shape, digits.seed, n_pairs=16)
    b = evaluation_views(digits.train_x, digits.image_shape, digits.seed, n_pairs=16)
    c = evaluation_views(digits.train_x, digits.image_shape, digits.seed + 1, n_pairs=16)
    assert a.shape == (32, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 0.05


# --- centroid accuracy -----------------------------------------------------------------------------------------

def test_centroid_accuracy_known_value_and_cosine_invariance():
    train = torch.tensor([[[1.0, 0.0], [2.0, 0.2], [0.0, 1.0], [0.1, 3.0]]])
    train_labels = torch.tensor([0, 0, 1, 1])
    probe = torch.tensor([[[0.2, 2.0], [5.0, 1.0], [1.0, 0.9], [0.9, 1.0]]])
    probe_labels = torch.tensor([1, 1, 0, 0])
    # centroids ~ (0.99, 0.05) and (0.02, 0.99): probes go to 1, 0, 0, 1 -> half correct
    assert centroid_accuracy(train, train_labels, probe, probe_labels).tolist() == [0.5]
    # per network, and blind to the representations' scale
    both = torch.cat([train, 7.0 * train])
    probes = torch.cat([probe, 0.1 * probe])
    assert centroid_accuracy(both, train_labels, probes, probe_labels).tolist() == [0.5, 0.5]


# --- training ----------------------------------------------------------------------------------------------------

def test_contrastive_rules_are_every_backward_rule():
    assert set(CONTRASTIVE_RULES) == set(ALL_RULES) - {"hebbian", "node_perturbation"}


@pytest.mark.parametrize("rule", CONTRASTIVE_RULES)
def test_population_equals_one_at_a_time_reference(rule, digits):
    specs = [spec(rule, seed=1, temperature=0.3)] + [spec(r, seed=10 + i) for i, r in enumerate(CONTRASTIVE_RULES)]
    if rule == "information_alignment":  # make B move visibly so the IA update itself is compared
        specs[0] = spec(rule, seed=1, ia_alpha=0.5, ia_beta=0.2, ia_gamma=0.05)
    batched = train_population(specs, digits, dtype=torch.float64)[0]
    reference = train_reference(specs[0], digits, dtype=torch.float64)

    # Both sides in float64. In float32 the NT-Xent dynamics (temperature 0.3 divides every similarity) grow a
    # 3e-8 rounding difference by orders of magnitude within the 54 steps (1e-5 on sgd's activity change with
    # ATEN_CPU_CAPABILITY=default, up to 4e-2 seen elsewhere), and Adam's first step g / (|g| + 1e-8) lets
    # rounding set the step of an element whose gradient cancels to ~1e-9; float64's ~1e-16 grown as much
    # stays below 1e-10. The recorded arrays are float32: equal float64 values may still round one ulp (1.2e-7 relative)
    # apart, hence rtol=1e-6; atol=1e-9 for values that cancel to ~0 on both sides.
    tol = {"rtol": 1e-6, "atol": 1e-9}
    for layer in batched.layer_names:
        np.testing.assert_array_equal(batched.weights[layer][0], reference.weights[layer][0])  # same float32 draws
        np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], **tol)
        np.testing.assert_allclose(batched.activations[layer], reference.activations[layer], **tol)
        np.testing.assert_allclose(batched.activity_change[layer], reference.activity_change[layer], **tol)
    np.testing.assert_allclose(batched.train_loss, reference.train_loss, **tol)
    np.testing.assert_array_equal(batched.test_accuracy, reference.test_accuracy)
    assert (batched.weights["fc1"][-1] != batched.weights["fc1"][0]).any()


def test_float32_population_equals_reference_over_a_few_steps(digits):
    # the default float32 path, kept short: over 4 steps the NT-Xent amplification has no time to act
    # (measured: <= 6e-8 on weights, 2.4e-7 on activations, 1.4e-6 on the loss of ~5.5, with avx2 and with
    # ATEN_CPU_CAPABILITY=default), so these tolerances leave a margin of >= 4x
    short = dataclasses.replace(digits, train_x=digits.train_x[:128], train_y=digits.train_y[:128])
    specs = [spec(r, seed=10 + i, temperature=0.3 if i % 2 else 0.5) for i, r in enumerate(CONTRASTIVE_RULES)]
    for batched, s in zip(train_population(specs, short), specs):
        reference = train_reference(s, short)
        assert batched.metadata["n_steps"] == 4
        for layer in batched.layer_names:
            np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(batched.activations[layer], reference.activations[layer], rtol=1e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(batched.activity_change[layer], reference.activity_change[layer], rtol=1e-5,
                                       atol=1e-6)
        np.testing.assert_allclose(batched.train_loss, reference.train_loss, rtol=1e-5)
        # a float32 near-tie of two centroid similarities may flip one probe
        assert np.abs(batched.test_accuracy - reference.test_accuracy).max() <= 1 / 50 + 1e-6, s.rule


def test_contrastive_training_learns_a_representation(digits):
    specs = [spec("sgdm", seed=2, lr=0.05, n_epochs=4, batch_size=64, layer_sizes=(64, 64, 32)),
             spec("adam", seed=3, lr=2e-3, n_epochs=4, batch_size=64, layer_sizes=(64, 64, 32))]
    for run in train_population(specs, digits):
        assert run.train_loss[-1] < run.train_loss[0] - 0.5  # evaluation NT-Xent falls
        assert run.test_accuracy[-1] > 0.6  # chance: 0.1
        meta = run.metadata
        assert meta["paradigm"] == "contrastive" and meta["projection_width"] == 32
        assert meta["temperature"] == 0.5 and meta["representation_layer"] == "fc1"
        assert isinstance(meta["augment_seed"], int)


def test_contrastive_is_deterministic_and_leaves_supervised_untouched(digits):
    a = train_population([spec("sgdm", seed=4)], digits)[0]
    b = train_population([spec("sgdm", seed=4)], digits)[0]
    np.testing.assert_array_equal(a.weights["fc3"], b.weights["fc3"])
    supervised = RunSpec(rule="sgdm", learning_rate=0.04, batch_size=32, n_epochs=1, seed=4,
                         layer_sizes=(64, 24, 16, 10), n_probe=50)
    contrastive = dataclasses.replace(supervised, paradigm="contrastive")
    assert contrastive.run_id != supervised.run_id
    assert dataclasses.replace(contrastive, temperature=0.2).run_id != contrastive.run_id
    assert dataclasses.replace(supervised, temperature=0.5).run_id == supervised.run_id


@pytest.mark.parametrize("rule", ["hebbian", "node_perturbation", "oja"])
def test_local_and_reward_rules_are_rejected(rule, digits):
    with pytest.raises(ValueError, match="not defined for the contrastive paradigm"):
        train_population([spec("sgdm"), spec(rule)], digits)
    with pytest.raises(ValueError, match="not defined for the contrastive paradigm"):
        ReferenceTrainer(spec(rule), digits.image_shape)


def test_contrastive_size_checks(digits):
    with pytest.raises(ValueError, match="hidden layer"):
        train_population([spec("sgdm", layer_sizes=(64, 10))], digits)
    with pytest.raises(ValueError, match="paradigm"):
        train_population([dataclasses.replace(spec("sgdm"), paradigm="reinforcement")], digits)


def test_make_views_keeps_colour_layout():
    # channels-last flat stimuli: identity views must give back the same flat vectors
    x = torch.rand((1, 3, 4 * 5 * 3))
    still = Augmentation(crop_scale=(1.0, 1.0), crop_ratio=(5 / 4, 5 / 4), max_rotation_deg=0, max_translation=0,
                         brightness=0, contrast=0)
    views = make_views(x, (4, 5, 3), [augment_generator(0)], augmentation=still)
    torch.testing.assert_close(views, torch.cat([x, x], 1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="image stimuli"):
        make_views(torch.rand((1, 3, 7)), (7,), [augment_generator(0)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_contrastive_population_on_gpu_equals_cpu(digits):
    specs = [spec(r, seed=i) for i, r in enumerate(CONTRASTIVE_RULES)]
    cpu = train_population(specs, digits)
    gpu = train_population(specs, digits, device="cuda")
    for a, b in zip(cpu, gpu):
        for layer in a.layer_names:  # loose: Adam's eps amplifies rounding (see the reference test)
            np.testing.assert_allclose(a.weights[layer], b.weights[layer], atol=5e-4)
            np.testing.assert_allclose(a.activations[layer], b.activations[layer], atol=2e-3)
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-3)
