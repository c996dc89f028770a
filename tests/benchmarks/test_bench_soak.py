"""The soak benchmark's pure helpers (the soak itself is a benchmark, not a CI test)."""

import pytest

from benchmarks.bench_soak import (
    display_command,
    member_schedule,
    monotone_total,
    overlaps,
    parse_metrics,
    slope_per_minute,
)


def test_slope_is_per_minute_and_ignores_an_offset():
    t = [0.0, 5.0, 10.0, 15.0, 20.0]
    assert slope_per_minute(t, [100 + 0.5 * x for x in t]) == pytest.approx(30.0)  # 0.5/s = 30/min
    assert slope_per_minute(t, [7.0] * 5) == 0.0
    # least squares, not first-to-last: one spike in the middle does not tilt a flat series
    assert slope_per_minute(t, [10.0, 10.0, 50.0, 10.0, 10.0]) == pytest.approx(0.0)
    assert slope_per_minute([1.0], [3.0]) == 0.0
    with pytest.raises(ValueError, match="2 times for 3 values"):
        slope_per_minute([0.0, 1.0], [1.0, 2.0, 3.0])


def test_metrics_are_summed_over_label_sets():
    text = ("# HELP streamkm_records_consumed_total Kafka records\n"
            "# TYPE streamkm_records_consumed_total counter\n"
            'streamkm_records_consumed_total{pipeline="vectors",topic="t"} 1200.0\n'
            'streamkm_records_consumed_total{pipeline="vectors",topic="u"} 34.0\n'
            'streamkm_consumer_lag_records{partition="0",topic="t"} 5.0\n'
            "streamkm_ready 1.0\n")
    m = parse_metrics(text)
    assert m == {"streamkm_records_consumed_total": 1234.0, "streamkm_consumer_lag_records": 5.0,
                 "streamkm_ready": 1.0}


def test_counter_total_keeps_what_a_restarted_member_counted():
    readings = [("A:1", 100.0), ("C:7", 40.0), ("A:1", 150.0), ("C:7", 90.0), ("C:9", 10.0), ("A:1", 200.0)]
    assert monotone_total(readings) == 200.0 + 90.0 + 10.0


def test_one_visit_a_minute_from_the_second_minute_and_none_in_the_tail():
    visits = member_schedule(600.0)
    assert visits[0] == (65.0, 80.0)
    assert len(visits) == 9 and visits[-1] == (545.0, 560.0)
    assert all(b - a == 15.0 for a, b in visits)
    assert member_schedule(120.0) == [(65.0, 80.0)]


def test_the_default_disk_failure_lies_between_two_rebalances():
    visits = member_schedule(600.0)
    assert not overlaps((330.0, 360.0), visits)
    assert overlaps((300.0, 330.0), visits)  # the join at 305
    assert overlaps((324.0, 354.0), visits)  # less than 5 s after the leave at 320


def test_the_documented_command_has_no_local_paths():
    assert display_command(["--duration", "600", "--json", "/tmp/x.json", "--keep"]) == \
        "python benchmarks/bench_soak.py --duration 600"
    assert display_command(["--json=/tmp/x.json", "--no-write"]) == "python benchmarks/bench_soak.py --no-write"
