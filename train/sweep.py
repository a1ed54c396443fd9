"""Translation-data sweeps for the scaling law: per language, x-models (the CoIT recipe) on
growing numbers of English -> L pairs, each evaluated, collected in one tidy table.

    OUTPUT/sweep.json            the sweep's settings (a rerun must match them)
    OUTPUT/similarity.json       s_L of every language and how it was measured
    OUTPUT/similarity-run/       the probe run it came from
    OUTPUT/points/<iso>-<n>/     one training output (adapter, training.json) + evaluation.json
    OUTPUT/sweep.csv             language, pairs, similarity, scores, the trained model's alignment
                                 (``alignment``: the similarity's measure, after training), the
                                 point's training settings

``pairs`` is what the point trained on: the requested size less the pairs rejected as empty or
over-length (``requested`` keeps the asked-for size); the law is fitted on ``pairs``.

An interrupted sweep resumes: finished points are kept, a point with checkpoints continues from
its last good one, and the table is rebuilt from the points on disk. One process at a time
writes a sweep: ``run_sweep`` holds OUTPUT's writer lock throughout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from layer_analysis.probe.analysis import AnalysisConfig, english_peaks
from layer_analysis.probe.errors import DataError, notice
from layer_analysis.probe.files import MANIFEST, WRITER_LOCK, atomic_write_text, writer_lock
from layer_analysis.probe.languages import ENGLISH, canonical, display_name, iso639_1
from layer_analysis.probe.readers import finite_number, read_csv_rows

from .loop import TrainConfig, checkpoints
from .mixture import instruction_translation_spec
from .tracking import ALIGNMENT_LOG, TrackingConfig, peak_alignment, read_alignment_log

# training fields set per point, not settings
PER_RUN = ("mixture", "output", "resume", "progress", "tracking")
SIMILARITY_DEFINITION = ("centered retrieval P@1 of the base model, English <-> L, both "
                         "directions averaged, at the layer where it peaks")


@dataclass
class SweepConfig:
    languages: list[str]
    sizes: list[int]
    output: Path
    training: TrainConfig  # a template: mixture and output are set per point
    instructions: int = 100  # Alpaca records per language (English included) at every point
    eval_data: str = "flores-devtest"
    eval_sentences: int = 50
    max_new_tokens: int = 100
    xquad: int = 0  # XQuAD questions per language (0: none)
    similarity_data: str = "flores-dev"
    similarity_sentences: int = 200
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if not self.languages:
            raise DataError("a sweep needs at least one language")
        self.languages = [canonical(x, "--languages") for x in self.languages]
        if ENGLISH in self.languages:
            raise DataError("English is the source language; list the target languages only")
        if not self.sizes or any(n < 0 for n in self.sizes):
            raise DataError(f"sizes must be one or more whole numbers ≥ 0, not {self.sizes}")
        self.sizes = sorted(set(self.sizes))

    def settings(self) -> dict:
        training = {k: v for k, v in asdict(self.training).items()
                    if k not in PER_RUN}
        return json.loads(json.dumps({
            "languages": self.languages, "instructions": self.instructions,
            "eval_data": self.eval_data, "eval_sentences": self.eval_sentences,
            "max_new_tokens": self.max_new_tokens, "xquad": self.xquad,
            "similarity_data": self.similarity_data,
            "similarity_sentences": self.similarity_sentences, "training": training},
            default=str))


def point_dir(output: Path, language: str, size: int) -> Path:
    return output / "points" / f"{iso639_1(language)}-{size}"


def similarity_from_table(table: pd.DataFrame) -> dict[str, dict]:
    """s_L from a probe run's results: centered P@1 English <-> L averaged over both
    directions, maximised over layers (with the layer)."""
    rows = table[(table.metric == "p@1") & (table.normalisation == "centered")]
    if "pooling" in rows and rows.pooling.nunique() > 1:
        rows = rows[rows.pooling == ("mean" if "mean" in set(rows.pooling) else rows.pooling.iloc[0])]
    try:
        best = english_peaks(rows)
    except DataError:
        raise DataError("the run has no centered P@1 between English and another language") \
            from None
    return {r.language: {"score": float(r.value), "layer": int(r.layer)}
            for r in best.itertuples()}


def measure_similarity(config: SweepConfig) -> dict[str, float]:
    """s_L for the sweep's languages from one probe run of the base model (cached on disk)."""
    from layer_analysis.probe.pipeline import RunRequest, execute
    from layer_analysis.probe.runs import read_run
    from layer_analysis.probe.store import ENGINE_VERSION

    path = config.output / "similarity.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("engine") == ENGINE_VERSION and set(config.languages) <= set(saved["scores"]):
            return {x: saved["scores"][x]["score"] for x in config.languages}
    run_dir = config.output / "similarity-run"
    current = (run_dir / MANIFEST).exists() and read_run(run_dir).manifest.get(
        "engine") == ENGINE_VERSION
    if current:
        table = read_run(run_dir).table
    else:
        request = RunRequest(
            model=config.training.model, data=config.similarity_data,
            languages=[ENGLISH, *config.languages], limit=config.similarity_sentences,
            analysis=AnalysisConfig(normalisations=("centered",), bootstrap=200),
            projection="none", device=config.training.device, output=config.output,
            name="similarity-run", store=config.output / "store", static=False, overwrite=True)
        table = execute(request, ["sweep: similarity"]).results.table
    scores = similarity_from_table(table)
    missing = [x for x in config.languages if x not in scores]
    if missing:
        raise DataError(f"the similarity run has no scores for {', '.join(missing)}")
    atomic_write_text(path, json.dumps({"definition": SIMILARITY_DEFINITION,
                                        "engine": ENGINE_VERSION,
                                        "model": config.training.model,
                                        "data": config.similarity_data,
                                        "sentences": config.similarity_sentences,
                                        "scores": scores}, indent=2))
    return {x: scores[x]["score"] for x in config.languages}


def _check_settings(config: SweepConfig, write: bool = True) -> None:
    """A sweep's OUTPUT is new, empty or a sweep with the same settings (``sweep.json``,
    written first; not when ``write`` is false: the check alone)."""
    path = config.output / "sweep.json"
    settings = config.settings()
    if not write and not config.output.is_dir():
        return  # absent (or a file: the writer lock says so)
    others = sorted({p.name for p in config.output.iterdir()} - {WRITER_LOCK})
    if others and not path.exists():
        raise DataError(f"{config.output} holds files that are not a sweep's "
                        f"({', '.join(others[:5])}); choose a new or empty --output")
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in settings if k != "languages" and saved.get(k) != settings[k])
        if changed:
            raise DataError(f"{config.output} holds a sweep with other settings ({', '.join(changed)}"
                            "); choose another --output or the same settings")
        settings["sizes"] = sorted(set(saved.get("sizes", [])) | set(config.sizes))
        settings["languages"] = list(dict.fromkeys(saved["languages"] + config.languages))
    else:
        settings["sizes"] = config.sizes
    if write:
        config.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(settings, indent=2))


def run_point(config: SweepConfig, language: str, size: int) -> Path:
    """Train and evaluate one point unless already done; its directory."""
    from layer_analysis.probe.models import load_model

    from .evaluate import evaluate_translation, evaluate_xquad, write_evaluation
    from .loop import train

    directory = point_dir(config.output, language, size)
    if not (directory / "training.json").exists():
        # the trained model's alignment, measured as the base model's similarity was
        tracking = TrackingConfig(every=0, languages=(language,), data=config.similarity_data,
                                  sentences=config.similarity_sentences, before=False)
        train(replace(config.training, output=directory,
                      mixture=instruction_translation_spec(config.instructions, {language: size}),
                      resume=bool(checkpoints(directory)), tracking=tracking))
    if not (directory / "evaluation.json").exists():
        loaded = load_model(str(directory), device=config.training.device,
                            dtype=config.training.dtype)
        results = [evaluate_translation(loaded, language, config.eval_data,
                                        config.eval_sentences, max_new_tokens=config.max_new_tokens,
                                        batch_size=config.eval_batch_size)]
        if config.xquad:
            results.append(evaluate_xquad(loaded, language, config.xquad,
                                          batch_size=config.eval_batch_size))
        write_evaluation(results, directory / "evaluation.json", loaded.record())
    return directory


def point_alignment(directory: Path) -> dict:
    """The trained model's alignment with English (the similarity's definition) and its layer;
    empty for points trained before alignment was recorded."""
    path = directory / ALIGNMENT_LOG
    if not path.exists():
        return {"alignment": None, "alignment_layer": None}
    [peak] = peak_alignment(read_alignment_log(path)).itertuples()
    return {"alignment": float(peak.value), "alignment_layer": int(peak.layer)}


def sweep_table(output: Path) -> pd.DataFrame:
    """One row per finished point: language, pairs, similarity, scores, training settings."""
    similarity = json.loads((output / "similarity.json").read_text())["scores"] \
        if (output / "similarity.json").exists() else {}
    rows = []
    for directory in sorted((output / "points").glob("*-*")):
        if not (directory / "evaluation.json").exists():
            continue
        training = json.loads((directory / "training.json").read_text())
        scores = json.loads((directory / "evaluation.json").read_text())
        translation = next(s for s in scores if s["task"] == "translation")
        language = translation["target"]
        kept = training["data"]["kept"]
        row = {"language": language, "name": display_name(language),
               "pairs": sum(n for c, n in kept.items() if c.startswith("translation_")),
               "requested": int(directory.name.rsplit("-", 1)[1]),
               "similarity": similarity.get(language, {}).get("score"),
               "chrf++": translation["chrf++"], "spbleu": translation["spbleu"],
               "off_target_rate": translation.get("off_target_rate"),  # older points lack it
               "eval_sentences": translation["sentences"], **point_alignment(directory)}
        for s in scores:
            if s["task"] == "xquad":
                row.update({"xquad_em": s["em"], "xquad_f1": s["f1"],
                            "xquad_f1_mlqa": s.get("f1_mlqa"),  # older points lack it
                            "xquad_contains": s["contains"]})
        row.update({"steps": training["steps"], "examples": training["examples"],
                    "seconds": training["seconds"], "final_loss": training["final_loss"],
                    "mixture": training["mixture"], "point": str(directory)})
        row.update({f"train_{k}": v for k, v in training["config"].items()
                    if k not in PER_RUN})
        rows.append(row)
    if not rows:
        raise DataError(f"{output} holds no finished sweep points")
    return pd.DataFrame(rows).sort_values(["language", "requested"], ignore_index=True)


def run_sweep(config: SweepConfig, say: Callable[[str], None] = print) -> pd.DataFrame:
    """Similarity, then every (language, size) point; writes and returns the table. A second
    process on the same OUTPUT fails at once (the writer lock)."""
    _check_settings(config, write=False)  # before the lock: a refused OUTPUT is left as it was
    with writer_lock(config.output):
        return _run_sweep(config, say)


def _run_sweep(config: SweepConfig, say: Callable[[str], None]) -> pd.DataFrame:
    _check_settings(config)
    similarity = measure_similarity(config)
    say("similarity to English (" + SIMILARITY_DEFINITION + "): " + ", ".join(
        f"{x} {s:.3f}" for x, s in similarity.items()))
    points = [(x, n) for x in config.languages for n in config.sizes]
    for i, (language, size) in enumerate(points, 1):
        say(f"[{i}/{len(points)}] {language}, {size} translation pairs")
        run_point(config, language, size)
    table = sweep_table(config.output)
    tmp = config.output / ".sweep.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(config.output / "sweep.csv")
    return table


def read_points(path: Path | pd.DataFrame, metric: str) -> pd.DataFrame:
    """The points of a sweep (its directory, a CSV, or the same table as a DataFrame) that have
    ``metric`` and a similarity.

    Read strictly (``probe.readers``), each error naming the file and line (a DataFrame's row):
    a language the project does not know, ``pairs`` that is not a whole number ≥ 0, a similarity
    or score that is not a finite number, one language with two different similarities, one
    point (language and pairs, and ``requested`` where the table has it) with two different
    scores. A row with an empty score or similarity is left out; an exact repeat of a point
    counts once."""
    if isinstance(path, pd.DataFrame):  # each cell as the CSV would hold it (missing: empty)
        table_path, line = "dataframe", "row"
        header = [str(c) for c in path.columns]
        rows = [(number, {str(c): "" if pd.isna(v) else str(v) for c, v in row.items()})
                for number, (_, row) in enumerate(path.iterrows())]
    else:
        table_path, line = path / "sweep.csv" if path.is_dir() else path, "line"
        if path.is_dir() and not table_path.exists():
            raise DataError(f"{path} holds no sweep.csv: run `layer-analysis sweep` first")
        header, rows = read_csv_rows(table_path)
    missing = [c for c in ("language", "pairs", "similarity", metric) if c not in header]
    if missing:
        raise DataError(f"{table_path} lacks the column(s) {', '.join(missing)}")
    similarity: dict[str, tuple[float, int]] = {}  # language -> (value, line)
    points: dict[tuple, tuple[float, int]] = {}  # point -> (score, line)
    kept = []
    for number, row in rows:
        where = f"{table_path}, {line} {number}"
        if not row["language"].strip():
            raise DataError(f"{where}: no language")
        language = canonical(row["language"].strip(), where)
        pairs = finite_number(row["pairs"], where, "pairs")
        if pairs is None or pairs < 0 or pairs != int(pairs):
            raise DataError(f"{where}: pairs is {row['pairs'].strip()!r}, not a whole number ≥ 0")
        s_l = finite_number(row["similarity"], where, "similarity")
        if s_l is not None:
            seen, first = similarity.setdefault(language, (s_l, number))
            if seen != s_l:
                raise DataError(f"{where}: similarity of {language} is {s_l}, {line} {first} "
                                f"says {seen}; a language has one similarity")
        score = finite_number(row[metric], where, metric)
        if score is None or s_l is None:
            continue
        point = (language, int(pairs),
                 finite_number(row["requested"], where, "requested") if "requested" in row else None)
        seen, first = points.setdefault(point, (score, number))
        if first != number:
            if seen != score:
                raise DataError(f"{where}: {language} at {int(pairs)} pairs has {metric} {score}, "
                                f"{line} {first} says {seen}")
            notice(f"{where} repeats {line} {first}; the point counts once")
            continue
        kept.append({**row, "language": language, "pairs": int(pairs), "similarity": s_l,
                     metric: score})
    if not kept:
        raise DataError(f"{table_path}: no row has both a {metric} score and a similarity")
    return pd.DataFrame(kept, columns=header)
