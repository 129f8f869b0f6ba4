"""Optimizers: RAdam and Ranger against the published rules, lr multipliers, clipping, save/load."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgclf.training.optimizers import BASES, RAdam, Ranger, make_optimizer, multiplier_for
from imgclf.training.schedules import make_schedule


class NumpyRAdam:
    """Liu et al. (2019), Algorithm 2, in float64; the SMA threshold 5 of the reference code."""

    def __init__(self, lr, beta_1, beta_2, epsilon):
        self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon
        self.m = self.v = 0.0
        self.t = 0
        self.rhos: list[float] = []

    def step(self, w, g):
        self.t += 1
        t, b1, b2 = self.t, self.b1, self.b2
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        m_hat = self.m / (1 - b1**t)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        self.rhos.append(rho)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            # epsilon on sqrt(v) before bias correction, as keras' Adam
            return w - self.lr * r * m_hat * math.sqrt(1 - b2**t) / (np.sqrt(self.v) + self.eps)
        return w - self.lr * m_hat


def run(opt, w0, grads, graph=False):
    """Apply `grads` one by one to a variable starting at w0; the weights after each step."""
    var = keras.Variable(w0.astype("float32"))
    opt.build([var])

    def step(g):
        opt.apply([g], [var])

    if graph:
        step = tf.function(step)
    out = []
    for g in grads:
        step(tf.constant(g, tf.float32))
        out.append(keras.ops.convert_to_numpy(var).astype(np.float64))
    return np.array(out)


def gradients(n, size=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size))


@pytest.mark.parametrize("graph", [False, True])
def test_radam_follows_the_published_rule(graph):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    w0 = np.random.default_rng(1).normal(size=5)
    grads = gradients(12)
    got = run(RAdam(lr, beta_1=b1, beta_2=b2, epsilon=eps), w0, grads, graph)
    ref, w, want = NumpyRAdam(lr, b1, b2, eps), w0.copy(), []
    for g in grads:
        w = ref.step(w, g)
        want.append(w)
    rhos = np.array(ref.rhos)
    assert (rhos <= 5).sum() >= 3 and (rhos > 5).sum() >= 3  # both regimes are exercised
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-7)
    # the early steps are plain momentum: the first one moves by lr * g exactly
    np.testing.assert_allclose(got[0], w0 - lr * grads[0], rtol=1e-6)


@pytest.mark.parametrize("graph", [False, True])
def test_ranger_syncs_slow_weights_every_k_steps(graph):
    lr, k, alpha = 0.05, 3, 0.5
    w0 = np.random.default_rng(2).normal(size=5)
    grads = gradients(8, seed=3)
    got = run(Ranger(lr, k=k, alpha=alpha), w0, grads, graph)

    ref, fast, slow = NumpyRAdam(lr, 0.9, 0.999, 1e-7), w0.copy(), w0.copy()
    for t, g in enumerate(grads, start=1):
        fast = ref.step(fast, g)
        if t % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(got[t - 1], fast, rtol=1e-5, atol=1e-7, err_msg=f"step {t}")

    # between sync points Ranger is plain RAdam; at step k it is pulled back halfway to w0
    plain = run(RAdam(lr), w0, grads[:k], graph)
    np.testing.assert_allclose(got[: k - 1], plain[: k - 1], rtol=1e-6)
    np.testing.assert_allclose(got[k - 1], w0 + alpha * (plain[k - 1] - w0), rtol=1e-5)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,))
    x = keras.layers.Dense(4, activation="relu", name="body")(inp)
    out = keras.layers.Dense(2, activation="softmax", name="head")(x)
    return keras.Model(inp, out)


BATCH_X = np.random.default_rng(5).normal(size=(8, 3)).astype("float32")
BATCH_Y = np.eye(2, dtype="float32")[[0, 1, 1, 0, 1, 0, 0, 1]]


def one_step_deltas(opt) -> dict[str, np.ndarray]:
    model = tiny_model()
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    model.compile(opt, "categorical_crossentropy")
    model.train_on_batch(BATCH_X, BATCH_Y)
    return {v.path: keras.ops.convert_to_numpy(v) - before[v.path] for v in model.trainable_variables}


@pytest.mark.parametrize(
    "name, params",
    [("sgd", {}), ("adamw", {"weight_decay": 0.1}), ("ranger", {"weight_decay": 0.1})],
)
def test_lr_multiplier_scales_the_step(name, params):
    plain = one_step_deltas(make_optimizer(name, 0.1, **params))
    half = one_step_deltas(make_optimizer(name, 0.1, lr_multipliers={"body": 0.5}, **params))
    frozen = one_step_deltas(make_optimizer(name, 0.1, lr_multipliers={"body": 0.0}, **params))
    for path, delta in plain.items():
        assert np.abs(delta).max() > 1e-4, path
        if path.startswith("body/"):
            np.testing.assert_allclose(half[path], 0.5 * delta, rtol=1e-5, atol=1e-8)
            assert not frozen[path].any()  # weight decay included
        else:
            np.testing.assert_allclose(half[path], delta, rtol=1e-6)
            np.testing.assert_allclose(frozen[path], delta, rtol=1e-6)


def test_weight_decay_multiplier_decouples_the_decay_from_the_rate():
    """A 4x rate on `body` with the decay kept at 1x (the batch-norm bias trick of the fast
    CIFAR-10 recipes): the step differs from the decay-free one by the plain decay only."""
    w0 = {v.path: keras.ops.convert_to_numpy(v) for v in tiny_model().trainable_variables}
    fast = {"lr_multipliers": {"body": 4.0}}
    free = one_step_deltas(make_optimizer("sgd", 0.1, **fast))
    kept = one_step_deltas(make_optimizer("sgd", 0.1, weight_decay=0.1,
                                          weight_decay_multipliers={"body": 1.0}, **fast))
    scaled = one_step_deltas(make_optimizer("sgd", 0.1, weight_decay=0.1, **fast))
    for path in w0:
        np.testing.assert_allclose(kept[path] - free[path], -0.01 * w0[path], rtol=1e-4, atol=1e-7)
        decay = 4.0 if path.startswith("body/") else 1.0  # by default the decay follows the rate
        np.testing.assert_allclose(scaled[path] - free[path], -0.01 * decay * w0[path], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match=r"weight_decay_multipliers\['body'\]=-1"):
        make_optimizer("sgd", 0.1, weight_decay_multipliers={"body": -1})


def test_multiplier_patterns():
    mults = {"head": 2.0, "block*": 0.5, "backbone": 0.1}
    assert multiplier_for("backbone/block1/kernel", mults) == 0.5  # first matching pattern wins
    assert multiplier_for("backbone/bn/gamma", mults) == 0.1  # a layer name along the path
    assert multiplier_for("head/bias", mults) == 2.0
    assert multiplier_for("stem/kernel", mults) == 1.0  # unmatched
    assert multiplier_for("backbone/bn/gamma", {"backbone/*/gamma": 0.0}) == 0.0  # the full path
    assert multiplier_for("Head/bias", {"head": 3.0}) == 1.0  # case-sensitive


def test_clipnorm_limits_the_update():
    opt = make_optimizer("sgd", 1.0, clipnorm=0.5)
    got = run(opt, np.zeros(4), [np.array([30.0, 40.0, 0.0, 0.0])])
    np.testing.assert_allclose(got[0], [-0.3, -0.4, 0.0, 0.0], rtol=1e-6)
    assert np.linalg.norm(got[0]) == pytest.approx(0.5)


def test_parameters_reach_the_optimizer():
    opt = make_optimizer("sgd", 0.1, momentum=0.9, nesterov=True, beta_1=None)
    assert (opt.momentum, opt.nesterov) == (0.9, True)
    opt = make_optimizer("ranger", 0.1, beta_2=0.99, k=4, alpha=0.8, global_clipnorm=1.0)
    assert (opt.beta_2, opt.k, opt.alpha, opt.global_clipnorm) == (0.99, 4, 0.8, 1.0)
    opt = make_optimizer("rmsprop", 0.1, rho=0.8, momentum=0.5, epsilon=1e-6)
    assert (opt.rho, opt.momentum, opt.epsilon) == (0.8, 0.5, 1e-6)


def test_bad_names_and_parameters():
    with pytest.raises(ValueError, match=r"Unknown `optimizer`.*Received: name='adamx'"):
        make_optimizer("adamx", 0.1)
    with pytest.raises(ValueError, match=r"'sgd' does not take `beta_1`.*Received: beta_1=0.9"):
        make_optimizer("sgd", 0.1, beta_1=0.9)
    with pytest.raises(ValueError, match=r"'adam' does not take `k`"):
        make_optimizer("adam", 0.1, k=5)
    with pytest.raises(ValueError, match=r"Only one of clipnorm"):
        make_optimizer("adam", 0.1, clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match=r"Received: k=0"):
        make_optimizer("ranger", 0.1, k=0)
    with pytest.raises(ValueError, match=r"Received: alpha=1.5"):
        make_optimizer("ranger", 0.1, alpha=1.5)
    with pytest.raises(ValueError, match=r"lr_multipliers\['body'\]=-1"):
        make_optimizer("sgd", 0.1, lr_multipliers={"body": -1})


@pytest.mark.parametrize("multipliers", [None, {"body": 0.5}], ids=["plain", "multipliers"])
@pytest.mark.parametrize("name", sorted(BASES))
def test_fit_save_and_reload(tmp_path, name, multipliers):
    params = {"k": 3} if name == "ranger" else {}
    schedule = make_schedule("cosine", 0.01, steps_per_epoch=2, epochs=2, warmup_epochs=0.5)
    opt = make_optimizer(name, schedule, lr_multipliers=multipliers, **params)
    model = tiny_model()
    start = model.get_weights()
    model.compile(opt, "categorical_crossentropy")
    history = model.fit(BATCH_X, BATCH_Y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.abs(a - b).max() > 0 for a, b in zip(model.get_weights(), start))

    path = tmp_path / "model.keras"
    model.save(path)
    back = keras.models.load_model(path)
    assert type(back.optimizer) is type(opt)
    assert back.optimizer.get_config() == opt.get_config()
    assert int(back.optimizer.iterations) == 4
    for a, b in zip(back.optimizer.variables, opt.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    bare = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(bare.predict(BATCH_X, verbose=0), model.predict(BATCH_X, verbose=0))


def test_a_pattern_matches_the_nested_backbone_by_its_name():
    """The large models nest their backbone as a model named `backbone`, whose variables'
    paths do not hold that name: `{"backbone": 0}` must still freeze all of it."""
    from imgclf.config import load_config
    from imgclf.training.compiling import compile_model

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((3,))
    backbone = keras.Model(inner_in, keras.layers.Dense(4, activation="relu", name="conv")(inner_in),
                           name="backbone")
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(backbone(inp)))
    t = load_config(None, ["train.optimizer.name=sgd", "train.optimizer.lr=0.1",
                           "train.optimizer.lr_multipliers={backbone: 0.0}"]).train
    compile_model(model, t, steps=1)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    model.train_on_batch(BATCH_X, BATCH_Y)
    moved = {v.path: bool(np.abs(keras.ops.convert_to_numpy(v) - before[v.path]).max() > 0)
             for v in model.trainable_variables}
    assert moved == {"conv/kernel": False, "conv/bias": False, "predictions/kernel": True,
                     "predictions/bias": True}
