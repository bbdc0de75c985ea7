"""The rules that turn Quilt's numbers into a verdict on one of the paper's claims (issue 10 §2),
written once for every analysis script.

- Difference claims ("from scratch loses 1.69 pt top-1"): the mean difference across seeds with
  its two-sided 95% confidence interval (Student t, n − 1 degrees of freedom).
  SHOWS when the mean has the paper's sign and the interval excludes 0; DOES NOT SHOW when the
  interval excludes the paper's direction (lies entirely on the other side of 0, or touches 0
  from there); INCONCLUSIVE otherwise, and always with fewer than 2 seeds ("1 seed").
- Negligible claims ("−0.05% on average", "less than 0.4% of compute"): an equivalence test,
  CI within a margin the script states: SHOWS when the whole 95% interval lies inside the margin,
  DOES NOT SHOW when it lies entirely outside, INCONCLUSIVE otherwise.
- Deterministic runs (the `modeled` time model computes board time from a profile: repeating
  the run gives the same number) have no run-to-run variance: the interval is degenerate, the
  verdict rests on the point value, and the line says so.

Every verdict prints as one line with Quilt's mean ± CI, n seeds, the paper's number and whether
the runs converged ("unknown" when the result files do not record it); a verdict resting on runs
that did not meet their convergence rule (training.converge_window) ends with "NOT CONVERGED".
"""
import math
from dataclasses import dataclass, field

import numpy as np

SHOWS, DOES_NOT_SHOW, INCONCLUSIVE = "SHOWS", "DOES NOT SHOW", "INCONCLUSIVE"
LEVEL = 0.95


def t_quantile(df, level=LEVEL):
    """Two-sided Student t critical value for `df` degrees of freedom."""
    try:
        from scipy import stats
        return float(stats.t.ppf(0.5 + level / 2, df))
    except ImportError:  # pragma: no cover - scipy is a Debian dependency of the analysis
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
                 8: 2.306, 9: 2.262, 10: 2.228}
        return table.get(int(df), 1.96)


@dataclass
class Estimate:
    """A mean with its 95% CI over n independent values (seeds). kind: "seeds" (CI from the
    spread), "deterministic" (values that do not vary between runs: CI degenerate), or "none"
    (no values)."""
    mean: float
    low: float
    high: float
    n: int
    kind: str = "seeds"

    def text(self, unit="", digits=2, signed=True):
        """'+1.23 ± 0.45 pt [+0.78, +1.68], 3 seeds' and its 1-seed / deterministic forms."""
        f = (lambda x: f"{x:+.{digits}f}") if signed else (lambda x: f"{x:.{digits}f}")
        u = f" {unit}" if unit else ""
        if self.n == 0 or math.isnan(self.mean):
            return "no data"
        if self.kind == "deterministic":
            return f"{f(self.mean)}{u} (deterministic: CI degenerate, n={self.n})"
        if self.n < 2:
            return f"{f(self.mean)}{u} (1 seed: no CI)"
        half = (self.high - self.low) / 2
        return (f"{f(self.mean)} ± {half:.{digits}f}{u} [{f(self.low)}, {f(self.high)}], "
                f"{self.n} seeds")


def estimate(values, deterministic=False, level=LEVEL):
    """Estimate of the mean of `values` (NaNs dropped) with its Student-t CI."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(float(x))], float)
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    m = float(v.mean())
    if deterministic:
        return Estimate(m, m, m, n, "deterministic")
    if n < 2:
        return Estimate(m, m, m, 1)
    half = t_quantile(n - 1, level) * float(v.std(ddof=1)) / math.sqrt(n)
    return Estimate(m, m - half, m + half, n)


def paired(base_by_seed, other_by_seed, deterministic=False):
    """Estimate of other − base over the seeds both have ({seed: value} dicts)."""
    common = sorted(set(base_by_seed) & set(other_by_seed), key=str)
    return estimate([other_by_seed[s] - base_by_seed[s] for s in common], deterministic)


def welch(base, other, deterministic=False, level=LEVEL):
    """Estimate of mean(other) − mean(base) for unpaired seeds (Welch's t interval); n is the
    smaller group's size."""
    a = np.asarray([x for x in base if not math.isnan(x)], float)
    b = np.asarray([x for x in other if not math.isnan(x)], float)
    if len(a) == 0 or len(b) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    m = float(b.mean() - a.mean())
    n = min(len(a), len(b))
    if deterministic or n < 2:
        return Estimate(m, m, m, n, "deterministic" if deterministic else "seeds")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(m, m, m, n)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(df, level) * se
    return Estimate(m, m - half, m + half, n)


def not_converged(text):
    """True for a converged_text() that reports runs which did not meet the convergence rule."""
    return str(text).startswith("no")


def converged_text(flags):
    """'yes', 'no (k of n runs not converged)' or 'unknown' for per-run convergence flags
    (None = not recorded)."""
    flags = list(flags)
    if not flags or any(f is None or (isinstance(f, float) and math.isnan(f)) for f in flags):
        return "unknown"
    bad = sum(1 for f in flags if not bool(f))
    return "yes" if bad == 0 else f"no ({bad} of {len(flags)} runs not converged)"


@dataclass
class Verdict:
    """One claim of the paper checked against Quilt's runs."""
    claim: str
    verdict: str
    estimate: Estimate
    paper: str
    unit: str = ""
    rule: str = ""
    converged: str = "unknown"
    notes: list = field(default_factory=list)
    digits: int = 2

    def line(self):
        """'VERDICT  claim: Quilt <mean ± CI>; paper <x>; converged <c>. <rule>. <notes>'"""
        out = (f"{self.verdict:<13} {self.claim}: Quilt {self.estimate.text(self.unit, self.digits)}"
               f"; paper {self.paper}; converged: {self.converged}.")
        if self.rule:
            out += f" Rule: {self.rule}."
        for n in self.notes:
            out += f" {n}"
        if not_converged(self.converged):
            out += (" NOT CONVERGED: some runs stopped at their maximum epochs before their test "
                    "accuracy was flat (training.converge_window); the verdict is provisional.")
        return out


def _decide(est, shows, does_not_show):
    """(verdict, notes): INCONCLUSIVE without enough runs ("1 seed"), else SHOWS or DOES NOT SHOW
    when the predicate on (low, high) of the 95% CI holds, INCONCLUSIVE otherwise."""
    if est.n == 0 or (est.kind != "deterministic" and est.n < 2):
        why = "no runs to compare" if est.n == 0 else "1 seed"
        return INCONCLUSIVE, [f"INCONCLUSIVE: {why}."]
    if shows(est.low, est.high):
        return SHOWS, []
    return (DOES_NOT_SHOW if does_not_show(est.low, est.high) else INCONCLUSIVE), []


def difference(claim, est, paper_value, unit="pt", paper_text=None, converged="unknown",
               digits=2):
    """Difference claim: the paper says the effect is `paper_value` (its sign is the claimed
    direction). `est` is Quilt's estimate of the same difference."""
    d = 1 if paper_value > 0 else -1
    v, notes = _decide(est, lambda lo, hi: min(lo * d, hi * d) > 0,
                       lambda lo, hi: max(lo * d, hi * d) <= 0)
    paper = paper_text or f"{paper_value:+g} {unit}".strip()
    return Verdict(claim, v, est, paper, unit, "difference, 95% CI against 0", converged, notes,
                   digits)


def negligible(claim, est, margin, paper_text, unit="pt", converged="unknown", digits=2):
    """Negligible claim: equivalence within `margin`, a (low, high) pair (None = unbounded) or a
    number m meaning (−m, +m). SHOWS when the 95% CI lies inside, DOES NOT SHOW when entirely
    outside, INCONCLUSIVE otherwise."""
    lo_m, hi_m = (-margin, margin) if isinstance(margin, (int, float)) else margin
    lo_m = -math.inf if lo_m is None else lo_m
    hi_m = math.inf if hi_m is None else hi_m
    v, notes = _decide(est, lambda lo, hi: lo_m <= lo and hi <= hi_m,
                       lambda lo, hi: lo > hi_m or hi < lo_m)
    bounds = " and ".join(b for b in ((f"≥ {lo_m:g}" if lo_m > -math.inf else ""),
                                      (f"≤ {hi_m:g}" if hi_m < math.inf else "")) if b)
    rule = f"equivalence, 95% CI {bounds} {unit}".rstrip()
    return Verdict(claim, v, est, paper_text, unit, rule, converged, notes, digits)


def not_testable(claim, why, paper_text):
    """A claim this data cannot test (missing arms): INCONCLUSIVE with the reason."""
    return Verdict(claim, INCONCLUSIVE, Estimate(math.nan, math.nan, math.nan, 0, "none"),
                   paper_text, notes=[f"Not testable here: {why}."])


def spearman(x, y):
    """Spearman rank correlation of two equal-length sequences (ties get average ranks); NaN
    when fewer than 3 points or a sequence is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return math.nan

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):
            same = v == value
            r[same] = r[same].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])
