"""``layer-analysis train`` and ``layer-analysis evaluate``: CoIT / MuIT recipes or any mixture
spec, and translation / XQuAD evaluation of a base model, an adapter or a fine-tuned model."""

from __future__ import annotations

import argparse
from pathlib import Path

from layer_analysis.probe.checks import (
    COUNT_OR_NONE,
    NON_NEGATIVE,
    POSITIVE,
    RATE,
    SEED,
    SHARE,
    Range,
)
from layer_analysis.probe.errors import DataError
from layer_analysis.train.evaluate import TASKS
from layer_analysis.train.loop import TrainConfig
from layer_analysis.train.mixture import RECIPES, parse_spec, recipe_spec
from layer_analysis.train.objective import AlignmentObjective
from layer_analysis.train.tracking import TrackingConfig

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_limit_option,
    add_model_options,
    add_progress_option,
    parse_layers,
    real,
    whole,
)

TRAIN_MODEL = "smollm2-135m"  # train, evaluate and sweep default to a model cheap to tune
TRAIN_LENGTH = Range(8, whole=True)  # tokens per record: a prompt and a response fit
PAIRS = Range(2, whole=True)  # sentences or pairs that are compared with each other


def add_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train", formatter_class=DefaultsFormatter,
        help="cross-lingual (CoIT) or multilingual (MuIT) instruction tuning, LoRA or full",
        description="Fine-tune a causal LM on instruction + translation data (loss on responses "
                    "only). Writes OUTPUT/{adapter files or model files, training.json, "
                    "train_log.jsonl, checkpoints/}; the probe loads OUTPUT directly. Several "
                    "GPUs: `accelerate launch --config_file train/launch/ddp.yaml -m layer_analysis "
                    "train ...` (or torchrun).")
    what = train.add_argument_group("what to train")
    add_model_options(what, TRAIN_MODEL, "packaged name, directory, Hub id", adapter=False)
    what.add_argument("--recipe", choices=RECIPES,
                      help="coit: one language -> x-model; muit: several -> m-model")
    what.add_argument("--languages", help="target languages, comma-separated (en is implied)")
    what.add_argument("--instructions", type=whole(COUNT_OR_NONE), default=2000,
                      help="Alpaca records per language (English included)")
    what.add_argument("--translations", type=whole(COUNT_OR_NONE), default=5000,
                      help="English -> X translation pairs per language")
    what.add_argument("--mixture", help="a mixture spec instead of a recipe, e.g. "
                                        "'alpaca_en[:2000] + translation_en-zh[:5000]'")
    what.add_argument("--output", type=Path, required=True, help="output directory")
    training_options(train)
    tracking_options(train)

    ev = sub.add_parser(
        "evaluate", formatter_class=DefaultsFormatter,
        help="translation (chrF++, spBLEU) or XQuAD (EM, F1) of a model or adapter",
        description="Greedy decoding with left-padded batches. Translation: English -> each "
                    "language on FLORES devtest; XQuAD: zero-shot, instruction in the language.")
    add_model_options(ev, TRAIN_MODEL, "packaged name, directory, Hub id or an "
                                       "adapter/training output directory", adapter=False)
    ev.add_argument("--task", choices=TASKS, default="translation")
    ev.add_argument("--languages", required=True, help="comma-separated target languages")
    ev.add_argument("--data", default="flores-devtest", help="parallel data for translation")
    add_limit_option(ev, 100, " (XQuAD: questions)")
    ev.add_argument("--batch-size", type=whole(), default=16)
    ev.add_argument("--max-new-tokens", type=whole(), help="default 128 (translation), 32 (XQuAD)")
    add_device_options(ev)
    ev.add_argument("--output", type=Path, help="scores JSON (predictions beside it)")
    add_progress_option(ev, "accepted as by every command (evaluate prints one line per "
                            "language and shows no progress bars)")


def training_options(parser: argparse.ArgumentParser) -> None:
    """How to train: shared by ``train`` and ``sweep``."""
    how = parser.add_argument_group("how")
    how.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    how.add_argument("--lora-r", type=whole(), default=8, help="LoRA rank")
    how.add_argument("--lora-alpha", type=whole(), default=16, help="LoRA scaling α")
    how.add_argument("--lora-dropout", type=real(SHARE), default=0.05, help="LoRA dropout")
    how.add_argument("--lora-targets", help="comma-separated module names (default: every "
                                            "linear layer of the decoder blocks)")
    how.add_argument("--epochs", type=real(POSITIVE), default=1.0, help="passes over the mixture")
    how.add_argument("--max-steps", type=whole(), help="optimizer steps (overrides --epochs)")
    how.add_argument("--batch-size", type=whole(), default=8, help="per process and micro-step")
    how.add_argument("--grad-accum", type=whole(), default=1,
                     help="micro-batches per optimizer step")
    how.add_argument("--lr", type=real(RATE), help="default 2e-4 with LoRA, 2e-5 full")
    how.add_argument("--warmup", type=real(SHARE), default=0.03, help="share of steps warming up")
    how.add_argument("--max-length", type=whole(TRAIN_LENGTH), default=256,
                     help="longer records are reported and left out")
    how.add_argument("--seed", type=whole(SEED), default=0, help="shuffling, LoRA initialisation")
    how.add_argument("--save-every", type=whole(), default=100, help="optimizer steps")
    how.add_argument("--log-every", type=whole(), default=10, help="optimizer steps per log line")
    add_device_options(how)
    how.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_progress_option(how)
    align = parser.add_argument_group(
        "alignment objective", "InfoNCE between mean-pooled states of the mixture's English -> X "
        "translation pairs at middle layers, added to the LM loss (Liu & Niehues 2025)")
    align.add_argument("--align-weight", type=real(NON_NEGATIVE), default=0.0,
                       help="weight of the alignment loss (0: off)")
    align.add_argument("--align-layers", type=parse_layers,
                       help="block outputs to align, e.g. '15' or '12-18' (default: the middle)")
    align.add_argument("--align-temperature", type=real(POSITIVE), default=0.1)
    align.add_argument("--align-batch", type=whole(PAIRS), default=16, help="pairs per micro-batch")


def tracking_options(parser: argparse.ArgumentParser) -> None:
    """Alignment tracked while training (``train`` only: a sweep measures the end points)."""
    track = parser.add_argument_group(
        "alignment tracking", "probe a held-out parallel set while training: centered P@1 per "
        "layer, both directions, with bootstrap CIs -> OUTPUT/alignment_log.csv, "
        "OUTPUT/alignment.html")
    track.add_argument("--track-every", type=whole(COUNT_OR_NONE),
                       help="optimizer steps between probes (0: before and after training only;"
                            " default: no tracking)")
    track.add_argument("--track-languages", help="languages paired with English (default: the "
                                                 "mixture's other languages)")
    track.add_argument("--track-data", default="flores-dev", help="held-out parallel data")
    track.add_argument("--track-sentences", type=whole(PAIRS), default=100, help="sentences per language")


def training_config(args: argparse.Namespace, mixture: str, output: Path) -> TrainConfig:
    """A TrainConfig from the shared training options."""
    return TrainConfig(
        mixture=mixture, output=output, model=args.model, full=args.full, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=tuple(args.lora_targets.split(",")) if args.lora_targets else None,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr or (2e-5 if args.full else 2e-4),
        warmup=args.warmup, max_length=args.max_length, seed=args.seed,
        save_every=args.save_every, log_every=args.log_every, device=args.device,
        dtype=args.dtype, resume=args.resume, progress=not args.no_progress,
        alignment=AlignmentObjective(args.align_weight, args.align_layers,
                                     args.align_temperature, args.align_batch),
        tracking=tracking_config(args))


def tracking_config(args: argparse.Namespace) -> TrackingConfig | None:
    if getattr(args, "track_every", None) is None:
        return None
    languages = tuple(args.track_languages.split(",")) if args.track_languages else ()
    return TrackingConfig(args.track_every, languages, args.track_data, args.track_sentences)


def cmd_train(args: argparse.Namespace) -> None:
    from layer_analysis.train.loop import train

    if bool(args.mixture) == bool(args.recipe):
        raise DataError("pass either --recipe (with --languages) or --mixture")
    if args.recipe:
        if not args.languages:
            raise DataError(f"--recipe {args.recipe} needs --languages")
        spec = recipe_spec(args.recipe, args.languages.split(","), args.instructions,
                           args.translations)
    else:
        spec = str(parse_spec(args.mixture))
    config = training_config(args, spec, args.output)
    result = train(config)
    if not result.main_process:
        return
    summary = result.summary
    print(f"mixture: {summary['mixture']}")
    for line in result.report.lines():
        print(f"  {line}")
    for note in summary["notes"]:
        print(f"  note: {note}")
    print(f"{summary['trainable']}: {summary['trainable_parameters']:,} trainable parameters; "
          f"{summary['steps']} steps in {summary['seconds']:.0f} s, final loss "
          f"{summary['final_loss']:.3f}, peak memory {summary['peak_memory_gb']:.1f} GB")
    if summary["tracking"]:
        import pandas as pd

        from layer_analysis.train.tracking import ALIGNMENT_LOG, peak_alignment

        log = pd.read_csv(args.output / ALIGNMENT_LOG)
        first, last = peak_alignment(log, int(log.step.min())), peak_alignment(log)
        for before, after in zip(first.itertuples(), last.itertuples(), strict=True):
            print(f"  alignment en<->{after.language} (centered P@1 at the best layer): "
                  f"{before.value:.3f} (layer {before.layer}, before) -> {after.value:.3f} "
                  f"(layer {after.layer}, step {int(log.step.max())})")
        print(f"  tracking took {summary['tracking']['seconds']:.0f} s: "
              f"{args.output / ALIGNMENT_LOG}, {args.output / 'alignment.html'}")
    print(f"output: {args.output}  (probe it: layer-analysis run --model {args.output})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from layer_analysis.probe.models import load_model
    from layer_analysis.train.evaluate import (
        check_languages,
        check_scores_output,
        evaluate_translation,
        evaluate_xquad,
        write_evaluation,
    )

    languages = args.languages.split(",")
    check_languages(args.task, languages, args.data, args.limit)  # every one, before the model
    if args.output is not None:
        check_scores_output(args.output)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    results = []
    for language in languages:
        if args.task == "translation":
            result = evaluate_translation(loaded, language, args.data, args.limit,
                                          max_new_tokens=args.max_new_tokens or 128,
                                          batch_size=args.batch_size)
            spbleu = result.scores["spbleu"]
            print(f"{loaded.name} en->{result.scores['target']}: chrF++ "
                  f"{result.scores['chrf++']:.2f}, spBLEU "
                  f"{'n/a (no FLORES-200 SentencePiece model here)' if spbleu is None else spbleu}"
                  f", off-target {result.scores['off_target_rate']:.1%}"
                  f" ({result.scores['sentences']} sentences)")
        else:
            result = evaluate_xquad(loaded, language, args.limit,
                                    max_new_tokens=args.max_new_tokens or 32,
                                    batch_size=args.batch_size)
            s = result.scores
            print(f"{loaded.name} XQuAD-{s['language']}: EM {s['em']:.1f}, F1 {s['f1']:.1f} "
                  f"(SQuAD v1.1); EM {s['em_mlqa']:.1f}, F1 {s['f1_mlqa']:.1f} (MLQA); "
                  f"contains {s['contains']:.1f} ({s['questions']} questions)")
        results.append(result)
        if args.output:  # after every language: a later failure keeps the finished ones
            write_evaluation(results, args.output, loaded.record())
    if args.output:
        print(f"scores: {args.output}")


HANDLERS = {"train": cmd_train, "evaluate": cmd_evaluate}
