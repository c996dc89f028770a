"""Tests for streamkm.sequence.train: finite-difference gradient checks of BPTT
for every parameter tensor, the optimizer pieces, and that training beats
baseline predictors."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.sequence import LSTMEncoder
from streamkm.sequence.train import (
    TrainResult,
    _Adam,
    _clip_,
    init_head,
    loss_and_gradients,
    train_encoder,
)


def _numeric_grad(f, P: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    num = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        old = P[idx]
        P[idx] = old + eps
        lp = f()
        P[idx] = old - eps
        lm = f()
        P[idx] = old
        num[idx] = (lp - lm) / (2 * eps)
    return num


def _max_rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max over entries of |a - n| / max(|a|, |n|), entries below 1e-7 in both compared absolutely."""
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-7)
    return float(np.max(np.abs(analytic - numeric) / denom))


GRAD_CASES = [
    # (num_layers, bidirectional, objective, lengths)
    (2, True, "autoencoder", [5, 2, 4, 1]),     # both directions of both layers
    (2, False, "next_event", [5, 3, 2, 5]),
    (1, True, "next_event", None),
    (1, False, "autoencoder", None),
]


@pytest.mark.parametrize("num_layers,bidirectional,objective,lengths", GRAD_CASES)
def test_gradient_check_every_parameter(num_layers, bidirectional, objective, lengths):
    rng = np.random.default_rng(0)
    enc = LSTMEncoder(3, 4, num_layers=num_layers, bidirectional=bidirectional, seed=1, dtype="float64")
    for v in enc.params_.values():   # wider weights than the init: saturating gates get checked too
        v *= 2.0
    B, T = 4, 5
    X = rng.normal(size=(B, T, 3))
    head = init_head(enc, objective, T, rng)
    head["bias"] = rng.normal(size=head["bias"].shape)
    loss, grads = loss_and_gradients(enc, head, X, lengths, objective=objective)
    assert np.isfinite(loss) and loss > 0
    expected = set(enc.params_) | {"head.weight", "head.bias"}
    assert set(grads) == expected
    f = lambda: loss_and_gradients(enc, head, X, lengths, objective=objective)[0]  # noqa: E731
    checked = 0
    for name, g in grads.items():
        P = head[name[5:]] if name.startswith("head.") else enc.params_[name]
        assert g.shape == P.shape and g.dtype == np.float64
        num = _numeric_grad(f, P)
        err = _max_rel_error(g, num)
        assert err < 1e-4, f"{name}: max relative error {err:.2e}"
        if np.abs(num).max() > 1e-6:
            checked += 1
    # the check is not vacuous: nearly every tensor has a non-zero gradient
    # (next_event never trains the last layer's backward direction)
    n_reverse_last = 4 if (bidirectional and objective == "next_event") else 0
    assert checked == len(expected) - n_reverse_last


def test_gradients_ignore_padding():
    rng = np.random.default_rng(1)
    enc = LSTMEncoder(2, 3, num_layers=2, bidirectional=True, seed=0, dtype="float64")
    X = rng.normal(size=(3, 6, 2))
    lengths = np.array([6, 2, 4])
    head = init_head(enc, "autoencoder", 6, rng)
    l1, g1 = loss_and_gradients(enc, head, X, lengths, objective="autoencoder")
    Y = X.copy()
    Y[np.arange(6)[None, :] >= lengths[:, None]] = 50.0
    l2, g2 = loss_and_gradients(enc, head, Y, lengths, objective="autoencoder")
    assert l1 == pytest.approx(l2, rel=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_clip_scales_to_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = _clip_(grads, 1.0)
    assert norm == pytest.approx(5.0)
    total = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    assert total == pytest.approx(1.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    small = {"a": np.array([0.1])}
    assert _clip_(small, 1.0) == pytest.approx(0.1) and small["a"][0] == pytest.approx(0.1)
    big = {"a": np.array([10.0])}
    _clip_(big, None)
    assert big["a"][0] == 10.0


def test_adam_first_step_and_convergence():
    p = {"w": np.array([1.0, -2.0])}
    opt = _Adam(p, lr=0.1)
    opt.step({"w": np.array([0.5, -3.0])})
    # first Adam step moves every coordinate by lr against the gradient sign
    np.testing.assert_allclose(p["w"], [0.9, -1.9], atol=1e-6)
    target = np.array([0.3, 0.7])
    for _ in range(500):
        opt.step({"w": 2 * (p["w"] - target)})
    np.testing.assert_allclose(p["w"], target, atol=1e-2)


def _sine_windows(n, T, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    w = rng.uniform(0.9, 1.3, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    X = np.sin(w * t + phase) + 0.05 * rng.normal(size=(n, T))
    return X[..., None].astype(np.float32)


def test_training_beats_baselines_on_next_event():
    X = _sine_windows(320, 16, seed=0)
    lengths = np.random.default_rng(1).integers(8, 17, size=len(X))
    enc = LSTMEncoder(1, 16, seed=0)
    records = []
    res = train_encoder(enc, X, lengths, objective="next_event", epochs=12, batch_size=32,
                        lr=0.02, clip_norm=1.0, val_fraction=0.2, seed=0, callback=records.append)
    assert isinstance(res, TrainResult) and res.encoder is enc
    assert [r["epoch"] for r in res.history] == list(range(1, 13))
    assert records == res.history
    assert all(set(r) >= {"epoch", "loss", "val_loss", "windows_per_s"} for r in res.history)
    assert all(r["windows_per_s"] > 0 for r in res.history)
    # baselines on the same next-event targets (valid steps only)
    valid = np.arange(1, 16)[None, :] < lengths[:, None]            # target step t+1 valid
    target, last = X[:, 1:, 0], X[:, :-1, 0]
    mse_last = float(((target - last) ** 2)[valid].mean())
    mse_mean = float(((target - target[valid].mean()) ** 2)[valid].mean())
    baseline = min(mse_last, mse_mean)
    final = res.history[-1]
    assert final["val_loss"] < 0.5 * baseline, (final, mse_last, mse_mean)
    assert final["loss"] < 0.5 * res.history[0]["loss"]
    meta = enc.training_metadata_
    assert meta["objective"] == "next_event" and meta["epochs"] == 12 and meta["seq_len"] == 16
    assert meta["final_val_loss"] == final["val_loss"]


def test_autoencoder_bidirectional_with_lengths_lowers_loss(tmp_path):
    X = _sine_windows(96, 8, seed=3)
    lengths = np.random.default_rng(2).integers(3, 9, size=len(X))
    enc = LSTMEncoder(1, 8, num_layers=2, bidirectional=True, seed=0)
    res = train_encoder(enc, X, lengths, objective="autoencoder", epochs=8, batch_size=16,
                        lr=0.01, val_fraction=0.25, seed=1)
    assert res.head["weight"].shape == (8, 16) and res.head["bias"].shape == (8,)
    assert res.history[-1]["loss"] < 0.7 * res.history[0]["loss"]
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    loaded = LSTMEncoder.load(enc.save(tmp_path / "ae.npz"))
    assert loaded.training_metadata_["objective"] == "autoencoder"
    np.testing.assert_array_equal(loaded.embed(X, lengths), enc.embed(X, lengths))


def test_training_is_deterministic_given_seed():
    X = _sine_windows(64, 6, seed=5)
    runs = []
    for _ in range(2):
        enc = LSTMEncoder(1, 6, seed=3)
        res = train_encoder(enc, X, epochs=2, batch_size=16, lr=0.01, seed=7)
        runs.append((enc.content_hash, [r["loss"] for r in res.history], res.head["weight"].copy()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    enc = LSTMEncoder(1, 6, seed=3)
    train_encoder(enc, X, epochs=2, batch_size=16, lr=0.01, seed=8)
    assert enc.content_hash != runs[0][0]


def test_on_batch_progress_and_no_validation():
    X = _sine_windows(40, 5, seed=1)
    seen = []
    res = train_encoder(LSTMEncoder(1, 4, seed=0), X, epochs=2, batch_size=16, val_fraction=0.0,
                        seed=0, on_batch=seen.append)
    assert [(s["epoch"], s["batch"], s["n_batches"]) for s in seen] == [
        (1, 1, 3), (1, 2, 3), (1, 3, 3), (2, 1, 3), (2, 2, 3), (2, 3, 3)]
    assert all(r["val_loss"] is None for r in res.history)


def test_float64_training_runs():
    X = _sine_windows(32, 5, seed=2).astype(np.float64)
    enc = LSTMEncoder(1, 4, seed=0, dtype="float64")
    res = train_encoder(enc, X, epochs=2, batch_size=8, lr=0.01, seed=0)
    assert enc.params_["weight_ih_l0"].dtype == np.float64
    assert res.head["weight"].dtype == np.float64


def test_validation_errors_leave_encoder_unchanged():
    enc = LSTMEncoder(2, 3, seed=0)
    h = enc.content_hash
    X = np.zeros((10, 4, 2), np.float32)
    cases = [
        (dict(windows=X[:, :, :1]), ValueError, "expected 2 features, got 1"),
        (dict(windows=X[0]), ValueError, "windows must be 3-D"),
        (dict(windows=X, objective="bogus"), ValueError, "objective must be one of"),
        (dict(windows=X, epochs=1.5), TypeError, "epochs must be an int"),
        (dict(windows=X, batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(windows=X, lr=-1.0), ValueError, "lr must be a positive finite number"),
        (dict(windows=X, clip_norm=0.0), ValueError, "clip_norm must be positive"),
        (dict(windows=X, val_fraction=1.0), ValueError, r"val_fraction must be in \[0, 1\)"),
        (dict(windows=X, lengths=np.ones(10, int)), ValueError, "at least 2 valid steps"),
        (dict(windows=X, lengths=np.full(10, 5)), ValueError, r"lengths must be in \[1, 4\]"),
        (dict(windows=X[:1], val_fraction=0.6), ValueError, "leaves no training windows"),
        (dict(windows=X, callback=3), TypeError, "callback must be callable"),
    ]
    for kwargs, err, pattern in cases:
        windows = kwargs.pop("windows")
        lengths = kwargs.pop("lengths", None)
        with pytest.raises(err, match=pattern):
            train_encoder(enc, windows, lengths, **kwargs)
    bad = X.copy()
    bad[3, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"windows contains a non-finite value at index \(3, 1, 0\)"):
        train_encoder(enc, bad)
    with pytest.raises(ValueError, match="multi-layer bidirectional"):
        train_encoder(LSTMEncoder(2, 3, num_layers=2, bidirectional=True), X, objective="next_event")
    with pytest.raises(TypeError, match="encoder must be an LSTMEncoder"):
        train_encoder(object(), X)
    with pytest.raises(ValueError, match="head for objective 'autoencoder' must have weight"):
        loss_and_gradients(enc, {"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, X,
                           objective="autoencoder")
    assert enc.content_hash == h


@pytest.mark.parametrize("objective", ["next_event", "autoencoder"])
def test_workspace_reuse_gives_identical_gradients(objective):
    from streamkm.sequence.lstm.kernels import Workspace
    from streamkm.sequence.train import _batch_loss

    rng = np.random.default_rng(4)
    enc = LSTMEncoder(2, 3, num_layers=2, bidirectional=objective == "autoencoder", seed=0)
    head = init_head(enc, objective, 6, rng)
    xa = np.ascontiguousarray(rng.normal(size=(2, 6, 5)).astype(np.float32))
    xb = np.ascontiguousarray(rng.normal(size=(2, 6, 5)).astype(np.float32) * 3)
    la, lb = np.array([6, 2, 5, 3, 6]), np.array([4, 6, 6, 2, 3])
    _, _, ref = _batch_loss(enc, head, xa, la, objective, True)
    ws = Workspace()
    _batch_loss(enc, head, xa, la, objective, True, ws)
    _batch_loss(enc, head, xb, lb, objective, True, ws)   # dirties every buffer
    _, _, again = _batch_loss(enc, head, xa, la, objective, True, ws)
    for k in ref:
        np.testing.assert_array_equal(ref[k], again[k], err_msg=k)


@pytest.mark.parametrize("objective", ["next_event", "autoencoder"])
def test_gradients_of_a_large_batch_average_those_of_its_halves(objective):
    # batches above 32 windows run the per-step product as one GEMM per direction
    # (smaller ones per gate); with equal target counts, the mean loss of the whole
    # batch is the mean of the halves' losses, and so are the gradients
    rng = np.random.default_rng(3)
    enc = LSTMEncoder(3, 5, bidirectional=objective == "autoencoder", seed=2, dtype="float64")
    X = rng.normal(size=(48, 6, 3))
    head = init_head(enc, objective, 6, rng)
    loss, grads = loss_and_gradients(enc, head, X, objective=objective)
    loss1, g1 = loss_and_gradients(enc, head, X[:24], objective=objective)
    loss2, g2 = loss_and_gradients(enc, head, X[24:], objective=objective)
    assert loss == pytest.approx((loss1 + loss2) / 2, rel=1e-12)
    assert set(grads) == set(g1)
    for k in grads:
        np.testing.assert_allclose(grads[k], (g1[k] + g2[k]) / 2, rtol=1e-9, atol=1e-12, err_msg=k)
