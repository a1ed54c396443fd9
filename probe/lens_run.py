"""One ``layer-analysis lens`` run, from request to run directory: the word probes (translation,
repetition) and the running-text probe through the logit lens. ``lens.csv`` holds the curves;
``lens_words.csv`` each concept's tokens or why it was left out; ``lens_top.csv`` each layer's
most frequent top-1 token; ``token_languages.csv`` the token -> language table; then
``report.html`` and, last, the manifest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import report
from .checks import COUNT, COUNT_OR_NONE, SEED, capped, check_numbers, select_capped
from .data import ParallelCorpus, load_parallel, named_datasets
from .errors import DataError, StoreError, notice
from .extract import MIN_LENGTH
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .languages import ENGLISH, canonical, display_name
from .latent import (
    TASKS,
    WORDS,
    WordList,
    build_probes,
    cloze_sentences,
    load_words,
    sentence_latent,
    word_probe_table,
)
from .lens import LogitLens
from .metrics import bootstrap_ci
from .models import loaded_or_load
from .runs import RunSettings, versions, writes_runs
from .token_languages import build_token_languages
from .tuned_lens import TunedLens, TuningConfig, kl_to_final, train_tuned_lens

DEFAULT_TARGETS = ("deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans")  # Wendler et al.'s languages
LENS_TABLE, WORDS_TABLE, TOP_TABLE = "lens.csv", "lens_words.csv", "lens_top.csv"
TOKENS_TABLE, KL_TABLE = "token_languages.csv", "tuned_lens_kl.csv"
CHECKPOINT = "tuned_lens.safetensors"
NOTABLE = 0.01  # the English-first summary ignores layers where English is below 1 %


@dataclass
class LensRequest(RunSettings):
    targets: list[str] | None = None  # default: DEFAULT_TARGETS
    source: str | None = None  # translation source; default French (German for French targets)
    tasks: tuple[str, ...] = ("translation",)
    words: Path = WORDS
    limit: int | None = None  # concepts (--concepts); None: all
    shots: int = 4
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 16
    static: bool = True
    sentences: int = 50  # per language, for the running-text probe (--limit; 0: none)
    positions: int = 4  # sampled token positions per sentence
    sentence_data: str | None = None  # default: flores-devtest where present, else the shipped set
    table_data: str | None = None  # token -> language counts; default: flores-dev, else shipped
    top_k: int = 10
    tuned_steps: int = 0  # > 0: train a multilingual tuned lens (resumable) and compare KLs
    tuned_sentences: int = 40  # per language of the table data, for training it
    tuned_positions: int = 8
    cloze_data: str | None = None  # sentences to blank; default: flores-devtest, else shipped
    max_length: int = 2048  # tokens per prompt (cloze prompts in byte-split scripts run long)


def source_for(target: str, source: str | None) -> str:
    """The translation source: as asked, else French (German when the target is French)."""
    chosen = source or ("deu_Latn" if target == "fra_Latn" else "fra_Latn")
    if chosen == target:
        raise DataError(f"the translation source and target are both {display_name(target)}")
    return chosen


def check_lens_request(request: LensRequest) -> tuple[WordList, list[str], str | None]:
    """Every check that needs no model: the run directory's settings, numbers, the word list,
    languages, tasks."""
    request.check_name("lens")  # RunSettings' checks of where the run goes, first
    check_numbers({
        "--batch-size": (request.batch_size, COUNT), "--shots": (request.shots, COUNT_OR_NONE),
        "--bootstrap": (request.bootstrap, COUNT), "--seed": (request.seed, SEED),
        "--concepts": (request.limit, COUNT), "--limit": (request.sentences, COUNT_OR_NONE),
        "--positions": (request.positions, COUNT), "--top-k": (request.top_k, COUNT),
        "--tuned-steps": (request.tuned_steps, COUNT_OR_NONE),
        "--tuned-sentences": (request.tuned_sentences, COUNT),
        "tuned positions": (request.tuned_positions, COUNT),
        "--max-length": (request.max_length, MIN_LENGTH)})
    words = load_words(request.words)
    capped(request.limit, len(words.words), "concepts", str(request.words))
    targets = [canonical(x, "--languages") for x in request.targets or DEFAULT_TARGETS]
    if len(set(targets)) != len(targets):
        raise DataError("a language is listed twice in --languages")
    source = canonical(request.source, "--source") if request.source else None
    for language in [*targets, *([source] if source else [])]:
        if language not in words.languages:
            raise DataError(f"the word list {request.words} has no {display_name(language)} "
                            f"column (it has {', '.join(words.languages)})")
    if ENGLISH in targets:
        raise DataError("English is the reference the lens compares with; choose other targets")
    unknown = [t for t in request.tasks if t not in TASKS]
    if unknown or not request.tasks:
        raise DataError(f"unknown lens task {unknown or '(none)'}; choose from {', '.join(TASKS)}")
    if request.limit is not None and request.limit < request.shots + 2:
        raise DataError(f"--concepts {request.limit} leaves too few concepts for "
                        f"{request.shots}-shot prompts")
    for target in targets:  # every language of every prompt has its word
        for concept in list(words.words)[: request.limit]:
            for language in {target, source_for(target, source), ENGLISH}:
                words.word(concept, language)
    if request.tuned_steps and request.sentences == 0:
        raise DataError("the tuned lens is evaluated on the running-text sentences: --limit "
                        "must be above 0")
    return words, targets, source


def _default_data(preferred: str) -> str:
    available = {name for name, (where, _) in named_datasets().items() if where is not None}
    return preferred if preferred in available else "default"


def cloze_blanks(request: LensRequest, words: WordList, targets: list[str]
                 ) -> dict[str, dict[str, str]]:
    """Per target: concept -> a sentence of the cloze data with the word blanked (checked to be
    enough for the prompts before any model loads); empty when cloze is not asked for."""
    if "cloze" not in request.tasks:
        return {}
    corpus = load_parallel(request.cloze_data or _default_data("flores-devtest"))
    blanks = {}
    for target in targets:
        sides = [s for s in corpus.sides.values() if s.language == target]
        if not sides:
            raise DataError(f"the cloze data {corpus.name} has no {display_name(target)}")
        concepts = set(list(words.words)[: request.limit])
        blanks[target] = {c: b for c, b in cloze_sentences(words, sides[0].sentences,
                                                           target).items() if c in concepts}
        if len(blanks[target]) < request.shots + 2:
            raise DataError(f"only {len(blanks[target])} concepts' {display_name(target)} words "
                            f"occur in {corpus.name}: too few for {request.shots}-shot cloze "
                            "prompts (give --cloze-data with more text)")
    return blanks


def check_prompt_lengths(tokenizer, probes: list, limit: int, task: str, target: str) -> None:
    """A prompt longer than the lens's limit is an error (truncating it would move its end)."""
    for probe in probes:
        length = len(tokenizer(probe.prompt)["input_ids"])
        if length >= limit:
            raise DataError(f"{task} → {display_name(target)}: the prompt for {probe.concept!r} "
                            f"has {length} tokens, the limit is {limit}; pass --max-length "
                            "above it or fewer --shots")


def sentence_corpora(request: LensRequest, targets: list[str]
                     ) -> tuple[ParallelCorpus, ParallelCorpus] | None:
    """The sentences the running-text probe reads and the corpus its token -> language table is
    counted on (disjoint by default: FLORES devtest and dev), or None with ``sentences=0``."""
    if request.sentences == 0:
        return None
    text_name = request.sentence_data or _default_data("flores-devtest")
    table_name = request.table_data or _default_data("flores-dev")
    text = select_capped(load_parallel(text_name), targets, request.sentences)
    table = load_parallel(table_name)
    missing = [x for x in [*targets, ENGLISH] if x not in table.languages]
    if missing:
        raise DataError(f"the token-language data {table.name} lacks "
                        f"{', '.join(display_name(x) for x in missing)}")
    return text, table


@writes_runs
def execute_lens(request: LensRequest, command: list[str],
                 say: Callable[[str], None] = lambda _: None) -> tuple[Path, pd.DataFrame]:
    """Run every task × target; returns the run directory and the tidy table. ``say`` hears
    one line per stage."""
    words, targets, source = check_lens_request(request)
    corpora = sentence_corpora(request, targets)
    blanks = cloze_blanks(request, words, targets)
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, request.device, request.dtype)
    lens = LogitLens(loaded, max_length=request.max_length)
    timings = {"load_model": time.perf_counter() - clock}
    truncation = None if corpora is None else text_truncation(lens, corpora[0])
    run_dir = request.claim("lens", f"{loaded.name}-lens")
    prepared = []  # every task's prompts first: a prompt too long fails before any pass
    for task in request.tasks:
        for target in targets:
            given = source_for(target, source) if task == "translation" else target
            probes, skipped = build_probes(words, loaded.tokenizer, task, given, target,
                                           request.shots, request.limit, request.seed,
                                           blanks.get(target))
            check_prompt_lengths(loaded.tokenizer, probes, request.max_length, task, target)
            prepared.append((task, target, given, probes, skipped))
    tuned = None
    if request.tuned_steps and corpora is not None:
        clock = time.perf_counter()
        say(f"tuned lens: {request.tuned_steps} steps (resumable)")
        tuned = fit_tuned_lens(lens, request, corpora[1], run_dir, loaded.identity)
        timings["tuned_lens"] = time.perf_counter() - clock
    lenses = [("logit", None), *([("tuned", tuned)] if tuned is not None else [])]
    clock = time.perf_counter()
    tables, tops, word_rows = [], [], []
    tokens = loaded.tokenizer.convert_ids_to_tokens
    for stage, (task, target, given, probes, skipped) in enumerate(prepared, 1):
        say(f"{task} -> {display_name(target)} ({stage}/{len(prepared)})")
        word_rows += [{"task": task, "target": target, "concept": p.concept,
                       "word": words.word(p.concept, target),
                       "target_tokens": " ".join(tokens(list(p.target_tokens))),
                       "english_tokens": " ".join(tokens(list(p.english_tokens))),
                       "used": True, "reason": ""}
                      for p in probes]
        word_rows += [{**s, "word": words.word(s["concept"], target), "target_tokens": "",
                       "english_tokens": "", "used": False} for s in skipped]
        for name, translator in lenses:
            table, top = word_probe_table(lens, probes, request.bootstrap, request.seed,
                                          request.batch_size, translator)
            tables.append(table.assign(model=loaded.name, task=task, lens=name, source=given,
                                       target=target))
            tops.append(top.assign(task=task, lens=name, target=target,
                                   token=tokens(top.token_id.tolist())))
    timings["words"] = time.perf_counter() - clock
    token_table, kl_table = None, None
    if corpora is not None:
        clock = time.perf_counter()
        say(f"running text of {len(targets)} languages")
        text, counted = corpora
        token_languages = build_token_languages(loaded.tokenizer, counted)
        token_table = token_languages.table
        for name, translator in lenses:
            running = sentence_latent(lens, text, token_languages, request.positions,
                                      request.top_k, request.bootstrap, request.seed,
                                      request.batch_size, translator)
            tables.append(running.assign(model=loaded.name, task="sentences", lens=name,
                                         source=text.name))
        if tuned is not None:
            kl_table = held_out_kl(lens, tuned, text, request)
        timings["sentences"] = time.perf_counter() - clock
    table = pd.concat(tables, ignore_index=True)[
        ["model", "task", "lens", "source", "target", "layer", "measure", "value", "ci_low",
         "ci_high", "concepts"]]
    start_run_directory(run_dir, keep=[CHECKPOINT])
    atomic_write(run_dir / LENS_TABLE, lambda tmp: table.to_csv(tmp, index=False))
    words_table = pd.DataFrame(word_rows)
    atomic_write(run_dir / WORDS_TABLE, lambda tmp: words_table.to_csv(tmp, index=False))
    top_table = pd.concat(tops, ignore_index=True)[["task", "lens", "target", "layer", "token",
                                                    "token_id", "share"]]
    atomic_write(run_dir / TOP_TABLE, lambda tmp: top_table.to_csv(tmp, index=False))
    if token_table is not None:
        atomic_write(run_dir / TOKENS_TABLE, lambda tmp: token_table.to_csv(tmp, index=False))
    figures = {}
    if kl_table is not None:
        atomic_write(run_dir / KL_TABLE, lambda tmp: kl_table.to_csv(tmp, index=False))
        figures["tuned_lens_kl"] = report.lens_kl(kl_table)
    for (task, name), rows in table.groupby(["task", "lens"], sort=False):
        suffix = "" if name == "logit" else f"_{name}"
        figures[f"latent_{task}{suffix}"] = report.latent_language(rows)
        figures[f"entropy_{task}{suffix}"] = report.latent_entropy(rows)
    summary = [english_summary(table)]
    report.export(figures, run_dir, f"Logit lens of {loaded.name}", summary, request.static,
                  loaded.name)
    manifest = {
        "command": command, "kind": "lens",
        "model": loaded.record(request.adapter),
        "lens": {"tasks": list(request.tasks), "targets": targets, "source": source,
                 "words": str(request.words), "concepts": len(list(words.words)[: request.limit]),
                 "shots": request.shots, "bootstrap": request.bootstrap, "seed": request.seed,
                 "layers": lens.layers,
                 "left_out": int((~words_table.used).sum()) if len(words_table) else 0,
                 "sentences": None if corpora is None else {
                     "data": corpora[0].name, "per_language": request.sentences,
                     "positions": request.positions, "top_k": request.top_k,
                     "token_languages_from": corpora[1].name, "truncation": truncation},
                 "tuned_lens": None if kl_table is None else {
                     "steps": tuned.steps, "trained_on": corpora[1].name,
                     "sentences_per_language": request.tuned_sentences,
                     "positions": request.tuned_positions, "checkpoint": CHECKPOINT},
                 "cloze_data": (request.cloze_data or _default_data("flores-devtest"))
                 if blanks else None},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir, table


def english_summary(table: pd.DataFrame) -> str:
    """Per model, task and target: the layers where English is likelier than the answer (CIs
    apart, and English at least ``NOTABLE``: early layers separate at 1e-5), and its peak."""
    parts = []
    several = table.model.nunique() > 1
    lens_of = table["lens"] if "lens" in table else pd.Series("logit", index=table.index)
    tuned = (lens_of != "logit").any()
    for (model, task, name, target), rows in table.assign(lens=lens_of).groupby(
            ["model", "task", "lens", "target"], sort=False):
        wide = rows.pivot_table(index="layer", columns="measure", values=["value", "ci_low",
                                                                          "ci_high"])
        english_first = [int(layer) for layer in wide.index
                         if wide.loc[layer, ("ci_low", "p_english")]
                         > wide.loc[layer, ("ci_high", "p_target")]
                         and wide.loc[layer, ("value", "p_english")] >= NOTABLE]
        peak = int(wide[("value", "p_english")].idxmax())
        where = ("English first at layer" + ("s " if len(english_first) > 1 else " ")
                 + _ranges(english_first) if english_first else "English never clearly first")
        label = f"{task} ({name} lens)" if tuned else task
        parts.append(f"{model + ', ' if several else ''}{label} → {display_name(target)}: {where}; "
                     f"English peaks at layer {peak} "
                     f"({wide.loc[peak, ('value', 'p_english')]:.3f})")
    return "; ".join(parts)


def _ranges(layers: list[int]) -> str:
    spans, start = [], layers[0]
    for previous, layer in zip(layers, [*layers[1:], None], strict=True):
        if layer != previous + 1:
            spans.append(f"{start}" if start == previous else f"{start}–{previous}")
            start = layer
    return ", ".join(spans)


def read_lens_run(directory: Path) -> tuple[dict, pd.DataFrame]:
    """A finished lens run's manifest and curves, or a clear error."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        table = pd.read_csv(directory / LENS_TABLE)
    except FileNotFoundError as exc:
        raise StoreError(f"{directory} is not a finished lens run ({Path(exc.filename).name} is "
                         "missing)") from None
    except ValueError as exc:
        raise StoreError(f"{directory} holds an unreadable lens run ({exc})") from None
    if manifest.get("kind") != "lens" or not {"task", "target", "layer", "measure", "value"} \
            <= set(table.columns):
        raise StoreError(f"{directory} is not a lens run")
    return manifest, table


def discover_lens_runs(root: Path) -> list[Path]:
    """Finished lens runs under ``root``, newest first."""
    found = [m.parent for m in root.glob(f"*/{MANIFEST}") if (m.parent / LENS_TABLE).exists()]
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


def fit_tuned_lens(lens: LogitLens, request: LensRequest, counted: ParallelCorpus,
                   run_dir: Path, identity: dict) -> TunedLens:
    """Train (or resume) the tuned lens on the table corpus, in all its languages."""
    training = select_capped(counted, None, request.tuned_sentences)
    sentences = [s for side in training.sides.values() for s in side.sentences]
    states, _ = lens.position_states(sentences, request.tuned_positions, request.seed,
                                     request.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = TuningConfig(steps=request.tuned_steps, seed=request.seed)
    return train_tuned_lens(lens, states, config, run_dir / CHECKPOINT,
                            {**identity, "data": training.fingerprint()})


def text_truncation(lens: LogitLens, text: ParallelCorpus) -> dict:
    """What ``--max-length`` cuts of the running-text sentences, for the manifest (and a notice
    when more than 5 % are cut, or one by more than half)."""
    record = lens.extractor.truncation([s for side in text.sides.values() for s in side.sentences])
    if record.serious:
        notice(record.warning())
    return record.to_dict()


def held_out_kl(lens: LogitLens, tuned: TunedLens, text: ParallelCorpus,
                request: LensRequest) -> pd.DataFrame:
    """Per held-out language and layer: KL(final || lens) for the logit and the tuned lens."""
    rows = []
    for side in text.sides.values():
        held, _ = lens.position_states(list(side.sentences), request.positions, request.seed,
                                       request.batch_size)
        for name, translators in (("logit", None), ("tuned", tuned)):
            values = kl_to_final(lens, held, translators)
            low, high = bootstrap_ci(values, request.bootstrap, seed=request.seed)
            rows += [{"language": side.language, "lens": name, "layer": layer,
                      "kl": float(values[i].mean()), "ci_low": float(low[i]),
                      "ci_high": float(high[i]), "positions": values.shape[1]}
                     for i, layer in enumerate(lens.layers)]
    return pd.DataFrame(rows)


def is_lens_run(directory: Path) -> bool:
    try:
        return json.loads((directory / MANIFEST).read_text()).get("kind") == "lens"
    except (OSError, ValueError, AttributeError):
        return False


def compare_lens_runs(directories: list[Path], output: Path, static: bool = True) -> list[Path]:
    """Lens runs of several models (base, x-, m-model) drawn side by side: one figure per probe
    with every model's curves, the tables concatenated; returns the report's paths."""
    if len(directories) < 2:
        raise DataError("compare needs at least two run directories")
    tables = [read_lens_run(d)[1] for d in directories]
    names = [t.model.iloc[0] for t in tables]
    if len(set(names)) < len(names):
        raise DataError(f"two lens runs share a model name ({', '.join(names)})")
    table = pd.concat(tables, ignore_index=True)
    start_run_directory(output)
    atomic_write(output / LENS_TABLE, lambda tmp: table.to_csv(tmp, index=False))
    figures = {f"latent_{task}": report.latent_language(table[table.task == task])
               for task in dict.fromkeys(table.task)}
    paths = report.export(figures, output, "Logit lens: " + " vs ".join(names),
                          [english_summary(table)], static, " vs ".join(names))
    atomic_write_text(output / MANIFEST, json.dumps(
        {"kind": "lens", "compare": [str(d) for d in directories], "models": names,
         "versions": versions()}, indent=2))
    return paths
