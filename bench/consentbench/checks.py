"""The runs, the targets the service is held to, and the checks of a run's figures against them."""

from __future__ import annotations

from typing import Any

RUNS = ("ceiling", "decisions", "latency", "batch", "writes", "baseline")
EXTRA_RUNS = ("lag", "propagation", "scale", "webhooks")  # only when named in --only
SERVER_EXTRAS = ("privacy",)  # on the main server, after the seeding; only when named in --only
TARGETS = {
    "decisions_vs_ceiling": 0.7,     # single decisions / GET /health/live, same connections
    "decision_p99_ms": 5.0,          # at --latency-connections (8)
    "batch_decisions_per_s": 50_000,  # per server process
    "writes_vs_baseline": 0.5,       # consent writes / raw asyncpg transactions
    "write_p99_ms": 50.0,
    "publish_lag_p99_ms": 20.0,      # commit to NATS subscriber receipt (measured as an upper bound)
    "propagation_p50_ms": 10.0,      # commit on A to decision change on B
    "propagation_p99_ms": 50.0,
    "stale_with_min_position": 0,    # B's next answer with min_position from A's write
    "scale_rps_ratio": 0.8,          # decisions rps, largest / smallest --scale-subjects
    "scale_p99_ratio": 1.2,          # decision p99 at --latency-connections, largest / smallest
    "rebuild_events_per_s": 20_000,  # consent projections rebuild
}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def verdicts(runs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, value: float | None, target: float, higher: bool, what: str, exact: bool = False) -> None:
        if value is None:
            ok = None
        else:
            ok = value == target if exact else (value >= target if higher else value < target)
        out.append({"check": name, "value": value, "target": target, "higher_is_better": higher,
                    "ok": ok, "what": what, **({"exact": True} if exact else {})})

    get = lambda run, key: runs.get(run, {}).get(key)  # noqa: E731
    if any(name in runs for name in RUNS) or not any(name in runs for name in EXTRA_RUNS):
        add("decisions / ceiling", ratio(get("decisions", "rps"), get("ceiling", "rps")),
            TARGETS["decisions_vs_ceiling"], True, "single-decision rps over GET /health/live rps")
        add("decision p99 ms", get("latency", "p99_ms"), TARGETS["decision_p99_ms"], False,
            "single decisions at the latency connections")
        add("batch decisions/s", get("batch", "decisions_per_s"), TARGETS["batch_decisions_per_s"], True,
            "requests/s x batch size, one server process")
        add("writes / asyncpg", ratio(get("writes", "rps"), get("baseline", "rps")), TARGETS["writes_vs_baseline"],
            True, "consent writes rps over raw asyncpg tx/s")
        add("write p99 ms", get("writes", "p99_ms"), TARGETS["write_p99_ms"], False, "consent writes")
    if "lag" in runs:
        add("publish lag p99 ms", get("lag", "lag_p99_ms"), TARGETS["publish_lag_p99_ms"], False,
            "CloudEvent time to NATS receipt: an upper bound of commit to receipt")
    if "propagation" in runs:
        add("propagation p50 ms", get("propagation", "propagation_p50_ms"), TARGETS["propagation_p50_ms"], False,
            "A's write answered to B's first changed decision")
        add("propagation p99 ms", get("propagation", "propagation_p99_ms"), TARGETS["propagation_p99_ms"], False,
            "the same, p99")
        add("stale, min_position", get("propagation", "stale_with_min_position"),
            TARGETS["stale_with_min_position"], False, "B's next answer with min_position from A's write", exact=True)
    if "scale" in runs:
        scale = runs["scale"]
        small, large = scale.get("smallest"), scale.get("largest")
        add("scale rps ratio", scale.get("rps_ratio"), TARGETS["scale_rps_ratio"], True,
            f"decisions/s at {large:,} subjects over at {small:,}" if small else "decisions/s, largest over smallest")
        add("scale p99 ratio", scale.get("p99_ratio"), TARGETS["scale_p99_ratio"], False,
            f"decision p99 (latency connections) at {large:,} over at {small:,}" if small else "p99 ratio")
        largest = scale.get("sizes", {}).get(str(large), {})
        add("rebuild events/s", largest.get("rebuild", {}).get("events_per_s"), TARGETS["rebuild_events_per_s"],
            True, f"consent projections rebuild, {large:,} subjects" if large else "consent projections rebuild")
    return out
