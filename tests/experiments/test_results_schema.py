"""An experiment's `results` is typed in the OpenAPI (schemas.ExperimentResults), and the UI's types
are generated from it: the schema must describe exactly what domain.analyse() produces. Each case
below is a realistic experiment's analysis; it must validate against the schema (no field unknown to
it, none missing) and come back out of it unchanged, so a field analyse() adds, renames or drops
fails here instead of vanishing from the answer or breaking the A/B Testing panel."""

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from services.experiments import domain
from services.experiments.domain import Design, Guardrail, SuccessMetric, Tally, VariantData
from services.experiments.schemas import ExperimentOut, ExperimentResults


def _tally(values) -> Tally:
    tally = Tally()
    for v in values:
        tally.add(float(v))
    return tally


def _ratings(levels: list[int]) -> Tally:
    tally = Tally()
    for level, count in enumerate(levels, start=1):
        for _ in range(count):
            tally.add_rating(level)
    return tally


def _sketch(latencies) -> dict[int, int]:
    buckets: dict[int, int] = {}
    for ms in latencies:
        b = domain.latency_bucket(float(round(ms)))
        buckets[b] = buckets.get(b, 0) + 1
    return buckets


def _variant(rng, units: int, up_rate: float, ratings: list[int], latency_scale: float, error_rate: float,
             deflected: float) -> VariantData:
    latencies = latency_scale * rng.lognormal(0, 0.5, units)
    return VariantData(units, {
        "thumbs_up_rate": _tally(rng.random(units) < up_rate),
        "thumbs_down_rate": _tally(rng.random(units) < 1 - up_rate),
        "rating": _ratings(ratings),
        "latency_ms": _tally(latencies),
        "cost": _tally(rng.gamma(2, 0.001, units)),
        "error_rate": _tally(rng.random(units) < error_rate),
        "tickets_deflected": _tally(rng.random(units) < deflected),  # a reported metric (OutcomeRecorded)
    }, _sketch(latencies))


EVERY_KIND = (SuccessMetric("thumbs_up_rate", min_effect=0.01), SuccessMetric("rating"), SuccessMetric("cost"),
              SuccessMetric("tickets_deflected", kind="rate"), SuccessMetric("handle_time", kind="mean",
                                                                             higher_is_better=False))
EVERY_GUARDRAIL = (Guardrail("error_rate", max_degradation=0.01), Guardrail("latency_ms", max_degradation=50),
                   Guardrail("latency_p95_ms", max_degradation=0.2), Guardrail("latency_p95_ms", max_value=800))


def _analyses() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(20261202)
    better = (_variant(rng, 3000, 0.50, [30, 40, 200, 300, 200], 200, 0.01, 0.2),
              _variant(rng, 3000, 0.58, [20, 30, 150, 350, 300], 205, 0.01, 0.25))
    slower = (_variant(rng, 1500, 0.50, [10, 10, 50, 50, 30], 200, 0.01, 0.2),
              _variant(rng, 1500, 0.51, [10, 10, 50, 50, 30], 400, 0.08, 0.2))
    return {
        "treatment wins, sequential, every metric kind and guardrail":
            domain.analyse(Design(0.5, EVERY_KIND, EVERY_GUARDRAIL, min_sample_size=100), *better),
        "fixed horizon": domain.analyse(Design(0.5, EVERY_KIND, EVERY_GUARDRAIL, sequential=False), *better),
        "guardrails breached, latency p95 with its reason":
            domain.analyse(Design(0.5, EVERY_KIND[:2], EVERY_GUARDRAIL), *slower),
        "sample ratio mismatch": domain.analyse(Design(0.2, EVERY_KIND[:1], EVERY_GUARDRAIL[2:]), *better),
        "no outcomes yet": domain.analyse(Design(0.5, EVERY_KIND, EVERY_GUARDRAIL, min_sample_size=1000),
                                          VariantData(0, {}), VariantData(0, {})),
        "one outcome each": domain.analyse(
            Design(0.5, EVERY_KIND, EVERY_GUARDRAIL),
            VariantData(1, {"thumbs_up_rate": _tally([1]), "rating": _ratings([0, 0, 1, 0, 0])}, _sketch([120])),
            VariantData(1, {"thumbs_up_rate": _tally([0]), "rating": _ratings([0, 0, 0, 1, 0])}, _sketch([130]))),
    }


ANALYSES = _analyses()


def test_the_cases_cover_every_shape_analyse_gives():
    """The cases below are worth something only if they reach every branch of the output."""
    everything = list(ANALYSES.values())
    metrics = [m for r in everything for m in r["metrics"]]
    guardrails = [g for r in everything for g in r["guardrails"]]
    assert {m["kind"] for m in metrics} == {"rate", "mean", "rating"}
    assert {m["test"] for m in metrics} == {"welch_t", "two_proportion_z", "mann_whitney_u"}
    assert {m["sequential"] for m in metrics} == {True, False}
    assert any(m["lift_ci"] is None for m in metrics) and any(m["lift_ci"] is not None for m in metrics)
    assert any(None in m["ci"] for m in metrics) and any(None not in m["ci"] for m in metrics)
    latency = [g for g in guardrails if g["metric"] == "latency_p95_ms"]
    assert any(g["breached"] and "reason" in g for g in latency)
    assert any(not g["breached"] and "reason" not in g for g in latency)
    assert any(g["max_value"] is not None for g in latency) and any(g["threshold_ms"] is None for g in latency)
    assert {g["breached"] for g in guardrails if g["metric"] != "latency_p95_ms"} == {True, False}
    assert {r["recommendation"]["winner"] for r in everything} == {"control", "treatment", "inconclusive"}
    assert any(r["srm"]["mismatch"] for r in everything)
    assert any(r["latency_ms"]["control"]["p50"] is None for r in everything)


@pytest.mark.parametrize("case", ANALYSES)
def test_the_results_schema_is_exactly_what_analyse_gives(case):
    results = ANALYSES[case]
    as_json = json.loads(json.dumps(results))  # what is stored in the database, and what the API answered
    typed = ExperimentResults.model_validate(results)
    assert typed.model_dump(mode="json") == as_json  # nothing dropped, nothing added (not even a null)
    assert ExperimentResults.model_validate(as_json).model_dump(mode="json") == as_json


def _every_object(value: Any, at: tuple = ()):
    if isinstance(value, dict):
        yield at
        for key, item in value.items():
            yield from _every_object(item, (*at, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _every_object(item, (*at, i))


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def test_a_field_analyse_adds_or_renames_at_any_depth_fails_validation():
    results = json.loads(json.dumps(ANALYSES["guardrails breached, latency p95 with its reason"]))
    paths = list(_every_object(results))
    assert len(paths) > 20
    for path in paths:
        added = json.loads(json.dumps(results))
        _at(added, path)["brand_new_field"] = 1
        with pytest.raises(ValidationError):
            ExperimentResults.model_validate(added)
        renamed = json.loads(json.dumps(results))
        obj = _at(renamed, path)
        key = next(k for k in obj if k not in ("reason", "latency_ms"))  # the only two that may be absent
        obj[f"{key}_renamed"] = obj.pop(key)
        with pytest.raises(ValidationError):
            ExperimentResults.model_validate(renamed)


def test_results_stored_before_latency_was_measured_still_read_and_answer_as_stored():
    stored = json.loads(json.dumps(ANALYSES["fixed horizon"]))
    del stored["latency_ms"]
    assert ExperimentResults.model_validate(stored).model_dump(mode="json") == stored


def test_the_openapi_declares_the_results_nullable_and_typed():
    schema = ExperimentOut.model_json_schema(mode="serialization")
    assert schema["properties"]["results"]["anyOf"] == [{"$ref": "#/$defs/ExperimentResults"}, {"type": "null"}]
    assert "results" in schema["required"]
    results = schema["$defs"]["ExperimentResults"]
    assert results["additionalProperties"] is False
    assert set(results["properties"]) == set(ANALYSES["fixed horizon"])
