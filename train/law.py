"""Scaling laws of translation performance against the amount of translation data.

Every family has the shape

    P_L(n) = b_L + A · exp(γ · (s_L − s̄)) · g(n; β)

for language L with n English→L training pairs: ``b_L`` is the language's score without
translation data (one parameter per language), ``s_L`` its similarity to English and ``s̄`` the
mean similarity of the fitted languages, so ``A`` is the gain of a language of average
similarity, ``γ`` how the gain grows (γ > 0) or shrinks with similarity, and ``g`` the shape of
the curve, shared by all languages:

- ``power``: g = (n / 1000)^β — unbounded, concave for β < 1;
- ``log``:   g = ln(1 + n / (1000 β)) — concave, β sets where returns start to diminish;
- ``saturating``: g = 1 − exp(−n / (1000 β)) — bounded: the gain approaches A.

The similarity score is the base model's cross-lingual alignment with English at its best
layer: centered retrieval P@1 (English ↔ L, both directions averaged) maximised over layers, as
the probe measures it (see ``train.sweep.measure_similarity``). It is 0 for no alignment and 1
for every translation retrieved.

Fits are least squares (scipy ``curve_fit``); reported are standard errors from the covariance,
RMSE, R², AICc and leave-one-point-out RMSE, by which families are compared — and compared with
the null every law must beat, *no size effect* (each language's score its own mean whatever n):
R² counts the differences between languages that the baselines alone explain, so whether data
size predicts the score is the law's share of the *within-language* variance and its AICc
against the null's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.readers import read_json

SCALE = 1000.0  # pairs; keeps A and β of order one
GAMMA_BOUND = 20.0  # |γ| beyond this means one language's gain is e^±10 times another's


@dataclass(frozen=True)
class Family:
    name: str
    formula: str
    shape: Callable[[np.ndarray, float], np.ndarray]  # g(n; β), g(0) = 0
    beta: tuple[float, float, float]  # initial value, lower and upper bound


FAMILIES = {
    "power": Family("power", "b_L + A·exp(γ(s_L−s̄))·(n/1000)^β",
                    lambda n, b: (n / SCALE) ** b, (0.5, 0.01, 3.0)),
    "log": Family("log", "b_L + A·exp(γ(s_L−s̄))·ln(1 + n/(1000β))",
                  lambda n, b: np.log1p(n / (SCALE * b)), (0.5, 1e-3, 1e3)),
    "saturating": Family("saturating", "b_L + A·(1 − exp(−n/(1000β)))·exp(γ(s_L−s̄))",
                         lambda n, b: -np.expm1(-n / (SCALE * b)), (1.0, 1e-3, 1e3)),
}
SHARED = ("A", "beta", "gamma")


@dataclass
class LawFit:
    """A fitted law: shared parameters, per-language baselines, their errors and fit quality."""

    family: str
    similarity: dict[str, float]  # language -> s_L
    center: float  # s̄
    params: dict[str, float]  # A, beta, gamma
    errors: dict[str, float]  # standard errors (nan where not identifiable)
    baselines: dict[str, float]  # b_L
    baseline_errors: dict[str, float]
    points: int
    rmse: float
    r2: float
    aicc: float
    loo_rmse: float
    notes: list[str]
    loo_points: int | None = None  # points leave-one-out could predict (a lone size pins a curve)

    def predict(self, language: str, n: float | np.ndarray) -> np.ndarray:
        if language not in self.baselines:
            raise DataError(f"the law was fitted without {language} "
                            f"(fitted: {', '.join(self.baselines)})")
        family = FAMILIES[self.family]
        n = np.asarray(n, dtype=float)
        ds = self.similarity[language] - self.center
        return self.baselines[language] + self.params["A"] * math.exp(
            self.params["gamma"] * ds) * family.shape(n, self.params["beta"])

    def as_dict(self) -> dict:
        return {**asdict(self), "formula": FAMILIES[self.family].formula}

    @classmethod
    def from_dict(cls, data: dict) -> LawFit:
        known = {f.name for f in fields(cls)}  # law.json adds formula, explained_within
        data = {k: v for k, v in data.items() if k in known}
        if data.get("family") not in FAMILIES:
            raise DataError(f"unknown law family {data.get('family')!r}")
        return cls(**data)


def _model(family: Family, languages: list[str], index: np.ndarray, ds: np.ndarray,
           fit_gamma: bool) -> Callable:
    k = len(languages)

    def f(n: np.ndarray, *theta: float) -> np.ndarray:
        baselines, (a, beta) = np.asarray(theta[:k]), theta[k:k + 2]
        gamma = theta[k + 2] if fit_gamma else 0.0
        return baselines[index] + a * np.exp(gamma * ds) * family.shape(n, beta)

    return f


def fit_law(language: list[str], size: list[float], score: list[float],
            similarity: dict[str, float], family: str = "log", loo: bool = True) -> LawFit:
    """Fit ``family`` to points (language, pairs, score); ``similarity`` gives s_L."""
    from scipy.optimize import curve_fit

    if family not in FAMILIES:
        raise DataError(f"unknown law family {family!r}; choose from {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    lang = np.asarray(language)
    n, y = np.asarray(size, dtype=float), np.asarray(score, dtype=float)
    if not (len(lang) == len(n) == len(y)):
        raise DataError("language, size and score need one value per point")
    if (n < 0).any() or not np.isfinite(y).all():
        raise DataError("sizes must be ≥ 0 and scores finite")
    languages = list(dict.fromkeys(lang.tolist()))
    missing = [x for x in languages if x not in similarity]
    if missing:
        raise DataError(f"no similarity score for {', '.join(missing)}")
    s = np.array([similarity[x] for x in languages])
    notes = []
    fit_gamma = len(languages) > 1 and float(np.ptp(s)) > 1e-6
    if not fit_gamma:
        notes.append("γ is fixed at 0: it needs two or more languages of different similarity")
    n_params = len(languages) + 2 + int(fit_gamma)
    if len(y) <= n_params:
        raise DataError(f"the {family} law has {n_params} parameters here ({len(languages)} "
                        f"baselines + {2 + int(fit_gamma)} shared) but there are only {len(y)} "
                        "points: add sizes or languages")
    for x in languages:
        if len(set(n[lang == x])) < 2:
            raise DataError(f"{x} has points at fewer than two sizes: its curve is not defined")
    center = float(s.mean())
    index = np.array([languages.index(x) for x in lang])
    ds = s[index] - center

    def solve(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = _model(fam, languages, index[mask], ds[mask], fit_gamma)
        base0 = []  # start each baseline at the language's score with the least data
        for x in languages:
            own = mask & (lang == x)
            base0.append(float(y[own][np.argmin(n[own])]))
        gain0 = max(float(np.ptp(y[mask])), 1e-3)
        p0 = [*base0, gain0, fam.beta[0]] + ([0.0] if fit_gamma else [])
        lower = [-np.inf] * len(languages) + [-np.inf, fam.beta[1]] + (
            [-GAMMA_BOUND] if fit_gamma else [])
        upper = [np.inf] * len(languages) + [np.inf, fam.beta[2]] + (
            [GAMMA_BOUND] if fit_gamma else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # covariance warnings: reported as nan errors
            theta, cov = curve_fit(f, n[mask], y[mask], p0=p0, bounds=(lower, upper),
                                   maxfev=20000)
        return theta, cov

    try:
        theta, cov = solve(np.ones(len(y), dtype=bool))
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"the {family} law did not converge on these points: {exc}") from exc
    predicted = _model(fam, languages, index, ds, fit_gamma)(n, *theta)
    residual = y - predicted
    rss = float(residual @ residual)
    m = len(y)
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.isfinite(cov).all() \
        else np.full(len(theta), np.nan)
    aicc = _aicc(rss, m, n_params)
    loo_errors = []
    if loo:
        for i in range(m):
            mask = np.arange(m) != i
            if len(set(n[mask & (lang == lang[i])])) < 2 or mask.sum() <= n_params:
                continue  # this point alone pins its language's curve
            try:
                t, _ = solve(mask)
            except (RuntimeError, ValueError):
                continue
            loo_errors.append(float(y[i] - _model(fam, languages, index[i:i + 1], ds[i:i + 1],
                                                  fit_gamma)(n[i:i + 1], *t)[0]))
    k = len(languages)
    shared = [*theta[k:k + 2], theta[k + 2] if fit_gamma else 0.0]
    shared_err = [*errors[k:k + 2], errors[k + 2] if fit_gamma else math.nan]
    bounds = [(-np.inf, np.inf), fam.beta[1:], (-GAMMA_BOUND, GAMMA_BOUND)]
    loose = [name for name, value, error, (low, high), free in zip(
        SHARED, shared, shared_err, bounds, (True, True, fit_gamma), strict=True)
        if free and (not error < abs(value) or min(abs(value - low), abs(value - high)) < 1e-2)]
    if loose:
        notes.append(f"{', '.join(loose)}: not pinned down by these points (standard error above "
                     "the value, or at a bound); more languages or sizes would settle them")
    return LawFit(
        family=family, similarity={x: float(similarity[x]) for x in languages}, center=center,
        params=dict(zip(SHARED, map(float, shared), strict=True)),
        errors=dict(zip(SHARED, map(float, shared_err), strict=True)),
        baselines=dict(zip(languages, map(float, theta[:k]), strict=True)),
        baseline_errors=dict(zip(languages, map(float, errors[:k]), strict=True)),
        points=m, rmse=math.sqrt(rss / m),
        r2=1 - rss / float(((y - y.mean()) ** 2).sum()) if np.ptp(y) > 0 else math.nan,
        aicc=aicc, notes=notes, loo_points=len(loo_errors),
        loo_rmse=math.sqrt(sum(e * e for e in loo_errors) / len(loo_errors)) if loo_errors
        else math.nan)


@dataclass(frozen=True)
class NoSizeEffect:
    """The null model: P_L(n) = b_L, each language's mean score, whatever the data size."""

    points: int
    rmse: float
    aicc: float
    loo_rmse: float  # each point predicted by the mean of its language's other points
    loo_points: int  # points with another point of their language

    def explained(self, fit: LawFit) -> float:
        """Share of the within-language variance (the null's squared error) the law explains."""
        return 1 - (fit.rmse / self.rmse) ** 2 if self.rmse > 0 else math.nan


def _aicc(rss: float, m: int, k: int) -> float:
    """Akaike's criterion with the small-sample correction, for least squares (k parameters)."""
    return m * math.log(max(rss, 1e-12) / m) + 2 * k + (
        2 * k * (k + 1) / (m - k - 1) if m - k - 1 > 0 else math.inf)


def no_size_effect(language: list[str], score: list[float]) -> NoSizeEffect:
    """Fit the null: one mean per language; leave-one-out predicts a point by the mean of its
    language's other points (a language with one point is left out of it)."""
    frame = pd.DataFrame({"language": language, "score": np.asarray(score, dtype=float)})
    groups = frame.groupby("language", sort=False).score
    residual = frame.score - groups.transform("mean")
    rss, m = float(residual @ residual), len(frame)
    count, total = groups.transform("count"), groups.transform("sum")
    others = count > 1
    loo = frame.score[others] - (total[others] - frame.score[others]) / (count[others] - 1)
    return NoSizeEffect(points=m, rmse=math.sqrt(rss / m), loo_points=len(loo),
                        aicc=_aicc(rss, m, frame.language.nunique()),
                        loo_rmse=math.sqrt(float(loo @ loo) / len(loo)) if len(loo) else math.nan)


def compare_families(language: list[str], size: list[float], score: list[float],
                     similarity: dict[str, float], families: list[str] | None = None
                     ) -> list[LawFit]:
    """Fit every family; best first (lowest AICc, then leave-one-out RMSE)."""
    fits = []
    for name in families or list(FAMILIES):
        try:
            fits.append(fit_law(language, size, score, similarity, name))
        except DataError as exc:
            if "did not converge" not in str(exc):
                raise
    if not fits:
        raise DataError("no law family converged on these points")
    return sorted(fits, key=lambda f: (f.aicc, f.loo_rmse))


def load_fit(path: Path, family: str | None = None) -> LawFit:
    """One fit (default: the best) from a ``law.json`` written by ``fit-law`` (read strictly: a
    device or FIFO is named as such, never read)."""
    if not path.exists() and not path.is_symlink():
        raise DataError(f"{path} does not exist: run `layer-analysis fit-law` first")
    saved = read_json(path)
    try:
        fits = {f["family"]: f for f in saved["fits"]}
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a law.json written by fit-law") from exc
    name = family or saved["best"]
    if name not in fits:
        raise DataError(f"{path} has no {name} fit (it has {', '.join(fits)})")
    return LawFit.from_dict(fits[name])
