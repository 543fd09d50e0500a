import numpy as np
import pytest
from scipy import stats

from virtual_lab.rig import Recording, add_noise, keep_checkpoints, keep_synapses, keep_units, observe
from virtual_lab.testing import mock_ground_truth


@pytest.fixture
def rec():
    return Recording.from_ground_truth(mock_ground_truth(layer_sizes=(16, 40, 30, 4), n_checkpoints=6, n_stimuli=20))


def test_full_recording_is_the_ground_truth(rec):
    gt = rec.source
    for layer in rec.layer_names:
        np.testing.assert_array_equal(rec.activations(layer), gt.activations[layer])
        np.testing.assert_array_equal(rec.weights(layer), gt.weights[layer].reshape(6, -1))
        np.testing.assert_array_equal(rec.activity_change(layer), gt.activity_change[layer])


def test_keep_units_keeps_the_same_units_at_every_checkpoint(rec):
    sub = keep_units(rec, n_units=7, seed=1, layers=["fc1", "fc2"])
    np.testing.assert_array_equal(sub.unit_indices["fc3"], np.arange(4))
    for layer in ("fc1", "fc2"):
        ids = sub.unit_indices[layer]
        assert len(ids) == 7 and len(set(ids.tolist())) == 7
        np.testing.assert_array_equal(sub.activations(layer), rec.source.activations[layer][:, :, ids])
    assert sub.provenance[-1]["seed"] == 1 and sub.provenance[-1]["n_units"] == 7
    assert rec.unit_indices["fc1"].size == 40  # the input view is unchanged


def test_keep_units_errors_name_the_layer(rec):
    with pytest.raises(ValueError, match=r"n_units=5 is more than layer 'fc3' has \(4 units"):
        keep_units(rec, n_units=5)
    with pytest.raises(ValueError, match="exactly one"):
        keep_units(rec)


def test_fraction_rounds_up_like_the_paper(rec):
    sub = keep_units(rec, fraction=0.1, seed=0)
    assert [sub.n_units(layer) for layer in rec.layer_names] == [4, 3, 1]


def test_noise_has_requested_distribution_and_scale(rec):
    noisy = add_noise(rec, sd=0.7, seed=3, measures=("act",))
    diff = (noisy.activations("fc1") - rec.activations("fc1")).ravel()
    assert abs(diff.std() - 0.7) < 0.05
    assert stats.kstest(diff / 0.7, "norm").pvalue > 1e-3
    np.testing.assert_array_equal(noisy.weights("fc1"), rec.weights("fc1"))  # only the requested measure


def test_relative_noise_scales_with_signal(rec):
    noisy = add_noise(rec, sd=0.5, relative=True, seed=3, measures=("weight",))
    diff = noisy.weights("fc1") - rec.weights("fc1")
    assert abs(diff.std() / rec.source.weights["fc1"].std() - 0.5) < 0.05


def test_noise_is_the_same_however_the_recording_is_sliced(rec):
    noisy_then_sliced = keep_checkpoints(keep_units(add_noise(rec, 1.0, seed=5), n_units=9, seed=2, layers=["fc1", "fc2"]), steps=[20, 100])
    sliced_then_noisy = add_noise(keep_units(keep_checkpoints(rec, steps=[20, 100]), n_units=9, seed=2, layers=["fc1", "fc2"]), 1.0, seed=5)
    for layer in ("fc1", "fc2"):
        np.testing.assert_array_equal(noisy_then_sliced.activations(layer), sliced_then_noisy.activations(layer))
        np.testing.assert_array_equal(noisy_then_sliced.activity_change(layer), sliced_then_noisy.activity_change(layer))


def test_noise_level_does_not_change_sampled_units(rec):
    a = observe(rec.source, unit_fraction=0.3, noise_sd=0.1, seed=11)
    b = observe(rec.source, unit_fraction=0.3, noise_sd=2.0, seed=11)
    for layer in rec.layer_names:
        np.testing.assert_array_equal(a.unit_indices[layer], b.unit_indices[layer])


def test_observe_is_deterministic(rec):
    a = observe(rec.source, unit_fraction=0.5, synapse_fraction=0.2, noise_sd=0.3, n_checkpoints=3, seed=4)
    b = observe(rec.source, unit_fraction=0.5, synapse_fraction=0.2, noise_sd=0.3, n_checkpoints=3, seed=4)
    for layer in rec.layer_names:
        np.testing.assert_array_equal(a.activations(layer), b.activations(layer))
        np.testing.assert_array_equal(a.weights(layer), b.weights(layer))
    assert a.provenance == b.provenance


def test_keep_synapses_fraction(rec):
    sub = keep_synapses(rec, 0.25, seed=0)
    assert sub.weights("fc1").shape == (6, int(np.ceil(0.25 * 40 * 16)))


def test_keep_checkpoints_spacings_and_errors(rec):
    assert keep_checkpoints(rec, 3).checkpoint_steps.tolist() == [0, 40, 100]
    assert keep_checkpoints(rec, 2, spacing="late").checkpoint_steps.tolist() == [80, 100]
    assert keep_checkpoints(rec, 2, spacing="early").checkpoint_steps.tolist() == [0, 20]
    with pytest.raises(ValueError, match="more than were recorded"):
        keep_checkpoints(rec, 7)
    with pytest.raises(ValueError, match="was not recorded"):
        keep_checkpoints(rec, steps=[3])
    with pytest.raises(ValueError, match=r"^sd=-1.0 is out of range \(allowed: >= 0\)$"):
        add_noise(rec, -1.0)


def test_activity_change_over_kept_units_matches_the_definition():
    gt = mock_ground_truth(layer_sizes=(16, 12, 10, 4))
    # make the stored activity change consistent with weights and activations (ReLU layer)
    rec = keep_units(Recording.from_ground_truth(gt), n_units=5, seed=0, layers=["fc1"])
    ids = rec.unit_indices["fc1"]
    act, w = gt.activations["fc1"][:, :, ids], gt.weights["fc1"][:, ids, :]
    expected = ((act > 0) * w.sum(2)[:, None, :]).mean(2)
    np.testing.assert_allclose(rec.activity_change("fc1"), expected, rtol=1e-6)


@pytest.mark.parametrize("architecture, channels", [("cnn", (2, 3, 3)), ("resnet", (2, 3))])
def test_subsampled_activity_change_of_conv_layers_uses_the_convolution(architecture, channels):
    from virtual_lab.lab.conv import train_conv_population
    from virtual_lab.lab.tasks import load_digits_task
    from virtual_lab.lab.spec import RunSpec
    from virtual_lab.rig import Recording, keep_units

    task = load_digits_task(n_probe=20)
    spec = RunSpec(rule="sgdm", learning_rate=0.05, batch_size=64, n_epochs=1, seed=3, layer_sizes=(64, 10),
                   n_probe=20, n_checkpoints=3, architecture=architecture, channels=channels)
    gt = train_conv_population([spec], task)[0]
    recording = Recording.from_ground_truth(gt)
    for layer in gt.layer_names:  # over every unit, the recomputation is the recorded g_b
        every = np.arange(gt.activations[layer].shape[2])
        np.testing.assert_allclose(recording._recomputed_activity_change(layer, every),
                                   gt.activity_change[layer], rtol=1e-4, atol=1e-6)
    kept = keep_units(recording, 5, seed=0)
    for layer in gt.layer_names:
        assert kept.activity_change(layer).shape == (3, 20) and np.isfinite(kept.activity_change(layer)).all()
