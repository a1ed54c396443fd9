"""Zero-shot cross-lingual transfer of a linear probe, layer by layer.

Per layer and variant, a probe (standardisation fitted on the source's training states, then
scikit-learn's ``LogisticRegression``) is trained on the source language's labelled states and
tested on every target's test split (*transfer*); the same probe trained and tested in the
target (*ceiling*); their quotient (*ratio*). Variants: ``raw`` states, and ``centered`` ones:
each language's states minus that language's mean over all its sentences (every split, labels
unused) — the per-language centering of the alignment metric.

Scores are accuracy and macro-F1 (scikit-learn's: the mean F1 over the classes that occur in
the labels or the predictions), each with a percentile bootstrap CI over test sentences; every
curve of a run shares the resamples (``metrics._resample_counts``), so a ratio's CI comes from
paired resamples of the same sentences. Chance: the test set's majority share (accuracy) and
the macro-F1 of always answering the majority class.

Tidy rows: model, layer, variant, source, target, setting (transfer | ceiling | ratio), metric
(accuracy | macro_f1), value, ci_low, ci_high, chance, n.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .errors import DataError
from .metrics import _resample_counts

VARIANTS = ("raw", "centered")
SETTINGS = ("transfer", "ceiling", "ratio")
SCORES = ("accuracy", "macro_f1")
COLUMNS = ["model", "layer", "variant", "source", "target", "setting", "metric", "value",
           "ci_low", "ci_high", "chance", "n"]
PREDICTION_COLUMNS = ["layer", "variant", "target", "setting", "row", "label", "prediction"]


@dataclass(frozen=True)
class ProbeConfig:
    """The classifier and its uncertainty. ``ceiling``: also train in every target (one fit per
    target, layer and variant: what dominates the time over many languages)."""

    c: float = 1.0
    max_iter: int = 1000
    bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0
    ceiling: bool = True

    def __post_init__(self) -> None:
        if not (np.isfinite(self.c) and self.c > 0):
            raise DataError(f"the probe's C must be a positive number, got {self.c}")
        if self.max_iter < 1 or self.bootstrap < 1:
            raise DataError("--max-iter and --bootstrap must be at least 1")
        if not 0 < self.level < 1:
            raise DataError(f"the CI level must lie between 0 and 1, got {self.level}")


def make_probe(config: ProbeConfig) -> Pipeline:
    """StandardScaler then LogisticRegression(C): the default classifier."""
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=config.c, max_iter=config.max_iter))


def fit_probe(x: np.ndarray, y: np.ndarray, config: ProbeConfig) -> tuple[Pipeline, bool]:
    """The probe fitted on (x, y), and whether the solver converged (never silent: a
    ConvergenceWarning or an iteration count at the limit both count as not converged)."""
    if not np.isfinite(x).all():
        raise DataError("non-finite states (NaN or inf): refusing to fit a probe on them")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe = make_probe(config).fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    converged = converged and int(np.max(probe[-1].n_iter_)) < config.max_iter
    return probe, converged


def center_rows(x: np.ndarray) -> np.ndarray:
    """Each layer's states minus their mean over sentences: x is (layers, sentences, hidden)."""
    return x - x.mean(axis=-2, keepdims=True)


def macro_f1_weighted(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 of labels ``y`` and predictions ``p`` under each row of ``weights`` (resample
    counts, (samples, n)), by scikit-learn's rule: the mean over the classes present."""
    classes = np.union1d(y, p)
    yc = y[None, :] == classes[:, None]  # (C, n)
    pc = p[None, :] == classes[:, None]
    tp = weights @ (yc & pc).T.astype(float)  # (samples, C)
    fp = weights @ (~yc & pc).T.astype(float)
    fn = weights @ (yc & ~pc).T.astype(float)
    present = (tp + fp + fn) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=present)
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    return float(f1_score(y, p, average="macro", zero_division=0))


def chance_levels(y: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of always answering the test set's majority class."""
    values, counts = np.unique(y, return_counts=True)
    majority = np.full_like(y, values[np.argmax(counts)])
    return {"accuracy": float(counts.max() / len(y)), "macro_f1": macro_f1(y, majority)}


@dataclass
class Scored:
    """One target's tidy rows, its per-sentence predictions, and the fits that did not converge."""

    rows: list[dict] = field(default_factory=list)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    nonconverged: list[dict] = field(default_factory=list)


def score_predictions(y: np.ndarray, predicted: dict[str, np.ndarray], config: ProbeConfig
                      ) -> list[dict]:
    """Rows (setting, metric, value, ci_low, ci_high, chance, n) for the ``transfer`` and
    ``ceiling`` predictions of one target's test set, and their ratio."""
    n = len(y)
    weights = _resample_counts(n, config.bootstrap, config.seed).numpy().astype(float)
    alpha = (1 - config.level) / 2
    chance = chance_levels(y)
    samples: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    for setting, p in predicted.items():
        correct = (p == y).astype(float)
        points = {"accuracy": float(correct.mean()), "macro_f1": macro_f1(y, p)}
        samples[(setting, "accuracy")] = weights @ correct / n
        samples[(setting, "macro_f1")] = macro_f1_weighted(y, p, weights)
        for metric in SCORES:
            low, high = np.quantile(samples[(setting, metric)], [alpha, 1 - alpha])
            rows.append({"setting": setting, "metric": metric, "value": points[metric],
                         "ci_low": float(low), "ci_high": float(high),
                         "chance": chance[metric], "n": n})
    if {"transfer", "ceiling"} <= set(predicted):
        value = {(r["setting"], r["metric"]): r["value"] for r in rows}
        for metric in SCORES:
            top, bottom = samples[("transfer", metric)], samples[("ceiling", metric)]
            ratio = np.divide(top, bottom, out=np.full_like(top, np.nan), where=bottom > 0)
            finite = ratio[np.isfinite(ratio)]
            low, high = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite)
                         else (np.nan, np.nan))
            ceiling = value[("ceiling", metric)]
            rows.append({"setting": "ratio", "metric": metric,
                         "value": value[("transfer", metric)] / ceiling if ceiling > 0 else np.nan,
                         "ci_low": float(low), "ci_high": float(high), "chance": np.nan, "n": n})
    return rows


class SourceProbes:
    """The source language's probes, one per variant and layer, fitted once and applied to
    every target (targets may come in groups, so that states never all sit in memory)."""

    def __init__(self, source: str, states: np.ndarray, layers: list[int], train: slice,
                 y_train: np.ndarray, config: ProbeConfig, model: str) -> None:
        self.source, self.layers, self.train, self.config, self.model = (
            source, list(layers), train, config, model)
        self.y_train = np.asarray(y_train)
        self.probes: dict[tuple[str, int], Pipeline] = {}
        self.nonconverged: list[dict] = []
        for variant, x in (("raw", states), ("centered", center_rows(states))):
            for i, layer in enumerate(self.layers):
                probe, ok = fit_probe(x[i, train], self.y_train, config)
                self.probes[(variant, layer)] = probe
                if not ok:
                    self.nonconverged.append({"variant": variant, "layer": layer,
                                              "trained_on": source})

    def score(self, target: str, states: np.ndarray, test: slice, y_test: np.ndarray) -> Scored:
        """Transfer (and, with ``config.ceiling``, ceiling and ratio) rows of one target whose
        states (layers, sentences, hidden) hold the same splits as the source's."""
        if states.shape[0] != len(self.layers):
            raise DataError(f"{target}: {states.shape[0]} layers of states, the probes have "
                            f"{len(self.layers)}")
        y_test = np.asarray(y_test)
        out = Scored()
        parts: list[tuple[tuple[int, str, str], np.ndarray]] = []
        base = {"model": self.model, "source": self.source, "target": target}
        for variant, x in (("raw", states), ("centered", center_rows(states))):
            for i, layer in enumerate(self.layers):
                predicted = {"transfer": self.probes[(variant, layer)].predict(x[i, test])}
                if self.config.ceiling:
                    if target == self.source:
                        predicted["ceiling"] = predicted["transfer"]
                    else:
                        own, ok = fit_probe(x[i, self.train], self.y_train, self.config)
                        predicted["ceiling"] = own.predict(x[i, test])
                        if not ok:
                            out.nonconverged.append({"variant": variant, "layer": layer,
                                                     "trained_on": target})
                for row in score_predictions(y_test, predicted, self.config):
                    out.rows.append({**base, "layer": layer, "variant": variant, **row})
                for setting, p in predicted.items():
                    parts.append(((layer, variant, setting), p))
        n = len(y_test)
        out.predictions = pd.DataFrame({
            "layer": np.repeat([k[0] for k, _ in parts], n),
            "variant": pd.Categorical(np.repeat([k[1] for k, _ in parts], n), VARIANTS),
            "target": target,
            "setting": pd.Categorical(np.repeat([k[2] for k, _ in parts], n), SETTINGS),
            "row": np.tile(np.arange(n), len(parts)),
            "label": np.tile(y_test, len(parts)),
            "prediction": np.concatenate([p for _, p in parts]) if parts else []})
        return out
