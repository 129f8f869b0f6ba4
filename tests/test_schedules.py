"""Learning-rate schedules: values against their closed forms, errors, saving and reloading."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from imgclf.training.schedules import SCHEDULES, make_schedule

SPE = 4  # steps per epoch in these tests


def at(schedule, steps) -> np.ndarray:
    if not callable(schedule):
        return np.full(len(steps), float(schedule))
    return np.array([float(keras.ops.convert_to_numpy(schedule(s))) for s in steps])


def test_constant_is_the_plain_rate():
    assert make_schedule("constant", 0.01, steps_per_epoch=SPE, epochs=3) == 0.01


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential(staircase):
    s = make_schedule(
        "exponential", 0.1, steps_per_epoch=SPE, epochs=3, decay_rate=0.9, decay_steps=3, staircase=staircase
    )
    steps = np.arange(0, 13)
    p = steps / 3
    want = 0.1 * 0.9 ** (np.floor(p) if staircase else p)
    np.testing.assert_allclose(at(s, steps), want, rtol=1e-6)


def test_step_decays_by_factor_every_n_epochs():
    s = make_schedule("step", 0.1, steps_per_epoch=SPE, epochs=9, every_epochs=2, factor=0.5)
    steps = np.array([0, 7, 8, 15, 16, 24, 35])
    want = 0.1 * 0.5 ** np.floor(steps / (2 * SPE))
    np.testing.assert_allclose(at(s, steps), want, rtol=1e-6)
    assert at(s, [7, 8]).tolist() == pytest.approx([0.1, 0.05])  # the new rate starts with epoch 2


def test_piecewise_switches_at_the_first_step_of_the_boundary_epoch():
    s = make_schedule(
        "piecewise", 0.1, steps_per_epoch=SPE, epochs=6, boundaries=[1, 2.5], values=[0.1, 0.01, 0.001]
    )
    steps = [0, 3, 4, 9, 10, 23]
    np.testing.assert_allclose(at(s, steps), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def cosine_ref(step, lr, total, warmup, min_lr):
    if step < warmup:
        return lr * step / warmup
    frac = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_with_warmup():
    lr, min_lr, epochs, warmup_epochs = 0.2, 0.002, 5, 1.5
    s = make_schedule(
        "cosine", lr, steps_per_epoch=SPE, epochs=epochs, warmup_epochs=warmup_epochs, min_lr=min_lr
    )
    total, warmup = SPE * epochs, SPE * warmup_epochs  # 20 steps, 6 of warm-up
    steps = np.arange(0, 25)
    want = [cosine_ref(x, lr, total, warmup, min_lr) for x in steps]
    got = at(s, steps)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    assert got[0] == 0.0
    assert got[3] == pytest.approx(lr / 2)  # halfway through the warm-up
    assert got[6] == pytest.approx(lr)  # the warm-up ends at the peak
    assert got[13] == pytest.approx((lr + min_lr) / 2)  # half the cosine
    assert got[20] == pytest.approx(min_lr) and got[24] == pytest.approx(min_lr)
    assert np.all(np.diff(got[:7]) > 0) and np.all(np.diff(got[6:21]) < 0)


def test_cosine_without_warmup_starts_at_the_peak():
    s = make_schedule("cosine", 0.1, steps_per_epoch=SPE, epochs=2)
    np.testing.assert_allclose(at(s, [0, 4, 8]), [0.1, 0.05, 0.0], atol=1e-7)


def sgdr_ref(step, lr, first, t_mul, m_mul, min_lr):
    """SGDR by walking the periods: period i lasts first * t_mul**i; its height above min_lr is
    (lr - min_lr) * m_mul**i."""
    start, length, i = 0.0, first, 0
    while step >= start + length:
        start, length, i = start + length, length * t_mul, i + 1
    frac = (step - start) / length
    return min_lr + (lr - min_lr) * m_mul**i * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_restarts():
    lr, min_lr = 0.1, 0.01
    s = make_schedule(
        "cosine_restarts",
        lr,
        steps_per_epoch=SPE,
        epochs=10,
        first_epochs=1,
        t_mul=2.0,
        m_mul=0.5,
        min_lr=min_lr,
    )
    steps = np.arange(0, 30)
    got = at(s, steps)
    np.testing.assert_allclose(got, [sgdr_ref(x, lr, 4, 2.0, 0.5, min_lr) for x in steps], rtol=1e-5)
    # restarts at 4 and 4 + 8 = 12, each peak half as high above min_lr as the one before
    assert got[[0, 4, 12]] - min_lr == pytest.approx([lr - min_lr, (lr - min_lr) / 2, (lr - min_lr) / 4])
    assert got[3] < got[4] and got[11] < got[12]


def clr_ref(step, lo, hi, step_size, mode, gamma):
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**step}[mode]
    return lo + (hi - lo) * max(0.0, 1 - x) * scale


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_matches_smith_2017(mode):
    lo, hi, gamma = 0.001, 0.006, 0.97
    s = make_schedule(
        "cyclical", lo, steps_per_epoch=SPE, epochs=8, max_lr=hi, step_size_epochs=1.5, mode=mode, gamma=gamma
    )
    ss = 1.5 * SPE  # 6 steps up, 6 down
    steps = np.arange(0, 40)
    got = at(s, steps)
    np.testing.assert_allclose(got, [clr_ref(x, lo, hi, ss, mode, gamma) for x in steps], rtol=1e-5)
    # cycle boundaries: the bottom at 0, 12, 24, the peaks at 6, 18, 30
    np.testing.assert_allclose(got[[0, 12, 24, 36]], lo, rtol=1e-6)
    peaks = got[[6, 18, 30]]
    amp = hi - lo
    if mode == "triangular":
        np.testing.assert_allclose(peaks, hi, rtol=1e-6)
    elif mode == "triangular2":
        np.testing.assert_allclose(peaks, [lo + amp, lo + amp / 2, lo + amp / 4], rtol=1e-6)
        assert got[17] == pytest.approx(lo + amp / 2 * 5 / 6)  # halved within the whole second cycle
    else:
        np.testing.assert_allclose(peaks, lo + amp * gamma ** np.array([6, 18, 30]), rtol=1e-5)
        assert got[5] == pytest.approx(lo + amp * 5 / 6 * gamma**5)  # per iteration, not per cycle


def onecycle_ref(step, peak, total, pct, div, final_div, strategy="cos"):
    """PyTorch OneCycleLR(anneal_strategy=strategy, three_phase=False), written out."""
    initial, final = peak / div, peak / div / final_div
    peak_step, last = pct * total - 1, total - 1

    def anneal(a, b, p):
        if strategy == "linear":
            return (b - a) * p + a
        return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)

    if step <= peak_step:
        return anneal(initial, peak, step / peak_step)
    return anneal(peak, final, min(1.0, (step - peak_step) / (last - peak_step)))


def test_one_cycle_as_pytorch():
    peak, epochs = 0.05, 5
    s = make_schedule(
        "one_cycle",
        peak,
        steps_per_epoch=SPE,
        epochs=epochs,
        pct_start=0.25,
        div_factor=10,
        final_div_factor=100,
    )
    total = SPE * epochs
    steps = np.arange(0, total + 3)
    got = at(s, steps)
    np.testing.assert_allclose(got, [onecycle_ref(x, peak, total, 0.25, 10, 100) for x in steps], rtol=1e-5)
    assert got[0] == pytest.approx(peak / 10)
    assert got[4] == pytest.approx(peak)  # pct_start * total - 1
    assert got[total - 1] == pytest.approx(peak / 1000)
    assert got.max() == pytest.approx(peak)


def test_one_cycle_linear_is_the_triangle():
    """anneal_strategy=linear: straight up from lr/div to lr, straight down to the end."""
    peak, epochs = 1.0, 4
    s = make_schedule("one_cycle", peak, steps_per_epoch=SPE, epochs=epochs, pct_start=0.2,
                      div_factor=5, final_div_factor=1e4, anneal_strategy="linear")
    total = SPE * epochs
    steps = np.arange(0, total + 2)
    got = at(s, steps)
    np.testing.assert_allclose(got, [onecycle_ref(x, peak, total, 0.2, 5, 1e4, "linear") for x in steps],
                               rtol=1e-5, atol=1e-7)
    rise, fall = np.diff(got[: int(0.2 * total)]), np.diff(got[int(0.2 * total): total])
    np.testing.assert_allclose(rise, rise[0], rtol=1e-4)  # constant slopes: a triangle, not a cosine
    np.testing.assert_allclose(fall, fall[0], rtol=1e-3)


def test_step_counting_is_per_batch_in_fit():
    """With a loss whose gradient is 1, w drops by exactly the sum of the rates of the steps taken."""
    s = make_schedule("cyclical", 0.01, steps_per_epoch=3, epochs=3, max_lr=0.1, step_size_epochs=1)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
    )
    model.compile(keras.optimizers.SGD(s), loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    x = np.ones((9, 1), "float32")
    model.fit(x, x, batch_size=3, epochs=3, shuffle=False, verbose=0)
    moved = 1.0 - float(model.get_weights()[0][0, 0])
    assert moved == pytest.approx(
        sum(clr_ref(i, 0.01, 0.1, 3, "triangular", 1.0) for i in range(9)), rel=1e-5
    )


EXAMPLES = {
    "exponential": {"decay_rate": 0.99},
    "step": {"every_epochs": 1},
    "piecewise": {"boundaries": [1], "values": [0.1, 0.01]},
    "cosine": {"warmup_epochs": 0.5, "min_lr": 1e-4},
    "cosine_restarts": {"first_epochs": 1},
    "cyclical": {"max_lr": 0.5, "mode": "triangular2"},
    "one_cycle": {},
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_serialize_round_trip(name):
    s = make_schedule(name, 0.1, steps_per_epoch=SPE, epochs=4, **EXAMPLES[name])
    config = keras.optimizers.schedules.serialize(s)
    back = keras.optimizers.schedules.deserialize(config)
    assert type(back) is type(s)
    steps = np.arange(0, 18)
    np.testing.assert_allclose(at(back, steps), at(s, steps), rtol=1e-7)


def test_every_schedule_has_an_example():
    assert set(EXAMPLES) | {"constant"} == set(SCHEDULES)


@pytest.mark.parametrize("name", ["cyclical", "one_cycle", "cosine"])
def test_model_saved_with_schedule_reloads(tmp_path, name):
    s = make_schedule(name, 0.05, steps_per_epoch=2, epochs=3, **EXAMPLES[name])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(s), "categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 3)).astype("float32")
    model.fit(x, np.eye(2)[[0, 1, 0, 1]], batch_size=2, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    back = keras.models.load_model(path)
    assert type(back.optimizer._learning_rate) is type(s)
    assert int(back.optimizer.iterations) == 2
    assert float(back.optimizer.learning_rate) == pytest.approx(float(s(2)))
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_name_and_parameters_are_named():
    with pytest.raises(ValueError, match=r"Unknown `schedule`.*Received: name='cosin'"):
        make_schedule("cosin", 0.1, steps_per_epoch=SPE, epochs=2)
    with pytest.raises(ValueError, match=r"Unknown `schedule` parameter.*Received: warmup=1"):
        make_schedule("cosine", 0.1, steps_per_epoch=SPE, epochs=2, warmup=1)
    with pytest.raises(ValueError, match=r"needs `max_lr`"):
        make_schedule("cyclical", 0.1, steps_per_epoch=SPE, epochs=2)
    with pytest.raises(ValueError, match=r"Received: mode='triangle'"):
        make_schedule("cyclical", 0.1, steps_per_epoch=SPE, epochs=2, max_lr=1.0, mode="triangle")
    with pytest.raises(ValueError, match=r"len\(boundaries\) \+ 1"):
        make_schedule("piecewise", 0.1, steps_per_epoch=SPE, epochs=2, boundaries=[1], values=[0.1])
    with pytest.raises(ValueError, match=r"warmup_epochs"):
        make_schedule("cosine", 0.1, steps_per_epoch=SPE, epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match=r"every_epochs"):
        make_schedule("step", 0.1, steps_per_epoch=SPE, epochs=2, every_epochs=0.5)


def test_none_params_take_the_defaults():
    s = make_schedule("cosine", 0.1, steps_per_epoch=SPE, epochs=2, warmup_epochs=None, min_lr=None)
    assert at(s, [0])[0] == pytest.approx(0.1)
