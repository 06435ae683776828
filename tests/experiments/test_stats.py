"""The statistics against scipy and statsmodels computed on the same raw outcomes, and A/A
simulations: the fixed-horizon tests reject at the nominal rate, the sequential mode at or below it
however often one peeks."""

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from services.experiments import stats
from services.experiments.stats import Moments

RNG = np.random.default_rng(20261201)


def moments(values) -> Moments:
    values = np.asarray(values, dtype=float)
    return Moments(len(values), float(values.sum()), float((values**2).sum()))


def test_welch_matches_scipy_and_statsmodels():
    control, treatment = RNG.normal(10, 3, 400), RNG.normal(10.6, 4, 350)
    result = stats.welch(moments(control), moments(treatment))
    expected = sps.ttest_ind(treatment, control, equal_var=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    low, high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(usevar="unequal")
    assert result.ci == pytest.approx((low, high), rel=1e-9)
    assert result.difference == pytest.approx(treatment.mean() - control.mean())
    assert result.lift == pytest.approx(treatment.mean() / control.mean() - 1)


def test_two_proportions_match_statsmodels():
    control, treatment = RNG.binomial(1, 0.30, 2000), RNG.binomial(1, 0.34, 1800)
    result = stats.two_proportions(moments(control), moments(treatment))
    z, p = proportions_ztest([treatment.sum(), control.sum()], [len(treatment), len(control)])
    assert (result.statistic, result.p_value) == pytest.approx((z, p), rel=1e-9)
    low, high = confint_proportions_2indep(treatment.sum(), len(treatment), control.sum(), len(control),
                                           method="wald", compare="diff")
    assert result.ci == pytest.approx((low, high), rel=1e-9)


def test_mann_whitney_from_level_counts_matches_scipy_on_the_raw_ratings():
    control = RNG.choice([1, 2, 3, 4, 5], 300, p=[0.1, 0.15, 0.3, 0.3, 0.15])
    treatment = RNG.choice([1, 2, 3, 4, 5], 280, p=[0.05, 0.1, 0.3, 0.35, 0.2])
    levels = lambda r: [int((r == k).sum()) for k in range(1, 6)]  # noqa: E731
    result = stats.mann_whitney(levels(control), levels(treatment))
    expected = sps.mannwhitneyu(treatment, control, method="asymptotic", use_continuity=True)
    assert result.extra["u"] == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.difference == pytest.approx(treatment.mean() - control.mean())


def test_holm_matches_statsmodels():
    p = [0.01, 0.04, 0.03, 0.20, 0.002]
    assert stats.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_srm_matches_scipy_chisquare_and_flags_a_broken_split():
    statistic, p = stats.srm([5200, 4800], [0.5, 0.5])
    expected = sps.chisquare([5200, 4800], [5000, 5000])
    assert (statistic, p) == pytest.approx((expected.statistic, expected.pvalue))
    assert p < 0.001
    assert stats.srm([7020, 2980], [0.7, 0.3])[1] > 0.001


def test_the_confidence_sequence_is_wider_than_the_fixed_interval_and_shrinks_with_data():
    fixed = 1.96 * math.sqrt(2 / 1000)
    assert stats.cs_halfwidth(2 / 1000, 2000) > fixed
    assert stats.cs_halfwidth(2 / 10_000, 20_000) < stats.cs_halfwidth(2 / 1000, 2000)


def _aa_means(experiments: int, n: int):
    """Per-arm sums of A/A experiments, each arm n normal outcomes."""
    a, b = RNG.normal(5, 2, (experiments, n)), RNG.normal(5, 2, (experiments, n))
    return a, b


def test_a_a_fixed_horizon_rejects_at_the_nominal_rate():
    a, b = _aa_means(4000, 100)
    rejections = sum(stats.welch(moments(x), moments(y)).p_value < 0.05 for x, y in zip(a, b, strict=True))
    assert 0.04 <= rejections / 4000 <= 0.06  # 0.05 +- 3 standard errors

    rates_a, rates_b = RNG.binomial(1, 0.2, (4000, 300)), RNG.binomial(1, 0.2, (4000, 300))
    rejections = sum(stats.two_proportions(moments(x), moments(y)).p_value < 0.05
                     for x, y in zip(rates_a, rates_b, strict=True))
    assert 0.04 <= rejections / 4000 <= 0.06


def test_a_a_sequential_stays_at_or_below_nominal_under_peeking_where_fixed_horizon_does_not():
    experiments, n, peeks = 1000, 1000, 20
    a, b = _aa_means(experiments, n)
    looks = np.linspace(n // peeks, n, peeks, dtype=int)
    ca, cb, ca2, cb2 = (np.cumsum(x, axis=1) for x in (a, b, a**2, b**2))
    sequential_hits = fixed_hits = 0
    for e in range(experiments):
        seq = fix = False
        for k in looks:
            mc = Moments(int(k), ca[e, k - 1], ca2[e, k - 1])
            mt = Moments(int(k), cb[e, k - 1], cb2[e, k - 1])
            fixed = stats.welch(mc, mt)
            fix |= fixed.p_value < 0.05
            low, high = stats.sequential(fixed, mc, mt).ci
            seq |= low > 0 or high < 0
        sequential_hits += seq
        fixed_hits += fix
    assert sequential_hits / experiments <= 0.05
    assert fixed_hits / experiments > 0.1  # peeking at a fixed-horizon test inflates its error


def test_sequential_p_value_agrees_with_its_interval():
    """p < alpha exactly when the sequence excludes zero, whatever the data (a p-value found by
    searching over alpha, with the mixture changing with it, once disagreed: 0.41 beside an
    interval that only just held zero)."""
    for _ in range(500):
        nc, nt = RNG.integers(20, 400, 2)
        xc, xt = RNG.binomial(nc, 0.35), RNG.binomial(nt, RNG.uniform(0.3, 0.9))
        c, t = Moments(int(nc), float(xc), float(xc)), Moments(int(nt), float(xt), float(xt))
        result = stats.sequential(stats.two_proportions(c, t), c, t, rate=True)
        assert (result.p_value < 0.05) == (result.ci[0] > 0 or result.ci[1] < 0)
    c, t = Moments(79, 31, 31), Moments(81, 63, 63)
    result = stats.sequential(stats.two_proportions(c, t), c, t, rate=True)
    assert result.ci[0] < 0 and 0.05 < result.p_value < 0.07


def test_the_share_test_statistic_matches_its_mixture_integral():
    """share_above_evidence's closed form against the mixture integrated numerically on the same counts."""
    from scipy import integrate

    def ratio(theta, k, n, p0):
        return (theta / p0) ** k * ((1 - theta) / (1 - p0)) ** (n - k) / (1 - p0)

    for k, n, p0 in [(0, 10, 0.05), (3, 20, 0.05), (40, 300, 0.05), (97, 100, 0.95), (960, 1000, 0.95)]:
        mixture, _ = integrate.quad(ratio, p0, 1, args=(k, n, p0), epsabs=0, epsrel=1e-10, limit=200)
        assert stats.share_above_evidence(k, n, p0) == pytest.approx(math.log(mixture), abs=1e-6)


def test_a_a_the_share_test_stays_below_alpha_however_often_one_looks():
    """Bernoulli(5%) streams, the boundary of "at most 5%", looked at 200 times each up to n = 5000: the
    test fires in at most alpha of them (and it does fire on a 9% share)."""
    looks = np.unique(np.geomspace(10, 5000, 200).astype(int))
    streams = RNG.binomial(1, 0.05, (1000, 5000)).cumsum(axis=1)
    fired = sum(any(stats.share_above(int(s[n - 1]), int(n), 0.05, 0.05) for n in looks) for s in streams)
    assert fired / len(streams) <= 0.05
    worse = RNG.binomial(1, 0.09, (200, 5000)).cumsum(axis=1)
    assert sum(stats.share_above(int(s[-1]), 5000, 0.05, 0.05) for s in worse) / 200 >= 0.95


def test_the_quantile_upper_bound_covers_the_true_p95_at_every_look():
    """The order statistic at quantile_upper_rank stays at or above the true p95 at all 30 looks in at
    least 1 - alpha of the runs, and comes close to it as data grows."""
    true_p95 = math.exp(5 + 0.6 * sps.norm.ppf(0.95))
    looks = np.unique(np.geomspace(120, 20_000, 30).astype(int))
    missed = 0
    for _ in range(300):
        values = RNG.lognormal(5, 0.6, 20_000)
        for n in looks:
            rank = stats.quantile_upper_rank(int(n), 0.95, 0.05)
            if rank is not None and np.partition(values[:n], rank - 1)[rank - 1] < true_p95:
                missed += 1
                break
    assert missed / 300 <= 0.05
    rank = stats.quantile_upper_rank(20_000, 0.95, 0.05)
    assert 0.95 < rank / 20_000 < 0.96
    assert stats.quantile_upper_rank(50, 0.95, 0.05) is None  # too few observations for any bound
