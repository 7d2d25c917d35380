"""An incident's priority: how strongly its alerts, taken together, say "this is not normal traffic".

Each alert carries ``normal_rank``, the share of the model's normal calibration rows that scored below it,
and ``threshold_fpr``, the share of them above the alert threshold. Every alert is above the threshold, so
under the null hypothesis "this is normal traffic" its tail share ``1 - normal_rank`` is uniform on
``(0, threshold_fpr)``: the conditional p-value ``q = (1 - normal_rank) / threshold_fpr`` is uniform on (0, 1).
An alert just over the line says little (q near 1); one rarer than anything in calibration says a lot
(q near ``P_FLOOR / threshold_fpr``: the calibration resolves tails down to 1e-4 and no further).

How fast the alerts come is the second piece of evidence: the busiest minute's count (event time). The
service's gap (``--gap-s``) is its statement of how sparse unrelated alerts of one signature are: further
apart than that, they are two incidents. Under the null, a signature's alerts arrive at most once per gap,
or at its kind's own learned rate where that is higher (``incidents.baselines``: a service that always raises
30 false alerts a minute is normal at 30), so a minute holds ``N ~ Poisson(max(60 s / gap, baseline))`` of
them, and ``P(N >= peak | N >= 1)`` (conditioned, like the alerts, on there being one at all) is the rate's
p-value. A flood (hundreds in a minute) is astronomically
unlikely under that; a steady trickle, however long, is not: its busiest minute holds one or two.

The two p-values, rarity (Fisher's method over the k alerts: chi-square with 2k degrees of freedom) and rate,
are combined by Fisher's method again (chi-square with 4 degrees of freedom); the priority is ``-log10`` of
the result: evidence on a decimal scale (2 = odds of 1 in 100 under normal traffic). Why this and not a sum
of severities: alerts that are merely alerts add nothing (a thousand just over the line over a day leave
both p-values near 1), while a sum of severities grows with every one of them, so a noisy normal service
outranks a short, clearly abnormal burst (``tests/unit/test_triage.py`` has that case). Alerts far beyond
calibration add about ``2 ln(threshold_fpr / 1e-4)`` each (9.2 at FPR 0.01): one alone is priority 1.25
(below the default page floor of 2: a single alert pages no one), two in a minute 3.0, ten in a minute
about 20. The README compares it with the sum and the maximum of severities, the alert count and arrival
order on the same incidents (``python -m scripts.evaluate_incidents``).

Everything here is a pure function of numbers the incident record keeps (``rarity``, alerts, span), so a
restored incident continues with the same priority.
"""

from __future__ import annotations

import math

P_FLOOR = 1e-4  # the calibration's tail resolution (model.calibration.MIN_FPR)
DEFAULT_FPR = 0.01  # for alerts from bundles without calibration scores (no normal_rank)
_LN10 = math.log(10.0)


def rarity(normal_rank: float | None, threshold_fpr: float | None) -> float:
    """Fisher's term ``-2 ln q`` of one alert (>= 0): 0 when it says nothing beyond being an alert."""
    if normal_rank is None:
        return 0.0
    fpr = threshold_fpr if threshold_fpr is not None and threshold_fpr > 0 else DEFAULT_FPR
    tail = max(1.0 - normal_rank, P_FLOOR)
    q = min(1.0, tail / max(fpr, P_FLOOR))
    return -2.0 * math.log(q)


def log_chi2_sf_even(x: float, dof: int) -> float:
    """Natural log of the chi-square survival function for an even number of degrees of freedom.

    With ``dof = 2m``, ``sf(x) = P(Poisson(x/2) <= m - 1)``: exact (a log-sum of m terms) for m up to 60,
    the Wilson-Hilferty normal approximation above (relative error in the log well under 1% there; floods
    have m in the thousands and only their order matters)."""
    m = dof // 2
    half = x / 2.0
    if half <= 0:
        return 0.0
    if m <= 60:
        # log sum_{j<m} half^j / j!  - half, summed in log space from the largest term down
        terms = [j * math.log(half) - math.lgamma(j + 1) for j in range(m)]
        top = max(terms)
        return min(0.0, top + math.log(sum(math.exp(t - top) for t in terms)) - half)
    nu = float(dof)
    z = ((x / nu) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * nu))) / math.sqrt(2.0 / (9.0 * nu))
    return _log_normal_sf(z)


def _log_normal_sf(z: float) -> float:
    if z < 5.0:
        return math.log(0.5 * math.erfc(z / math.sqrt(2.0)))
    # asymptotic expansion of the Mills ratio: erfc underflows long before floods stop growing
    return -0.5 * z * z - math.log(z * math.sqrt(2.0 * math.pi)) + math.log1p(-1.0 / (z * z) + 3.0 / z**4)


def log_poisson_tail(k: int, mu: float) -> float:
    """Natural log of ``P(N >= k)`` for ``N ~ Poisson(mu)``."""
    if k <= 0:
        return 0.0
    if k <= mu:
        # the tail is most of the mass: 1 - P(N <= k-1), from the lower sum (k <= mu keeps this small)
        lower = math.exp(log_chi2_sf_even(2.0 * mu, 2 * k))  # P(N <= k-1) = chi2.sf(2 mu, 2k)
        return math.log(max(1.0 - lower, 1e-300))
    # P(N >= k) = pmf(k) * sum_{j>=0} mu^j k!/(k+j)!, a series whose terms shrink by mu/(k+j+1) < 1
    log_pmf = k * math.log(mu) - mu - math.lgamma(k + 1) if mu > 0 else -math.inf
    total, term, j = 1.0, 1.0, 0
    while term > 1e-12 * total and j < 10_000:
        j += 1
        term *= mu / (k + j)
        total += term
    return min(0.0, log_pmf + math.log(total))


def rate_log_p(peak_per_min: int, gap_ms: int, baseline_per_min: float = 0.0) -> float:
    """Natural log of the rate's p-value: a minute with ``peak_per_min`` alerts, given it has one, under the
    kind's learned rate (``incidents.baselines``) or one alert per gap, whichever is higher."""
    mu = max(60_000.0 / gap_ms, baseline_per_min)
    return min(0.0, log_poisson_tail(peak_per_min, mu) - log_poisson_tail(1, mu))


def priority(rarity_sum: float, alerts: int, peak_per_min: int, gap_ms: int, baseline_per_min: float = 0.0) -> float:
    """``-log10`` of Fisher's combination of the rarity p-value (over the alerts) and the rate p-value (>= 0)."""
    if alerts <= 0:
        return 0.0
    log_p_rarity = log_chi2_sf_even(rarity_sum, 2 * alerts)
    x = -2.0 * (log_p_rarity + rate_log_p(max(1, peak_per_min), gap_ms, baseline_per_min))
    return max(0.0, -log_chi2_sf_even(x, 4) / _LN10)


def rate_per_min(alerts: int, span_ms: int) -> float:
    """Alerts per minute over the span, a span of under a minute counted as one minute."""
    return alerts / max(span_ms / 60_000.0, 1.0)
