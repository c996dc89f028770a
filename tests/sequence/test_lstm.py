"""Tests for streamkm.sequence.lstm: torch.nn.LSTM equivalence, shapes, lengths,
embeddings, state dicts, the weights file format and every error path."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from streamkm.sequence import LSTMEncoder
from streamkm.sequence.lstm import FORMAT_VERSION, fileformat
from tests.helpers.files import assert_every_flipped_byte_is_refused
from tests.sequence import make_lstm_golden as golden

try:
    import torch
except ImportError:  # the golden path still runs
    torch = None

GOLDEN_CASES = golden.load_golden()


def _case(source: str, name: str) -> dict[str, np.ndarray]:
    if source == "golden":
        return GOLDEN_CASES[name]
    if torch is None:
        pytest.skip("torch not installed: the golden-fixture variant of this test covers it")
    return golden.torch_case(name, seed=1000 + golden.case_names().index(name))


def _encoder_for(case: dict, name: str) -> LSTMEncoder:
    bidirectional, num_layers, batch_first, _ = golden.parse_case(name)
    enc = LSTMEncoder(golden.INPUT_SIZE, golden.HIDDEN_SIZE, num_layers=num_layers,
                      bidirectional=bidirectional, batch_first=batch_first)
    enc.load_state_dict({k: v for k, v in case.items() if k.startswith(("weight_", "bias_"))})
    return enc


def test_golden_fixture_is_complete():
    assert sorted(GOLDEN_CASES) == sorted(golden.case_names())
    assert len(GOLDEN_CASES) == 16


@pytest.mark.parametrize("name", golden.case_names())
@pytest.mark.parametrize("source", ["golden", "torch"])
def test_matches_torch(source, name):
    case = _case(source, name)
    enc = _encoder_for(case, name)
    out, (h_n, c_n) = enc(case["x"], case.get("lengths"), case["h0"], case["c0"])
    for got, key in ((out, "output"), (h_n, "h_n"), (c_n, "c_n")):
        assert got.dtype == np.float32
        assert got.shape == case[key].shape, key
        np.testing.assert_allclose(got, case[key], rtol=0, atol=1e-5, err_msg=key)
    if "lengths" in case:  # the comparison is meaningful: padding changes something
        bf = golden.parse_case(name)[2]
        full, _ = enc(case["x"], None, case["h0"], case["c0"])
        assert not np.allclose(full, out, atol=1e-3)
        pad = np.arange(golden.SEQ_LEN)[None, :] >= case["lengths"][:, None]   # (B, T)
        pad_out = out[pad] if bf else out.transpose(1, 0, 2)[pad]
        assert np.all(pad_out == 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_issue_shapes(bidirectional):
    enc = LSTMEncoder(64, 128, bidirectional=bidirectional, seed=0)
    x = np.random.default_rng(0).normal(size=(32, 100, 64)).astype(np.float32)
    out, (h_n, c_n) = enc(x)
    D = 2 if bidirectional else 1
    assert out.shape == (32, 100, 128 * D)
    assert h_n.shape == c_n.shape == (D, 32, 128)
    assert out.dtype == h_n.dtype == c_n.dtype == np.float32
    # last forward output is the forward h_n; first backward output is the backward h_n
    np.testing.assert_array_equal(out[:, -1, :128], h_n[0])
    if bidirectional:
        np.testing.assert_array_equal(out[:, 0, 128:], h_n[1])
    assert enc.embedding_dim == 128 * D
    assert enc.embed(x).shape == (32, 128 * D)


def test_parameter_names_and_shapes_follow_torch():
    enc = LSTMEncoder(5, 3, num_layers=2, bidirectional=True, seed=0)
    sd = enc.state_dict()
    expected = [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(sd) == expected
    assert sd["weight_ih_l0"].shape == (12, 5)
    assert sd["weight_ih_l1_reverse"].shape == (12, 6)
    assert sd["weight_hh_l1"].shape == (12, 3)
    assert sd["bias_hh_l0_reverse"].shape == (12,)
    if torch is not None:
        ref = torch.nn.LSTM(5, 3, num_layers=2, bidirectional=True)
        assert list(ref.state_dict()) == expected
        assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    # torch's initialization range U(-1/sqrt(H), 1/sqrt(H)), seeded
    allv = np.concatenate([v.ravel() for v in sd.values()])
    assert np.abs(allv).max() <= 1 / np.sqrt(3) and np.abs(allv).max() > 0.5
    again = LSTMEncoder(5, 3, num_layers=2, bidirectional=True, seed=0).state_dict()
    assert all(np.array_equal(sd[k], again[k]) for k in sd)
    other = LSTMEncoder(5, 3, num_layers=2, bidirectional=True, seed=1).state_dict()
    assert not np.array_equal(sd["weight_ih_l0"], other["weight_ih_l0"])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_padded_steps_never_matter(bidirectional, num_layers):
    rng = np.random.default_rng(3)
    enc = LSTMEncoder(3, 5, num_layers=num_layers, bidirectional=bidirectional, seed=2)
    lengths = np.array([7, 3, 1, 5, 7])
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    out, (h_n, c_n) = enc(x, lengths)
    y = x.copy()
    y[np.arange(7)[None, :] >= lengths[:, None]] = 100.0  # garbage in the padding
    out2, (h2, c2) = enc(y, lengths)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(h_n, h2)
    np.testing.assert_array_equal(c_n, c2)
    # each sequence alone, truncated to its length, gives the same result
    for b in range(5):
        ob, (hb, cb) = enc(x[b:b + 1, : lengths[b]])
        np.testing.assert_allclose(out[b:b + 1, : lengths[b]], ob, atol=1e-6)
        np.testing.assert_allclose(h_n[:, b:b + 1], hb, atol=1e-6)
        np.testing.assert_allclose(c_n[:, b:b + 1], cb, atol=1e-6)
    # lengths all equal to T is the same as no lengths
    full = enc(x)
    same = enc(x, np.full(5, 7))
    np.testing.assert_array_equal(full[0], same[0])


def test_batch_first_false_is_transposed_layout():
    rng = np.random.default_rng(0)
    a = LSTMEncoder(3, 4, bidirectional=True, seed=0)
    b = LSTMEncoder(3, 4, bidirectional=True, batch_first=False, seed=0)
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    oa, (ha, _) = a(x, [6, 2])
    ob, (hb, _) = b(x.transpose(1, 0, 2), [6, 2])
    np.testing.assert_allclose(oa, ob.transpose(1, 0, 2), atol=1e-7)
    np.testing.assert_allclose(ha, hb, atol=1e-7)
    # embed always takes (B, T, F)
    np.testing.assert_allclose(a.embed(x, [6, 2]), b.embed(x, [6, 2]), atol=1e-7)


def test_embed_pooling_and_normalize():
    rng = np.random.default_rng(1)
    enc = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = rng.normal(size=(3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4])
    out, (h_n, _) = enc(x, lengths)
    last = enc.embed(x, lengths)
    np.testing.assert_allclose(last, np.concatenate([h_n[2], h_n[3]], axis=1), atol=1e-7)
    mean = enc.embed(x, lengths, pooling="mean")
    for b in range(3):
        np.testing.assert_allclose(mean[b], out[b, : lengths[b]].mean(axis=0), atol=1e-6)
    unit = enc.embed(x, lengths, pooling="mean", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit * np.linalg.norm(mean, axis=1, keepdims=True), mean, atol=1e-6)
    assert last.dtype == np.float32 and last.shape == (3, enc.embedding_dim)
    # chunked under a tiny memory budget: same embeddings
    for pooling in ("last", "mean"):
        np.testing.assert_allclose(enc.embed(x, lengths, pooling=pooling, memory_budget_bytes=1),
                                   enc.embed(x, lengths, pooling=pooling), atol=1e-6)
    with pytest.raises(ValueError, match="memory_budget_bytes must be a positive int"):
        enc.embed(x, memory_budget_bytes=0)
    assert enc.embed(np.zeros((0, 5, 3))).shape == (0, 8)
    with pytest.raises(ValueError, match="pooling"):
        enc.embed(x, pooling="max")


def test_float64_mode_agrees_with_float32():
    enc = LSTMEncoder(3, 6, num_layers=2, bidirectional=True, seed=4)
    enc64 = enc.astype("float64")
    x = np.random.default_rng(2).normal(size=(4, 8, 3))
    o32, _ = enc(x, [8, 3, 5, 1])
    o64, (h64, _) = enc64(x, [8, 3, 5, 1])
    assert o64.dtype == h64.dtype == np.float64 and o32.dtype == np.float32
    np.testing.assert_allclose(o32, o64, atol=1e-5)
    assert enc64.content_hash != enc.content_hash  # dtype is part of the bytes hashed


def test_state_dict_roundtrip_and_validation():
    a = LSTMEncoder(3, 4, num_layers=2, seed=0)
    b = LSTMEncoder(3, 4, num_layers=2, seed=1)
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert a.content_hash == b.content_hash
    # state_dict returns copies
    sd = a.state_dict()
    sd["weight_ih_l0"][:] = 0
    assert not np.all(a.params_["weight_ih_l0"] == 0)

    before = b.content_hash
    bad = a.state_dict()
    del bad["bias_hh_l1"]
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["weight_ih_l0_reverse"] = np.zeros((16, 3))
    with pytest.raises(ValueError, match="unexpected keys.*weight_ih_l0_reverse"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["weight_hh_l1"] = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l1: expected shape \(16, 4\), got \(16, 5\)"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["bias_ih_l0"][3] = np.nan
    with pytest.raises(ValueError, match="bias_ih_l0 contains a non-finite value at index"):
        b.load_state_dict(bad)
    bad = a.state_dict()
    bad["bias_ih_l0"] = np.array(["a"] * 16)
    with pytest.raises(TypeError, match="bias_ih_l0 must be a real numeric array"):
        b.load_state_dict(bad)
    with pytest.raises(TypeError, match="mapping"):
        b.load_state_dict([1, 2])
    assert b.content_hash == before  # rejected calls changed nothing


def _documented_hash(enc: LSTMEncoder) -> str:
    """sha256 over the fields docs/lstm.md lists, computed here without streamkm's helpers."""
    h = hashlib.sha256()
    h.update(json.dumps({"input_size": enc.input_size, "hidden_size": enc.hidden_size,
                         "num_layers": enc.num_layers, "bidirectional": enc.bidirectional},
                        sort_keys=True).encode())
    for k in range(enc.num_layers):
        for sfx in ("", "_reverse") if enc.bidirectional else ("",):
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{w}_l{k}{sfx}"
                arr = enc.params_[name]
                le = arr.astype(arr.dtype.newbyteorder("<"))
                h.update(f"\n{name}:{le.dtype.str}:{list(arr.shape)}\n".encode())
                h.update(le.tobytes(order="C"))
    return h.hexdigest()


def test_content_hash_stability_and_sensitivity():
    a = LSTMEncoder(3, 4, bidirectional=True, seed=0)
    h = a.content_hash
    assert len(h) == 64 and re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == _documented_hash(a)
    assert LSTMEncoder(3, 4, bidirectional=True, seed=0).content_hash == h
    assert LSTMEncoder(3, 4, bidirectional=True, batch_first=False, seed=0).content_hash == h
    a.training_metadata_ = {"epochs": 3}
    assert a.content_hash == h  # metadata is not part of what the weights compute
    a.params_["bias_hh_l0_reverse"][0] = np.nextafter(a.params_["bias_hh_l0_reverse"][0], np.float32(2))
    assert a.content_hash != h
    assert a.content_hash == _documented_hash(a)  # the one-ulp change is in the documented bytes
    b = LSTMEncoder(2, 3, num_layers=2, bidirectional=True, seed=5).astype("float64")
    assert b.content_hash == _documented_hash(b)
    assert LSTMEncoder(3, 4, bidirectional=True, seed=1).content_hash != h
    assert LSTMEncoder(3, 4, seed=0).content_hash != h


def test_save_load_roundtrip(tmp_path):
    enc = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, batch_first=False, seed=7)
    enc.training_metadata_ = {"objective": "next_event", "epochs": 2, "final_loss": 0.25}
    path = enc.save(tmp_path / "w.npz")
    assert path == tmp_path / "w.npz" and path.exists()
    assert not (tmp_path / "w.npz.tmp").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # atomic_write left no temporary file
    loaded = LSTMEncoder.load(path)
    assert loaded.content_hash == enc.content_hash
    assert (loaded.input_size, loaded.hidden_size, loaded.num_layers, loaded.bidirectional,
            loaded.batch_first) == (3, 4, 2, True, False)
    assert loaded.training_metadata_ == enc.training_metadata_
    for k, v in enc.state_dict().items():
        np.testing.assert_array_equal(loaded.params_[k], v)
    header = LSTMEncoder.read_header(path)
    assert header["format"] == "streamkm.lstm" and header["format_version"] == FORMAT_VERSION
    assert header["content_hash"] == enc.content_hash
    assert header["training"]["epochs"] == 2
    # a plain numpy reader sees torch-named arrays and no pickled objects
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(enc.state_dict()) | {"__header__"}
    x = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(enc(x)[0], loaded(x)[0])


def _rewrite(src: Path, dst: Path, edit) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    dst.write_bytes(fileformat.seal(buf.getvalue()))  # sealed: the header checks below are reached


def _header_edit(change):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes())
        change(header)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return edit


def test_load_error_paths(tmp_path):
    enc = LSTMEncoder(3, 4, num_layers=2, seed=0)
    good = enc.save(tmp_path / "good.npz")
    data = good.read_bytes()

    with pytest.raises(FileNotFoundError, match="missing.npz"):
        LSTMEncoder.load(tmp_path / "missing.npz")

    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.npz: corrupted, truncated"):
        LSTMEncoder.load(trunc)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(ValueError, match="corrupted, truncated or not"):
        LSTMEncoder.load(junk)

    flipped = tmp_path / "flipped.npz"
    raw = bytearray(data)
    with zipfile.ZipFile(good) as zf:  # flip one byte inside weight_hh_l1's data
        info = zf.getinfo("weight_hh_l1.npy")
    raw[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted|content hash mismatch"):
        LSTMEncoder.load(flipped)

    no_header = tmp_path / "noheader.npz"
    _rewrite(good, no_header, lambda a: a.pop("__header__"))
    with pytest.raises(ValueError, match="missing '__header__'"):
        LSTMEncoder.load(no_header)

    bad_json = tmp_path / "badjson.npz"
    _rewrite(good, bad_json, lambda a: a.__setitem__("__header__", np.frombuffer(b"{not json", np.uint8)))
    with pytest.raises(ValueError, match="corrupted header"):
        LSTMEncoder.load(bad_json)

    for name, change, pattern in [
        ("format", lambda h: h.__setitem__("format", "other"), "not a streamkm.lstm file"),
        ("version", lambda h: h.__setitem__("format_version", FORMAT_VERSION + 1),
         f"unsupported format_version {FORMAT_VERSION + 1}"),
        ("nohash", lambda h: h.pop("content_hash"), r"header lacks \['content_hash'\]"),
        ("sizes", lambda h: h.__setitem__("hidden_size", 0), "invalid sizes in header: hidden_size must be >= 1"),
        ("hash", lambda h: h.__setitem__("content_hash", "0" * 64), "content hash mismatch"),
        ("layers", lambda h: h.__setitem__("num_layers", 3), r"missing keys \['weight_ih_l2'"),
    ]:
        p = tmp_path / f"{name}.npz"
        _rewrite(good, p, _header_edit(change))
        with pytest.raises(ValueError, match=pattern):
            LSTMEncoder.load(p)

    missing = tmp_path / "missingkey.npz"
    _rewrite(good, missing, lambda a: a.pop("bias_hh_l1"))
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        LSTMEncoder.load(missing)

    shape = tmp_path / "shape.npz"
    _rewrite(good, shape, lambda a: a.__setitem__("weight_ih_l1", np.zeros((16, 5), np.float32)))
    with pytest.raises(ValueError, match=r"weight_ih_l1: expected shape \(16, 4\), got \(16, 5\)"):
        LSTMEncoder.load(shape)

    tampered = tmp_path / "tampered.npz"
    _rewrite(good, tampered, lambda a: a["weight_hh_l0"].__setitem__((0, 0), 0.5))
    with pytest.raises(ValueError, match="content hash mismatch"):
        LSTMEncoder.load(tampered)

    pickled = tmp_path / "pickled.npz"
    with open(pickled, "wb") as fh:
        np.savez(fh, __header__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="corrupted, truncated or not"):
        LSTMEncoder.load(pickled)

    # the good file still loads
    assert LSTMEncoder.load(good).content_hash == enc.content_hash


def test_save_rejects_unserializable_metadata(tmp_path):
    enc = LSTMEncoder(2, 2, seed=0)
    enc.training_metadata_ = {"bad": object()}
    with pytest.raises(ValueError, match="not JSON-serializable"):
        enc.save(tmp_path / "w.npz")
    assert not (tmp_path / "w.npz").exists()


def test_input_validation():
    enc = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"x must be 3-D \(batch, seq_len, features\), got shape \(3,\)"):
        enc(x[0, 0])
    with pytest.raises(ValueError, match="lengths needs batched 3-D input"):
        enc(x[0], [5])
    with pytest.raises(ValueError, match=r"h0 for unbatched input must have shape \(4, 4\)"):
        enc(x[0], h0=np.zeros((4, 1, 4)))
    with pytest.raises(ValueError, match="expected 3 features, got 2"):
        enc(x[:, :, :2])
    with pytest.raises(ValueError, match="at least one time step"):
        enc(x[:, :0])
    with pytest.raises(TypeError, match="real numeric array"):
        enc(np.array([[["a"] * 3] * 5] * 2))
    nan = x.copy()
    nan[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"x contains a non-finite value at index \(1, 2, 0\)"):
        enc(nan)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\].*lengths\[1\] = 6"):
        enc(x, [5, 6])
    with pytest.raises(ValueError, match=r"lengths\[0\] = 0"):
        enc(x, [0, 5])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        enc(x, [5, 5, 5])
    with pytest.raises(TypeError, match="lengths must be integers"):
        enc(x, [2.5, 5])
    with pytest.raises(ValueError, match=r"h0 must have shape \(4, 2, 4\)"):
        enc(x, h0=np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match=r"c0 must have shape \(4, 2, 4\)"):
        enc(x, h0=np.zeros((4, 2, 4)), c0=np.zeros((4, 4, 2)))
    out, (h_n, c_n) = enc(np.zeros((0, 5, 3)))
    assert out.shape == (0, 5, 8) and h_n.shape == (4, 0, 4)
    for kwargs, err in [({"input_size": 0}, ValueError), ({"hidden_size": 2.5}, TypeError),
                        ({"num_layers": 0}, ValueError), ({"bidirectional": 1}, TypeError),
                        ({"dtype": "float16"}, ValueError)]:
        args = {"input_size": 3, "hidden_size": 4, **kwargs}
        with pytest.raises(err):
            LSTMEncoder(args.pop("input_size"), args.pop("hidden_size"), **args)


# Imports every module of streamkm.sequence and uses the encoder, the trainer and
# the windower as the daemon does (forward, embed, a training step, save/load).
_SEQUENCE_WORKLOAD = """
import importlib, pkgutil, tempfile, pathlib
import numpy as np
import streamkm.sequence
modules = [m.name for m in pkgutil.walk_packages(streamkm.sequence.__path__, "streamkm.sequence.")]
assert "streamkm.sequence.lstm.kernels" in modules and "streamkm.sequence.train" in modules, modules
for name in modules:
    importlib.import_module(name)
from streamkm.sequence import EventWindower, LSTMEncoder
from streamkm.sequence.train import init_head, loss_and_gradients, train_encoder
x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32)
e = LSTMEncoder(2, 3, num_layers=2, bidirectional=True, seed=0)
out, (h_n, c_n) = e(x, lengths=[5, 3, 1, 4])
assert out.shape == (4, 5, 6) and np.isfinite(out).all()
assert e.embed(x, lengths=[5, 3, 1, 4], pooling="mean").shape == (4, 6)
loss, grads = loss_and_gradients(e, init_head(e, "autoencoder", 5, 0), x, objective="autoencoder")
assert np.isfinite(loss) and set(e.params_) < set(grads)
u = LSTMEncoder(2, 3, seed=0)
before = u.content_hash
train_encoder(u, x, epochs=1, batch_size=2, val_fraction=0.0, seed=0)
assert u.content_hash != before
assert LSTMEncoder.from_torch(u.state_dict()).content_hash == u.content_hash
path = u.save(pathlib.Path(tempfile.mkdtemp()) / "w.npz")
assert LSTMEncoder.load(path).content_hash == u.content_hash
batch = EventWindower(2, size=2).add(["a", "a"], [0.0, 1.0], x[0, :2])
assert batch is not None and e.embed(batch.X, batch.lengths).shape == (1, 6)
"""


def test_sequence_package_works_with_torch_import_blocked(tmp_path):
    # sys.modules["torch"] = None makes every `import torch` raise ImportError, so
    # this fails whether or not torch is installed if anything needs torch
    code = ("import sys\nsys.modules['torch'] = None\n" + _SEQUENCE_WORKLOAD
            + "\ntry:\n    LSTMEncoder.from_torch(sys.argv[1])\nexcept ImportError:\n    print('lazy')\n"
            + "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.pt")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # everything ran, and torch is imported only where documented: reading a torch file
    assert res.stdout.split() == ["lazy", "ok"]


def test_module_does_not_import_torch():
    # a meta-path finder sees every attempt to import torch (even one inside a
    # try/except ImportError) before the import system looks for it, so the
    # check does not depend on torch being installed; in a subprocess, so
    # other tests that import torch do not matter
    code = ("import sys\n"
            "attempts = []\n"
            "class Spy:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            attempts.append(name)\n"
            "        return None\n"
            "sys.meta_path.insert(0, Spy())\n"
            + _SEQUENCE_WORKLOAD
            + "assert attempts == [], attempts[:5]\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok"]


def test_from_numpy_state_dict_with_prefix_and_no_bias():
    src = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, seed=0)
    sd = {"model.encoder." + k: v for k, v in src.state_dict().items()}
    sd["model.head.weight"] = np.zeros((2, 2))
    enc = LSTMEncoder.from_torch(sd, batch_first=False)
    assert enc.content_hash == src.content_hash and enc.batch_first is False
    assert enc.training_metadata_ == {"source": "torch"}
    nobias = {k: v for k, v in src.state_dict().items() if k.startswith("weight")}
    e2 = LSTMEncoder.from_torch(nobias)
    assert all(np.all(v == 0) for k, v in e2.params_.items() if k.startswith("bias"))
    two = dict(sd)
    two.update({"other." + k: v for k, v in src.state_dict().items()})
    with pytest.raises(ValueError, match="several LSTMs"):
        LSTMEncoder.from_torch(two)
    with pytest.raises(ValueError, match="no 'weight_ih_l0' key"):
        LSTMEncoder.from_torch({"a": np.zeros(2)})
    with pytest.raises(TypeError, match="expected a torch LSTM"):
        LSTMEncoder.from_torch(42)
    broken = src.state_dict()
    broken["weight_hh_l1_reverse"] = np.zeros((16, 3))
    with pytest.raises(ValueError, match=r"weight_hh_l1_reverse: expected shape \(16, 4\), got \(16, 3\)"):
        LSTMEncoder.from_torch(broken)


@pytest.mark.skipif(torch is None, reason="needs torch (from_torch reads torch modules and files)")
def test_from_torch_module_and_file(tmp_path):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=False)
    x = torch.randn(7, 2, 3)
    with torch.no_grad():
        ref, (h_ref, _) = lstm(x)
    enc = LSTMEncoder.from_torch(lstm)
    assert enc.batch_first is False
    out, (h_n, _) = enc(x.numpy())
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, h_ref.numpy(), atol=1e-5)
    path = tmp_path / "lstm.pt"
    torch.save(lstm.state_dict(), path)
    from_file = LSTMEncoder.from_torch(path)
    assert from_file.content_hash == enc.content_hash and from_file.batch_first is True
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read torch weights"):
        LSTMEncoder.from_torch(bad)
    with pytest.raises(ValueError, match="proj_size"):
        LSTMEncoder.from_torch(torch.nn.LSTM(3, 5, proj_size=2))


def test_saturated_gates_are_stable():
    import warnings

    enc = LSTMEncoder(3, 4, bidirectional=True, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32) * 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings from exp
        out, (h_n, c_n) = enc(x, [6, 3])
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1)
    # saturated gates are exactly 0 or 1, so |c_t| grows by at most 1 per step
    assert np.all(np.abs(c_n) <= 6 + 1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_input_like_torch(batch_first):
    rng = np.random.default_rng(5)
    enc = LSTMEncoder(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, seed=0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    h0 = rng.normal(size=(4, 4)).astype(np.float32)
    c0 = rng.normal(size=(4, 4)).astype(np.float32)
    out, (h_n, c_n) = enc(x, h0=h0, c0=c0)
    assert out.shape == (6, 8) and h_n.shape == c_n.shape == (4, 4)
    xb = x[None] if batch_first else x[:, None]
    ob, (hb, cb) = enc(xb, h0=h0[:, None], c0=c0[:, None])
    np.testing.assert_array_equal(out, ob[0] if batch_first else ob[:, 0])
    np.testing.assert_array_equal(h_n, hb[:, 0])
    if torch is not None:
        ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in enc.state_dict().items()})
        with torch.no_grad():
            ro, (rh, rc) = ref(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        np.testing.assert_allclose(out, ro.numpy(), atol=1e-5)
        np.testing.assert_allclose(h_n, rh.numpy(), atol=1e-5)
        np.testing.assert_allclose(c_n, rc.numpy(), atol=1e-5)


def test_content_hash_follows_documented_scheme():
    import hashlib

    enc = LSTMEncoder(2, 3, bidirectional=True, seed=11)
    h = hashlib.sha256()
    h.update(json.dumps({"input_size": 2, "hidden_size": 3, "num_layers": 1, "bidirectional": True},
                        sort_keys=True).encode())
    for name in ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse",
                 "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse"]:
        arr = enc.params_[name]
        h.update(f"\n{name}:<f4:{list(arr.shape)}\n".encode())
        h.update(arr.astype("<f4").tobytes())
    assert enc.content_hash == h.hexdigest()


def test_load_rejects_arrays_whose_dtype_differs_from_the_header(tmp_path):
    # save() writes every parameter in the header's dtype; a file whose arrays
    # are float64 or integers was not written by save() (or was edited) and
    # used to be cast silently (float64) or fail with a misleading hash error.
    enc = LSTMEncoder(3, 4, seed=0)
    good = enc.save(tmp_path / "good.npz")
    for dtype in (np.float64, np.int64, np.float16):
        p = tmp_path / f"{np.dtype(dtype).name}.npz"
        _rewrite(good, p, lambda a, dtype=dtype: a.__setitem__("weight_hh_l0", a["weight_hh_l0"].astype(dtype)))
        with pytest.raises(ValueError, match=rf"weight_hh_l0 has dtype {np.dtype(dtype).name}, "
                                             r"but the header records float32"):
            LSTMEncoder.load(p)
    # a float64 encoder's file (header dtype float64) still round-trips
    enc64 = enc.astype("float64")
    loaded = LSTMEncoder.load(enc64.save(tmp_path / "f64.npz"))
    assert loaded.params_["weight_hh_l0"].dtype == np.float64
    assert loaded.content_hash == enc64.content_hash


@pytest.mark.parametrize("bidirectional,num_layers,B", [(True, 1, 11), (True, 2, 11), (False, 2, 11),
                                                        (True, 1, 40), (False, 1, 40)])
def test_matches_torch_packed_at_larger_shapes(bidirectional, num_layers, B):
    # the inference kernel steps both directions in one batched product per step,
    # with the backward direction's projections and history stored time-reversed;
    # compare it with torch's packed sequences where every start/end case occurs
    # (lengths 1 and T, repeats, the longest not first), with initial states
    if torch is None:
        pytest.skip("torch not installed")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    # B > 32 runs the per-step product as one GEMM per direction instead of one per gate
    T, F, H = 23, 7, 16
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    ref = torch.nn.LSTM(F, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True).eval()
    enc = LSTMEncoder.from_torch(ref)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    lengths = np.concatenate([[5, T, 1, 12, 12, T, 2, 22, 1, 7, 17], rng.integers(1, T + 1, size=B - 11)])
    h0 = rng.normal(size=(num_layers * D, B, H)).astype(np.float32)
    c0 = rng.normal(size=(num_layers * D, B, H)).astype(np.float32)
    with torch.no_grad():
        packed = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True,
                                      enforce_sorted=False)
        ref_out, (ref_h, ref_c) = ref(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
        ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=T)
        full_out, (full_h, full_c) = ref(torch.from_numpy(x))
    out, (h_n, c_n) = enc(x, lengths, h0, c0)
    for got, want in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    # fixed lengths, zero states
    out, (h_n, c_n) = enc(x)
    for got, want in ((out, full_out), (h_n, full_h), (c_n, full_c)):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    # embeddings: "last" is the last layer's h_n (forward, backward), "mean" the mean valid output
    # (embed starts from zero states)
    with torch.no_grad():
        ref_out0, (ref_h0, _) = ref(pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                         batch_first=True, enforce_sorted=False))
        ref_out0, _ = pad_packed_sequence(ref_out0, batch_first=True, total_length=T)
    want_last = torch.cat([ref_h0[(num_layers - 1) * D + d] for d in range(D)], dim=1).numpy()
    np.testing.assert_allclose(enc.embed(x, lengths), want_last, rtol=0, atol=1e-5)
    want_mean = ref_out0.numpy().sum(axis=1) / lengths[:, None]
    np.testing.assert_allclose(enc.embed(x, lengths, pooling="mean"), want_mean, rtol=0, atol=1e-5)


def test_kernel_layout_stacks_recurrent_input_and_bias_weights_per_gate():
    # w_z[d, block] = scale * [W_hh | W_ih | b] of one gate, blocks (o, i, f, g), the
    # three sigmoid blocks halved (sigmoid(z) = (1 + tanh(z/2)) / 2); the backward
    # pass gets the unscaled transposes
    from streamkm.sequence.lstm.layout import gate_perm, prepare

    H, F = 3, 2
    enc = LSTMEncoder(F, H, bidirectional=True, seed=0)
    p = prepare(enc.params_, 1, 2, H, np.float32, for_training=True)[0]
    assert p.w_z.shape == (2, 4, H, H + F + 1) and p.w_z.flags.c_contiguous
    assert p.w_hh_t.shape == (2, 4, H, H) and p.w_ih_t.shape == (2, F, 4 * H)
    assert list(gate_perm(H).reshape(4, H)[:, 0]) == [3 * H, 0, H, 2 * H]
    for d, sfx in enumerate(("", "_reverse")):
        w_ih, w_hh = enc.params_["weight_ih_l0" + sfx], enc.params_["weight_hh_l0" + sfx]
        b = enc.params_["bias_ih_l0" + sfx] + enc.params_["bias_hh_l0" + sfx]
        for blk, (torch_gate, scale) in enumerate([(3, 0.5), (0, 0.5), (1, 0.5), (2, 1.0)]):
            rows = slice(torch_gate * H, (torch_gate + 1) * H)
            np.testing.assert_allclose(p.w_z[d, blk, :, :H], scale * w_hh[rows], rtol=1e-7)
            np.testing.assert_allclose(p.w_z[d, blk, :, H:H + F], scale * w_ih[rows], rtol=1e-7)
            np.testing.assert_allclose(p.w_z[d, blk, :, H + F], scale * b[rows], rtol=1e-6)
            np.testing.assert_array_equal(p.w_hh_t[d, blk], w_hh[rows].T)
            np.testing.assert_array_equal(p.w_ih_t[d][:, blk * H:(blk + 1) * H], w_ih[rows].T)
    assert not hasattr(prepare(enc.params_, 1, 2, H, np.float32)[0], "w_hh_t")  # inference: not built


# ------------------------------------------------------------------ size limit and seal
def _legacy_v1_file(enc: LSTMEncoder, path: Path, version: int = 1) -> Path:
    """A weights file as streamkm wrote it before the seal: plain np.savez, format_version 1."""
    header = {"format": "streamkm.lstm", "format_version": version, **enc._sizes(), "batch_first": True,
              "dtype": "float32", "training": {}, "content_hash": enc.content_hash}
    arrays = {**enc.state_dict(), "__header__": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_a_weights_file_over_the_limit_is_refused_unread(tmp_path):
    import tracemalloc

    big = tmp_path / "big.npz"
    with open(big, "wb") as fh:  # sparse: 2x the limit long, no disk used
        fh.truncate(2 * fileformat.MAX_FILE_BYTES)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as ei:
            LSTMEncoder.load(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(ei.value) == (f"{big}: {2 * fileformat.MAX_FILE_BYTES} bytes, more than the limit of "
                             f"{fileformat.MAX_FILE_BYTES} bytes for LSTM weights files: not read")
    assert peak < (1 << 20)
    r = subprocess.run([sys.executable, "-m", "streamkm", "lstm", "info", str(big)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "more than the limit of 1073741824 bytes" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_flipped_byte_is_refused_before_parsing(tmp_path):
    enc = LSTMEncoder(2, 2, seed=0)
    path = enc.save(tmp_path / "w.npz")
    original = path.read_bytes()
    assert original[-64 - len(b"streamkm-sha256:"):-64] == b"streamkm-sha256:"
    with zipfile.ZipFile(path) as zf:  # the seal is the zip comment: zip readers still read the file
        assert zf.comment.startswith(b"streamkm-sha256:") and zf.testzip() is None
    assert_every_flipped_byte_is_refused(path, LSTMEncoder.load, ValueError, r"checksum mismatch|ends with neither")
    assert LSTMEncoder.load(path).content_hash == enc.content_hash


def test_unsealed_files_of_format_version_1_still_load(tmp_path):
    enc = LSTMEncoder(3, 4, num_layers=2, seed=3)
    old = _legacy_v1_file(enc, tmp_path / "v1.npz")
    loaded = LSTMEncoder.load(old)
    assert loaded.content_hash == enc.content_hash
    assert LSTMEncoder.read_header(old)["format_version"] == 1
    # an unsealed file claiming version 2 was rewritten or damaged: refused
    v2 = _legacy_v1_file(enc, tmp_path / "v2.npz", version=2)
    with pytest.raises(ValueError, match=r"v2\.npz: format_version 2 but no streamkm seal"):
        LSTMEncoder.load(v2)
    # a v1 file whose weights were flipped is still caught, after parsing, by its content hash
    with zipfile.ZipFile(old) as zf:
        info = zf.getinfo("weight_hh_l1.npy")
    raw = bytearray(old.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 200] ^= 0xFF
    old.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted|content hash mismatch"):
        LSTMEncoder.load(old)


def test_save_refuses_a_file_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(fileformat, "MAX_FILE_BYTES", 2000)
    enc = LSTMEncoder(8, 8, seed=0)  # about 9 kB of parameters
    with pytest.raises(ValueError, match=r"w\.npz: the weights would take \d+ bytes, more than the limit of 2000"):
        enc.save(tmp_path / "w.npz")
    assert list(tmp_path.iterdir()) == []


def test_read_limited_validates_its_limit(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    assert fileformat.read_limited(f, 5) == b"12345"
    with pytest.raises(ValueError, match=r"5 bytes, more than the limit of 4 bytes"):
        fileformat.read_limited(f, 4)
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="limit must be an int >= 1"):
            fileformat.read_limited(f, bad)
    with pytest.raises(ValueError, match="is a directory"):
        fileformat.read_limited(tmp_path)


def test_seal_refuses_what_it_cannot_seal():
    with pytest.raises(ValueError, match="cannot seal"):
        fileformat.seal(b"not a zip")
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3))
    sealed = fileformat.seal(buf.getvalue())
    with pytest.raises(ValueError, match="cannot seal"):
        fileformat.seal(sealed)  # already has a comment


def test_from_torch_refuses_an_oversized_file_unread(tmp_path):
    pytest.importorskip("torch")
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:
        fh.truncate(fileformat.MAX_FILE_BYTES + 1)
    with pytest.raises(ValueError, match=r"big\.pt: 1073741825 bytes, more than the limit of 1073741824 bytes "
                                         r"for PyTorch weights files: not read"):
        LSTMEncoder.from_torch(big)
