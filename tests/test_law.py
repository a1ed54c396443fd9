"""Scaling law, allocation and sweep: fits recover known parameters, the allocator is optimal
and respects budget and caps, specs round-trip, bad input fails clearly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layer_analysis.cli import main
from layer_analysis.probe.errors import DataError
from layer_analysis.train.allocate import allocate, uniform
from layer_analysis.train.law import (
    FAMILIES,
    LawFit,
    compare_families,
    fit_law,
    no_size_effect,
)
from layer_analysis.train.mixture import build_mixture, instruction_translation_spec, parse_spec

SIMILARITY = {"ell_Grek": 0.3, "hin_Deva": 0.6, "zho_Hans": 0.9}
SIZES = [0, 250, 500, 1000, 2000, 4000]
TRUE = {"A": 8.0, "beta": 0.4, "gamma": 1.5}
BASELINES = {"ell_Grek": 10.0, "hin_Deva": 20.0, "zho_Hans": 30.0}


def synthetic(family: str = "log", noise: float = 0.2, seed: int = 0) -> pd.DataFrame:
    law = LawFit(family, SIMILARITY, float(np.mean(list(SIMILARITY.values()))), TRUE,
                 dict.fromkeys(TRUE, 0.0), BASELINES, dict.fromkeys(BASELINES, 0.0), 0, 0, 0, 0,
                 0, [])
    rng = np.random.default_rng(seed)
    rows = [{"language": x, "pairs": n, "score": float(law.predict(x, n)) + rng.normal(0, noise)}
            for x in SIMILARITY for n in SIZES]
    return pd.DataFrame(rows)


def sweep_points() -> pd.DataFrame:
    """The log law's synthetic points with each language's similarity, as a sweep has them."""
    return synthetic("log").assign(similarity=lambda t: t.language.map(SIMILARITY))


def write_sweep(points: pd.DataFrame, path: Path) -> None:
    """``points`` as a sweep's table (their score is chrF++)."""
    points.rename(columns={"score": "chrf++"}).to_csv(path, index=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fit_recovers_known_parameters(family):
    points = synthetic(family)
    fit = fit_law(list(points.language), list(points.pairs), list(points.score), SIMILARITY,
                  family)
    for name, value in TRUE.items():
        assert abs(fit.params[name] - value) < max(4 * fit.errors[name], 0.05 * value), name
    for x, b in BASELINES.items():
        assert fit.baselines[x] == pytest.approx(b, abs=0.6)
    assert fit.rmse < 0.3 and fit.r2 > 0.99 and fit.loo_rmse < 0.6 and not fit.notes
    assert LawFit.from_dict(json.loads(json.dumps(fit.as_dict()))) == fit


def test_the_generating_family_wins_the_comparison():
    for family in ("log", "saturating"):
        points = synthetic(family, noise=0.1)
        fits = compare_families(list(points.language), list(points.pairs), list(points.score),
                                SIMILARITY)
        assert fits[0].family == family
        assert [f.aicc for f in fits] == sorted(f.aicc for f in fits)


def test_no_size_effect_null_by_hand_and_against_the_laws():
    language = ["ell_Grek"] * 3 + ["zho_Hans"] * 2
    null = no_size_effect(language, [1.0, 2.0, 6.0, 10.0, 12.0])
    # means 3 and 11; residuals -2, -1, 3, -1, 1 -> RSS 16; leave-one-out: 1 - 4, 2 - 3.5,
    # 6 - 1.5, 10 - 12, 12 - 10
    assert null.rmse == pytest.approx((16 / 5) ** 0.5)
    assert null.loo_rmse == pytest.approx(((9 + 2.25 + 20.25 + 4 + 4) / 5) ** 0.5)
    assert null.loo_points == 5 and no_size_effect([*language, "hin_Deva"], [0] * 6).loo_points == 5
    assert null.aicc == pytest.approx(5 * np.log(16 / 5) + 4 + 12 / 2)
    # a real size effect: the law explains nearly all within-language variance and beats the
    # null; pure noise around the baselines: it explains little and does not beat it
    real = synthetic("log", noise=0.2)
    fit = fit_law(list(real.language), list(real.pairs), list(real.score), SIMILARITY)
    null = no_size_effect(list(real.language), list(real.score))
    assert null.explained(fit) > 0.98 and null.aicc - fit.aicc > 10
    assert fit.loo_points == null.loo_points == len(real)
    assert fit.loo_rmse < null.loo_rmse / 5
    rng = np.random.default_rng(1)
    noise = real.assign(score=real.language.map(BASELINES) + rng.normal(0, 1, len(real)))
    fit = fit_law(list(noise.language), list(noise.pairs), list(noise.score), SIMILARITY)
    null = no_size_effect(list(noise.language), list(noise.score))
    assert null.explained(fit) < 0.5 and null.aicc - fit.aicc < 2


def test_fit_refuses_too_few_points_and_undefined_curves():
    with pytest.raises(DataError, match="only 5 points"):
        fit_law(["ell_Grek"] * 2 + ["zho_Hans"] * 3, [0, 100, 0, 100, 200], [1, 2, 3, 4, 5],
                SIMILARITY)
    with pytest.raises(DataError, match="fewer than two sizes"):
        fit_law(["ell_Grek"] * 5 + ["zho_Hans"], [0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 5, 6],
                SIMILARITY)
    with pytest.raises(DataError, match="no similarity score"):
        fit_law(["tur_Latn"] * 5, [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], SIMILARITY)
    one = fit_law(["ell_Grek"] * 5, [0, 100, 200, 400, 800], [1, 2, 2.5, 3, 3.2], SIMILARITY)
    assert one.params["gamma"] == 0 and "γ is fixed" in one.notes[0]
    two = fit_law(["ell_Grek"] * 3 + ["zho_Hans"] * 3, [0, 100, 400] * 2, [1, 2, 2.2, 5, 5, 5.01],
                  SIMILARITY)  # Chinese does not move: A and γ trade off without limit
    assert any("not pinned down" in note and "gamma" in note for note in two.notes)


def constructed_law() -> LawFit:
    """Saturating law where Chinese (more similar) gains 20 points and Greek 2: uniform wastes
    pairs on Greek."""
    similarity = {"ell_Grek": 0.2, "zho_Hans": 0.8}
    return LawFit("saturating", similarity, 0.5, {"A": 2 * 10 ** 0.5, "beta": 0.5,
                                                  "gamma": 2 * np.log(10) / 0.6 / 2},
                  {}, {"ell_Grek": 20.0, "zho_Hans": 10.0}, {}, 0, 0, 0, 0, 0, [])


def test_allocation_respects_budget_and_caps_and_beats_uniform():
    law = constructed_law()
    best = allocate(law, 2000, {"ell_Grek": 5000, "zho_Hans": 5000}, step=10)
    even = uniform(law, 2000, {"ell_Grek": 5000, "zho_Hans": 5000})
    assert sum(best.pairs.values()) <= 2000 and sum(even.pairs.values()) == 2000
    assert even.pairs == {"ell_Grek": 1000, "zho_Hans": 1000}
    assert best.value > even.value + 1 and best.pairs["zho_Hans"] > best.pairs["ell_Grek"]
    grid = [(a, 2000 - a) for a in range(0, 2001, 10)]  # brute force over the same grid
    brute = max(float(law.predict("ell_Grek", a) + law.predict("zho_Hans", b)) for a, b in grid)
    assert best.value == pytest.approx(brute)
    capped = allocate(law, 2000, {"ell_Grek": 5000, "zho_Hans": 300}, step=10)
    assert capped.pairs["zho_Hans"] <= 300 and sum(capped.pairs.values()) <= 2000
    assert uniform(law, 2000, {"ell_Grek": 5000, "zho_Hans": 300}).pairs == \
        {"ell_Grek": 1700, "zho_Hans": 300}
    fair = allocate(law, 2000, objective="min", step=10)
    assert fair.value >= uniform(law, 2000, objective="min").value
    assert fair.value == pytest.approx(max(
        min(float(law.predict("ell_Grek", a)), float(law.predict("zho_Hans", b)))
        for a, b in itertools.product(range(0, 2001, 10), repeat=2) if a + b <= 2000))
    for bad, message in ((dict(budget=-5), "budget must be ≥ 0"),
                         (dict(budget=10, caps={"ell_Grek": -1}), "caps must be ≥ 0"),
                         (dict(budget=10, objective="mean"), "unknown objective"),
                         (dict(budget=10, caps={"tur_Latn": 3}), "not fitted on"),
                         (dict(budget=2000, step=5000), "exceeds what the budget")):
        with pytest.raises(DataError, match=message):
            allocate(law, **bad)
    # a budget far above the caps: the grid follows what can be spent (it used to be so coarse
    # that the "optimum" allocated nothing, below uniform, with exit 0)
    caps = {"ell_Grek": 3000, "zho_Hans": 3000}
    huge = allocate(law, 10 ** 12, caps)
    assert huge.value >= uniform(law, 10 ** 12, caps).value and sum(huge.pairs.values()) > 0


def test_written_spec_round_trips_through_the_training_parser(shared_data):
    spec = instruction_translation_spec(20, {"ell_Grek": 120, "zho_Hans": 0})
    assert spec == "alpaca_en[:20] + alpaca_el[:20] + translation_en-el[:120] + alpaca_zh[:20]"
    assert str(parse_spec(spec)) == spec
    mixture = build_mixture(spec)
    assert mixture.report.kept == {"alpaca_en": 20, "alpaca_el": 20, "translation_en-el": 120,
                                   "alpaca_zh": 20}


def test_fit_law_and_allocate_cli(tmp_path, capsys):
    points = sweep_points()
    write_sweep(points, tmp_path / "sweep.csv")
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]) == 0
    saved = json.loads((tmp_path / "law" / "law.json").read_text())
    assert saved["best"] == saved["fits"][0]["family"] and len(saved["fits"]) == 3
    assert saved["fits"][0]["explained_within"] > 0.98
    assert saved["no_size_effect"]["aicc"] - saved["fits"][0]["aicc"] > 10
    assert "data size predicts it" in capsys.readouterr().out
    assert (tmp_path / "law" / "report.html").stat().st_size > 10_000
    law = str(tmp_path / "law" / "law.json")
    assert main(["allocate", law, "--budget", "3000", "--caps", "el=200,hi=5000,zh=5000",
                 "--instructions", "50", "--no-static"]) == 0
    allocation = json.loads((tmp_path / "law" / "allocation" / "allocation.json").read_text())
    pairs = {r["language"]: r["pairs"] for r in allocation["allocated"]}
    assert pairs["ell_Grek"] <= 200 and sum(pairs.values()) <= 3000
    assert allocation["value"]["allocated"] >= allocation["value"]["uniform"]
    spec = (tmp_path / "law" / "allocation" / "allocated.spec").read_text().strip()
    assert str(parse_spec(spec)) == spec and spec.startswith("alpaca_en[:50]")
    assert main(["allocate", law, "--budget", "-5"]) == 2
    assert main(["allocate", str(tmp_path / "nope.json"), "--budget", "5"]) == 2
    write_sweep(points.head(3), tmp_path / "few.csv")
    assert main(["fit-law", str(tmp_path / "few.csv"), "--no-static"]) == 2


def test_sweep_on_a_tiny_model_resumes(tmp_path, tiny_llama_dir, shared_data):
    from layer_analysis.train.loop import TrainConfig
    from layer_analysis.train.sweep import SweepConfig, point_dir, run_sweep

    def config(**kwargs) -> SweepConfig:
        template = TrainConfig(mixture="", output=tmp_path, model=str(tiny_llama_dir),
                               batch_size=4, max_length=1024, device="cpu", progress=False,
                               save_every=1000)
        return SweepConfig(**{**dict(languages=["el"], sizes=[6, 0], output=tmp_path / "sweep",
                                     training=template, instructions=4, eval_sentences=2,
                                     max_new_tokens=3, similarity_sentences=12), **kwargs})

    table = run_sweep(config(), say=lambda _: None)
    assert list(table.requested) == [0, 6] and set(table.language) == {"ell_Grek"}
    assert list(table.pairs) == [0, 6]  # pairs trained on: none rejected here
    assert table.similarity.between(0, 1).all() and table.similarity.nunique() == 1
    assert list(table.examples) == [8, 14] and table["train_lr"].eq(2e-4).all()
    assert {"chrf++", "spbleu", "mixture", "steps", "final_loss"} <= set(table.columns)
    assert table.alignment.between(0, 1).all() and table.alignment_layer.ge(0).all()
    # The tracker measures alignment as the similarity run does: on the base model they agree.
    from layer_analysis.probe.models import load_model
    from layer_analysis.train.tracking import AlignmentTracker, TrackingConfig, peak_alignment

    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    tracker = AlignmentTracker(TrackingConfig(languages=("el",), sentences=12), ["ell_Grek"],
                               base.model, base.tokenizer, "base", tmp_path)
    [peak] = peak_alignment(tracker.measure(0)).itertuples()
    assert peak.value == pytest.approx(table.similarity.iloc[0], abs=1e-6)
    assert pd.read_csv(tmp_path / "sweep" / "sweep.csv").shape == table.shape
    done = point_dir(tmp_path / "sweep", "ell_Grek", 6)
    trained = (done / "training.json").stat().st_mtime_ns
    (done / "evaluation.json").unlink()  # as if interrupted after training
    again = run_sweep(config(), say=lambda _: None)
    assert (done / "training.json").stat().st_mtime_ns == trained  # not retrained
    assert again["chrf++"].tolist() == table["chrf++"].tolist()
    with pytest.raises(DataError, match="other settings"):
        run_sweep(config(instructions=5), say=lambda _: None)
    # A similarity measured by an older extraction engine (other pooling) is not reused.
    from layer_analysis.train.sweep import measure_similarity

    stale = tmp_path / "sweep" / "similarity.json"
    stale.write_text('{"engine": 1, "scores": {"ell_Grek": {"score": 0.999, "layer": 1}}}')
    assert measure_similarity(config()) == {"ell_Grek": table.similarity.iloc[0]}
    with pytest.raises(DataError, match="sizes must be"):
        config(sizes=[-1])


def test_size_effect_verdict_needs_both_criteria():
    from layer_analysis.train.law import NoSizeEffect
    from layer_analysis.train.law_run import size_effect_lines

    def verdict(delta_aicc: float, law_loo: float, loo_points: int = 8) -> str:
        fit = LawFit("log", SIMILARITY, 0.6, TRUE, TRUE, BASELINES, BASELINES, 8, 0.5, 0.9,
                     10.0, law_loo, [], loo_points=loo_points)
        return size_effect_lines(fit, NoSizeEffect(8, 1.0, 10.0 + delta_aicc, 1.0, 8))[-1]

    assert "explains 75% of the within-language variance" in verdict(5, 0.5)  # 1 - 0.5²
    assert verdict(5, 0.5).endswith("against no size effect: data size predicts it")
    assert "suggestive" in verdict(-8, 0.5)  # leave-one-out favours the law, AICc does not
    assert "no size effect fits better" in verdict(-8, 1.5)
    assert verdict(5, 1.5).endswith(": these points do not show that data size predicts it")
    # a law whose leave-one-out skipped a point is not compared with the null's on its error
    assert "not compared" in verdict(5, 0.5, loo_points=7)
    assert "predicts it" not in verdict(5, 0.5, loo_points=7)


def test_a_law_file_is_read_strictly(tmp_path):
    """allocate's law.json: a device is named as such (it was 'does not exist'), a missing file
    says how to make one, another JSON is no law."""
    from layer_analysis.train.law import load_fit

    with pytest.raises(DataError, match="character device"):
        load_fit(Path("/dev/zero"))
    with pytest.raises(DataError, match="does not exist: run `layer-analysis fit-law` first"):
        load_fit(tmp_path / "law.json")
    (tmp_path / "other.json").write_text('{"kind": "lens"}')
    with pytest.raises(DataError, match=r"is not a law\.json written by fit-law"):
        load_fit(tmp_path / "other.json")


def test_a_law_written_again_removes_the_allocations_made_from_the_earlier_one(tmp_path, capsys):
    """fit-law --overwrite replaces the law: the allocations inside its directory made from the
    earlier law (its default allocation/ and another naming this law.json) go, with a notice;
    an allocation of another law kept there stays. la.load then cannot report the new law's
    path with the old fit's predictions."""
    import layer_analysis as la

    points = sweep_points()
    write_sweep(points, tmp_path / "sweep.csv")
    shifted = points.assign(score=points.score + 5 * (points.language == "ell_Grek"))
    write_sweep(shifted, tmp_path / "other.csv")
    law, other = tmp_path / "law", tmp_path / "other-law"
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]) == 0
    assert main(["fit-law", str(tmp_path / "other.csv"), "--no-static", "--output",
                 str(other)]) == 0
    allocate = ["--budget", "1000", "--caps", "el=500,hi=500,zh=500", "--no-static"]
    assert main(["allocate", str(law / "law.json"), *allocate]) == 0
    assert main(["allocate", str(law / "law.json"), *allocate, "--output",
                 str(law / "small")]) == 0
    assert main(["allocate", str(other / "law.json"), *allocate, "--output",
                 str(law / "foreign")]) == 0
    capsys.readouterr()
    assert main(["fit-law", str(tmp_path / "other.csv"), "--no-static", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert not (law / "allocation").exists() and not (law / "small").exists()
    assert f"removed {law / 'allocation'}" in err and f"removed {law / 'small'}" in err
    assert "foreign" not in err and la.load(law / "foreign").kind == "allocation"
    assert la.load(law).kind == "law" and (law / "report.html").exists()


def test_a_law_written_again_removes_only_its_allocations_files(tmp_path, capsys):
    """fit-law --overwrite removes only what allocate wrote from the earlier law: an allocation
    of another law in allocation/ stays whole; beside files of one's own they stay, and so does
    the directory (said); a JSON file named allocation.json of someone else's is no allocation."""
    import shutil

    import layer_analysis as la

    points = sweep_points()
    write_sweep(points, tmp_path / "sweep.csv")
    law, other = tmp_path / "law", tmp_path / "other-law"
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]) == 0
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static", "--output",
                 str(other)]) == 0
    allocate = ["--budget", "1000", "--caps", "el=500,hi=500,zh=500", "--no-static"]
    assert main(["allocate", str(other / "law.json"), *allocate, "--output",
                 str(law / "allocation")]) == 0  # another law's, under the default name
    mine = law / "mine"
    assert main(["allocate", str(law / "law.json"), *allocate, "--output", str(mine)]) == 0
    (mine / "figures").mkdir()  # as a run with figures leaves them
    for ext in ("png", "pdf"):
        (mine / "figures" / f"mine-allocation.{ext}").write_bytes(b"figure")
    (mine / "precious.txt").write_text("precious")
    (mine / "my-notes").mkdir()
    (mine / "my-notes" / "paper.tex").write_text("\\section{}")
    (law / "paper").mkdir()
    shutil.copy(mine / "allocation.json", law / "paper" / "allocation.json")
    (law / "paper" / "thesis-figure-data.csv").write_text("a,b\n1,2\n")
    foreign = law / "foreign"
    foreign.mkdir()
    (foreign / "allocation.json").write_text('{"mine": 1}')
    (foreign / "report.html").write_text("my report")
    before = {p: p.read_bytes() for p in (law / "allocation").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert {p: p.read_bytes() for p in (law / "allocation").rglob("*") if p.is_file()} == before
    assert la.load(law / "allocation").kind == "allocation"
    assert sorted(p.name for p in mine.iterdir()) == ["my-notes", "precious.txt"]
    assert (mine / "my-notes" / "paper.tex").exists()
    assert sorted(p.name for p in (law / "paper").iterdir()) == ["thesis-figure-data.csv"]
    assert f"allocation in {mine}" in err and "kept the directory" in err and "precious.txt" in err
    assert f"{law / 'allocation'}" not in err and "foreign" not in err
    assert (foreign / "allocation.json").read_text() == '{"mine": 1}'
    assert main(["allocate", str(law / "law.json"), *allocate, "--output", str(foreign),
                 "--overwrite"]) == 2  # not an allocation: not replaced, even so
    assert "not a layer-analysis run" in capsys.readouterr().err
    assert (foreign / "report.html").read_text() == "my report"


def test_fit_law_and_allocate_say_a_missing_input_before_the_output_s_state(tmp_path, capsys):
    """A missing sweep or law with an existing default output: "no such file", not "pass
    --overwrite"."""
    points = sweep_points()
    write_sweep(points, tmp_path / "sweep.csv")
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]) == 0
    assert main(["allocate", str(tmp_path / "law" / "law.json"), "--budget", "100",
                 "--no-static"]) == 0
    (tmp_path / "sweep.csv").unlink()
    capsys.readouterr()
    assert main(["fit-law", str(tmp_path / "sweep.csv"), "--no-static"]) == 2
    assert "sweep.csv: no such file" in capsys.readouterr().err
    (tmp_path / "law" / "law.json").rename(tmp_path / "kept.json")
    assert main(["allocate", str(tmp_path / "law" / "law.json"), "--budget", "100"]) == 2
    err = capsys.readouterr().err
    assert "law.json does not exist" in err and "--overwrite" not in err
