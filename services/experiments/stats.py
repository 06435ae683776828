"""The statistics of an experiment, from sufficient statistics only (count, sum, sum of squares, or
counts per rating level), so an analysis costs the same for ten outcomes or ten million.

Fixed-horizon tests: Welch's t-test for means, a two-proportion z-test for rates (pooled standard
error for the p-value, unpooled for the interval), Mann-Whitney U for ratings from per-level counts
(normal approximation with tie and continuity corrections, as scipy's asymptotic method). Lift is
relative to control, its interval by the delta method. Several metrics: Holm's step-down.

Sequential mode: an always-valid confidence sequence for the difference (the normal mixture of
Robbins, as in Howard et al. 2021 and GrowthBook's gbstats), valid however often one looks; its
p-value is the smallest alpha whose sequence excludes zero.

Tail shares and quantiles (the latency guardrail): an exact always-valid test that a share is above
p0 (a mixture of binomial likelihood ratios and Ville's inequality), and from it an always-valid
upper bound on a quantile as an order statistic (Howard & Ramdas 2022).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# scipy.special's ufuncs: the same distributions as scipy.stats at a hundredth of the call cost.
from scipy import special

ALPHA = 0.05
# The mixture's tuning: the sample size around which the sequence is tightest (gbstats' default).
SEQUENTIAL_TUNING = 5000


@dataclass(frozen=True)
class Moments:
    """count, sum and sum of squares of a metric's outcomes in one variant."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The sample variance (n - 1)."""
        if self.n < 2:
            return 0.0
        return max(self.total_sq - self.total * self.total / self.n, 0.0) / (self.n - 1)

    def merge(self, other: "Moments") -> "Moments":
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @classmethod
    def of(cls, values: Sequence[float]) -> "Moments":
        return cls(len(values), float(sum(values)), float(sum(v * v for v in values)))


def levels_moments(levels: Sequence[int]) -> Moments:
    """Moments of ratings given as counts per level (levels[i] = how many rated i + 1)."""
    n = sum(levels)
    total = sum((i + 1) * c for i, c in enumerate(levels))
    total_sq = sum((i + 1) ** 2 * c for i, c in enumerate(levels))
    return Moments(n, float(total), float(total_sq))


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one metric."""

    test: str
    control_mean: float
    treatment_mean: float
    difference: float
    ci: tuple[float, float]
    lift: float | None
    lift_ci: tuple[float, float] | None
    p_value: float
    statistic: float
    n_control: int
    n_treatment: int
    sequential: bool = False
    extra: dict = field(default_factory=dict)


def _lift(c: Moments, t: Moments, var_c: float, var_t: float, z: float):
    """Relative lift t/c - 1 and its delta-method interval (var_* are the variances of the means)."""
    if c.n == 0 or c.mean == 0:
        return None, None
    lift = t.mean / c.mean - 1
    se = math.sqrt(var_t / c.mean**2 + t.mean**2 * var_c / c.mean**4)
    return lift, (lift - z * se, lift + z * se)


def welch(control: Moments, treatment: Moments, alpha: float = ALPHA) -> Comparison:
    """Welch's t-test for the difference of means."""
    var_c = control.variance / control.n if control.n else 0.0
    var_t = treatment.variance / treatment.n if treatment.n else 0.0
    diff = treatment.mean - control.mean
    se = math.sqrt(var_c + var_t)
    if control.n < 2 or treatment.n < 2 or se == 0:
        return Comparison("welch_t", control.mean, treatment.mean, diff, (diff, diff), None, None, 1.0, 0.0,
                          control.n, treatment.n)
    df = (var_c + var_t) ** 2 / (var_c**2 / (control.n - 1) + var_t**2 / (treatment.n - 1))
    statistic = diff / se
    p = 2 * special.stdtr(df, -abs(statistic))
    q = special.stdtrit(df, 1 - alpha / 2)
    lift, lift_ci = _lift(control, treatment, var_c, var_t, q)
    return Comparison("welch_t", control.mean, treatment.mean, diff, (diff - q * se, diff + q * se), lift, lift_ci,
                      float(p), float(statistic), control.n, treatment.n, extra={"df": df})


def two_proportions(control: Moments, treatment: Moments, alpha: float = ALPHA) -> Comparison:
    """Two-proportion z-test (successes = sum): pooled SE for the test, unpooled for the interval."""
    pc, pt = control.mean, treatment.mean
    diff = pt - pc
    if control.n == 0 or treatment.n == 0:
        return Comparison("two_proportion_z", pc, pt, diff, (diff, diff), None, None, 1.0, 0.0, control.n, treatment.n)
    pooled = (control.total + treatment.total) / (control.n + treatment.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    var_c, var_t = pc * (1 - pc) / control.n, pt * (1 - pt) / treatment.n
    se = math.sqrt(var_c + var_t)
    statistic = diff / se_pooled if se_pooled else 0.0
    p = 2 * special.ndtr(-abs(statistic)) if se_pooled else 1.0
    z = special.ndtri(1 - alpha / 2)
    lift, lift_ci = _lift(control, treatment, var_c, var_t, z)
    return Comparison("two_proportion_z", pc, pt, diff, (diff - z * se, diff + z * se), lift, lift_ci,
                      float(p), float(statistic), control.n, treatment.n)


def mann_whitney(control_levels: Sequence[int], treatment_levels: Sequence[int], alpha: float = ALPHA) -> Comparison:
    """Mann-Whitney U on ratings given as counts per level; the effect shown is the difference of
    mean ratings (Welch interval), the p-value the rank test's (treatment's U, two-sided)."""
    c, t = list(control_levels), list(treatment_levels)
    n1, n2 = sum(t), sum(c)
    means = welch(levels_moments(c), levels_moments(t), alpha)
    if n1 == 0 or n2 == 0:
        return Comparison("mann_whitney_u", means.control_mean, means.treatment_mean, means.difference, means.ci,
                          means.lift, means.lift_ci, 1.0, 0.0, n2, n1)
    # Mid-ranks of each level over the pooled sample.
    u1 = 0.0
    below = 0
    tie_term = 0.0
    for ct, cc in zip(t, c, strict=True):
        tied = ct + cc
        mid_rank = below + (tied + 1) / 2
        u1 += ct * mid_rank
        tie_term += tied**3 - tied
        below += tied
    u1 -= n1 * (n1 + 1) / 2
    n = n1 + n2
    mu = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))) if n > 1 else 0.0
    if sigma == 0:
        p, statistic = 1.0, 0.0
    else:
        statistic = (abs(u1 - mu) - 0.5) / sigma  # continuity correction, as scipy's default
        p = min(1.0, 2 * special.ndtr(-max(statistic, 0.0)))
    return Comparison("mann_whitney_u", means.control_mean, means.treatment_mean, means.difference, means.ci,
                      means.lift, means.lift_ci, float(p), float(u1), n2, n1,
                      extra={"u": u1, "probability_treatment_higher": u1 / (n1 * n2)})


def mixture_rho(alpha: float = ALPHA, tuning: int = SEQUENTIAL_TUNING) -> float:
    """The normal mixture's spread that makes the sequence tightest near `tuning` observations."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)


def cs_halfwidth(variance_of_estimate: float, n: int, alpha: float = ALPHA, tuning: int = SEQUENTIAL_TUNING) -> float:
    """Half-width of the always-valid (1 - alpha) confidence sequence for an estimate whose variance
    is `variance_of_estimate` after `n` observations in all (Howard et al. 2021, eq. 14)."""
    if n == 0:
        return math.inf
    rho = mixture_rho(alpha, tuning)
    s2 = variance_of_estimate * n
    r = n * rho**2
    return math.sqrt(s2) * math.sqrt(2 * (r + 1) / (n * r) * math.log(math.sqrt(r + 1) / alpha))


def _variances_of_means(control: Moments, treatment: Moments, rate: bool) -> tuple[float, float]:
    """For rates, from (successes + 1/2) / (n + 1): at 0% or 100% the plain estimate says "no
    variance" and the sequence would never close, so an arm that always fails could never breach."""
    def one(m: Moments) -> float:
        if m.n == 0:
            return 0.0
        if rate:
            shrunk = (m.total + 0.5) / (m.n + 1)
            return shrunk * (1 - shrunk) / m.n
        return m.variance / m.n

    return one(control), one(treatment)


def sequential(fixed: Comparison, control: Moments, treatment: Moments, *, rate: bool = False,
               alpha: float = ALPHA, tuning: int = SEQUENTIAL_TUNING) -> Comparison:
    """The same comparison with an always-valid interval and p-value."""
    var_c, var_t = _variances_of_means(control, treatment, rate)
    var = var_c + var_t
    n = control.n + treatment.n
    if var == 0 or control.n < 2 or treatment.n < 2:
        return Comparison(fixed.test, fixed.control_mean, fixed.treatment_mean, fixed.difference,
                          (-math.inf, math.inf), fixed.lift, None, 1.0, 0.0, control.n, treatment.n, sequential=True)
    half = cs_halfwidth(var, n, alpha, tuning)
    diff = fixed.difference
    # The lift's interval widened by the same factor as the difference's.
    _, lift_ci = _lift(control, treatment, var_c, var_t, half / math.sqrt(var))
    return Comparison(fixed.test, fixed.control_mean, fixed.treatment_mean, diff, (diff - half, diff + half),
                      fixed.lift, lift_ci, _sequential_p(abs(diff), var, n, alpha, tuning), fixed.statistic,
                      control.n, treatment.n, sequential=True, extra=fixed.extra)


def _sequential_p(abs_diff: float, var: float, n: int, alpha: float, tuning: int) -> float:
    """The always-valid p-value of the same mixture (its spread fixed by the design's alpha): the
    smallest level whose sequence excludes zero, in closed form. halfwidth(a)^2 = var n * 2 (r + 1) /
    (n^2 rho^2) * (log sqrt(r + 1) - log a) with r = n rho^2; solved for a at halfwidth = |diff|.
    p < alpha exactly when the (1 - alpha) sequence excludes zero."""
    rho = mixture_rho(alpha, tuning)
    r = n * rho**2
    s2 = var * n
    return min(1.0, math.sqrt(r + 1) * math.exp(-abs_diff**2 * n * r / (2 * s2 * (r + 1))))


def share_above_evidence(k: int, n: int, p0: float) -> float:
    """The log of an exact always-valid test's statistic for "the share of successes is above p0",
    after k successes in n independent trials: Robbins' mixture of likelihood ratios, Bernoulli(theta)
    against Bernoulli(p0), with theta uniform on (p0, 1),

        M_n = integral over (p0, 1) of (theta / p0)^k ((1 - theta) / (1 - p0))^(n - k) dtheta / (1 - p0)
            = B(k + 1, n - k + 1) P(Beta(k + 1, n - k + 1) > p0) / ((1 - p0) p0^k (1 - p0)^(n - k)).

    For any true share p <= p0, M_n is a nonnegative supermartingale with M_0 = 1 (each factor has
    expectation p theta / p0 + (1 - p)(1 - theta) / (1 - p0) <= 1 when theta > p0), so by Ville's
    inequality P(M_n >= 1/alpha for some n) <= alpha: valid however often it is looked at, at every
    n (no normal approximation, which is poorest for tail shares near 5%). M_n grows with k."""
    if n <= 0:
        return 0.0
    a, b = k + 1.0, n - k + 1.0
    upper = special.betaincc(a, b, p0)
    if upper <= 0:
        return -math.inf
    return float(special.betaln(a, b) + math.log(upper) - math.log1p(-p0) - k * math.log(p0)
                 - (n - k) * math.log1p(-p0))


def share_above(k: int, n: int, p0: float, alpha: float = ALPHA) -> bool:
    """Whether k successes in n show, with always-valid confidence 1 - alpha, a share above p0."""
    return share_above_evidence(k, n, p0) >= math.log(1 / alpha)


def quantile_upper_rank(n: int, q: float, alpha: float = ALPHA) -> int | None:
    """The smallest rank k (1..n) whose order statistic is an always-valid upper bound on the
    q-quantile: with probability at least 1 - alpha, at every n at once, no value with at least k of
    the n observations at or below it is under the true q-quantile (Howard & Ramdas 2022, "Sequential
    estimation of quantiles"). Why: were such a value below the quantile, the count of observations
    below the quantile, a Binomial(n, p) with p <= q, would be at least k, and share_above(k, n, q,
    alpha) -- which grows with k -- would have fired on it; that happens with probability <= alpha
    over all n. None while n is too small for any rank to do (about 110 observations for q = 0.95
    and alpha = 0.025)."""
    if n <= 0 or not share_above(n, n, q, alpha):
        return None
    low, high = 0, n  # share_above(low) is false (or low = 0), share_above(high) is true
    while high - low > 1:
        mid = (low + high) // 2
        if share_above(mid, n, q, alpha):
            high = mid
        else:
            low = mid
    return high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def srm(observed: Sequence[int], expected_shares: Sequence[float]) -> tuple[float, float]:
    """Sample-ratio mismatch: chi-square statistic and p-value of the observed units per variant
    against the configured shares."""
    n = sum(observed)
    if n == 0:
        return 0.0, 1.0
    statistic = sum((o - n * s) ** 2 / (n * s) for o, s in zip(observed, expected_shares, strict=True) if s > 0)
    dof = sum(1 for s in expected_shares if s > 0) - 1
    if dof < 1:
        return 0.0, 1.0
    return float(statistic), float(special.chdtrc(dof, statistic))
