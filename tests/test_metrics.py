"""Every metric against hand-computed values on small synthetic inputs."""

from __future__ import annotations

import math

import pytest
import torch

from layer_analysis.probe.metrics import (
    NORMALISATIONS,
    bootstrap_ci,
    equivalence,
    linear_cka,
    mutual_knn,
    pair_statistics,
    prepare,
    ranks,
    retrieval,
    retrieval_null,
    score_matrix,
)


def retrieval_per_query(scores, correct=None):
    return retrieval(ranks(scores, correct))


@pytest.fixture
def vectors():
    torch.manual_seed(0)
    return torch.randn(3, 60, 24)  # 3 layers, 60 sentences, 24 dims


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_identical_vectors_retrieve_perfectly(vectors, normalisation):
    values = retrieval_per_query(score_matrix(vectors, vectors, normalisation))
    for metric in ("p@1", "r@5", "r@10", "mrr"):
        assert torch.equal(values[metric].mean(-1), torch.ones(3))


def test_shuffled_pairs_are_near_chance(vectors):
    shuffled = vectors.roll(1, dims=1)  # a derangement: no sentence keeps its translation
    values = retrieval_per_query(score_matrix(vectors, shuffled, "centered"))
    chance = retrieval_null(60)
    assert values["p@1"].mean() <= 5 * chance["p@1"]
    assert abs(float(values["r@10"].mean()) - chance["r@10"]) < 0.15


def test_hand_computed_ranks_and_ties():
    # query 0: true 0.9, others 0.5, 0.9 (a tie) -> rank 2 (ties count against the query)
    # query 1: true 0.8, others 0.1, 0.7       -> rank 1
    # query 2: true 0.2, others 0.3, 0.6       -> rank 3
    scores = torch.tensor([[[0.9, 0.5, 0.9], [0.1, 0.8, 0.7], [0.3, 0.6, 0.2]]])
    assert ranks(scores).tolist() == [[2, 1, 3]]
    values = retrieval_per_query(scores)
    assert values["p@1"].mean().item() == pytest.approx(1 / 3)
    assert values["mrr"].mean().item() == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert values["r@5"].mean().item() == 1.0


def test_duplicate_sentences_are_not_competitors():
    scores = torch.tensor([[[0.9, 0.9, 0.1], [0.9, 0.9, 0.1], [0.1, 0.1, 0.8]]])
    assert ranks(scores).tolist() == [[2, 2, 1]]  # without duplicate handling: a tie each
    correct = equivalence(["same", "same", "other"])
    assert ranks(scores, correct).tolist() == [[1, 1, 1]]


def test_collapsed_space_gets_worst_rank():
    same = torch.ones(1, 5, 4)
    assert ranks(score_matrix(same, same, "raw")).tolist() == [[5] * 5]


def test_cosine_and_baseline_adjusted_by_hand():
    a, b = 1 / math.sqrt(5), 2 / math.sqrt(5)
    src = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]]])
    tgt = torch.tensor([[[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]]])
    # raw cosines: [[1, a, 0], [0, b, 1], [a, 1, b]]
    stats = pair_statistics(prepare(src), prepare(tgt), ["raw"])
    assert stats.cosine["raw"][0].tolist() == pytest.approx([1.0, b, b])
    assert stats.baseline["raw"][0].tolist() == pytest.approx([a / 2, 1 / 2, (a + 1) / 2])
    assert stats.ranks[("raw", "forward")].tolist() == [[1, 2, 2]]
    assert stats.ranks[("raw", "backward")].tolist() == [[1, 2, 2]]


def test_duplicates_in_the_blockwise_engine():
    vectors = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    texts = ["same", "same", "other"]
    stats = pair_statistics(prepare(vectors, texts), prepare(vectors, texts), ["raw"])
    assert stats.ranks[("raw", "forward")].tolist() == [[1, 1, 1]]
    assert stats.ranks[("raw", "backward")].tolist() == [[1, 1, 1]]
    # the baseline leaves the duplicate out: sentence 0 is compared with sentence 2 only
    assert stats.baseline["raw"][0].tolist() == pytest.approx([0.0, 0.0, 0.0])


@pytest.mark.parametrize("block_bytes", [1, 3000, 2**30])
def test_blockwise_engine_matches_whole_matrices(vectors, block_bytes):
    """Row blocks (down to one row), two passes and the closed-form raw cosines give exactly
    the ranks of whole score matrices, in both directions, duplicates included."""
    src = vectors + 3.0  # a shared offset, as in real models
    tgt = vectors + 0.8 * torch.randn_like(vectors) + 3.0
    texts = [f"s{i % 50}" for i in range(60)]  # ten duplicated sentences
    stats = pair_statistics(prepare(src, texts), prepare(tgt, texts), NORMALISATIONS,
                            permutations=5, block_bytes=block_bytes)
    correct = equivalence(texts)
    for name in NORMALISATIONS:
        whole = score_matrix(src, tgt, name)
        assert torch.equal(stats.ranks[(name, "forward")], ranks(whole, correct)), name
        assert torch.equal(stats.ranks[(name, "backward")],
                           ranks(whole.transpose(-1, -2), correct)), name
    direct = torch.nn.functional.cosine_similarity(src, tgt, dim=-1)
    assert torch.allclose(stats.cosine["raw"], direct, atol=1e-5)
    assert stats.null["centered"].shape == (3, 5)


def test_csls_and_margin_by_hand():
    src = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    tgt = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    cos = score_matrix(src, tgt, "raw")[0]
    r = 1 / math.sqrt(2)
    assert cos.flatten().tolist() == pytest.approx([1.0, r, 0.0, r])
    # k = min(10, 2) = 2: r_src = row means, r_tgt = column means
    r_src, r_tgt = cos.mean(1), cos.mean(0)
    csls = score_matrix(src, tgt, "csls")[0]
    expected_csls = 2 * cos - r_src[:, None] - r_tgt[None, :]
    assert csls.flatten().tolist() == pytest.approx(expected_csls.flatten().tolist())
    margin = score_matrix(src, tgt, "margin")[0]
    expected = cos / ((r_src[:, None] + r_tgt[None, :]) / 2)
    assert margin.flatten().tolist() == pytest.approx(expected.flatten().tolist())


def test_centering_removes_a_shared_offset(vectors):
    shifted = vectors + 1e4  # a huge shared direction: raw cosines all round to 1 (ties)
    raw = retrieval_per_query(score_matrix(shifted, shifted + 0.5 * torch.randn_like(vectors),
                                           "raw"))["p@1"].mean()
    centered = retrieval_per_query(score_matrix(
        shifted, shifted + 0.5 * torch.randn_like(vectors), "centered"))["p@1"].mean()
    assert centered > raw + 0.3


def test_bootstrap_interval_contains_the_estimate(vectors):
    noisy = vectors + 1.5 * torch.randn_like(vectors)
    values = retrieval_per_query(score_matrix(vectors, noisy, "centered"))["p@1"]
    low, high = bootstrap_ci(values, samples=500)
    mean = values.mean(-1)
    assert torch.all(low <= mean) and torch.all(mean <= high) and torch.all(high - low > 0)
    constant = torch.ones(2, 30)
    low, high = bootstrap_ci(constant)
    assert torch.equal(low, torch.ones(2)) and torch.equal(high, torch.ones(2))


def test_nulls():
    assert retrieval_null(4) == {"p@1": 0.25, "r@5": 1.0, "r@10": 1.0,
                                 "mrr": pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)}
    pair = prepare(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))  # raw cosines: the identity
    null = pair_statistics(pair, pair, ["raw"], permutations=400).null["raw"][0]
    assert all(min(abs(v), abs(v - 1)) < 1e-6 for v in null.tolist())  # identity or swap
    assert 0.3 < float(null.mean()) < 0.7


def test_cka_self_is_one_and_invariant_to_orthogonal_maps(vectors):
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(2)))
    cka = linear_cka(vectors, vectors @ q * 3.0)  # rotation and isotropic scaling
    assert torch.allclose(cka.diagonal(), torch.ones(3), atol=1e-5)
    assert cka.shape == (3, 3)
    unrelated = linear_cka(vectors, torch.randn(3, 60, 24))
    assert unrelated.max() < 0.6


def test_mutual_knn(vectors):
    assert torch.equal(mutual_knn(vectors, vectors, k=5), torch.ones(3))
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    assert mutual_knn(vectors, vectors[:, perm], k=5).max() < 0.3


def test_chance_with_duplicate_answers_equals_enumeration():
    """Exact null with repeated sentences against every ordering of 6 candidates (720)."""
    import itertools

    from layer_analysis.probe.metrics import answer_counts

    texts = ["a", "b", "a", "c", "a", "d"]
    codes = torch.tensor([0, 1, 0, 2, 0, 3])
    answers = answer_counts(codes, 6)
    assert answers == [3, 1, 3, 1, 3, 1]
    correct = equivalence(texts)
    totals = dict.fromkeys(("p@1", "r@5", "r@10", "mrr"), 0.0)
    orders = list(itertools.permutations(range(6)))
    for order in orders:  # candidate j gets score -order[j]: every ranking equally likely
        scores = -torch.tensor(order, dtype=torch.float)[None, None].expand(1, 6, 6).clone()
        values = retrieval(ranks(scores, correct))
        for metric in totals:
            totals[metric] += float(values[metric].mean())
    exact = retrieval_null(6, answers)
    for metric, total in totals.items():
        assert exact[metric] == pytest.approx(total / len(orders)), metric
    assert exact["p@1"] == pytest.approx((3 / 4 + 3 / 6) / 6)  # 1 / (n - d + 1) per query
    assert retrieval_null(6, [1] * 6) == retrieval_null(6)


def test_nan_ranks_last_and_non_finite_vectors_are_refused():
    scores = torch.tensor([[[float("nan"), 0.1, 0.2], [0.1, 0.9, 0.2], [0.3, 0.1, float("nan")]]])
    assert ranks(scores).tolist() == [[3, 1, 3]]  # never a lucky 1
    broken = torch.randn(2, 5, 4)
    broken[1, 3, 0] = float("nan")
    from layer_analysis.probe.errors import DataError

    with pytest.raises(DataError, match="layer index 1, sentence 3"):
        prepare(broken)
    broken[1, 3, 0] = float("inf")
    with pytest.raises(DataError, match="non-finite"):
        prepare(broken)


def test_mexa_needs_the_top_of_row_and_column():
    from layer_analysis.probe.metrics import mexa, mexa_null

    # pair 0: top of row 0 and column 0 -> aligned
    # pair 1: top of row 1 (0.8) but column 1 holds 0.9 from row 2 -> not aligned (P@1 counts it)
    # pair 2: row 2's top is 0.9 in column 1 -> not aligned
    scores = torch.tensor([[[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.0, 0.9, 0.5]]])
    forward = ranks(scores)
    backward = ranks(scores.transpose(-1, -2))
    assert forward.tolist() == [[1, 1, 2]] and backward.tolist() == [[1, 2, 1]]
    assert mexa(forward, backward).tolist() == [[1.0, 0.0, 0.0]]
    tie = torch.tensor([[[0.5, 0.5], [0.1, 0.9]]])  # a tie in row 0: MEXA's ">" fails it
    assert mexa(ranks(tie), ranks(tie.transpose(-1, -2))).tolist() == [[0.0, 1.0]]
    assert mexa_null(3) == pytest.approx(1 / 5)


def test_mexa_summary_aggregates_over_layers():
    import pandas as pd

    from layer_analysis.probe.analysis import mexa_summary

    rows = [{"model": "m", "layer": layer, "source": "en", "target": "de", "pooling": "weighted",
             "normalisation": "raw", "metric": "mexa", "value": value}
            for layer, value in enumerate([0.2, 0.8, 0.5])]
    summary = mexa_summary(pd.DataFrame(rows))
    assert summary.mexa_mean.tolist() == [pytest.approx(0.5)]
    assert summary.mexa_max.tolist() == [0.8] and summary.max_layer.tolist() == [1]
