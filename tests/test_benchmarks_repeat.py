"""``python -m benchmarks --repeat N``: the measurement with the median figure is reported."""

from __future__ import annotations

from benchmarks.cli import headline, median_round


def test_the_measurement_with_the_median_figure_is_reported_whole() -> None:
    rounds = [
        {"cycles_per_s": 900.0, "server_us_per_cycle": 1100.0},
        {"cycles_per_s": 2300.0, "server_us_per_cycle": 430.0},
        {"cycles_per_s": 2100.0, "server_us_per_cycle": 470.0},
    ]
    chosen = median_round(rounds, "cycles_per_s")
    # The figures of one measurement, not a median per field.
    assert chosen["cycles_per_s"] == 2100.0
    assert chosen["server_us_per_cycle"] == 470.0
    assert chosen["rounds"] == [900.0, 2300.0, 2100.0]


def test_an_even_count_reports_the_lower_middle_and_failures_are_left_out() -> None:
    rounds = [
        {"round_trips_per_s": 10.0},
        {"error": "the server did not start"},
        {"round_trips_per_s": 30.0},
        {"round_trips_per_s": 20.0},
        {"round_trips_per_s": 40.0},
    ]
    assert median_round(rounds, "round_trips_per_s")["round_trips_per_s"] == 20.0
    assert median_round([{"error": "x"}], "round_trips_per_s")["error"] == "x"


def test_only_the_short_workloads_are_repeated() -> None:
    assert headline("fanout_1000") == "deliveries_per_server_cpu_s"
    assert headline("dm_50") == "round_trips_per_s"
    assert headline("churn") == "cycles_per_s"
    assert headline("chat") is None
    assert headline("chat_sweep") is None
    assert headline("idle") is None
