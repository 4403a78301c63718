"""The window's sorted RTTs, kept by the loop as samples come and go, are exactly those a scan of the raw samples
finds (what /paths.json computes), through random sends, answers, losses and resizes; and their quantiles are
the exact ones."""

import statistics

from hypothesis import given, settings
from hypothesis import strategies as st
from infra_obs_probe.series import OK, PENDING, TIMEOUT, Ring, percentiles, quantiles

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "send", "answer", "lose", "resize"]),
        st.floats(0.0, 2.0),  # seconds since the previous send / an RTT / a new window
        st.integers(0, 1000),
    ),
    max_size=120,
)


def scanned(ring: Ring) -> list[float]:
    """The OK values within the window of the newest sample, by a scan of the samples still in the ring."""
    if not ring.pos:
        return []
    newest = ring.t[(ring.pos - 1) % ring.cap]
    values = [v for v, code in ring.since(newest - ring.window) if code == OK]
    return sorted(values)


@settings(derandomize=True, max_examples=400)
@given(STEPS, st.integers(2, 12), st.floats(0.5, 5.0))
def test_the_sorted_window_is_what_a_scan_finds(steps, cap, window):
    ring = Ring(cap, window)
    now, in_flight = 100.0, []
    for action, number, pick in steps:
        if action == "send":
            now += number
            in_flight.append(ring.push(now, 0.0, PENDING))
        elif action == "resize":
            ring = ring.resized(cap + pick % 5, 0.5 + number)
        elif in_flight:
            pos = in_flight.pop(pick % len(in_flight))
            ring.set(pos, number / 100, OK) if action == "answer" else ring.set(pos, 0.0, TIMEOUT)
        assert ring.ok == scanned(ring), (action, ring.ok, scanned(ring))


def test_quantiles_are_exact_and_match_the_paths_json_numbers():
    values = [i / 1000 for i in range(1, 201)]  # 1 ms .. 200 ms
    assert quantiles(values) == (statistics.median(values), values[179], values[197])
    assert quantiles([0.003]) == (0.003, 0.003, 0.003) and quantiles([]) is None
    found = percentiles(list(reversed(values)), "rtt")
    assert found == {"rtt_median_seconds": 0.1005, "rtt_p90_seconds": 0.18, "rtt_p99_seconds": 0.198}
