"""``layer-analysis lens``: the latent language per layer through the logit lens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from layer_analysis.probe.checks import COUNT_OR_NONE, SEED
from layer_analysis.probe.extract import MIN_LENGTH
from layer_analysis.probe.languages import display_name
from layer_analysis.probe.latent import TASKS, WORDS
from layer_analysis.probe.lens_run import DEFAULT_TARGETS, LensRequest, execute_lens

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_limit_option,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    deprecated,
    run_settings,
    stage_printer,
    whole,
)

LIMIT_CHANGED = ("lens --limit counts the running-text sentences per language since this "
                 "release (it counted concepts before; concepts are --concepts)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lens = sub.add_parser(
        "lens", formatter_class=DefaultsFormatter,
        help="latent language per layer: word probes through the logit lens",
        description="Few-shot word-translation, repetition or cloze prompts ask for a word in each "
                    "target language; at every layer the logit lens gives the probability of the "
                    "answer's first token, of its English translation's first token, and the "
                    "entropy, with bootstrap CIs over concepts (Wendler et al. 2024). Writes "
                    "OUTPUT/NAME/{lens.csv,lens_words.csv,report.html,figures/,manifest.json}.")
    add_model_options(lens)
    lens.add_argument("--languages", help="target languages, comma-separated (default: "
                      + ",".join(x.split("_")[0] for x in DEFAULT_TARGETS) + ")")
    lens.add_argument("--source", help="language the translation prompts translate from "
                                       "(default: French; German for a French target)")
    lens.add_argument("--task", nargs="+", default=["translation"], choices=TASKS)
    lens.add_argument("--cloze-data", help="sentences the cloze task blanks a word in (default: "
                                           "flores-devtest, else the shipped set)")
    lens.add_argument("--words", type=Path, default=WORDS,
                      help="word list: TSV, a header of languages (English among them), one row "
                           "per concept")
    lens.add_argument("--concepts", type=whole(everything=True), metavar="N|all",
                      help="use the first N concepts of the word list (default: all)")
    lens.add_argument("--shots", type=whole(COUNT_OR_NONE), default=4,
                      help="solved examples before each prompt")
    limit = add_limit_option(lens, 50, " of the running-text probe (0: none)", COUNT_OR_NONE,
                             note=LIMIT_CHANGED)
    deprecated(lens, "--sentences", limit)
    lens.add_argument("--positions", type=whole(), default=4,
                      help="token positions sampled per sentence")
    lens.add_argument("--sentence-data", help="parallel data of the running-text probe "
                                              "(default: flores-devtest, else the shipped set)")
    lens.add_argument("--table-data", help="data the token -> language table is counted on "
                                           "(default: flores-dev, else the shipped set)")
    lens.add_argument("--top-k", type=whole(), default=10,
                      help="top tokens whose languages the running-text probe counts")
    lens.add_argument("--tuned-steps", type=whole(COUNT_OR_NONE), default=0,
                      help="train a multilingual tuned lens for this many steps (0: none) on "
                           "the table data in all its languages; resumes from the run's "
                           "tuned_lens.safetensors; KL per layer and language vs the logit lens")
    lens.add_argument("--tuned-sentences", type=whole(), default=40,
                      help="sentences per language to train the tuned lens on")
    lens.add_argument("--bootstrap", type=whole(), default=1000)
    lens.add_argument("--seed", type=whole(SEED), default=0, help="picks each prompt's examples")
    lens.add_argument("--batch-size", type=whole(), default=16)
    lens.add_argument("--max-length", type=whole(MIN_LENGTH), default=2048,
                      help="tokens per prompt; a longer prompt is an error, never truncated")
    add_device_options(lens)
    add_run_directory_options(lens, "MODEL-lens")
    add_progress_option(lens)


def cmd_lens(args: argparse.Namespace) -> None:
    request = LensRequest(
        **run_settings(args), targets=args.languages.split(",") if args.languages else None,
        source=args.source, tasks=tuple(args.task), words=args.words, limit=args.concepts,
        shots=args.shots, bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
        static=not args.no_static, sentences=args.limit, positions=args.positions,
        sentence_data=args.sentence_data, table_data=args.table_data, top_k=args.top_k,
        tuned_steps=args.tuned_steps, tuned_sentences=args.tuned_sentences,
        cloze_data=args.cloze_data, max_length=args.max_length)
    run_dir, table = execute_lens(request, ["layer-analysis", *sys.argv[1:]],
                                  stage_printer("lens", not args.no_progress))
    for (task, target), rows in table.groupby(["task", "target"], sort=False):
        grid = rows.pivot_table(index="layer", columns="measure", values="value")
        count = int(rows.concepts.iloc[0])
        if task == "sentences":
            print(f"\nrunning {display_name(target)} text ({count} positions): share of the "
                  "top next-token mass per layer")
            grid = grid[["p_target", "p_english", "p_other", "p_shared", "entropy"]].rename(
                columns={"p_target": "own", "p_english": "English", "p_other": "other",
                         "p_shared": "shared"})
        else:
            print(f"\n{task} → {display_name(target)} ({count} concepts): mean probability "
                  "per layer")
            grid = grid[["p_target", "p_english", "entropy"]].rename(
                columns={"p_target": "answer", "p_english": "English"})
        print(grid.to_string(float_format=lambda v: f"{v:.3f}"))
    kl = run_dir / "tuned_lens_kl.csv"
    if kl.exists():
        mean = pd.read_csv(kl).pivot_table(index="layer", columns="lens", values="kl")
        print("\nKL(final || lens), mean over held-out languages (nats):")
        print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}")


HANDLERS = {"lens": cmd_lens}
