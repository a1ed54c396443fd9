"""Cross-lingual alignment measured while a model trains: every N optimizer steps (and before the
first and after the last) a fixed held-out parallel set is probed with the project's own
extraction and metrics — mean pooling with sinks left out, centered P@1 per layer, English -> X
and X -> English, 95 % bootstrap CIs — and appended to ``OUTPUT/alignment_log.csv``."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from layer_analysis.probe.analysis import english_peaks
from layer_analysis.probe.checks import select_capped
from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.files import atomic_write
from layer_analysis.probe.languages import ENGLISH, canonical
from layer_analysis.probe.metrics import DIRECTIONS, bootstrap_ci, pair_statistics, prepare, retrieval
from layer_analysis.probe.models import LoadedModel

ALIGNMENT_LOG = "alignment_log.csv"
COLUMNS = ["step", "layer", "source", "target", "direction", "metric", "normalisation", "value",
           "ci_low", "ci_high", "sentences", "seconds"]
NORMALISATION = "centered"


@dataclass(frozen=True)
class TrackingConfig:
    """What to probe while training (``train --track-every`` and friends).

    every: optimizer steps between probes; 0 probes only before and after training.
    languages: languages paired with English (default: the mixture's other languages).
    before: probe the weights before the first step too (a sweep, which has probed the base
        model already, leaves it out).
    """

    every: int = 0
    languages: tuple[str, ...] = ()
    data: str = "flores-dev"
    sentences: int = 100
    batch_size: int = 32
    bootstrap: int = 200
    before: bool = True

    def __post_init__(self) -> None:
        if self.every < 0 or self.sentences < 2 or self.batch_size < 1 or self.bootstrap < 0:
            raise DataError(f"alignment tracking needs every ≥ 0, at least 2 sentences, batch "
                            f"size ≥ 1, bootstrap ≥ 0 (got every {self.every}, sentences "
                            f"{self.sentences}, batch size {self.batch_size}, bootstrap "
                            f"{self.bootstrap})")

    def due(self, step: int, total: int) -> bool:
        if step == 0:
            return self.before
        return step == total or (self.every > 0 and step % self.every == 0)


def tracked_languages(config: TrackingConfig, mixture_languages: set[str]) -> list[str]:
    """The languages to pair with English: as asked, each one the mixture trains, else the
    mixture's non-English languages. An error names what is missing."""
    if not config.languages:
        chosen = sorted(mixture_languages - {ENGLISH})
        if not chosen:
            raise DataError("alignment tracking: the mixture names no language besides English; "
                            "pass --track-languages")
        return chosen
    chosen = [canonical(x, "--track-languages") for x in config.languages]
    if ENGLISH in chosen:
        raise DataError("--track-languages: English is the pivot; list the other languages")
    missing = [x for x in chosen if x not in mixture_languages]
    if missing:
        raise DataError(f"--track-languages {', '.join(missing)}: not in the training mixture "
                        f"(it holds {', '.join(sorted(mixture_languages)) or 'no named language'})")
    return chosen


class AlignmentTracker:
    """Probes ``model`` (in place, without gradients) and appends to the log. The held-out
    sentences are loaded and tokenised once, when the tracker is built — before training."""

    def __init__(self, config: TrackingConfig, languages: list[str], model: nn.Module,
                 tokenizer, name: str, output: Path) -> None:
        corpus = select_capped(load_parallel(config.data), [ENGLISH, *languages],
                               config.sentences, "held-out sentences")
        short = {code: len(side.sentences) for code, side in corpus.sides.items()
                 if len(side.sentences) < 2}
        if short:
            raise DataError(f"alignment tracking: {config.data} has too few sentences for "
                            f"{', '.join(short)}")
        self.config, self.languages, self.model = config, languages, model
        self.path = output / ALIGNMENT_LOG
        self.extractor = Extractor(LoadedModel(model, tokenizer, name), ExtractionConfig())
        self.encoded = {side.language: self.extractor.encode(side.sentences)
                        for side in corpus.sides.values()}
        self.seconds = 0.0

    def states(self, language: str) -> torch.Tensor:
        """(layers, n, hidden) mean-pooled states of one side."""
        return self.extractor.extract_encoded(self.encoded[language], self.config.batch_size)[0]

    def measure(self, step: int) -> pd.DataFrame:
        """One probe of the current weights: tidy rows, one per layer, pair and direction."""
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            english = prepare(self.states(ENGLISH))
            rows = []
            for language in self.languages:
                stats = pair_statistics(english, prepare(self.states(language)), [NORMALISATION])
                for direction in DIRECTIONS:
                    hits = retrieval(stats.ranks[(NORMALISATION, direction)])["p@1"]
                    low, high = bootstrap_ci(hits, self.config.bootstrap) if self.config.bootstrap \
                        else (torch.full(hits.shape[:1], float("nan")),) * 2
                    source, target = (ENGLISH, language) if direction == "forward" \
                        else (language, ENGLISH)
                    for i, layer in enumerate(self.extractor.layers):
                        rows.append({"step": step, "layer": layer, "source": source,
                                     "target": target, "direction": direction, "metric": "p@1",
                                     "normalisation": NORMALISATION,
                                     "value": float(hits[i].mean()), "ci_low": float(low[i]),
                                     "ci_high": float(high[i]), "sentences": hits.shape[-1]})
        finally:
            self.model.train(was_training)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        return pd.DataFrame(rows).assign(seconds=round(seconds, 2))[COLUMNS]

    def record(self, step: int) -> pd.DataFrame:
        """Measure and append to the log (header on the first write)."""
        table = self.measure(step)
        fresh = not self.path.exists()
        with self.path.open("a") as log:
            table.to_csv(log, header=fresh, index=False)
        return table

    def logged(self, step: int) -> bool:
        """Whether ``step`` is in the log already (read by every process alike)."""
        return self.path.exists() and bool((read_alignment_log(self.path).step == step).any())

    def trim(self, step: int) -> None:
        """Drop rows logged after ``step`` (a run killed after its last checkpoint), and a
        partial last line."""
        if not self.path.exists():
            return
        log = read_alignment_log(self.path)
        kept = log[log.step <= step]
        if len(kept) != len(log) or not self.path.read_text(encoding="utf-8").endswith("\n"):
            atomic_write(self.path, lambda tmp: kept.to_csv(tmp, index=False))


def tracking_hook(tracker: AlignmentTracker, total: int, main_process: bool,
                  wait: Callable[[], None]) -> Callable[[int], None]:
    """``on_step`` for the training loop: the main process probes on due steps, the others
    wait for it."""

    def on_step(step: int) -> None:
        if not tracker.config.due(step, total):
            return
        if main_process:
            tracker.record(step)
        wait()

    return on_step


def peak_alignment(log: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Per language at ``step`` (default: the last): the layer where centered P@1, both
    directions averaged, peaks, and that value (``language, layer, value``)."""
    step = int(log.step.max()) if step is None else step
    return english_peaks(log[(log.step == step) & (log.metric == "p@1")])


def write_report(output: Path) -> Path:
    """``OUTPUT/alignment.html``: loss, and alignment per layer against step."""
    from layer_analysis.probe import report

    log, losses = read_tracked(output)
    figures = {"alignment_heatmap": report.training_heatmap(log),
               "alignment_before_after": report.training_curves(log)}
    if not losses.empty:
        figures = {"loss": report.training_loss(losses), **figures}
    seconds = log.groupby("step").seconds.first()
    intro = [f"{output}: {log.step.nunique()} probes of {int(log.sentences.iloc[0])} held-out "
             f"sentences per language, {seconds.mean():.1f} s each on average."]
    path = output / "alignment.html"
    report.write_html(figures, path, "Alignment through training", intro)
    return path


def discover_tracked(root: Path) -> list[Path]:
    """Training outputs under ``root`` (and one level below) with an alignment log, newest
    first."""
    if not root.is_dir():
        return []
    logs = [*root.glob(f"*/{ALIGNMENT_LOG}"), *root.glob(f"*/*/{ALIGNMENT_LOG}")]
    return [p.parent for p in sorted(logs, key=lambda p: p.stat().st_mtime, reverse=True)]


def _complete_lines(path: Path) -> list[str]:
    """The lines of ``path`` that end in a line break (split there only): a partial last line,
    of a process killed while appending, is left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return text.split("\n")[:-1]


def read_train_log(path: Path) -> list[dict]:
    """The entries of a ``train_log.jsonl`` (none if it is absent). A partial last line is
    left out; any other line that is no JSON entry with a step is an error naming it."""
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(_complete_lines(path), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            raise DataError(f"{path}, line {number}: not a training log entry")
        entries.append(entry)
    return entries


def read_alignment_log(path: Path) -> pd.DataFrame:
    """An alignment log, a partial last line left out; missing columns are an error."""
    lines = _complete_lines(path)
    try:
        log = pd.read_csv(io.StringIO("\n".join(lines))) if lines else pd.DataFrame(
            columns=COLUMNS)
    except ValueError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    missing = [c for c in COLUMNS if c not in log]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}")
    return log


def read_tracked(output: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(alignment log, training log) of one training output; the training log may be empty."""
    return (read_alignment_log(output / ALIGNMENT_LOG),
            pd.DataFrame(read_train_log(output / "train_log.jsonl")))
