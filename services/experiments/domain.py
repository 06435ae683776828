"""The experiments service's rules, pure: assignment of units to variants, the metrics and how
feedback and served answers become outcomes, the analysis of an experiment and its recommendation,
the lifecycle. No I/O."""

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.experiments import stats
from shared.errors import Conflict, DomainError, Invalid, NotFound

CONTROL, TREATMENT = "control", "treatment"
VARIANTS = (CONTROL, TREATMENT)
STATUSES = ("draft", "running", "paused", "completed", "cancelled")
LIVE = "running"
LEVELS = 5  # ratings 1-5

# ---- assignment ------------------------------------------------------------------------------


def bucket(seed: str, unit: str) -> float:
    """Where a unit falls in [0, 1) for one experiment: a hash of the experiment's seed and the unit,
    so the same unit always lands in the same place (sticky) and experiments with different seeds
    place units independently."""
    digest = hashlib.blake2b(f"{seed}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(seed: str, unit: str, traffic_split: float, *, status: str = LIVE) -> str:
    """The variant of a unit: treatment when its bucket is below the treatment share. Growing the
    share only adds units to treatment (monotone); a paused, completed or cancelled experiment
    sends everyone to control."""
    if status != LIVE:
        return CONTROL
    return TREATMENT if bucket(seed, unit) < traffic_split else CONTROL


# ---- metrics ---------------------------------------------------------------------------------

Kind = Literal["rate", "mean", "rating"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    higher_is_better: bool


BUILTIN_METRICS = {
    m.name: m
    for m in (
        Metric("thumbs_up_rate", "rate", True),
        Metric("thumbs_down_rate", "rate", False),
        Metric("rating", "rating", True),
        Metric("latency_ms", "mean", False),
        Metric("cost", "mean", False),
        Metric("error_rate", "rate", False),
    )
}


CUSTOM_METRIC = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CUSTOM_KINDS = ("mean", "rate")


def metric(name: str, kind: str | None = None, higher_is_better: bool | None = None) -> Metric:
    """A built-in metric, or one other services report (OutcomeRecorded), which names its kind."""
    builtin = BUILTIN_METRICS.get(name)
    if builtin is not None:
        return builtin
    if kind is None or not CUSTOM_METRIC.match(name):
        raise Invalid("success_metrics", f"unknown metric {name!r}; built in: {', '.join(BUILTIN_METRICS)}; "
                      "a metric other services report (OutcomeRecorded) names its kind: mean or rate")
    if kind not in CUSTOM_KINDS:
        raise Invalid("success_metrics", f"a reported metric's kind is mean or rate, not {kind!r}")
    return Metric(name, kind, True if higher_is_better is None else higher_is_better)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Outcome:
    """One observation of one metric, for a variant."""

    metric: str
    value: float


def feedback_outcomes(feedback_type: str, value: Mapping[str, Any]) -> list[Outcome]:
    """What a piece of feedback on a served answer says about its variant."""
    if feedback_type == "thumbs_up":
        return [Outcome("thumbs_up_rate", 1), Outcome("thumbs_down_rate", 0)]
    if feedback_type == "thumbs_down":
        return [Outcome("thumbs_up_rate", 0), Outcome("thumbs_down_rate", 1)]
    if feedback_type == "rating" and isinstance(value.get("rating"), int | float):
        return [Outcome("rating", min(LEVELS, max(1, round(value["rating"]))))]
    return []


def served_outcomes(latency_ms: float, cost: float | None, error: bool) -> list[Outcome]:
    """What the router itself measures of each answer."""
    if error:
        return [Outcome("error_rate", 1)]
    outcomes = [Outcome("error_rate", 0), Outcome("latency_ms", latency_ms)]
    if cost is not None:
        outcomes.append(Outcome("cost", cost))
    return outcomes


@dataclass
class Tally:
    """A variant's sufficient statistics for one metric: mergeable, O(1) to analyse."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    levels: list[int] = field(default_factory=lambda: [0] * LEVELS)

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.total_sq += value * value

    def add_rating(self, level: int) -> None:
        self.add(level)
        self.levels[level - 1] += 1

    @property
    def moments(self) -> stats.Moments:
        return stats.Moments(self.n, self.total, self.total_sq)


def tally_outcomes(outcomes: Sequence[Outcome]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for o in outcomes:
        tally = tallies.setdefault(o.metric, Tally())
        if metric(o.metric).kind == "rating":
            tally.add_rating(int(o.value))
        else:
            tally.add(o.value)
    return tallies


# ---- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SuccessMetric:
    name: str
    min_effect: float | None = None  # the smallest difference worth deploying, in the metric's units
    kind: str | None = None  # for reported metrics: mean or rate
    higher_is_better: bool | None = None

    @property
    def metric(self) -> Metric:
        return metric(self.name, self.kind, self.higher_is_better)


# Guardrails on a latency quantile, from the latency sketch (see latency_quantile_guardrail).
LATENCY_QUANTILE_GUARDRAILS = {"latency_p95_ms": 0.95}


@dataclass(frozen=True)
class Guardrail:
    """Stop when treatment is worse than control by more than `max_degradation` (in the metric's
    units, in its bad direction), with the sequential test's confidence. For latency_p95_ms,
    `max_degradation` is relative (0.2: treatment's p95 at most 20% above control's) and
    `max_value` an absolute limit in ms instead."""

    metric: str
    max_degradation: float = 0.0
    kind: str | None = None
    higher_is_better: bool | None = None
    max_value: float | None = None

    @property
    def latency_quantile(self) -> float | None:
        return LATENCY_QUANTILE_GUARDRAILS.get(self.metric)

    @property
    def definition(self) -> Metric:
        return metric(self.metric, self.kind, self.higher_is_better)


@dataclass(frozen=True)
class Design:
    traffic_split: float
    success_metrics: tuple[SuccessMetric, ...]
    guardrails: tuple[Guardrail, ...] = ()
    min_sample_size: int = 0  # outcomes per variant on the primary metric before any decision
    sequential: bool = True
    alpha: float = stats.ALPHA


def check_design(design: Design) -> None:
    if not 0 <= design.traffic_split <= 1:
        raise Invalid("traffic_split", "traffic_split is treatment's share, from 0 to 1")
    if not design.success_metrics:
        raise Invalid("success_metrics", "name at least one success metric")
    names = [m.name for m in design.success_metrics]
    if len(set(names)) != len(names):
        raise Invalid("success_metrics", "a metric is named twice")
    for m in design.success_metrics:
        m.metric  # noqa: B018 - raises for an unknown metric
    for g in design.guardrails:
        if g.latency_quantile is not None:
            if g.kind is not None or g.higher_is_better is not None:
                raise Invalid("guardrails", f"{g.metric} is measured by the router: it takes no kind or direction")
            if g.max_value is not None and g.max_value <= 0:
                raise Invalid("guardrails", f"{g.metric}'s max_value is a latency in ms, above 0")
            continue
        if g.max_value is not None:
            raise Invalid("guardrails", f"max_value is for {', '.join(LATENCY_QUANTILE_GUARDRAILS)}; "
                          f"{g.metric} takes max_degradation")
        try:
            g.definition  # noqa: B018
        except Invalid as exc:
            raise Invalid("guardrails", f"{exc.message}; a guardrail may also be "
                          f"{', '.join(LATENCY_QUANTILE_GUARDRAILS)}") from None


def check_versions(control: Mapping[str, Any] | None, treatment: Mapping[str, Any] | None,
                   control_id: Any, treatment_id: Any) -> str:
    """The name both versions belong to; errors for unknown, archived or mismatched versions.
    `control`/`treatment` are the service's own records of registered versions (from events)."""
    if control_id == treatment_id:
        raise Invalid("treatment_model_id", "control and treatment are the same version")
    for field_name, version, ident in (("control_model_id", control, control_id),
                                       ("treatment_model_id", treatment, treatment_id)):
        if version is None:
            raise NotFound(f"no model version {ident}", field=field_name)
        if version["status"] == "archived":
            raise Conflict(f"model version {ident} is archived", field=field_name)
    if control["name"] != treatment["name"]:
        raise Invalid("treatment_model_id", f"versions of different names: {control['name']} and {treatment['name']}")
    return control["name"]


# ---- lifecycle ---------------------------------------------------------------------------------

MOVES = {
    "start": ({"draft"}, "running"),
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "complete": ({"running", "paused"}, "completed"),
    "cancel": ({"draft", "running", "paused"}, "cancelled"),
}


class IllegalMove(DomainError):
    status, code = 409, "illegal_status_change"


def move(status: str, action: str) -> str:
    allowed, target = MOVES[action]
    if status not in allowed:
        raise IllegalMove(f"cannot {action} an experiment that is {status}")
    return target


# ---- analysis ----------------------------------------------------------------------------------


# ---- latency percentiles: a mergeable log-bucket sketch (as DDSketch), 1% relative accuracy -------

SKETCH_ACCURACY = 0.01
_GAMMA = (1 + SKETCH_ACCURACY) / (1 - SKETCH_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def latency_bucket(ms: float) -> int:
    """The bucket of a latency: every value in it is within 1% of the bucket's representative."""
    return math.ceil(math.log(max(ms, 0.01)) / _LOG_GAMMA)


def sketch_quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of the latencies counted in `buckets` (bucket -> count), within 1%."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen > rank:
            return 2 * _GAMMA**bucket / (_GAMMA + 1)
    return 2 * _GAMMA ** max(buckets) / (_GAMMA + 1)


def latency_summary(buckets: Mapping[int, int]) -> dict[str, float | None]:
    return {f"p{round(q * 100)}": sketch_quantile(buckets, q) for q in (0.5, 0.95, 0.99)}


def latency_quantile_guardrail(g: Guardrail, control: Mapping[int, int], treatment: Mapping[int, int],
                               alpha: float) -> dict[str, Any]:
    """Is treatment's latency quantile (p95) above its limit, with always-valid confidence 1 - alpha?
    From the two variants' latency sketches only (bucket -> count; mergeable, O(buckets)).

    The question is turned into one about a share: treatment's p95 exceeds a threshold T exactly when
    more than 5% of its answers take longer than T. So the test counts treatment's answers above T
    (only buckets lying wholly above T, an undercount) and asks whether that Binomial count shows a
    share above 5% -- stats.share_above, an exact mixture-of-likelihood-ratios test that stays valid
    under continuous monitoring (the guardrail is checked after every batch of outcomes).

    - With `max_value`, T is that limit, and the test has all of alpha.
    - With `max_degradation` d, T = (1 + d) * U, where U is an always-valid upper bound on control's
      p95 (stats.quantile_upper_rank at alpha/2: the order statistic at that rank, read as the upper
      edge of its bucket, an overestimate), and the share test gets the other alpha/2. While control
      has too few answers for a bound (about 110), nothing can breach.
    - Treatment needs 1 / (1 - q) answers (20 for the p95) before it can breach: the test alone would
      already fire on 2 slow answers out of 2, valid for independent answers but not for a cold start.

    Why the false alarm rate stays at most alpha when treatment's true p95 is within its limit
    (q_t <= (1 + d) q_c), however often it is checked: with probability >= 1 - alpha/2, U >= q_c at
    every moment, so T >= (1 + d) q_c >= q_t and treatment's share above T is at most 5%; the count
    above the moving T is at most the count above the fixed (1 + d) q_c, and the test grows with the
    count, so it fires only if the test on that fixed-threshold Binomial does -- probability <= alpha/2
    by Ville's inequality. Union: <= alpha."""
    q = g.latency_quantile or 0.95
    tail = 1 - q
    control_bound = None
    if g.max_value is not None:
        threshold, share_alpha = float(g.max_value), alpha
    else:
        share_alpha = alpha / 2
        n_c = sum(control.values())
        rank = stats.quantile_upper_rank(n_c, q, alpha / 2)
        if rank is not None:
            seen = 0
            for b in sorted(control):
                seen += control[b]
                if seen >= rank:
                    control_bound = _GAMMA**b  # every latency in bucket b is at most its upper edge
                    break
        threshold = math.inf if control_bound is None else (1 + g.max_degradation) * control_bound
    n_t = sum(treatment.values())
    above = sum(count for b, count in treatment.items() if _GAMMA ** (b - 1) >= threshold)
    breached = (n_t >= round(1 / tail) and math.isfinite(threshold)
                and stats.share_above(above, n_t, tail, share_alpha))
    name = f"p{round(q * 100)}"
    control_q, treatment_q = sketch_quantile(control, q), sketch_quantile(treatment, q)
    out = {"metric": g.metric, "max_degradation": g.max_degradation, "max_value": g.max_value,
           "control": {"n": sum(control.values()), name: control_q, f"{name}_upper_bound": control_bound},
           "treatment": {"n": n_t, name: treatment_q, "share_above_threshold": above / n_t if n_t else None},
           "threshold_ms": threshold if math.isfinite(threshold) else None, "max_share_above": tail,
           "difference": None if control_q is None or treatment_q is None else treatment_q - control_q,
           "breached": breached}
    if breached:
        limit = (f"the limit of {g.max_value:.4g} ms" if g.max_value is not None else
                 f"{1 + g.max_degradation:.3g} x control's {name} (at most {control_bound:.4g} ms)")
        out["reason"] = (f"guardrail {g.metric} breached: treatment's latency {name} is above {limit} -- "
                         f"{above} of its {n_t} answers ({above / n_t:.1%}) took longer than {threshold:.4g} ms, "
                         f"more than {tail:.0%} with always-valid confidence {1 - alpha:.0%}; "
                         f"{name} {_ms(treatment_q)} against control's {_ms(control_q)}")
    return out


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g} ms"


@dataclass(frozen=True)
class VariantData:
    units: int
    tallies: Mapping[str, Tally]
    latency_buckets: Mapping[int, int] = field(default_factory=dict)


def compare(m: Metric, control: Tally, treatment: Tally, *, sequential: bool, alpha: float) -> stats.Comparison:
    if m.kind == "rating":
        fixed = stats.mann_whitney(control.levels, treatment.levels, alpha)
    elif m.kind == "rate":
        fixed = stats.two_proportions(control.moments, treatment.moments, alpha)
    else:
        fixed = stats.welch(control.moments, treatment.moments, alpha)
    if not sequential:
        return fixed
    return stats.sequential(fixed, control.moments, treatment.moments, rate=m.kind == "rate", alpha=alpha)


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x


def _comparison_json(m: Metric, c: stats.Comparison) -> dict[str, Any]:
    return {
        "metric": m.name, "kind": m.kind, "test": c.test, "sequential": c.sequential,
        "higher_is_better": m.higher_is_better,
        "control": {"n": c.n_control, "mean": c.control_mean},
        "treatment": {"n": c.n_treatment, "mean": c.treatment_mean},
        "difference": c.difference, "ci": [_clean(c.ci[0]), _clean(c.ci[1])],
        "lift": _clean(c.lift), "lift_ci": [_clean(c.lift_ci[0]), _clean(c.lift_ci[1])] if c.lift_ci else None,
        "p_value": c.p_value, "statistic": c.statistic,
    }


def analyse(design: Design, control: VariantData, treatment: VariantData) -> dict[str, Any]:
    """The experiment's results and recommendation, as stored in `results` and shown live."""
    empty = Tally()
    metrics_out = []
    comparisons = []
    for sm in design.success_metrics:
        m = sm.metric
        c = compare(m, control.tallies.get(m.name, empty), treatment.tallies.get(m.name, empty),
                    sequential=design.sequential, alpha=design.alpha)
        comparisons.append((sm, m, c))
    adjusted = stats.holm([c.p_value for _, _, c in comparisons])
    for (sm, m, c), p_adj in zip(comparisons, adjusted, strict=True):
        out = _comparison_json(m, c)
        out["p_value_adjusted"] = p_adj
        out["significant"] = p_adj < design.alpha
        out["min_effect"] = sm.min_effect
        metrics_out.append(out)

    guardrails_out = []
    for g in design.guardrails:
        if g.latency_quantile is not None:
            guardrails_out.append(latency_quantile_guardrail(g, control.latency_buckets, treatment.latency_buckets,
                                                             design.alpha))
            continue
        m = g.definition
        c = compare(m, control.tallies.get(m.name, empty), treatment.tallies.get(m.name, empty),
                    sequential=True, alpha=design.alpha)
        # Degradation: how much worse treatment is, in the metric's bad direction.
        low, high = c.ci
        worse_low = low if not m.higher_is_better else -high
        breached = c.n_control >= 2 and c.n_treatment >= 2 and worse_low > g.max_degradation
        guardrails_out.append({"metric": m.name, "max_degradation": g.max_degradation,
                               "difference": c.difference, "ci": [_clean(low), _clean(high)], "breached": breached})

    shares = [1 - design.traffic_split, design.traffic_split]
    srm_stat, srm_p = stats.srm([control.units, treatment.units], shares)
    srm_out = {"units": {CONTROL: control.units, TREATMENT: treatment.units}, "expected_shares": shares,
               "chi_square": srm_stat, "p_value": srm_p, "mismatch": srm_p < 0.001}
    winner, reason = recommend(design, metrics_out, guardrails_out, srm_out)
    latency = {CONTROL: latency_summary(control.latency_buckets), TREATMENT: latency_summary(treatment.latency_buckets)}
    return {"metrics": metrics_out, "guardrails": guardrails_out, "srm": srm_out, "latency_ms": latency,
            "recommendation": {"winner": winner, "action": ACTIONS[winner], "reason": reason},
            "sequential": design.sequential, "alpha": design.alpha}


ACTIONS = {TREATMENT: "deploy_treatment", CONTROL: "keep_control", "inconclusive": "inconclusive"}


def recommend(design: Design, metrics_out: list[dict], guardrails_out: list[dict],
              srm_out: dict) -> tuple[str, str]:
    """winner (control, treatment, inconclusive) and why. The first success metric is primary."""
    if srm_out["mismatch"]:
        return "inconclusive", (f"sample ratio mismatch (p = {srm_out['p_value']:.2g}): the split is not what "
                                "was configured, so the results cannot be trusted")
    breached = [g["metric"] for g in guardrails_out if g["breached"]]
    if breached:
        return CONTROL, f"guardrail breached: {', '.join(breached)}"
    primary = metrics_out[0]
    n = min(primary["control"]["n"], primary["treatment"]["n"])
    if n < max(design.min_sample_size, 2):
        return "inconclusive", (f"not enough data: {n} of {design.min_sample_size} outcomes per variant "
                                f"on {primary['metric']}")
    if not primary["significant"]:
        return "inconclusive", (f"no significant difference on {primary['metric']} "
                                f"(adjusted p = {primary['p_value_adjusted']:.3g})")
    better = (primary["difference"] > 0) == primary["higher_is_better"]
    if not better:
        return CONTROL, (f"treatment is significantly worse on {primary['metric']} "
                         f"(adjusted p = {primary['p_value_adjusted']:.3g})")
    min_effect = primary.get("min_effect")
    if min_effect is not None and abs(primary["difference"]) < min_effect:
        return "inconclusive", (f"significant on {primary['metric']} but the difference "
                                f"{primary['difference']:.3g} is below the minimum effect {min_effect}")
    return TREATMENT, (f"treatment is significantly better on {primary['metric']}: "
                       f"{primary['difference']:+.3g} (adjusted p = {primary['p_value_adjusted']:.3g})")


def reported_outcome(metric_name: str, value: float) -> Outcome | None:
    """An OutcomeRecorded value as an outcome; a rating outside 1-5 means nothing."""
    builtin = BUILTIN_METRICS.get(metric_name)
    if builtin is not None and builtin.kind == "rating":
        return Outcome(metric_name, round(value)) if 1 <= value <= LEVELS else None
    return Outcome(metric_name, value)
