"""One ``layer-analysis patch`` run: cross-lingual activation patching (``patching``) over
several language settings, its controls and CIs, written as a run directory (under its writer
lock, manifest last):

    patching.csv        setting, languages, mode, condition, control, layer, measure, value,
                        ci_low, ci_high, pairs (control empty: the condition's mean probability;
                        else the paired difference condition − control)
    patch_switch.csv    setting, condition, switch (language | concept | concept - language),
                        value, ci_low, ci_high, defined, pairs
    patch_pairs.csv     every concept pair: concepts, used, why it was left out
    report.html, figures/, manifest.json (last)

Every check that needs no model (numbers, languages, word list, mean languages, layers against
the model's config) runs before the model loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from . import report
from .checks import COUNT, SEED, capped, check_numbers
from .errors import DataError, StoreError, notice
from .extract import MIN_LENGTH
from .files import MANIFEST, atomic_write, atomic_write_text, start_run_directory
from .hooks import check_layers
from .languages import canonical
from .latent import WORDS, WordList, load_words
from .lens import LogitLens
from .models import block_count, loaded_or_load
from .patching import (
    MEASURES,
    Patcher,
    Setting,
    build_pairs,
    check_setting,
    patch_experiment,
    patch_table,
    switch_table,
)
from .runs import RunSettings, run_kind, versions, writes_runs

PATCH_TABLE, SWITCH_TABLE, PAIRS_TABLE = "patching.csv", "patch_switch.csv", "patch_pairs.csv"
DEFAULT_SETTINGS = (  # A → B (source) into A′ → B′ (target): four output-language switches
    ("deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl"),
    ("fra_Latn", "zho_Hans", "deu_Latn", "spa_Latn"),
    ("rus_Cyrl", "deu_Latn", "zho_Hans", "fra_Latn"),
    ("spa_Latn", "rus_Cyrl", "fra_Latn", "zho_Hans"),
)
DEFAULT_MEAN = ("deu_Latn", "fra_Latn", "rus_Cyrl", "zho_Hans", "spa_Latn")
LABELS = {"p_target": "P(C′ in B′): nothing moved", "p_concept": "P(C in B′): concept moved",
          "p_both": "P(C in B): both moved", "p_language": "P(C′ in B): language moved"}

KIND = "patch"  # the manifest's kind


@dataclass
class PatchRequest(RunSettings):
    settings: list[tuple[str, str, str, str]] | None = None  # default: DEFAULT_SETTINGS
    mean_languages: list[str] | None = None  # default: DEFAULT_MEAN less each setting's B
    layers: tuple[int, ...] | None = None  # default: every block output, 1..blocks
    onward: bool = False  # also patch every layer from l on
    words: Path = WORDS
    limit: int | None = None  # target concepts (one pair each) per setting
    shots: int = 4
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 16
    max_length: int = 2048
    static: bool = True


def _settings(request: PatchRequest) -> list[tuple[Setting, list[str]]]:
    chosen = []
    for raw in request.settings or DEFAULT_SETTINGS:
        if len(raw) != 4:
            raise DataError(f"a setting is four languages (A B A′ B′), got {' '.join(raw)}")
        setting = Setting(*(canonical(x, "--pair") for x in raw))
        if request.mean_languages is not None:
            mean = [canonical(x, "--mean-languages") for x in request.mean_languages]
        else:
            mean = [x for x in DEFAULT_MEAN if x != setting.source_out]
        chosen.append((setting, mean))
    if len({s for s, _ in chosen}) != len(chosen):
        raise DataError("a setting is listed twice in --pair")
    return chosen


def check_patch_request(request: PatchRequest) -> tuple[WordList, list[tuple[Setting, list[str]]]]:
    """Every check that needs no model: where the run goes, numbers, the word list, each
    setting's languages, the mean's languages, the layers against the model's config."""
    request.check_name(KIND)
    check_numbers({"--batch-size": (request.batch_size, COUNT), "--shots": (request.shots, COUNT),
                   "--bootstrap": (request.bootstrap, COUNT), "--seed": (request.seed, SEED),
                   "--concepts": (request.limit, COUNT), "--max-length": (request.max_length,
                                                                     MIN_LENGTH)})
    words = load_words(request.words)
    capped(request.limit, len(words.words), "concepts", str(request.words))
    concepts = len(list(words.words)[: request.limit])
    if concepts < request.shots + 3:
        raise DataError(f"{concepts} concepts are too few for {request.shots}-shot prompts of "
                        "three different concepts (target, source, control): raise --concepts or "
                        "lower --shots")
    settings = _settings(request)
    for setting, mean in settings:
        check_setting(setting, words, mean)
        for concept in list(words.words)[: request.limit]:  # every word of every prompt exists
            for language in {setting.source_in, setting.source_out, setting.target_in,
                             setting.target_out, *mean}:
                words.word(concept, language)
    if request.layers is not None:
        if not request.layers or len(set(request.layers)) != len(request.layers):
            raise DataError("--layers: give each layer once")
        check_layers(request.layers, block_count(request.model), first=1, acting="patching acts")
    return words, settings


@writes_runs
def execute_patch(request: PatchRequest, command: Sequence[str],
                  say: Callable[[str], None] = lambda _: None
                  ) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Run every setting; returns the run directory, the tidy table and the switch table."""
    words, settings = check_patch_request(request)
    clock = time.perf_counter()
    loaded = loaded_or_load(request.model, request.adapter, request.device, request.dtype)
    patcher = Patcher(LogitLens(loaded, max_length=request.max_length))
    timings = {"load_model": time.perf_counter() - clock}
    # the config may not have said; the blocks found do
    layers = check_layers(request.layers, patcher.num_blocks, first=1, acting="patching acts")
    modes = ("single", "onward") if request.onward else ("single",)
    prepared = []
    for setting, mean in settings:  # every setting's prompts before any pass
        pairs, skipped = build_pairs(words, loaded.tokenizer, setting, mean, request.shots,
                                     request.limit, request.seed)
        if len(pairs) < 2:
            raise DataError(f"{setting.label}: {len(pairs)} usable concept pair(s) of "
                            f"{len(pairs) + len(skipped)} (first-token sets collide); too few")
        if skipped:
            notice(f"{setting.label}: {len(skipped)} concept pair(s) left out (listed in "
                   f"{PAIRS_TABLE})")
        prepared.append((setting, mean, pairs, skipped))
    run_dir = request.claim(KIND, f"{loaded.name}-patch")
    tables, switches, pair_rows, checks = [], [], [], {}
    clock = time.perf_counter()
    for stage, (setting, mean, pairs, skipped) in enumerate(prepared, 1):
        say(f"{setting.label} ({stage}/{len(prepared)}): {len(pairs)} pairs")
        result = patch_experiment(patcher, pairs, layers, modes, request.batch_size,
                                  request.seed, say)
        if not result.self_identical:
            notice(f"{setting.label}: the self-patch changed the output (at most "
                   f"{result.self_max_change:.3g}); expected bit-identical — a nondeterministic "
                   "device kernel? The numbers are suspect")
        checks[setting.label] = {"self_patch_identical": result.self_identical,
                                 "self_patch_max_change": result.self_max_change,
                                 "pairs": len(pairs), "left_out": len(skipped),
                                 "prompt_forwards": result.prompt_forwards,
                                 "mean_languages": mean}
        where = {"setting": setting.label, "source_in": setting.source_in,
                 "source_out": setting.source_out, "target_in": setting.target_in,
                 "target_out": setting.target_out}
        tables.append(patch_table(result, request.bootstrap, request.seed).assign(**where))
        switches.append(switch_table(result, request.bootstrap, request.seed).assign(**where))
        pair_rows += [{"setting": setting.label, "target_concept": p.target_concept,
                       "source_concept": p.source_concept, "control_concept": p.control_concept,
                       "used": True, "reason": ""} for p in pairs]
        pair_rows += [{**s, "control_concept": "", "used": False} for s in skipped]
    timings["patching"] = time.perf_counter() - clock
    keys = ["model", "setting", "source_in", "source_out", "target_in", "target_out"]
    table = pd.concat(tables, ignore_index=True).assign(model=loaded.name)
    table = table[keys + [c for c in table.columns if c not in keys]]
    switch = pd.concat(switches, ignore_index=True).assign(model=loaded.name)
    switch = switch[keys + [c for c in switch.columns if c not in keys]]
    pairs_table = pd.DataFrame(pair_rows)
    figures = patch_figures(table, switch)
    summary = patch_summary(table, switch)
    start_run_directory(run_dir)
    for name, frame in ((PATCH_TABLE, table), (SWITCH_TABLE, switch),
                        (PAIRS_TABLE, pairs_table)):
        atomic_write(run_dir / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    report.export(figures, run_dir, f"Cross-lingual activation patching of {loaded.name}",
                  summary, static=request.static, model=loaded.name)
    manifest = {
        "command": list(command), "kind": KIND,
        "model": loaded.record(request.adapter),
        "patch": {"settings": [list(s) for s in request.settings or DEFAULT_SETTINGS],
                  "layers": layers, "modes": list(modes), "words": str(request.words),
                  "concepts": len(list(words.words)[: request.limit]),
                  "shots": request.shots, "bootstrap": request.bootstrap,
                  "seed": request.seed, "batch_size": request.batch_size,
                  "checks": checks},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return run_dir, table, switch


# ------------------------------------------------------------------------------ report


def _curves(table: pd.DataFrame, condition: str, control: str = "", mode: str = "single"
            ) -> pd.DataFrame:
    return table[(table["mode"] == mode) & (table.condition == condition)
                 & (table.control.fillna("") == control)]


def patch_figures(table: pd.DataFrame, switch: pd.DataFrame) -> dict[str, go.Figure]:
    """Per setting (and model): the four probabilities over layers with bands and the two
    switch layers marked; the controls beside the patch; mean-latent minus single-language."""
    figures = {}
    several = table.model.nunique() > 1
    for i, ((model, setting), rows) in enumerate(table.groupby(["model", "setting"], sort=False)):
        name = f"{model}, {setting}" if several else setting
        fig = go.Figure()
        for m, measure in enumerate(MEASURES):
            part = _curves(rows, "patch")
            part = part[part.measure == measure].sort_values("layer")
            color = report.PALETTE[m % len(report.PALETTE)]
            fig.add_trace(report.band(part, color))
            fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines+markers",
                                     name=LABELS[measure], line={"color": color}))
        marks = switch[(switch.model == model) & (switch.setting == setting)
                       & (switch.condition == "patch")]
        for _, mark in marks[marks.switch.isin(["language", "concept"])].iterrows():
            if mark.value == mark.value:  # not NaN
                fig.add_vline(x=mark.value, line_dash="dash",
                              annotation_position="top left" if mark.switch == "language"
                              else "top right",
                              annotation_text=f"{mark.switch} switch {mark.value:.1f} "
                                              f"({mark.defined}/{mark.pairs})")
        fig.update_layout(title=f"Patching the source's last-token latent at one layer: {name}"
                                "<br><sup>mean over concept pairs; bands: 95 % bootstrap CI; "
                                "dashed: mean switch layers</sup>",
                          xaxis_title="patched layer", yaxis_title="probability",
                          legend={"orientation": "h", "y": -0.2})
        figures[f"patch_{i + 1}"] = fig
        fig = go.Figure()
        for c, condition in enumerate(["patch", "mean", "random_concept", "random_direction",
                                       "self", "none"]):
            part = _curves(rows, condition)
            part = part[part.measure == "p_concept"].sort_values("layer")
            color = report.PALETTE[c % len(report.PALETTE)]
            fig.add_trace(report.band(part, color))
            fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines", name=condition,
                                     line={"color": color,
                                           "dash": "dot" if condition in ("self", "none")
                                           else "solid"}))
        fig.update_layout(title=f"P(C in B′) by what is patched in: {name}<br><sup>the latent "
                                "(single source language or mean over several), a random other "
                                "concept, a random direction of its norm, the target's own "
                                "state; bands: 95 % CI</sup>",
                          xaxis_title="patched layer", yaxis_title="probability",
                          legend={"orientation": "h", "y": -0.2})
        figures[f"controls_{i + 1}"] = fig
    fig = go.Figure()
    for i, ((model, setting), rows) in enumerate(table.groupby(["model", "setting"], sort=False)):
        part = _curves(rows, "mean", "patch")
        part = part[part.measure == "p_concept"].sort_values("layer")
        color = report.PALETTE[i % len(report.PALETTE)]
        fig.add_trace(report.band(part, color))
        fig.add_trace(go.Scatter(x=part.layer, y=part.value, mode="lines",
                                 name=f"{model}, {setting}" if several else setting,
                                 line={"color": color}))
    fig.add_hline(y=0, line_color="grey")
    fig.update_layout(title="Mean latent minus single-language latent: P(C in B′)<br><sup>paired "
                            "per concept pair; bands: 95 % bootstrap CI</sup>",
                      xaxis_title="patched layer", yaxis_title="difference",
                      legend={"orientation": "h", "y": -0.2})
    figures["mean_vs_single"] = fig
    return figures


def _ci(row: pd.Series, digits: int = 3) -> str:
    return f"{row.value:.{digits}f} [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"


def patch_summary(table: pd.DataFrame, switch: pd.DataFrame) -> list[str]:
    """Per model and setting: the switch layers, and at the layer where the patch moves the
    concept most (P(C in B′) highest), that probability against each control and the mean's."""
    lines = []
    several = table.model.nunique() > 1
    for (model, setting), rows in table.groupby(["model", "setting"], sort=False):
        marks = switch[(switch.model == model) & (switch.setting == setting)
                       & (switch.condition == "patch")].set_index("switch")
        parts = []
        for name in ("language", "concept"):
            mark = marks.loc[name]
            parts.append(f"{name} switch at layer {_ci(mark, 1)} ({mark.defined}/{mark.pairs} "
                         "pairs switch)" if mark.defined else f"no pair's {name} switches")
        gap = marks.loc["concept - language"]
        if gap.defined:
            parts.append(f"concept − language {_ci(gap, 1)} ({gap.defined} pairs with both)")
        concept = _curves(rows, "patch")
        concept = concept[concept.measure == "p_concept"]
        best = concept.loc[concept.value.idxmax()]
        at = rows[(rows["mode"] == "single") & (rows.layer == best.layer)
                  & (rows.measure == "p_concept")]
        versus = [f"patch − {r.control} {_ci(r)}"
                  for _, r in at[at.condition == "patch"].iterrows() if r.control]
        mean = at[(at.condition == "mean") & (at.control == "patch")].iloc[0]
        lines.append(f"{model + ', ' if several else ''}{setting}: " + "; ".join(parts)
                     + f". At layer {int(best.layer)} P(C in B′) = {_ci(best)}; "
                     + ", ".join(versus) + f"; mean latent − single {_ci(mean)}.")
    return lines


# ------------------------------------------------------------------------------ reading


def is_patch_run(directory: Path) -> bool:
    return run_kind(directory) == "patch"


def read_patch_run(directory: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A finished patch run's manifest, tidy table and switch table, or one clear error."""
    directory = Path(directory)
    if not is_patch_run(directory):
        raise StoreError(f"{directory} is not a finished patch run (no manifest of kind 'patch')")
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        table = pd.read_csv(directory / PATCH_TABLE)
        return (manifest, table.assign(control=table.control.fillna("")),
                pd.read_csv(directory / SWITCH_TABLE))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{directory} holds an unreadable patch run ({exc})") from None


def compare_patch_runs(directories: Sequence[Path], output: Path, static: bool = True
                       ) -> list[Path]:
    """Patch runs of several models (base, x-, m-model) side by side: the tables concatenated,
    each setting's curves per model, the switch layers per model; returns the report's paths."""
    if len(directories) < 2:
        raise DataError("compare needs at least two run directories")
    runs = [read_patch_run(d) for d in directories]
    names = [m["model"]["name"] for m, _, _ in runs]
    if len(set(names)) < len(names):
        raise DataError(f"two patch runs share a model name ({', '.join(names)})")
    first = runs[0][0]["patch"]
    for directory, (manifest, _, _) in zip(directories[1:], runs[1:], strict=True):
        differs = [k for k in ("settings", "layers", "words", "concepts", "shots", "seed")
                   if manifest["patch"].get(k) != first.get(k)]
        if differs:
            raise DataError(f"{directory} differs from {directories[0]} in {', '.join(differs)}: "
                            "patch runs compare only with the same prompts and layers")
    table = pd.concat([t.assign(model=n) for n, (_, t, _) in zip(names, runs, strict=True)],
                      ignore_index=True)
    switch = pd.concat([s.assign(model=n) for n, (_, _, s) in zip(names, runs, strict=True)],
                       ignore_index=True)
    output = Path(output)
    start_run_directory(output)
    atomic_write(output / PATCH_TABLE, lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(output / SWITCH_TABLE, lambda tmp: switch.to_csv(tmp, index=False))
    figures = patch_figures(table, switch)
    paths = report.export(figures, output, "Activation patching: " + " vs ".join(names),
                          patch_summary(table, switch), static=static,
                          model=" vs ".join(names))
    atomic_write_text(output / MANIFEST, json.dumps(
        {"kind": "patch-compare", "compare": [str(d) for d in directories], "models": names,
         "versions": versions()}, indent=2))
    return paths

