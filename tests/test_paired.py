"""Paired differences between two runs: equal to the difference of the two analyses, a plain
per-sentence oracle, zero for a model against itself, significant where one model is better."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from layer_analysis.probe.analysis import AnalysisConfig, analyse
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.paired import paired_differences, paired_summary, sign_flip_p
from layer_analysis.probe.store import Activations

LANGUAGES = ("eng_Latn", "deu_Latn", "zho_Hans")
N, D = 60, 24


def activations(noise_by_layer: list[float], seed: int) -> Activations:
    """Three languages sharing a meaning per sentence, with ``noise_by_layer[l]`` on each side."""
    meaning = torch.randn(len(noise_by_layer), N, D, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    vectors = {c: torch.stack([meaning[i] + s * torch.randn(N, D, generator=g)
                               for i, s in enumerate(noise_by_layer)])[None] for c in LANGUAGES}
    manifest = {"sides": {c: {"language": c, "group": "all", "sentences": N} for c in LANGUAGES}}
    texts = {c: [f"{c} {i}" for i in range(N)] for c in LANGUAGES}
    return Activations("test", Path("."), list(range(len(noise_by_layer))), ["mean"], vectors,
                       {c: torch.zeros(N) for c in LANGUAGES}, manifest, False, texts)


def plain_p1(acts: Activations, source: str, target: str, layer: int) -> torch.Tensor:
    """Per-sentence P@1, centered cosine, one query at a time (no ties in random data)."""
    x, y = acts.get(source)[layer], acts.get(target)[layer]
    x, y = x - x.mean(0), y - y.mean(0)
    hits = []
    for i in range(N):
        scores = torch.nn.functional.cosine_similarity(x[i][None], y)
        hits.append(float(int(scores.argmax()) == i))
    return torch.tensor(hits)


@pytest.fixture(scope="module")
def runs():
    base = activations([2.0, 2.0, 2.0], seed=1)
    better = activations([2.0, 2.0, 0.5], seed=2)  # same sentences, cleaner at layer 2
    return base, better, paired_differences(base, better, "base", "better")


def test_the_mean_difference_is_the_difference_of_the_two_analyses(runs):
    base, better, paired = runs
    keys = ["layer", "source", "target", "normalisation", "metric"]
    a = analyse(base, "base", AnalysisConfig(bootstrap=10, null_permutations=0)).table
    b = analyse(better, "better", AnalysisConfig(bootstrap=10, null_permutations=0)).table
    both = a.merge(b, on=keys, suffixes=("_a", "_b")).merge(paired, on=keys)
    assert set(paired.metric) == {"p@1", "r@5", "r@10", "mrr", "mexa", "cosine", "cosine_adjusted"}
    assert len(both) == len(paired) > 0  # every paired row has both analyses' rows
    assert (both.difference - (both.value_b - both.value_a)).abs().max() < 1e-5


def test_the_difference_equals_a_one_sentence_oracle(runs):
    base, better, paired = runs
    for layer in range(3):
        expected = (plain_p1(better, "eng_Latn", "zho_Hans", layer)
                    - plain_p1(base, "eng_Latn", "zho_Hans", layer)).mean()
        row = paired[(paired.layer == layer) & (paired.source == "eng_Latn")
                     & (paired.target == "zho_Hans") & (paired.metric == "p@1")
                     & (paired.normalisation == "centered")]
        assert float(row.difference.iloc[0]) == pytest.approx(float(expected), abs=1e-6)
        assert row.ci_low.iloc[0] <= row.difference.iloc[0] <= row.ci_high.iloc[0]


def test_the_better_layer_moved_and_a_model_against_itself_did_not(runs):
    base, _, paired = runs
    p1 = paired[(paired.metric == "p@1") & (paired.normalisation == "centered")]
    assert (p1[p1.layer == 2].q_value < 0.05).all() and (p1[p1.layer == 2].difference > 0.2).all()
    same = paired_differences(base, base, "base", "base")
    assert (same.difference == 0).all() and (same.p_value == 1).all()
    assert (same.ci_low == 0).all() and (same.ci_high == 0).all()
    lines = paired_summary(paired)
    assert len(lines) == 4  # English pivot: two pairs, two directions
    assert all("up at layers [2]" in line for line in lines), lines


def test_sign_flip_p_by_enumeration():
    # mean |±1 ± 1 ± 1 ± 1| / 4 >= 1 only when all four signs agree: 2 of 16
    p = float(sign_flip_p(torch.ones(1, 4), permutations=20000)[0])
    assert p == pytest.approx(2 / 16, abs=0.01)
    assert float(sign_flip_p(torch.zeros(1, 4))[0]) == 1.0


def test_runs_that_cannot_be_paired_are_refused(runs):
    base, _, _ = runs
    with pytest.raises(DataError, match="same layers"):
        paired_differences(base, activations([2.0, 2.0], seed=3), "base", "short")
    other = activations([2.0, 2.0, 2.0], seed=3)
    other.texts["zho_Hans"] = [f"other {i}" for i in range(N)]
    with pytest.raises(DataError, match="same sentences; zho_Hans differs"):
        paired_differences(base, other, "base", "other")
    fewer = activations([2.0, 2.0, 2.0], seed=3)
    fewer.vectors["deu_Latn"], fewer.texts = fewer.vectors["deu_Latn"][:, :, :10], {}
    with pytest.raises(DataError, match="same sentences; deu_Latn differs"):
        paired_differences(base, fewer, "base", "fewer")


def test_the_table_is_tidy(runs):
    _, _, paired = runs
    assert not paired.isna().any().any()
    assert paired.groupby(["layer", "source", "target", "normalisation", "metric"]).size().max() == 1
    assert isinstance(paired, pd.DataFrame) and (paired.q_value >= paired.p_value - 1e-12).all()
