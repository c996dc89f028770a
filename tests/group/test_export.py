"""A reducer snapshot as a file: the version it holds, exported offline, equals the fold's."""

from __future__ import annotations

import numpy as np
import pytest

from streamkm.group import GroupModel
from streamkm.group.export import export_version, load_model, version_from_snapshot
from streamkm.group.messages import KIND_SNAPSHOT, KIND_VERSION
from streamkm.group.wire import encode
from tests.group.support import PIPE, blobs, fold_log, raw_stats

KW = {"n_clusters": 3, "seed": 0, "dying_threshold": 0.0}


def _folded() -> GroupModel:
    rng = np.random.default_rng(1)
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    log, first = [], 0
    for _ in range(6):
        X = blobs(rng, centers, 80)
        log.append(raw_stats(first, X).to_bytes())
        first += 80
    return fold_log(log, model_kwargs=KW)


def _snapshot(g: GroupModel) -> bytes:
    return encode(KIND_SNAPSHOT, {"pipeline": PIPE, "stats_offset": g.stats_offset_, "state": g.state_dict()})


def test_the_snapshot_gives_the_folds_version_and_its_export_predicts_its_ids(tmp_path):
    g = _folded()
    v = version_from_snapshot(_snapshot(g), GroupModel(pipeline=PIPE, model_kwargs=KW))
    assert v.same_model(g.version()) and v.version == g.version_ and v.offsets == g.offsets_
    export_version(v, tmp_path / "m")
    m = load_model(tmp_path / "m")
    X = np.asarray(g.version().centers, dtype=np.float32)
    assert m.predict(X).tolist() == g.ids_.tolist()


@pytest.mark.parametrize("bad, reason", [
    (b"", "not a usable reducer snapshot"),
    (b"SKMG" + b"\x00" * 40, "not a usable reducer snapshot"),
    ("version", "expected a 'reducer_snapshot' message"),
    ("other pipeline", "not a 'vectors' reducer snapshot"),
    ("truncated", "not a usable reducer snapshot"),
])
def test_a_bad_snapshot_is_refused_and_leaves_the_model_unchanged(bad, reason):
    g = _folded()
    if bad == "version":
        bad = encode(KIND_VERSION, {"pipeline": PIPE})
    elif bad == "other pipeline":
        bad = encode(KIND_SNAPSHOT, {"pipeline": "sequence", "stats_offset": 0, "state": g.state_dict()})
    elif bad == "truncated":
        bad = _snapshot(g)[:-100]
    fresh = GroupModel(pipeline=PIPE, model_kwargs=KW)
    with pytest.raises(ValueError, match=reason):
        version_from_snapshot(bad, fresh)
    assert fresh.version_ == 0 and not fresh.model.is_initialized_


def test_a_snapshot_made_with_other_settings_is_refused():
    g = _folded()
    other = GroupModel(pipeline=PIPE, model_kwargs={**KW, "n_clusters": 4})
    with pytest.raises(ValueError):
        version_from_snapshot(_snapshot(g), other)
    assert other.version_ == 0
