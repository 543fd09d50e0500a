"""Each learning rule is tested by its defining property (DESIGN.md section 3), and learns digits."""

import dataclasses

import numpy as np
import pytest
import torch

import virtual_lab.lab.train as train_module
from virtual_lab.lab.rules import (ALIASES, ALL_RULES, ARCHITECTURES, FAMILIES, PAPER_RULES, PARADIGMS, RULES, Rule,
                                   check_rule, display_name, feedback_time_constant, get_rule, rule_names,
                                   short_name, sign_symmetry_scale)
from virtual_lab.sweeps.expand import short_feedback_warnings
from virtual_lab.lab.spec import RunSpec
from virtual_lab.lab.train import init_direct_feedback, init_parameters, train_population

SIZES = (64, 24, 16, 10)


def one_step(rule, digits, seed=0, **kw):
    """Spec of a single full-batch step (every training example, one update)."""
    kw.setdefault("learning_rate", 0.05)
    return RunSpec(rule=rule, batch_size=len(digits.train_y), n_epochs=1, seed=seed, layer_sizes=SIZES, n_probe=50,
                   n_checkpoints=2, **kw)


def hand_pseudo_gradient(rule, seed, digits):
    """The rule's (pseudo-)gradient of every weight matrix at initialization, written out in numpy."""
    w, b, fb = (list(map(lambda t: t.numpy().astype(np.float64), ts)) for ts in init_parameters(SIZES, seed))
    d = [t.numpy().astype(np.float64) for t in init_direct_feedback(SIZES, seed)]
    x, y = digits.train_x.astype(np.float64), digits.train_y
    inputs, pre, a = [], [], x
    for l in range(len(w)):
        inputs.append(a)
        h = a @ w[l].T + b[l]
        pre.append(h)
        a = h if l == len(w) - 1 else np.maximum(h, 0)
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    error = (p - np.eye(10)[y]) / len(y)
    grads, delta = [None] * len(w), error
    for l in reversed(range(len(w))):
        grads[l] = delta.T @ inputs[l]
        if l == 0:
            break
        back = {"sgd": w[l], "sgdm": w[l], "feedback_alignment": fb[l], "kolen_pollack": fb[l],
                "sign_symmetry": np.sign(w[l]) * 0.5 / np.sqrt(w[l].shape[1])}.get(rule, w[l])
        chained = error @ d[l - 1] if rule == "direct_feedback_alignment" else delta @ back
        delta = chained * (pre[l - 1] > 0)
    if rule == "hebbian":
        for l in range(len(w) - 1):
            post = np.maximum(pre[l], 0)
            grads[l] = -(post.T @ inputs[l] - (post.T @ post) @ w[l]) / len(y)
    return w, grads


@pytest.mark.parametrize("rule", ["sgd", "sgdm", "feedback_alignment", "kolen_pollack", "sign_symmetry",
                                  "direct_feedback_alignment", "hebbian"])
def test_first_update_follows_the_rule_definition(rule, digits):
    # backprop multiplies the error by W, FA and KP by B, sign symmetry by sign(W) (times a fixed scale),
    # DFA sends the output error straight to each hidden layer, Hebbian hidden layers follow Oja's rule
    state = {}
    spec = one_step(rule, digits, seed=3)
    train_population([spec], digits, final_state=state)
    w0, grads = hand_pseudo_gradient(rule, 3, digits)
    factor = 1.0 if get_rule(rule).optimizer == "sgd" else 1.9  # first Nesterov step: g + 0.9 g
    for l, g in enumerate(grads):
        measured = (w0[l] - state["weights"][l][0]) / (spec.learning_rate * factor)
        np.testing.assert_allclose(measured, g, atol=2e-5 * np.abs(g).max() + 1e-7)


def test_sign_symmetry_scale_is_mean_initial_weight_magnitude():
    w, _, _ = init_parameters((400, 300, 10), 0)
    assert np.isclose(np.abs(w[0].numpy()).mean(), sign_symmetry_scale(400), rtol=0.02)


def test_kolen_pollack_feedback_converges_to_w(digits):
    # W and B receive the same update plus weight decay, so W - B shrinks by a scalar factor c_t:
    # d_t = W_t - B_t, momentum buffer m_t = 0.9 m_{t-1} + wd d_t, d_{t+1} = d_t - lr (wd d_t + 0.9 m_t)
    lr, wd = 0.05, 0.05
    state = {}
    spec = RunSpec(rule="kolen_pollack", learning_rate=lr, batch_size=64, n_epochs=2, seed=4, layer_sizes=SIZES,
                   n_probe=50, n_checkpoints=2, weight_decay=wd)
    train_population([spec], digits, final_state=state)
    n_steps = 2 * (len(digits.train_y) // 64)
    c, m = 1.0, 0.0
    for _ in range(n_steps):
        m = 0.9 * m + wd * c
        c = c - lr * (wd * c + 0.9 * m)
    w0, _, b0 = init_parameters(SIZES, 4)
    for l in range(len(SIZES) - 1):
        w, b = state["weights"][l][0], state["feedback"][l][0]
        np.testing.assert_allclose(w - b, c * (w0[l].numpy() - b0[l].numpy()), atol=1e-4)
        cos0 = np.sum(w0[l].numpy() * b0[l].numpy()) / np.linalg.norm(w0[l]) / np.linalg.norm(b0[l])
        cos = np.sum(w * b) / np.linalg.norm(w) / np.linalg.norm(b)
        assert cos > cos0 + 0.3  # the angle between B and W falls


def test_direct_feedback_matrices_never_change(digits):
    state = {}
    specs = [one_step("direct_feedback_alignment", digits, seed=s) for s in (1, 2)]
    train_population(specs, digits, final_state=state)
    for i, s in enumerate((1, 2)):
        for l, d in enumerate(init_direct_feedback(SIZES, s)):
            assert state["direct_feedback"][l][i].shape == (10, SIZES[l + 1])
            np.testing.assert_array_equal(state["direct_feedback"][l][i], d.numpy())


def test_hebbian_hidden_updates_ignore_the_labels(digits):
    # Oja's rule uses only pre- and post-synaptic activity: permuting the labels changes the readout only
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(digits, train_y=rng.permutation(digits.train_y))
    spec = RunSpec(rule="hebbian", learning_rate=0.05, batch_size=64, n_epochs=1, seed=5, layer_sizes=SIZES,
                   n_probe=50, n_checkpoints=2)
    a, b = {}, {}
    train_population([spec], digits, final_state=a)
    train_population([spec], shuffled, final_state=b)
    w0, b0, _ = init_parameters(SIZES, 5)
    for l in range(len(SIZES) - 2):
        np.testing.assert_array_equal(a["weights"][l], b["weights"][l])
        np.testing.assert_array_equal(a["biases"][l][0], b0[l].numpy())  # hidden biases stay fixed
        assert np.abs(a["weights"][l][0] - w0[l].numpy()).max() > 1e-3  # ... but the weights did learn
    assert np.abs(a["weights"][-1] - b["weights"][-1]).max() > 1e-3


def test_local_and_reward_rules_send_no_error_backward(digits, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("backward pass called")

    monkeypatch.setattr(train_module, "_backward_pass", forbidden)
    specs = [one_step("node_perturbation", digits, seed=1), one_step("hebbian", digits, seed=2)]
    results = train_population(specs, digits)
    assert all(np.isfinite(r.train_loss).all() for r in results)
    with pytest.raises(AssertionError, match="backward pass called"):  # the patch is effective
        train_population(specs + [one_step("sgdm", digits)], digits)


def test_node_perturbation_estimates_the_gradient_without_computing_it(digits):
    # two forward passes, loss change x perturbation: positively aligned with the true gradient
    state = {}
    specs = [one_step("node_perturbation", digits, seed=s, learning_rate=1.0) for s in range(6)]
    train_population(specs, digits, final_state=state)
    cosines = np.zeros((len(specs), len(SIZES) - 1))
    for i, s in enumerate(range(6)):
        w0, grads = hand_pseudo_gradient("sgd", s, digits)
        for l, g in enumerate(grads):
            estimate = w0[l] - state["weights"][l][i]
            cosines[i, l] = np.sum(estimate * g) / np.linalg.norm(estimate) / np.linalg.norm(g)
    assert (cosines.mean(0) > 0.05).all() and (cosines[:, -1] > 0.2).all()
    assert (cosines < 0.95).all()  # an estimate, not the gradient itself


def test_every_rule_has_a_family_and_aliases_resolve():
    assert len(RULES) == 10 and set(PAPER_RULES) <= set(RULES)
    assert {r.family for r in RULES.values()} == set(FAMILIES)
    for alias, name in ALIASES.items():
        assert get_rule(alias).name == name
    with pytest.raises(ValueError, match="did you mean 'hebbian'"):
        get_rule("hebian")


def test_every_rule_learns_digits_above_chance(digits):
    # default learning rate and weight decay, default architecture (64-128-128-10), batch 64
    def spec(rule, n_epochs):
        r = get_rule(rule)
        return RunSpec(rule=rule, learning_rate=r.default_learning_rate, weight_decay=r.default_weight_decay,
                       batch_size=64, n_epochs=n_epochs, seed=11, n_probe=50, n_checkpoints=2)

    fast = [r for r in ALL_RULES if r != "node_perturbation"]
    results = train_population([spec(r, 4) for r in fast], digits)
    # reward-based learning is slow: node perturbation gets 20 epochs
    results += train_population([spec("node_perturbation", 20)], digits)
    for rule, gt in zip(fast + ["node_perturbation"], results):
        assert gt.test_accuracy[0] < 0.2, rule
        assert gt.test_accuracy[-1] > (0.3 if rule == "node_perturbation" else 0.6), (rule, gt.test_accuracy)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_population_on_gpu_equals_cpu(digits):
    specs = [RunSpec(rule=r, learning_rate=get_rule(r).default_learning_rate,
                     weight_decay=get_rule(r).default_weight_decay, batch_size=32, n_epochs=1, seed=i, layer_sizes=SIZES, n_probe=50, n_checkpoints=3)
             for i, r in enumerate(ALL_RULES)]
    cpu = train_population(specs, digits)
    gpu = train_population(specs, digits, device="cuda")
    for a, b in zip(cpu, gpu):
        for layer in a.layer_names:
            np.testing.assert_allclose(a.weights[layer], b.weights[layer], atol=1e-4)
            np.testing.assert_allclose(a.activations[layer], b.activations[layer], atol=1e-3)


def test_information_alignment_decay_relaxes_b_with_the_predicted_time_constant(digits):
    # With the amp and null terms off, IA's local loss is gamma ||B||^2: B shrinks by the same factor in every
    # entry, exp(-steps / tau) with tau = (1 - momentum) / (2 gamma lr) once momentum has built up.
    lr, gamma = 0.05, 0.005
    tau = feedback_time_constant("information_alignment", lr, ia_gamma=gamma)
    assert tau == pytest.approx(200.0)
    spec = RunSpec(rule="information_alignment", learning_rate=lr, batch_size=64, n_epochs=9, seed=6,
                   layer_sizes=SIZES, n_probe=50, n_checkpoints=2, ia_alpha=0.0, ia_beta=0.0, ia_gamma=gamma)
    state = {}
    train_population([spec], digits, final_state=state)
    n_steps = 9 * (len(digits.train_y) // 64)
    _, _, b0 = init_parameters(SIZES, 6)
    for l in range(len(SIZES) - 1):
        b_end, b_start = state["feedback"][l][0], b0[l].numpy()
        ratio = np.sum(b_end * b_start) / np.sum(b_start * b_start)
        np.testing.assert_allclose(b_end, ratio * b_start, atol=1e-5)  # a pure shrink
        # momentum needs about 1 / (1 - momentum) = 10 steps to build up: 5% of tau
        assert ratio == pytest.approx(np.exp(-n_steps / tau), rel=0.06)
    assert feedback_time_constant("kolen_pollack", 0.02, weight_decay=1e-3) == pytest.approx(5000.0)
    assert feedback_time_constant("feedback_alignment", 0.02) is None


def test_short_runs_of_learned_feedback_rules_are_flagged():
    def spec(rule, lr, epochs):
        return RunSpec(rule=rule, learning_rate=lr, batch_size=64, n_epochs=epochs, seed=0,
                       weight_decay=RULES[rule].default_weight_decay)

    def steps(s):
        return s.n_epochs * 24

    short = [spec("information_alignment", lr, 20) for lr in (0.01, 0.02, 0.04)] + [spec("sgdm", 0.02, 20)]
    (message,) = short_feedback_warnings(short, steps)
    assert message.startswith("information_alignment: 3 of its 3 runs train fewer steps (480)")
    assert "1,250-5,000 steps" in message
    # tau is 5,000 / 2,500 / 1,250 steps: 105 epochs (2,520 steps) is long enough for two of the three
    assert short_feedback_warnings([spec("information_alignment", lr, 105) for lr in (0.01, 0.02, 0.04)],
                                   steps) == []
    # half of the runs short (the zoo's lr x 0.5 runs) is not "most"
    assert short_feedback_warnings([spec("information_alignment", lr, 105) for lr in (0.01, 0.02)], steps) == []
    (kp,) = short_feedback_warnings([spec("kolen_pollack", 0.02, 20)], steps)
    assert kp.startswith("kolen_pollack: 1 of its 1 runs") and "5,000 steps" in kp
    assert "(1 - momentum) / (weight_decay lr)" in kp


# -- the registry: every rule states every fact; a new rule is one registry entry ------------------------------

def test_every_registered_rule_sets_every_field_and_fits_the_engines():
    spec_fields = {f.name for f in dataclasses.fields(RunSpec)}
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(Rule))  # no defaults: a rule module states every fact
    with pytest.raises(TypeError):
        Rule(name="incomplete", family="local")
    for rule in RULES.values():
        assert check_rule(rule) is rule
        for field in dataclasses.fields(Rule):
            value = getattr(rule, field.name)
            if field.name in ("backward_matrix", "feedback_decay"):  # None exactly where check_rule allows it
                continue
            assert value is not None and (value != "" or field.name == "feedback_decay_formula"), (rule.name, field)
        assert set(rule.hyperparameters) <= spec_fields, rule.name
        assert set(rule.architectures) <= set(ARCHITECTURES) and set(rule.paradigms) <= set(PARADIGMS)
        with pytest.raises(dataclasses.FrozenInstanceError):
            rule.default_learning_rate = 1.0
    assert [r.family for r in RULES.values()] == sorted((r.family for r in RULES.values()), key=FAMILIES.index)


def test_short_and_display_names_are_unique():
    shorts = [r.short_name for r in RULES.values()]
    displays = [r.display_name for r in RULES.values()]
    assert len(set(shorts)) == len(shorts) and len(set(displays)) == len(displays)
    every_name = list(RULES) + [a for r in RULES.values() for a in r.aliases]
    assert len(set(every_name)) == len(every_name) == len(rule_names())
    # the words the power analysis and the report have always used
    assert shorts == ["sgd", "sgdm", "adam", "fa", "ia", "kp", "ss", "dfa", "hebbian", "np"]
    assert [display_name(r) for r in PAPER_RULES] == ["SGDM", "Adam", "FA", "IA"]
    assert short_name("rule0") == display_name("rule0") == "rule0"  # opaque labels pass through


@pytest.mark.parametrize("change, message", [
    ({"backward_matrix": None}, "backward_matrix must be given"),
    ({"backward_path": "B"}, "another backward matrix"),
    ({"optimizer": "rmsprop"}, "optimizer 'rmsprop' is not one of sgd, sgdm, adam"),
    ({"update": "hebbian", "architectures": ("mlp",), "paradigms": ("supervised",)}, "exactly when its update"),
    ({"feedback_update": "local_loss"}, "feedback_decay and feedback_decay_formula"),
    ({"short_name": "fa"}, "taken by rule 'feedback_alignment'"),
    ({"paradigms": ()}, "non-empty subset"),
])
def test_check_rule_names_what_does_not_fit(change, message):
    names = {"name": "sgd_variant", "short_name": "sgdv", "display_name": "SGDv"}
    variant = dataclasses.replace(RULES["sgd"], **{**names, **change})
    with pytest.raises(ValueError, match=message):
        check_rule(variant)


#: A new rule as a new module would define it: feedback alignment's fixed random B with Adam, its own names
#: and default rate. Nothing else in the package changes.
FA_ADAM = dataclasses.replace(RULES["feedback_alignment"], name="feedback_alignment_adam", short_name="faa",
                              display_name="FA-Adam", aliases=("fa_adam",), paper=False, optimizer="adam",
                              default_learning_rate=2e-3)
#: ... and a plain-SGD variant defined for the MLP only.
SLOW_SGD = dataclasses.replace(RULES["sgd"], name="slow_sgd", short_name="ssgd", display_name="SGD-slow",
                               default_learning_rate=0.01, architectures=("mlp",))


@pytest.fixture
def new_rules(monkeypatch):
    """Register the two new rules the only way a rule module does: as entries of ``RULES``."""
    for rule in (FA_ADAM, SLOW_SGD):
        monkeypatch.setitem(RULES, rule.name, check_rule(rule))
    return FA_ADAM, SLOW_SGD


def test_a_new_rule_passes_the_protocol_checker_and_the_sweep(new_rules):
    from virtual_lab.protocol import ProtocolError, parse_protocol
    from virtual_lab.sweeps.expand import expand_sweep

    protocol = parse_protocol({"sweep": {"rules": ["fa_adam", "slow_sgd", "sgdm"], "n_seeds": 2},
                               "rules": {"fa_adam": {"learning_rate": 4e-3}}})
    assert protocol.sweep.rules == ("feedback_alignment_adam", "slow_sgd", "sgdm")
    assert protocol.base_learning_rate("fa_adam") == 4e-3 and protocol.base_learning_rate("slow_sgd") == 0.01
    specs = expand_sweep(protocol, 64, 10)
    assert [s.rule for s in specs].count("feedback_alignment_adam") == 2
    assert {s.learning_rate for s in specs if s.rule == "slow_sgd"} == {0.01}
    # where a rule is defined is its own field: FA-Adam has a convolutional version, slow SGD does not
    assert parse_protocol({"network": {"architecture": "cnn"}, "sweep": {"rules": ["fa_adam"]}})
    with pytest.raises(ProtocolError, match="rule 'slow_sgd' has no convolutional version"):
        parse_protocol({"network": {"architecture": "cnn"}, "sweep": {"rules": ["slow_sgd"]}})
    with pytest.raises(ProtocolError, match="did you mean 'fa_adam'"):
        parse_protocol({"sweep": {"rules": ["fa_adm"]}})


def test_a_new_rule_trains_in_the_engines_as_in_the_reference(new_rules, digits):
    from virtual_lab.lab.conv import train_conv_population
    from virtual_lab.lab.conv_reference import train_conv_reference
    from virtual_lab.lab.reference import train_reference

    f64 = {"rtol": 1e-6, "atol": 1e-9}
    short = dataclasses.replace(digits, train_x=digits.train_x[:256], train_y=digits.train_y[:256])

    def spec(rule, seed, **kw):
        return RunSpec(rule=rule, learning_rate=get_rule(rule).default_learning_rate, batch_size=32, n_epochs=1,
                       seed=seed, layer_sizes=SIZES, n_probe=50, n_checkpoints=3, **kw)

    specs = [spec("fa_adam", 1), spec("sgdm", 2), spec("feedback_alignment", 3), spec("slow_sgd", 4), spec("adam", 5)]
    state = {}
    batched = train_population(specs, short, final_state=state, dtype=torch.float64)
    for i in (0, 3):
        reference = train_reference(specs[i], short, dtype=torch.float64)
        for layer in batched[i].layer_names:
            np.testing.assert_allclose(batched[i].weights[layer], reference.weights[layer], **f64)
            np.testing.assert_allclose(batched[i].activations[layer], reference.activations[layer], **f64)
        np.testing.assert_allclose(batched[i].train_loss, reference.train_loss, **f64)
    assert batched[0].metadata["rule"] == "feedback_alignment_adam" and batched[0].metadata["optimizer"] == "adam"
    _, _, b0 = init_parameters(SIZES, 1)
    for l in range(len(SIZES) - 1):  # FA's B: fixed
        np.testing.assert_array_equal(state["feedback"][l][0], b0[l].numpy())
    # one full-batch step: Adam's first update is lr * g / (|g| + eps) with g feedback alignment's pseudo-gradient
    state = {}
    train_population([one_step("fa_adam", digits, seed=3, learning_rate=2e-3)], digits, final_state=state)
    w0, grads = hand_pseudo_gradient("feedback_alignment", 3, digits)
    for l, g in enumerate(grads):
        np.testing.assert_allclose(w0[l] - state["weights"][l][0], 2e-3 * g / (np.abs(g) + 1e-8), atol=2e-5)
    # the convolutional engine too (its reference reads the same registry)
    conv = [RunSpec(rule=r, learning_rate=get_rule(r).default_learning_rate, batch_size=64, n_epochs=1, seed=s,
                    layer_sizes=(64, 10), n_probe=50, n_checkpoints=2, architecture="cnn", channels=(3, 3, 3))
            for r, s in (("fa_adam", 1), ("sgdm", 2))]
    batched = train_conv_population(conv, short, dtype=torch.float64)[0]
    reference = train_conv_reference(conv[0], short, dtype=torch.float64)
    for layer in batched.layer_names:
        np.testing.assert_allclose(batched.weights[layer], reference.weights[layer], **f64)
    with pytest.raises(ValueError, match="rule 'slow_sgd' has no convolutional version"):
        train_conv_population([dataclasses.replace(conv[0], rule="slow_sgd")], short)


def test_a_new_rule_is_named_in_reports_by_its_own_fields(new_rules):
    from virtual_lab.analysis.power import short_rule
    from virtual_lab.analysis.report import _rule_order, _short

    assert short_rule("feedback_alignment_adam") == "faa" and short_rule("slow_sgd") == "ssgd"
    assert _short("feedback_alignment_adam") == "FA-Adam"
    assert _rule_order(["slow_sgd", "feedback_alignment_adam", "adam"]) == ["adam", "feedback_alignment_adam",
                                                                           "slow_sgd"]
    assert get_rule("fa_adam") is FA_ADAM and feedback_time_constant("fa_adam", 0.01) is None
