"""The Python API: every command as a function, for notebooks and scripts.

    import layer_analysis as la

    run = la.align({"en": english, "de": german}, model="gemma3-270m", limit=100)
    run.table                  # the tidy per-layer table (pandas)
    run.show()                 # its figures (plotly)
    la.load("runs/NAME")       # any run directory, read back

Each function builds the request the matching ``layer-analysis`` command builds, with the same
option names (``--batch-size`` is ``batch_size``, ``--no-static`` is ``static=False``,
``--no-progress`` is ``progress=False``) and defaults, so the checks and their messages are the
library's: bad input raises a ``ProbeError`` subclass (``DataError``, ``ModelError``,
``StoreError``, from ``layer_analysis.probe.errors``, also ``la.DataError``, ...) with the
command's one-line message, before a model loads where the check needs none. Each returns a
:class:`Result`: the run directory's tables, manifest and figures.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from layer_analysis.probe.errors import DataError, ModelError, StoreError, notice
from layer_analysis.probe.extract import SINK_RATIO
from layer_analysis.probe.latent import WORDS
from layer_analysis.probe.metrics import NORMALISATIONS
from layer_analysis.probe.mining import MARGIN_K
from layer_analysis.probe.models import DEFAULT_MODEL, LoadedModel
from layer_analysis.probe.neuron_run import DEFAULT_LANGUAGES
from layer_analysis.probe.tokenization import COVARIATES

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from layer_analysis.probe.data import ParallelCorpus

EVALUATION_TASKS = ("translation", "xquad")
ModelLike = Any  # a name or path (str), a LoadedModel, a transformers model (with ``tokenizer``)
DataLike = Any  # a name or path (str, Path), {language: [sentences]}, a DataFrame, a ParallelCorpus


# ------------------------------------------------------------------------------------ results


@dataclass(repr=False)
class Result:
    """A finished run read back: ``kind`` (alignment, comparison, lens, neurons,
    neuron-comparison, intervention, patch, mining, transfer, correlation, training,
    evaluation, law, allocation), its ``directory``, its ``manifest`` (a law's ``law.json``,
    an allocation's ``allocation.json``), its tidy ``tables`` by name (``table`` is the main
    one) and ``warnings`` (e.g. a run written by an older engine)."""

    kind: str
    directory: Path | None
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    warnings: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """The main table: per-layer metrics, lens curves, neuron counts, effects, mined pairs,
        the training log or the scores."""
        return next(iter(self.tables.values()))

    @property
    def model(self) -> str | None:
        if self.kind == "allocation":  # what its report names it by
            return f"{self.manifest.get('family')} law of {self.manifest.get('law')}"
        model = self.manifest.get("model")
        if isinstance(model, dict):
            return model.get("name")
        models = self.manifest.get("models")
        return " vs ".join(models) if models else model

    @property
    def languages(self) -> list[str]:
        m = self.manifest
        found = ((m.get("data") or {}).get("languages") or (m.get("lens") or {}).get("targets")
                 or (m.get("neurons") or {}).get("languages")
                 or [x for x in [(m.get("intervention") or {}).get("language")] if x]
                 or [x for x in [m.get("target"), m.get("language")] if x])
        return list(found or [])

    @property
    def peak_layer(self) -> int | None:
        """Alignment runs: the layer where centered P@1 averaged over the pairs peaks, ties to
        the earliest (``analysis.peak_layer``), of the first pooling analysed (``pooling``);
        None for other kinds."""
        if self.kind != "alignment":
            return None
        from layer_analysis.probe.analysis import peak_layer

        try:
            return peak_layer(self.table)
        except (DataError, ValueError, KeyError):
            return None

    @property
    def pooling(self) -> str | None:
        """Alignment runs and comparisons: the first pooling of the table (``peak_layer``'s)."""
        table = self.table
        return str(table.pooling.iloc[0]) if "pooling" in table and len(table) else None

    def figures(self, metric: str = "p@1", normalisation: str = "centered"
                ) -> dict[str, go.Figure]:
        """The report's figures as plotly objects, by name (``metric`` and ``normalisation``
        choose what alignment runs and comparisons draw, as ``report --metric`` does); each
        title names the model and the run, as the exported ones do."""
        from layer_analysis.probe import report

        figures = FIGURES.get(self.kind, lambda *_: {})(self, metric, normalisation)
        return report.labelled(figures, report.identity(self.model, self.directory))

    def show(self, metric: str = "p@1", normalisation: str = "centered") -> None:
        """Show every figure (inline in Jupyter, in a browser tab elsewhere)."""
        for figure in self.figures(metric, normalisation).values():
            figure.show()

    def __repr__(self) -> str:
        parts = [self.kind]
        if self.model:
            parts.append(f"model {self.model}")
        if self.languages:
            parts.append("languages " + ", ".join(self.languages))
        if self.peak_layer is not None:
            several = self.table.pooling.nunique() > 1
            pooled = f", {self.pooling} pooling" if several else ""
            parts.append(f"peak layer {self.peak_layer} (centered P@1{pooled})")
        parts += [f"{len(self.tables)} table(s): {', '.join(self.tables)}"]
        if self.directory is not None:
            parts.append(str(self.directory))
        parts += [f"warning: {w}" for w in self.warnings]
        return f"<Result {'; '.join(parts)}>"


def _alignment_figures(result: Result, metric: str, normalisation: str) -> dict[str, go.Figure]:
    from layer_analysis.probe.runs import RunResults, run_figures

    return run_figures(RunResults(result.directory, result.manifest, result.table,
                                  result.tables["cka"], result.tables["projection"]),
                       metric, normalisation)


def _comparison_figures(result: Result, metric: str, normalisation: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report
    from layer_analysis.probe.runs import per_pooling

    figures = {f"comparison_{metric}": report.comparison(result.table, metric, normalisation),
               f"heatmap_{metric}": report.heatmap(result.table, metric, normalisation)}
    figures.update(per_pooling(result.tables["cka"], "cka_models", lambda rows, p: (
        report.cka_heatmap(rows, "linear CKA between models, layer by layer"
                                 + (f" ({p} pooling)" if p else "")))))
    if "paired" in result.tables:
        figures[f"paired_{metric}"] = report.paired_curves(result.tables["paired"], metric,
                                                           normalisation)
    return figures


def _lens_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report

    table, figures = result.table, {}
    if "tuned_lens_kl" in result.tables:
        figures["tuned_lens_kl"] = report.lens_kl(result.tables["tuned_lens_kl"])
    lens_of = table["lens"] if "lens" in table else pd.Series("logit", index=table.index)
    for (task, name), rows in table.assign(lens=lens_of).groupby(["task", "lens"], sort=False):
        suffix = "" if name == "logit" else f"_{name}"
        figures[f"latent_{task}{suffix}"] = report.latent_language(rows)
        if "compare" not in result.manifest:  # a comparison draws the curves only
            figures[f"entropy_{task}{suffix}"] = report.latent_entropy(rows)
    return figures


def _neuron_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report

    figures = {"neurons_per_layer": report.neuron_counts(result.tables["counts"]),
               "neuron_overlap": report.neuron_overlap(result.tables["overlap"])}
    if "deactivation" in result.tables:
        figures["deactivation"] = report.deactivation(result.tables["deactivation"])
    return figures


def _neuron_change_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report

    return {"neuron_changes": report.neuron_changes(result.table)}


def _intervention_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report

    return {"effect": report.intervention_effects(result.table)}


def _training_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe import report

    figures = {}
    if not result.tables["log"].empty:
        figures["loss"] = report.training_loss(result.tables["log"])
    if "alignment" in result.tables:
        figures["alignment_heatmap"] = report.training_heatmap(result.tables["alignment"])
        figures["alignment_before_after"] = report.training_curves(result.tables["alignment"])
    return figures


def _patch_figures(result: Result, *_: str) -> dict[str, go.Figure]:
    from layer_analysis.probe.patch_run import patch_figures

    return patch_figures(result.table.assign(model=result.model), result.tables["switch"]
                         .assign(model=result.model))


def _transfer_figures(result: Result) -> dict[str, go.Figure]:
    from layer_analysis.probe.transfer_run import best_layers, curves_figure, targets_figure

    summary = result.tables["summary"]
    best = best_layers(summary)
    layer = int(best[best.variant == "centered"].layer.iloc[0])
    return {"transfer_curves": curves_figure(summary),
            f"targets_layer_{layer}": targets_figure(result.table, layer)}


def _allocation_figures(result: Result) -> dict[str, go.Figure]:
    from layer_analysis.train.law_run import allocation_figures

    return allocation_figures(result.manifest)


def _correlation_figures(result: Result) -> dict[str, go.Figure]:
    from layer_analysis.probe.correlate import curve_figure, scatter_figure

    layer = int(result.manifest["scatter_layer"])
    return {"correlation_curve": curve_figure(result.table),
            f"scatter_layer_{layer}": scatter_figure(result.tables["scores"], layer)}


FIGURES: dict[str, Callable[[Result, str, str], dict[str, Any]]] = {
    "alignment": _alignment_figures, "comparison": _comparison_figures, "lens": _lens_figures,
    "neurons": _neuron_figures, "neuron-comparison": _neuron_change_figures,
    "intervention": _intervention_figures, "training": _training_figures,
    "patch": _patch_figures, "transfer": lambda r, *_: _transfer_figures(r),
    "correlation": lambda r, *_: _correlation_figures(r),
    "allocation": lambda r, *_: _allocation_figures(r),
}
"""Each kind's figures (mining runs, evaluations and laws have none; their tables are the
result, a law's curves are in its ``report.html``: its points are not in the law's directory)."""


# ---------------------------------------------------------------------------------- load


def _csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None


def _tables(directory: Path, names: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The CSVs of ``names`` (table name -> file name) that exist, read."""
    return {key: _csv(directory / file) for key, file in names.items() if (directory / file).exists()}


def _engine_warnings(manifest: dict[str, Any]) -> list[str]:
    from layer_analysis.probe.store import ENGINE_VERSION

    engine = manifest.get("engine")
    if engine is None or engine == ENGINE_VERSION:
        return []
    return [f"written by engine version {engine}, this is version {ENGINE_VERSION}: its numbers "
            "may differ from a run made now (rerun it to compare)"]


def load(path: str | Path) -> Result:
    """Read any finished run back: an alignment run or comparison, a lens, neurons,
    intervention, patch, mining, transfer or correlate run, a training output, an evaluation's
    scores file, a fitted law (``fit-law``) or an allocation (``allocate``), each also by the
    JSON it writes last (``law.json``, ``allocation.json``: their directory is read).

    >>> run = la.load("runs/gemma3-270m-default-1a2b3c4d")
    >>> run.table.query("metric == 'p@1'").head()
    """
    from layer_analysis.probe.files import MANIFEST
    from layer_analysis.probe.runs import read_run, run_kind
    from layer_analysis.train.law_run import ALLOCATION, LAW

    path = Path(path)
    if path.is_file() and path.name in (LAW, ALLOCATION):  # the directory it completes
        return _load_law(path.parent)
    if path.is_file():
        return _load_evaluation(path)
    if not path.is_dir():
        raise StoreError(f"run directory {path} does not exist")
    if (path / "training.json").exists():
        return _load_training(path)
    if (path / "law.json").exists() or (path / "allocation.json").exists():
        return _load_law(path)
    kind = run_kind(path)
    if kind == "compare":  # a comparison of alignment, lens or neuron runs: its manifest's kind
        kind = json.loads((path / MANIFEST).read_text()).get("kind", "alignment")
    if kind == "neurons" and (path / "neuron_changes.csv").exists():
        return Result("neuron-comparison", path, json.loads((path / MANIFEST).read_text()),
                      {"changes": _csv(path / "neuron_changes.csv")})
    if kind in (None, "alignment"):
        run = read_run(path)  # the one message for a missing or broken manifest
        tables = {"results": run.table, "cka": run.cka, "projection": run.projection}
        if "compare" in run.manifest:
            if (path / "paired.csv").exists():
                tables["paired"] = _csv(path / "paired.csv")
            return Result("comparison", path, run.manifest, tables)
        tables["mexa"] = _csv(path / "mexa.csv")
        warnings = _engine_warnings(run.manifest)
        for warning in warnings:
            notice(f"{path}: {warning}")
        return Result("alignment", path, run.manifest, tables, warnings)
    manifest = json.loads((path / MANIFEST).read_text())
    if kind == "lens":
        from layer_analysis.probe import lens_run

        manifest, table = lens_run.read_lens_run(path)
        return Result("lens", path, manifest, {"lens": table, **_tables(path, {
            "words": lens_run.WORDS_TABLE, "top": lens_run.TOP_TABLE,
            "token_languages": lens_run.TOKENS_TABLE, "tuned_lens_kl": lens_run.KL_TABLE})})
    if kind == "patch":
        from layer_analysis.probe import patch_run

        manifest, table, switch = patch_run.read_patch_run(path)
        return Result("patch", path, manifest, {"patching": table, "switch": switch, **_tables(
            path, {"pairs": patch_run.PAIRS_TABLE})})
    if kind == "neurons":
        from layer_analysis.probe import neuron_run

        return Result("neurons", path, manifest, _tables(path, {
            "counts": neuron_run.COUNTS_TABLE, "overlap": neuron_run.OVERLAP_TABLE,
            "deactivation": neuron_run.DEACTIVATION_TABLE}))
    if kind == "intervention":
        from layer_analysis.probe import intervene_run

        manifest, table = intervene_run.read_intervention_run(path)
        generations = pd.read_json(path / intervene_run.GENERATIONS, lines=True)
        return Result("intervention", path, manifest,
                      {"interventions": table, "generations": generations})
    if kind == "mining":
        from layer_analysis.probe import mining_run

        mined = _csv(path / mining_run.MINED, sep="\t", keep_default_na=False, dtype=str)
        if len(mined):
            mined["margin"] = mined["margin"].astype(float)
        scores = json.loads((path / mining_run.SCORES).read_text())
        return Result("mining", path, manifest, {"mined": mined, "scores": pd.DataFrame([scores])},
                      _engine_warnings(manifest))
    if kind == "transfer":
        from layer_analysis.probe import transfer_run

        table, manifest = transfer_run.read_transfer(path)
        return Result("transfer", path, manifest, {
            "transfer": table, **_tables(path, {"summary": transfer_run.SUMMARY,
                                                "tokenization": transfer_run.TOKENIZATION})},
            _engine_warnings(manifest))
    if kind == "correlation":
        from layer_analysis.probe.correlate import read_correlation

        table, points, manifest = read_correlation(path)
        return Result("correlation", path, manifest, {"correlation": table, "scores": points})
    raise StoreError(f"{path} holds a run of kind {kind!r}, which this version cannot read")


def _load_training(path: Path) -> Result:
    from layer_analysis.train.tracking import ALIGNMENT_LOG, read_tracked

    summary = json.loads((path / "training.json").read_text())
    log = path / "train_log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    tables = {"log": pd.DataFrame([json.loads(line) for line in lines if line.strip()])}
    if (path / ALIGNMENT_LOG).exists():
        tables["alignment"] = read_tracked(path)[0]
    return Result("training", path, summary, tables)


def _load_law(path: Path) -> Result:
    """A ``fit-law`` or ``allocate`` output (no manifest: known by the JSON written last)."""
    from layer_analysis.train import law_run

    if (path / law_run.LAW).exists():
        manifest, table = law_run.read_law(path)
        return Result("law", path, manifest, {"law": table})
    manifest, table = law_run.read_allocation(path)
    return Result("allocation", path, manifest, {"allocation": table})


def _load_evaluation(path: Path) -> Result:
    """An evaluation's scores file: its records (the table), its predictions beside it, and the
    model's record (``manifest["model"]``; None in a file written before scores carried it)."""
    from layer_analysis.train.evaluate import evaluation_model

    try:
        scores = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is not an evaluation's scores file ({exc})") from None
    if not (isinstance(scores, list) and scores and all(isinstance(s, dict) and "task" in s
                                                        for s in scores)):
        raise StoreError(f"{path} is not an evaluation's scores file (layer-analysis evaluate "
                         "--output) nor a run directory")
    scores, model = evaluation_model(scores)
    predictions = path.with_suffix(".predictions.jsonl")
    tables = {"scores": pd.DataFrame(scores)}
    if predictions.exists():
        tables["predictions"] = pd.read_json(predictions, lines=True)
    return Result("evaluation", path.parent, {"model": model, "task": scores[0]["task"],
                                              "scores": str(path)}, tables)


# ------------------------------------------------------------------------------ inputs


def weights_fingerprint(model: Any) -> str:
    """SHA-256 over a loaded model's parameter and buffer names, dtypes, shapes and bytes: the
    identity of an in-memory model (the activation store keys on it)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.device.type == "meta":
            raise ModelError(f"the model's {name} is on the meta device (offloaded or not "
                             "loaded): load it fully before passing it")
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of what tokenizes: a fast tokenizer's full definition (normaliser, merges, the
    BOS it adds) without the truncation and padding a call left set on it (``tok(...,
    truncation=True, max_length=16)`` keeps them: the same tokenizer must keep its identity
    whatever was called before), else its vocabulary and special tokens."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())  # the caller's tokenizer stays as it is
        copy.no_truncation()
        copy.no_padding()
        text = copy.to_str()  # a tokenizer never called so: the very same text as before
    else:
        text = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
                           tokenizer.special_tokens_map], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def adopt_model(model: Any, tokenizer: Any = None, name: str | None = None, *,
                device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """A ``transformers`` causal LM and its tokenizer, loaded by the caller, as the probe's
    ``LoadedModel``: named by ``name`` (default: the model's ``name_or_path``), identified by a
    fingerprint of its weights and tokenizer. ``device``/``dtype`` other than ``auto`` must
    agree with where the model is (it is not moved); the model is put in eval mode (dropout
    off) and a tokenizer without a pad token gets the EOS token as one, as ``load_model`` does.

    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
    >>> lm = la.api.adopt_model(AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M"), tok)
    """
    from layer_analysis.probe.models import check_placement

    if isinstance(model, LoadedModel):
        loaded = model
    else:
        if tokenizer is None:
            raise ModelError("a loaded model needs its tokenizer: pass tokenizer= (or the pair "
                             "(model, tokenizer) as model=)")
        if not hasattr(model, "parameters") or not callable(getattr(model, "forward", None)):
            raise ModelError(f"model must be a name, a path or a loaded transformers model, got "
                             f"{type(model).__name__}")
        label = name or getattr(model, "name_or_path", None) or type(model).__name__
        loaded = LoadedModel(model=model.eval(), tokenizer=tokenizer, name=str(label), identity={
            "in_memory": str(label), "weights": weights_fingerprint(model),
            "tokenizer": tokenizer_fingerprint(tokenizer)})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    check_placement(loaded, device, dtype)
    return loaded


def _model(model: ModelLike, tokenizer: Any, device: str, dtype: str, **unused: Any
           ) -> str | LoadedModel:
    """A name stays a name (the request loads it); an object becomes a LoadedModel, refused
    together with loading options that it contradicts or that cannot apply to it (before its
    weights are fingerprinted; ``models.loaded_or_load`` checks the request again)."""
    from layer_analysis.probe.models import refuse_loading_options

    if model is None:
        raise ModelError(f"model=None names no model: pass a name or path (the default is "
                         f"{DEFAULT_MODEL}), or a loaded model with tokenizer= or as the pair "
                         "(model, tokenizer)")
    if isinstance(model, str | Path) and tokenizer is None:
        return str(model)
    if isinstance(model, tuple | list):
        if tokenizer is not None:
            raise ModelError("the tokenizer is given twice: pass model=(model, tokenizer) or "
                             "model= with tokenizer=, not both")
        if len(model) != 2:
            raise ModelError(f"model= as a {type(model).__name__} is the pair (model, tokenizer); "
                             f"this one has {len(model)} item(s)")
        model, tokenizer = model
    if isinstance(model, str | Path):
        raise ModelError("tokenizer= goes with a loaded model; a model given by name or path "
                         "loads its own")
    refuse_loading_options(**unused)
    return adopt_model(model, tokenizer, device=device, dtype=dtype)


def _named_model(model: ModelLike, function: str) -> str:
    """``train`` takes a name or path: it loads (and saves) the model itself."""
    if isinstance(model, str | Path):
        return str(model)
    raise ModelError(f"la.{function} takes the model by name or path (a packaged name, a "
                     "directory, a .gguf file or a Hub id); save a loaded model with "
                     "save_pretrained(DIR), its tokenizer too, and pass DIR")


def as_corpus(data: DataLike) -> str | ParallelCorpus:
    """A name or path stays one (``load_parallel`` reads it); ``{language: [sentences]}``, a
    DataFrame with one column per language, or a ``ParallelCorpus`` become a corpus. The
    sentences of a language may be any iterable (a generator, a Series): read once, here."""
    from layer_analysis.probe.data import ParallelCorpus, corpus_from_sentences

    if isinstance(data, str | Path):
        return str(data)
    if isinstance(data, ParallelCorpus):
        return data
    if isinstance(data, pd.DataFrame):
        return corpus_from_sentences({str(c): data[c].tolist() for c in data.columns},
                                     "dataframe")
    if isinstance(data, Mapping):
        listed = {}
        for key, values in data.items():
            if isinstance(values, str | bytes) or not isinstance(values, Iterable):
                listed[key] = values  # corpus_from_sentences says what a language maps to
            else:
                listed[key] = values if isinstance(values, Sequence) else list(values)
        return corpus_from_sentences(listed)
    raise DataError(f"data must be a data set name or path, a dict of language -> sentences or "
                    f"a DataFrame with a column per language, got {type(data).__name__}")


def _items(value: Any) -> tuple:
    """Every list parameter's spellings: a sequence (``["mean", "last"]``, ``[1, 2]``), one item
    (``"last"``, ``2``, a path), or the command line's comma-separated ``"mean,last"``."""
    if isinstance(value, str):
        return tuple(value.split(","))
    if isinstance(value, Iterable) and not isinstance(value, Path | bytes | Mapping):
        return tuple(value)
    return (value,)


def _languages(languages: Sequence[str] | str | None) -> list[str] | None:
    """``["en", "de"]``, ``"de"`` or the command line's ``"en,de"``."""
    return None if languages is None else list(_items(languages))


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    """``["mean", "last"]``, or one name (``"last"``) or the command line's ``"mean,last"``."""
    return _items(value)


def _parsed(text: str, parse: Callable[[str], Any]) -> Any:
    """The command line's spelling of an option, read by the command's own parser (its
    message a ``DataError``)."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise DataError(str(exc)) from None


def _count(value: int | str | None) -> int | None:
    """A count, or ``"all"`` (None) as the command line takes it."""
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return None
        raise DataError(f"a count must be a whole number or 'all', got {value!r}")
    return value


def _layer_list(value: Sequence[int] | int | str | None) -> tuple[int, ...] | None:
    """Layer numbers, one layer, or the command line's ``"all"``, ``"0,4,8"``, ``"2-10"``."""
    if isinstance(value, str):
        from layer_analysis.cli.options import parse_layers

        return _parsed(value, parse_layers)
    return None if value is None else _items(value)


def _strengths(value: Sequence[float] | float | str) -> tuple[float, ...]:
    """``intervene``'s multipliers: numbers, one number, or the command line's ``"1,2"``."""
    if isinstance(value, str):
        from layer_analysis.cli.interventions import STRENGTH
        from layer_analysis.cli.options import listed

        return _parsed(value, listed(STRENGTH, float))
    try:
        return tuple(float(s) for s in _items(value))
    except (TypeError, ValueError):
        raise DataError(f"--strengths must be numbers, got {value!r}") from None


def _settings(pair: Any) -> list[tuple[str, ...]] | None:
    """``patch``'s settings: a list of ``(A, B, A2, B2)``, each also as ``"A,B,A2,B2"``; one
    setting alone as its four languages (a flat tuple or list of names without commas, or one
    ``"A,B,A2,B2"``)."""
    if pair is None:
        return None
    items = _items(pair)
    if isinstance(pair, str) or all(isinstance(x, str) and "," not in x for x in items):
        return [items]  # one setting (a wrong count is the request's "four languages" error)
    return [_items(setting) for setting in items]


def _plain(value: Any) -> bool:
    """A value the command shows as it is: a string, number, path or None, or a tuple or list
    of them."""
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    return isinstance(value, str | int | float | bool | Path | type(None))


def _shown(value: Any) -> str:
    """An argument as the command shows it: plain values by ``repr``, objects (a loaded model,
    its tokenizer, a DataFrame) by their type, also inside a tuple or list (``(model, tok)``)."""
    if _plain(value):
        return repr(value)[:200]
    if isinstance(value, tuple | list):
        inner = ", ".join(_shown(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return f"<{type(value).__name__}>"


def _command(function: Callable, arguments: dict[str, Any]) -> list[str]:
    """What the manifest records as the command: the call, with the arguments that differ from
    their defaults (objects by their type)."""
    parameters = inspect.signature(function).parameters
    shown = [f"{key}={_shown(value)}" for key, value in arguments.items() if key in parameters
             and (not _plain(value) or value != parameters[key].default)]
    return [f"layer_analysis.{function.__name__}", *shown]


@contextmanager
def _stages(command: str, progress: bool) -> Iterator[Callable[[str], None]]:
    """A ``say`` for the runs that report stages: one tqdm.auto bar whose text is the stage (a
    widget in Jupyter); warnings are printed above it, and also without progress."""
    from tqdm.auto import tqdm

    bar = tqdm(total=None, unit="stage", desc=command, disable=not progress, leave=False)

    def say(line: str) -> None:
        if line.startswith("warning:"):
            notice(f"{command}: {line.removeprefix('warning:').strip()}")
            return
        bar.set_description_str(f"{command}: {line}")
        bar.update()

    try:
        yield say
    finally:
        bar.close()


# ----------------------------------------------------------------------------- commands


def align(
    data: DataLike = "default", *, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None,
    adapter: str | None = None, languages: Sequence[str] | str | None = None,
    limit: int | str | None = None, pooling: Sequence[str] | str = ("mean",), template: str | None = None,
    span: str = "sentence", sinks: str = "exclude", sink_ratio: float = SINK_RATIO,
    layers: Sequence[int] | str | None = None, device: str = "auto", dtype: str = "auto",
    batch_size: int = 32, max_length: int = 256, device_map: str | None = None,
    quantize: str | None = None, trust_remote_code: bool = False, pivot: str | None = "en",
    all_pairs: bool = False, normalisations: Sequence[str] | str = NORMALISATIONS,
    bootstrap: int = 1000, seed: int = 0, projection: str = "pca",
    projection_layer: int | None = None, output: str | Path = Path("runs"), name: str | None = None,
    overwrite: bool = False, store: str | Path | None = None, static: bool = True,
    progress: bool = True,
) -> Result | None:
    """Layer-by-layer alignment of parallel sentences: ``layer-analysis run``.

    ``data``: a named set, directory, .tsv/.jsonl file or ``hf:NAME@SPLIT``, or in memory
    ``{language: [sentences]}`` (line-aligned lists, or any iterables: read once) or a DataFrame
    with a column per language.
    ``model``: a packaged name, directory, .gguf file, Hub id or adapter directory, or a loaded
    ``transformers`` model with ``tokenizer=`` (or the pair ``(model, tokenizer)``), probed where
    it is (``device``/``dtype`` other than ``auto`` must agree with it; ``adapter``,
    ``device_map``, ``quantize``, ``trust_remote_code`` cannot apply to it and are refused) and
    put in eval mode (dropout off; it stays so), its tokenizer given the EOS token as its pad
    token if it has none (``adopt_model``); its run records it by name and a fingerprint of its
    weights and tokenizer. ``lens``, ``patch``, ``neurons``, ``intervene``, ``mine``,
    ``transfer`` and ``evaluate`` take a model the same way. The other options are ``run``'s
    (``all_pairs=True`` or ``pivot=None`` for ``--all-pairs``; ``static=False`` for
    ``--no-static``; ``progress=False`` for ``--no-progress``). Returns the run read back
    (None in the other processes of a multi-process launch).

    >>> run = la.align({"en": ["The cat sleeps.", "It rains."], "de": ["Die Katze schläft.",
    ...                 "Es regnet."]}, model="gemma3-270m", static=False)
    >>> run.peak_layer, run.table.head()
    """
    from layer_analysis.probe.analysis import AnalysisConfig
    from layer_analysis.probe.extract import ExtractionConfig
    from layer_analysis.probe.languages import canonical
    from layer_analysis.probe.pipeline import RunRequest, execute

    arguments = dict(locals())
    corpus = as_corpus(data)
    request = RunRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter, device_map=device_map,
                     quantize=quantize, trust_remote_code=trust_remote_code),
        adapter=adapter, device=device, dtype=dtype, output=Path(output), name=name,
        overwrite=overwrite, data=corpus, languages=_languages(languages), limit=_count(limit),
        extraction=ExtractionConfig(poolings=_names(pooling), layers=_layer_list(layers),
                                    template=template, span=span, max_length=max_length,
                                    sinks=sinks, sink_ratio=sink_ratio),
        analysis=AnalysisConfig(pivot=None if all_pairs or pivot is None
                                else canonical(pivot, "--pivot"),
                                normalisations=_names(normalisations), bootstrap=bootstrap,
                                seed=seed),
        projection=projection, projection_layer=projection_layer, batch_size=batch_size,
        trust_remote_code=trust_remote_code, device_map=device_map, quantize=quantize,
        store=None if store is None else Path(store), static=static, progress_bars=progress)
    outcome = execute(request, _command(align, arguments))
    if outcome is None:
        return None
    for warning in outcome.warnings:
        notice(warning)
    result = load(outcome.results.directory)
    result.warnings = outcome.warnings + result.warnings
    return result


def lens(
    *, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None, adapter: str | None = None,
    languages: Sequence[str] | str | None = None, source: str | None = None,
    task: Sequence[str] | str = ("translation",), cloze_data: str | None = None,
    words: str | Path = WORDS, concepts: int | None = None, shots: int = 4,
    limit: int | None = 50, positions: int = 4, sentence_data: str | None = None,
    table_data: str | None = None, top_k: int = 10, tuned_steps: int = 0,
    tuned_sentences: int = 40, bootstrap: int = 1000, seed: int = 0, batch_size: int = 16,
    max_length: int = 2048, device: str = "auto", dtype: str = "auto",
    output: str | Path = Path("runs"), name: str | None = None, overwrite: bool = False,
    static: bool = True, progress: bool = True,
) -> Result:
    """The latent language per layer through the logit lens: ``layer-analysis lens``.

    Options as the command's (``task`` for ``--task``); ``concepts`` counts the word list's
    concepts, ``limit`` the running-text sentences per language (0: none), as ``--limit`` does
    in every command. ``model``: a name or path, or a loaded ``transformers`` model with
    ``tokenizer=`` (or the pair ``(model, tokenizer)``), used where it is, as in ``align``.

    >>> run = la.lens(model="gemma3-270m", languages=["de", "zh"], concepts=20, static=False)
    >>> run.show()
    """
    from layer_analysis.probe.lens_run import LensRequest, execute_lens

    arguments = dict(locals())
    request = LensRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite,
        targets=_languages(languages), source=source, tasks=_names(task), words=Path(words),
        limit=concepts, shots=shots, bootstrap=bootstrap, seed=seed, batch_size=batch_size,
        static=static, sentences=_count(limit), positions=positions, sentence_data=sentence_data,
        table_data=table_data, top_k=top_k, tuned_steps=tuned_steps,
        tuned_sentences=tuned_sentences, cloze_data=cloze_data, max_length=max_length)
    with _stages("lens", progress) as say:
        run_dir, _ = execute_lens(request, _command(lens, arguments), say)
    return load(run_dir)


def patch(
    *, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None, adapter: str | None = None,
    pair: Sequence[Sequence[str]] | Sequence[str] | str | None = None,
    mean_languages: Sequence[str] | str | None = None,
    layers: Sequence[int] | int | str | None = None,
    onward: bool = False, words: str | Path = WORDS, concepts: int | None = None, shots: int = 4,
    bootstrap: int = 1000, seed: int = 0, batch_size: int = 16, max_length: int = 2048,
    device: str = "auto", dtype: str = "auto", output: str | Path = Path("runs"),
    name: str | None = None, overwrite: bool = False, static: bool = True,
    progress: bool = True,
) -> Result:
    """Cross-lingual activation patching: ``layer-analysis patch``.

    Options as the command's; ``pair`` is a list of settings ``(A, B, A2, B2)`` (``--pair``;
    one setting may be given alone, ``("de", "fr", "es", "en")`` or ``"de,fr,es,en"``),
    ``layers`` a list, one layer or ``"2-10"``, ``concepts`` counts target concepts (one pair
    each). ``model``: a name or path, or a loaded ``transformers`` model with ``tokenizer=`` (or
    the pair ``(model, tokenizer)``), used where it is, as in ``align``.

    >>> run = la.patch(model="smollm2-135m", pair=[("de", "en", "fr", "es")], concepts=30)
    >>> run.tables["switch"]
    """
    from layer_analysis.probe.patch_run import PatchRequest, execute_patch

    arguments = dict(locals())
    request = PatchRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite,
        settings=_settings(pair) if pair else None,
        mean_languages=_languages(mean_languages), layers=_layer_list(layers) or None,
        onward=onward, words=Path(words), limit=concepts, shots=shots, bootstrap=bootstrap,
        seed=seed, batch_size=batch_size, max_length=max_length, static=static)
    with _stages("patch", progress) as say:
        run_dir, _, _ = execute_patch(request, _command(patch, arguments), say)
    return load(run_dir)


def neurons(
    *, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None, adapter: str | None = None,
    languages: Sequence[str] | str = DEFAULT_LANGUAGES, data: str = "flores-dev",
    limit: int = 200, eval_data: str = "flores-devtest", eval_sentences: int = 50,
    top_rate: float = 0.01, filter_rate: float = 0.95, bar_rate: float = 0.95,
    bootstrap: int = 1000, seed: int = 0, batch_size: int = 16, device: str = "auto",
    dtype: str = "auto", output: str | Path = Path("runs"), name: str | None = None,
    overwrite: bool = False, static: bool = True, progress: bool = True,
) -> Result:
    """Language-specific FFN neurons (LAPE) and their deactivation check:
    ``layer-analysis neurons``.

    ``limit``: sentences per language LAPE counts on; ``eval_sentences``: held-out sentences
    per language for the deactivation check (0: none). ``model``: a name or path, or a loaded
    ``transformers`` model with ``tokenizer=`` (or the pair ``(model, tokenizer)``), used where
    it is, as in ``align``.

    >>> run = la.neurons(model="smollm2-135m", languages="en,de,zh", limit=100)
    >>> run.tables["counts"]
    """
    from layer_analysis.probe.neuron_run import NeuronRequest, execute_neurons
    from layer_analysis.probe.neurons import LapeThresholds

    arguments = dict(locals())
    request = NeuronRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite,
        languages=_languages(languages), data=data, sentences=_count(limit),
        eval_data=eval_data, eval_sentences=eval_sentences,
        thresholds=LapeThresholds(top_rate, filter_rate, bar_rate), bootstrap=bootstrap,
        seed=seed, batch_size=batch_size, static=static)
    with _stages("neurons", progress) as say:
        run_dir = execute_neurons(request, _command(neurons, arguments), say)
    return load(run_dir)


def intervene(
    kind: str, *, language: str, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None,
    adapter: str | None = None, layer: int | None = None,
    strengths: Sequence[float] | float | str = (1.0, 2.0), task: str = "repeat",
    fit_data: str = "flores-dev", fit_sentences: int = 300, eval_data: str = "flores-devtest",
    eval_sentences: int = 50, xquad: int = 50, max_new_tokens: int = 64, bootstrap: int = 200,
    seed: int = 0, batch_size: int = 16, device: str = "auto", dtype: str = "auto",
    output: str | Path = Path("runs"), name: str | None = None, overwrite: bool = False,
    static: bool = True, progress: bool = True,
) -> Result:
    """Steer generation with a language vector (``kind="steer"``) or map a language onto
    English (``kind="map"``), each against its control: ``layer-analysis intervene``.
    ``model``: a name or path, or a loaded ``transformers`` model with ``tokenizer=`` (or the
    pair ``(model, tokenizer)``), used where it is, as in ``align``.

    >>> run = la.intervene("steer", language="el", model="smollm2-135m", strengths=[1, 2])
    >>> run.table[["control", "strength", "measure", "value", "delta"]]
    """
    from layer_analysis.probe.intervene_run import InterventionRequest, execute_intervention

    arguments = dict(locals())
    request = InterventionRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite,
        kind=kind, language=language, layer=layer,
        strengths=_strengths(strengths), task=task, fit_data=fit_data,
        fit_sentences=fit_sentences, eval_data=eval_data, eval_sentences=eval_sentences,
        xquad=xquad, max_new_tokens=max_new_tokens, bootstrap=bootstrap, seed=seed,
        batch_size=batch_size, static=static)
    with _stages("intervene", progress) as say:
        run_dir, _ = execute_intervention(request, _command(intervene, arguments), say)
    return load(run_dir)


def mine(
    source: str | Path, target: str | Path, *, source_language: str, target_language: str,
    gold: str | Path | None = None, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None,
    adapter: str | None = None, layer: int | None = None, k: int = MARGIN_K,
    cosine: bool = False, batch_size: int = 32,
    max_length: int = 256, store: str | Path | None = None, device: str = "auto",
    dtype: str = "auto", output: str | Path = Path("runs"), name: str | None = None,
    overwrite: bool = False, progress: bool = True,
) -> Result | None:
    """Bitext mining between two monolingual files (ratio margin; BUCC F1 and xSIM with
    ``gold``): ``layer-analysis mine``. None in the other processes of a multi-process launch.
    ``model``: a name or path, or a loaded ``transformers`` model with ``tokenizer=`` (or the
    pair ``(model, tokenizer)``), used where it is, as in ``align``.

    >>> run = la.mine("de.txt", "en.txt", source_language="de", target_language="en",
    ...               gold="gold.tsv")
    >>> run.tables["scores"]
    """
    from layer_analysis.probe.mining_run import MiningRequest, execute_mining

    arguments = dict(locals())
    request = MiningRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite,
        source=Path(source), target=Path(target), source_language=source_language,
        target_language=target_language,
        gold=None if gold is None else Path(gold), layer=layer, k=k, margin=not cosine,
        batch_size=batch_size, max_length=max_length,
        store=None if store is None else Path(store), progress_bars=progress)
    run_dir = execute_mining(request, _command(mine, arguments))
    return None if run_dir is None else load(run_dir)


def transfer(
    *, model: ModelLike = DEFAULT_MODEL, tokenizer: Any = None, adapter: str | None = None,
    data: str = "sib200", languages: Sequence[str] | str = "all", source: str = "en",
    limit: int | str | None = None,
    c: float = 1.0, max_iter: int = 1000, no_ceiling: bool = False, bootstrap: int = 1000,
    seed: int = 0, pooling: str = "mean", layers: Sequence[int] | str | None = None,
    sinks: str = "exclude", sink_ratio: float = SINK_RATIO, max_length: int = 256,
    batch_size: int = 32, group_size: int = 16, device: str = "auto", dtype: str = "auto",
    store: str | Path | None = None, output: str | Path = Path("runs"), name: str | None = None,
    overwrite: bool = False, progress: bool = True,
) -> Result | None:
    """Per-layer zero-shot transfer of a linear probe on SIB-200 topics: ``layer-analysis
    transfer`` (options as its flags; ``no_ceiling=True`` for ``--no-ceiling``). Returns the
    run read back: ``tables["transfer"]`` per target and layer, ``tables["summary"]`` the mean
    over targets with ceiling, ratio and chance. ``model``: a name or path, or a loaded
    ``transformers`` model with ``tokenizer=`` (or the pair ``(model, tokenizer)``), used where
    it is, as in ``align``.

    >>> run = la.transfer(model="smollm2-135m", languages="en,de,zh,sw", limit=100)
    >>> run.tables["summary"].query("metric == 'accuracy'")
    """
    from layer_analysis.probe.extract import ExtractionConfig
    from layer_analysis.probe.transfer import ProbeConfig
    from layer_analysis.probe.transfer_run import TransferRequest, execute_transfer

    arguments = dict(locals())
    chosen = _languages(languages)
    request = TransferRequest(
        model=_model(model, tokenizer, device, dtype, adapter=adapter), adapter=adapter,
        device=device, dtype=dtype, output=Path(output), name=name, overwrite=overwrite, data=data,
        languages=None if chosen == ["all"] else chosen, source=source, limit=_count(limit),
        probe=ProbeConfig(c=c, max_iter=max_iter, bootstrap=bootstrap, seed=seed,
                          ceiling=not no_ceiling),
        extraction=ExtractionConfig(poolings=(pooling,), layers=_layer_list(layers),
                                    max_length=max_length, sinks=sinks, sink_ratio=sink_ratio),
        batch_size=batch_size, group_size=group_size,
        store=None if store is None else Path(store), progress_bars=progress)
    run_dir = execute_transfer(request, _command(transfer, arguments))
    return None if run_dir is None else load(run_dir)


def transfer_compare(a: str | Path, b: str | Path, *, output: str | Path | None = None,
                     bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Two transfer runs on the same data (base vs adapter), paired per test sentence:
    ``layer-analysis transfer-compare``. Returns run B minus run A per variant, target, setting
    and layer: the mean difference of accuracy, its 95 % bootstrap CI over sentences, a
    sign-flip p-value and the Benjamini-Hochberg q over layers; also written to ``output`` (a
    CSV) when given.

    >>> diff = la.transfer_compare("runs/base-transfer", "runs/x-zh-transfer")
    >>> diff.query("setting == 'transfer' and q_value < 0.05")
    """
    from layer_analysis.probe.transfer_run import compare_transfer_runs

    return compare_transfer_runs(Path(a), Path(b), None if output is None else Path(output),
                                 bootstrap, seed=seed)


def correlate(
    alignment: str | Path, *, scores: Sequence[str | Path] | str | Path, output: str | Path,
    metric: str = "p@1", normalisation: str = "centered", score_column: str = "score",
    transfer_variant: str = "centered", transfer_metric: str = "accuracy",
    transfer_layer: int | None = None, covariates: Sequence[str] | str = COVARIATES,
    layer: int | None = None, bootstrap: int = 1000, permutations: int = 2000, seed: int = 0,
    overwrite: bool = False,
) -> Result:
    """Does alignment predict downstream scores? ``layer-analysis correlate``: per layer of an
    alignment run (and MEXA's mean and max over layers), Pearson and Spearman across languages
    with bootstrap CIs and permutation p-values, partial on the tokenization ``covariates``
    (``"none"`` or ``()`` for none). ``scores``: transfer runs, ``evaluate`` JSON files or CSVs
    (one, a list, or comma-separated).

    >>> corr = la.correlate("runs/sib45", scores=["runs/transfer45"], output="runs/corr45")
    >>> corr.table.query("method == 'pearson'")
    """
    from layer_analysis.probe.correlate import (
        CorrelationConfig,
        correlate_files,
        parse_covariates,
    )

    arguments = dict(locals())
    config = CorrelationConfig(bootstrap=bootstrap, permutations=permutations, seed=seed,
                               covariates=parse_covariates(covariates))
    _, directory, _ = correlate_files(
        Path(alignment), [Path(p) for p in _items(scores)], Path(output), config, metric,
        normalisation, score_column, transfer_variant, transfer_metric, transfer_layer, layer,
        _command(correlate, arguments), overwrite)
    return load(directory)


def train(
    *, output: str | Path, model: str = "smollm2-135m", recipe: str | None = None,
    languages: Sequence[str] | str | None = None, instructions: int = 2000,
    translations: int = 5000, mixture: str | None = None, full: bool = False, lora_r: int = 8,
    lora_alpha: int = 16, lora_dropout: float = 0.05,
    lora_targets: Sequence[str] | str | None = None,
    epochs: float = 1.0, max_steps: int | None = None, batch_size: int = 8, grad_accum: int = 1,
    lr: float | None = None, warmup: float = 0.03, max_length: int = 256, seed: int = 0,
    save_every: int = 100, log_every: int = 10, device: str = "auto", dtype: str = "auto",
    resume: bool = False, progress: bool = True, align_weight: float = 0.0,
    align_layers: Sequence[int] | int | str | None = None, align_temperature: float = 0.1,
    align_batch: int = 16, track_every: int | None = None,
    track_languages: Sequence[str] | str | None = None, track_data: str = "flores-dev",
    track_sentences: int = 100,
) -> Result | None:
    """Instruction tuning (CoIT ``recipe="coit"``, MuIT ``recipe="muit"``, or a ``mixture``
    spec), LoRA or full: ``layer-analysis train``. Returns the training output read back (None
    in the other processes of a multi-process launch); probe it with ``la.align(model=OUTPUT)``.
    ``model`` is a name or path only, unlike the other functions': training loads the model
    itself (again on resume, in every process of a launch); save a loaded one with
    ``save_pretrained(DIR)`` (its tokenizer too) and pass ``DIR``.

    >>> out = la.train(recipe="coit", languages="zh", output="out/x-zh", max_steps=100)
    >>> out.show()
    """
    from layer_analysis.cli.training import training_config
    from layer_analysis.train.loop import train as run_training
    from layer_analysis.train.mixture import parse_spec, recipe_spec

    model = _named_model(model, "train")
    if bool(mixture) == bool(recipe):  # the train command's checks and messages
        raise DataError("pass either --recipe (with --languages) or --mixture")
    targets = _languages(languages)
    if recipe:
        if not targets:
            raise DataError(f"--recipe {recipe} needs --languages")
        spec = recipe_spec(recipe, targets, instructions, translations)
    else:
        spec = str(parse_spec(mixture))
    options = argparse.Namespace(
        model=model, full=full, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_targets=",".join(_names(lora_targets)) if lora_targets else None, epochs=epochs,
        max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup=warmup,
        max_length=max_length, seed=seed, save_every=save_every, log_every=log_every,
        device=device, dtype=dtype, resume=resume, no_progress=not progress,
        align_weight=align_weight, align_layers=_layer_list(align_layers),
        align_temperature=align_temperature, align_batch=align_batch,
        track_every=track_every, track_languages=",".join(_languages(track_languages) or [])
        or None, track_data=track_data, track_sentences=track_sentences)
    result = run_training(training_config(options, spec, Path(output)))
    return load(output) if result.main_process else None


def evaluate(
    model: ModelLike = "smollm2-135m", *, languages: Sequence[str] | str, tokenizer: Any = None,
    task: str = "translation", data: str = "flores-devtest", limit: int = 100,
    batch_size: int = 16, max_new_tokens: int | None = None, device: str = "auto",
    dtype: str = "auto", output: str | Path | None = None, progress: bool = True,
) -> Result:
    """Translation from English (chrF++, spBLEU, off-target rate) or zero-shot XQuAD (EM, F1)
    of a model, adapter or training output: ``layer-analysis evaluate``. ``model`` may be a
    loaded ``transformers`` model with ``tokenizer=``. With ``output``, the scores JSON (and the
    predictions beside it) are written after every language.

    >>> scores = la.evaluate("out/x-zh", languages="zh", limit=50)
    >>> scores.table[["target", "chrf++", "off_target_rate"]]
    """
    from tqdm.auto import tqdm

    from layer_analysis.probe.models import loaded_or_load
    from layer_analysis.train.evaluate import (
        check_languages,
        check_scores_output,
        evaluate_translation,
        evaluate_xquad,
        write_evaluation,
    )

    if task not in EVALUATION_TASKS:  # the command's argparse choices; the library has none
        raise DataError(f"unknown evaluation task {task!r}; choose from "
                        f"{', '.join(EVALUATION_TASKS)}")
    targets = _languages(languages) or []
    if not targets:
        raise DataError("--languages names no language")
    check_languages(task, targets, data, limit)  # every one, before the model
    if output is not None:
        check_scores_output(Path(output))
    loaded = loaded_or_load(_model(model, tokenizer, device, dtype), device=device, dtype=dtype)
    results = []
    for language in tqdm(targets, desc=f"evaluate {task}", unit="language", disable=not progress):
        if task == "translation":
            results.append(evaluate_translation(loaded, language, data, limit,
                                                max_new_tokens=max_new_tokens or 128,
                                                batch_size=batch_size))
        else:
            results.append(evaluate_xquad(loaded, language, limit,
                                          max_new_tokens=max_new_tokens or 32,
                                          batch_size=batch_size))
        if output is not None:  # after every language: a later failure keeps the finished ones
            write_evaluation(results, Path(output), loaded.record())
    scores = pd.DataFrame([r.scores for r in results])
    predictions = pd.DataFrame([{**p, **{k: v for k, v in r.scores.items()  # as written to disk
                                         if k in ("task", "target", "language")}}
                                for r in results for p in r.predictions])
    return Result("evaluation", None if output is None else Path(output).parent,
                  {"model": loaded.record(), "task": task,
                   "scores": None if output is None else str(output)},
                  {"scores": scores, "predictions": predictions})


def fit_law(
    sweep: str | Path | pd.DataFrame, *, metric: str = "chrf++", family: str = "all",
    output: str | Path | None = None, static: bool = True, overwrite: bool = False,
) -> Result:
    """Fit the scaling laws of a sweep (``power``, ``log``, ``saturating``; ``family`` for
    one), ranked by AICc and compared with no size effect: ``layer-analysis fit-law``.
    ``sweep``: a sweep directory, a CSV with language, pairs, similarity and the metric, or
    that table as a DataFrame (its rows checked as the CSV's lines are); ``output`` defaults to
    ``SWEEP/law`` for a directory and ``law/`` beside a CSV (a DataFrame needs ``output``).
    Returns the law read back: ``manifest`` is its ``law.json`` (``best``, ``fits``,
    ``no_size_effect`` and ``verdict``, the lines the command prints: which law the points
    support, whether data size predicts the metric), ``table`` its ``law.csv``.

    >>> law = la.fit_law("out/sweep", static=False)
    >>> print("\n".join(law.manifest["verdict"]))
    """
    from layer_analysis.train.law_run import LawRequest, execute_fit_law

    if not isinstance(sweep, str | Path | pd.DataFrame):
        raise DataError(f"sweep must be a sweep directory, a CSV or a DataFrame of points, got "
                        f"{type(sweep).__name__}")
    request = LawRequest(sweep=sweep if isinstance(sweep, pd.DataFrame) else Path(sweep),
                         metric=metric, family=family,
                         output=None if output is None else Path(output), static=static,
                         overwrite=overwrite)
    directory, _ = execute_fit_law(request)
    return load(directory)


def allocate(
    law: str | Path, *, budget: int, caps: str | Mapping[str, int] | None = None,
    objective: str = "sum", family: str | None = None, instructions: int = 100,
    step: int | None = None, output: str | Path | None = None, static: bool = True,
    overwrite: bool = False,
) -> Result:
    """Split a budget of translation pairs across languages by a fitted law, against the
    uniform split: ``layer-analysis allocate``. ``law``: a ``law.json`` written by
    ``fit_law``; ``caps``: ``{"el": 500, "zh": 8000}`` or the command line's
    ``"el=500,zh=8000"`` (default: the pairs the data holds); ``family`` None for the best;
    ``output`` defaults to ``allocation/`` beside ``law.json``. Returns the allocation read
    back: ``table`` per split and language, ``manifest`` its ``allocation.json`` (with the
    MuIT mixture specs for ``la.train(mixture=...)``).

    >>> alloc = la.allocate("out/sweep/law/law.json", budget=6000, caps={"el": 500})
    >>> specs = alloc.manifest["specs"]  # allocated, uniform
    >>> la.train(mixture=specs["allocated"], output="out/m")
    """
    from layer_analysis.train.law_run import AllocationRequest, execute_allocation

    if isinstance(caps, Mapping):  # the command line's spelling, read by the same parser
        caps = ",".join(f"{language}={pairs}" for language, pairs in caps.items())
    request = AllocationRequest(
        law=Path(law), budget=budget, caps=caps, objective=objective, family=family,
        instructions=instructions, step=step, output=None if output is None else Path(output),
        static=static, overwrite=overwrite)
    directory, _ = execute_allocation(request)
    return load(directory)


__all__ = ["Result", "adopt_model", "align", "allocate", "as_corpus", "correlate", "evaluate",
           "fit_law", "intervene", "lens", "load", "mine", "neurons", "patch",
           "tokenizer_fingerprint", "train", "transfer",
           "transfer_compare", "weights_fingerprint"]
