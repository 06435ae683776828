"""Assignment (uniform, sticky, independent between experiments, monotone when the split grows),
outcomes from feedback, and the recommendation an analysis makes."""

import numpy as np
import pytest
from scipy import stats as sps

from services.experiments import domain
from services.experiments.domain import CONTROL, TREATMENT, Design, Guardrail, SuccessMetric, Tally, VariantData
from shared.errors import DomainError

UNITS = [f"user-{i}" for i in range(100_000)]


def test_buckets_are_uniform_over_100000_units():
    buckets = np.array([domain.bucket("exp-seed-1", u) for u in UNITS])
    counts, _ = np.histogram(buckets, bins=20, range=(0, 1))
    assert sps.chisquare(counts).pvalue > 0.001


def test_the_split_holds_in_expectation():
    treated = sum(domain.assign("seed-split", u, 0.2) == TREATMENT for u in UNITS)
    assert sps.binomtest(treated, len(UNITS), 0.2).pvalue > 0.001


def test_assignment_is_sticky():
    first = [domain.assign("seed-a", u, 0.5) for u in UNITS[:1000]]
    assert [domain.assign("seed-a", u, 0.5) for u in UNITS[:1000]] == first


def test_assignment_is_independent_between_experiments():
    a = np.array([domain.assign("seed-a", u, 0.5) == TREATMENT for u in UNITS])
    b = np.array([domain.assign("seed-b", u, 0.5) == TREATMENT for u in UNITS])
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert sps.chi2_contingency(table).pvalue > 0.001


def test_units_in_treatment_stay_there_when_its_share_grows():
    before = {u for u in UNITS[:20_000] if domain.assign("seed-m", u, 0.1) == TREATMENT}
    after = {u for u in UNITS[:20_000] if domain.assign("seed-m", u, 0.3) == TREATMENT}
    assert before <= after and len(after) > len(before)


@pytest.mark.parametrize("status", ["paused", "completed", "cancelled", "draft"])
def test_an_experiment_that_is_not_running_sends_everyone_to_control(status):
    assert {domain.assign("seed", u, 1.0, status=status) for u in UNITS[:100]} == {CONTROL}


def test_feedback_becomes_outcomes():
    assert domain.tally_outcomes(domain.feedback_outcomes("thumbs_down", {}))["thumbs_up_rate"].total == 0
    ratings = domain.tally_outcomes(domain.feedback_outcomes("rating", {"rating": 4}))["rating"]
    assert ratings.levels == [0, 0, 0, 1, 0] and ratings.total == 4
    assert domain.feedback_outcomes("correction", {"correction": "x"}) == []


def _thumbs(n: int, rate: float) -> Tally:
    ups = round(n * rate)
    return Tally(n=n, total=ups, total_sq=ups)


def _variants(c_rate, t_rate, n=4000, units=(4000, 4000), **other):
    return (VariantData(units[0], {"thumbs_up_rate": _thumbs(n, c_rate), **other.get("control", {})}),
            VariantData(units[1], {"thumbs_up_rate": _thumbs(n, t_rate), **other.get("treatment", {})}))


DESIGN = Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"),), min_sample_size=100)


def test_a_significantly_better_treatment_is_recommended_for_deployment():
    results = domain.analyse(DESIGN, *_variants(0.50, 0.58))
    assert results["recommendation"]["winner"] == TREATMENT
    assert results["recommendation"]["action"] == "deploy_treatment"
    assert results["metrics"][0]["significant"] and results["metrics"][0]["ci"][0] > 0


def test_a_significantly_worse_treatment_keeps_control_and_no_difference_is_inconclusive():
    assert domain.analyse(DESIGN, *_variants(0.58, 0.50))["recommendation"]["winner"] == CONTROL
    assert domain.analyse(DESIGN, *_variants(0.50, 0.505))["recommendation"]["winner"] == "inconclusive"


def test_too_little_data_is_inconclusive_whatever_the_difference():
    design = Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"),), min_sample_size=10_000)
    reason = domain.analyse(design, *_variants(0.2, 0.9))["recommendation"]["reason"]
    assert reason.startswith("not enough data")


def test_a_sample_ratio_mismatch_makes_any_result_inconclusive():
    results = domain.analyse(DESIGN, *_variants(0.50, 0.58, units=(4400, 3600)))
    assert results["srm"]["mismatch"] and results["recommendation"]["winner"] == "inconclusive"


def test_a_breached_guardrail_keeps_control_even_when_the_primary_metric_wins():
    slow = Tally()
    for v in np.random.default_rng(1).normal(900, 50, 3000):
        slow.add(float(v))
    fast = Tally()
    for v in np.random.default_rng(2).normal(500, 50, 3000):
        fast.add(float(v))
    design = Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"),),
                    guardrails=(Guardrail("latency_ms", max_degradation=100),))
    results = domain.analyse(design, *_variants(0.5, 0.58, control={"latency_ms": fast},
                                                treatment={"latency_ms": slow}))
    assert results["guardrails"][0]["breached"]
    assert results["recommendation"] == {"winner": CONTROL, "action": "keep_control",
                                         "reason": "guardrail breached: latency_ms"}


def test_a_significant_but_small_effect_below_the_minimum_is_inconclusive():
    design = Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate", min_effect=0.2),))
    assert domain.analyse(design, *_variants(0.50, 0.58))["recommendation"]["winner"] == "inconclusive"


def test_several_metrics_are_corrected_with_holm():
    design = Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"), SuccessMetric("rating")),
                    sequential=False)
    control, treatment = _variants(0.50, 0.535)
    results = domain.analyse(design, control, treatment)
    primary = results["metrics"][0]
    assert primary["p_value_adjusted"] == pytest.approx(min(1.0, 2 * primary["p_value"]))


def test_bad_designs_and_versions_are_refused():
    with pytest.raises(DomainError):
        domain.check_design(Design(traffic_split=1.5, success_metrics=(SuccessMetric("thumbs_up_rate"),)))
    with pytest.raises(DomainError):
        domain.check_design(Design(traffic_split=0.5, success_metrics=(SuccessMetric("happiness"),)))
    v1, v2 = {"name": "bot", "status": "deployed"}, {"name": "other", "status": "testing"}
    with pytest.raises(DomainError, match="same version"):
        domain.check_versions(v1, v1, 1, 1)
    with pytest.raises(DomainError, match="different names"):
        domain.check_versions(v1, v2, 1, 2)
    with pytest.raises(DomainError, match="archived"):
        domain.check_versions(v1, {"name": "bot", "status": "archived"}, 1, 2)
    assert domain.check_versions(v1, {"name": "bot", "status": "testing"}, 1, 2) == "bot"


def test_lifecycle_moves():
    assert domain.move("running", "pause") == "paused"
    with pytest.raises(DomainError):
        domain.move("completed", "resume")


def test_latency_percentiles_from_the_sketch_are_within_one_percent_and_sketches_merge():
    rng = np.random.default_rng(7)
    first, second = rng.lognormal(5, 0.6, 20_000), rng.lognormal(5.3, 0.4, 30_000)

    def sketch(values):
        buckets: dict[int, int] = {}
        for v in values:
            b = domain.latency_bucket(float(v))
            buckets[b] = buckets.get(b, 0) + 1
        return buckets

    merged = {b: sketch(first).get(b, 0) + sketch(second).get(b, 0) for b in sketch(first) | sketch(second)}
    assert merged == sketch(np.concatenate([first, second]))
    everything = np.concatenate([first, second])
    for q in (0.5, 0.95, 0.99):
        exact = np.quantile(everything, q, method="lower")
        assert domain.sketch_quantile(merged, q) == pytest.approx(exact, rel=0.011)
    assert domain.sketch_quantile({}, 0.5) is None


def _latency_sketches(values: np.ndarray, looks) -> list[dict[int, int]]:
    """The sketch of the first n latencies at each look, as the router records them (whole ms)."""
    buckets = np.array([domain.latency_bucket(float(v)) for v in np.round(values)])
    return [dict(zip(*(x.tolist() for x in np.unique(buckets[:n], return_counts=True)), strict=True))
            for n in looks]


P95_GUARDRAIL = Guardrail("latency_p95_ms", max_degradation=0.2)
LOOKS = (100, 200, 300, 500, 800, 1200, 1600, 2000)


def _breached_at_some_look(guardrail: Guardrail, rng, runs: int, control_scale: float, treatment_scale: float):
    fired = 0
    for _ in range(runs):
        control = _latency_sketches(control_scale * rng.lognormal(0, 0.5, LOOKS[-1]), LOOKS)
        treatment = _latency_sketches(treatment_scale * rng.lognormal(0, 0.5, LOOKS[-1]), LOOKS)
        fired += any(domain.latency_quantile_guardrail(guardrail, c, t, 0.05)["breached"]
                     for c, t in zip(control, treatment, strict=True))
    return fired / runs


def test_a_a_the_latency_p95_guardrail_does_not_fire_more_than_alpha_however_often_one_looks():
    """Equal latencies and no allowance at all (max_degradation 0, the boundary of the null), looked at
    8 times per run: false alarms at or below 5%."""
    rng = np.random.default_rng(20261202)
    assert _breached_at_some_look(Guardrail("latency_p95_ms", max_degradation=0.0), rng, 300, 200, 200) <= 0.05
    assert _breached_at_some_look(P95_GUARDRAIL, rng, 100, 200, 200) == 0.0


def test_a_slow_treatment_breaches_the_latency_p95_guardrail():
    rng = np.random.default_rng(11)
    assert _breached_at_some_look(P95_GUARDRAIL, rng, 100, 200, 200 * 1.6) >= 0.95
    control, treatment = (_latency_sketches(s * rng.lognormal(0, 0.5, 1000), [1000])[0] for s in (200, 400))
    results = domain.analyse(Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"),),
                                    guardrails=(P95_GUARDRAIL,)),
                             VariantData(1000, {}, control), VariantData(1000, {}, treatment))
    [g] = results["guardrails"]
    assert g["breached"] and g["treatment"]["p95"] > 1.8 * g["control"]["p95"]
    assert g["threshold_ms"] == pytest.approx(1.2 * g["control"]["p95_upper_bound"])
    assert "latency p95" in g["reason"] and results["recommendation"]["reason"] == "guardrail breached: latency_p95_ms"
    # An absolute limit: treatment's p95 (~ 910 ms here) against 700 ms and against 1500 ms.
    assert domain.latency_quantile_guardrail(Guardrail("latency_p95_ms", max_value=700), {}, treatment,
                                             0.05)["breached"]
    assert not domain.latency_quantile_guardrail(Guardrail("latency_p95_ms", max_value=1500), {}, treatment,
                                                 0.05)["breached"]
    slow_start = _latency_sketches(np.full(19, 5000.0), [19])[0]  # every answer slow, but only 19 of them
    assert not domain.latency_quantile_guardrail(Guardrail("latency_p95_ms", max_value=700), {}, slow_start,
                                                 0.05)["breached"]
    # Too few control answers for a bound on control's p95: no relative verdict yet.
    assert not domain.latency_quantile_guardrail(P95_GUARDRAIL, dict(list(control.items())[:3]), treatment,
                                                 0.05)["breached"]


def test_latency_guardrails_are_checked_at_design():
    def design(*guardrails):
        return Design(traffic_split=0.5, success_metrics=(SuccessMetric("thumbs_up_rate"),), guardrails=guardrails)

    domain.check_design(design(P95_GUARDRAIL, Guardrail("latency_p95_ms", max_value=800)))
    with pytest.raises(DomainError, match="max_value is for latency_p95_ms"):
        domain.check_design(design(Guardrail("error_rate", max_value=0.1)))
    with pytest.raises(DomainError, match="no kind"):
        domain.check_design(design(Guardrail("latency_p95_ms", kind="mean")))
    with pytest.raises(DomainError, match="'latency_p99_ms'"):
        domain.check_design(design(Guardrail("latency_p99_ms")))
