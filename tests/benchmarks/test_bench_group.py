"""The group benchmark's staleness: from a refold of the stats log in the run's ordering."""

import dataclasses

import numpy as np
import pytest

from benchmarks.bench_group import chunk_staleness
from streamkm.group import GroupModel
from streamkm.group.refold import refold_stats_log
from tests.group.support import PIPE, TOPIC, blobs, raw_stats

KW = {"n_clusters": 3, "seed": 0, "init_size": 60, "dying_threshold": 0.0}


def _log():
    """p0's two chunks, then p1's; each second chunk cut by a member holding version 1."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    chunks = [dataclasses.replace(raw_stats(i * 40, blobs(rng, centers, 40), part=p), base_version=i)
              for p in (0, 1) for i in range(2)]
    return [(off, c.to_bytes()) for off, c in enumerate(chunks)]


@pytest.mark.parametrize("ordering", ["rounds", "arrival"])
def test_staleness_counts_versions_in_the_order_the_run_folded(ordering):
    log = _log()
    offered = refold_stats_log(GroupModel(pipeline=PIPE, model_kwargs=KW), log, ordering=ordering,
                               expect=[f"{TOPIC}:0", f"{TOPIC}:1"])
    stamps = [1.0, 2.0, 3.0, 4.0]  # the stats records' times, by log offset
    versions, seconds = chunk_staleness([(o, stamps[o.offset]) for o in offered], {2: 10.0, 4: 12.0})
    if ordering == "rounds":
        # Rounds fold p0:0, p1:0, p0:40, p1:40: p0's second chunk goes into version 2, p1's into 3.
        assert versions == [2 - 1, 3 - 1]
        assert seconds == [10.0 - 1.0, 10.0 - 3.0, 12.0 - 2.0, 12.0 - 4.0]
    else:  # log order: p0's second chunk goes into version 1
        assert versions == [1 - 1, 3 - 1]
        assert seconds == [10.0 - 1.0, 10.0 - 2.0, 12.0 - 3.0, 12.0 - 4.0]
