"""``neurons`` (LAPE language neurons and their deactivation check) and ``intervene`` (steering
and INCLINE-style maps, each against a control)."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from layer_analysis.probe.checks import COUNT_OR_NONE, OPEN_SHARE, SEED, Range
from layer_analysis.probe.intervene_run import (
    KINDS,
    STEER_TASKS,
    InterventionRequest,
    execute_intervention,
    summary_lines,
)
from layer_analysis.probe.languages import display_name
from layer_analysis.probe.neuron_run import (
    DEACTIVATION_TABLE,
    DEFAULT_LANGUAGES,
    NeuronRequest,
    deactivation_summary,
    execute_neurons,
)
from layer_analysis.probe.neurons import LapeThresholds

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_limit_option,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    deprecated,
    listed,
    real,
    run_settings,
    stage_printer,
    whole,
)

STRENGTH = Range(-1000, 1000)  # the multipliers probe.intervene_run accepts
PAIRS = Range(2, whole=True)  # sentences to fit or evaluate on: a pair at least


def add_parsers(sub: argparse._SubParsersAction) -> None:
    neurons = sub.add_parser(
        "neurons", formatter_class=DefaultsFormatter,
        help="language-specific FFN neurons (LAPE) and their deactivation check",
        description="Activation probability of every FFN neuron per language (one hooked pass "
                    "per language), language-specific neurons by activation probability entropy "
                    "(Tang et al. 2024), their overlap, and a deactivation check: each "
                    "language's neurons zeroed in turn (and as many random ones) → every "
                    "language's NLL on held-out sentences, with bootstrap CIs. Writes "
                    "OUTPUT/NAME/{neurons.safetensors,neuron_counts.csv,neuron_overlap.csv,"
                    "deactivation.csv,report.html,manifest.json}. Compare runs of base, x- and "
                    "m-models with `layer-analysis compare`.")
    add_model_options(neurons)
    neurons.add_argument("--languages", default=",".join(x.split("_")[0] for x in DEFAULT_LANGUAGES),
                         help="comma-separated, at least two")
    neurons.add_argument("--data", default="flores-dev", help="text LAPE counts on")
    deprecated(neurons, "--sentences", add_limit_option(neurons, 200, " LAPE counts on",
                                                          everything=False))
    neurons.add_argument("--eval-data", default="flores-devtest",
                         help="held-out text for the deactivation check")
    neurons.add_argument("--eval-sentences", type=whole(COUNT_OR_NONE), default=50,
                         help="per language (0: no deactivation check)")
    defaults = LapeThresholds()
    neurons.add_argument("--top-rate", type=real(OPEN_SHARE), default=defaults.top_rate,
                         help="share of all neurons kept, lowest entropy first")
    neurons.add_argument("--filter-rate", type=real(OPEN_SHARE), default=defaults.filter_rate,
                         help="a kept neuron has some language above this quantile of all "
                              "activation probabilities")
    neurons.add_argument("--bar-rate", type=real(OPEN_SHARE), default=defaults.bar_rate,
                         help="a kept neuron belongs to every language above this quantile")
    neurons.add_argument("--bootstrap", type=whole(), default=1000)
    neurons.add_argument("--seed", type=whole(SEED), default=0, help="the random control's draw")
    neurons.add_argument("--batch-size", type=whole(), default=16)
    add_device_options(neurons)
    add_run_directory_options(neurons, "MODEL-neurons")
    add_progress_option(neurons)

    intervene = sub.add_parser(
        "intervene", formatter_class=DefaultsFormatter,
        help="steer generation with a language vector, or map a language onto English "
             "(INCLINE-style), against a control",
        description="steer: add strength × (mean state of the language − mean state of "
                    "English) after a block while the model answers English prompts; control: "
                    "a random direction of the same norm; measured: share of outputs in the "
                    "language and chrF++ against its reference. map: a ridge least-squares map "
                    "from the language's states to English ones, fitted on FLORES dev pairs and "
                    "applied to the prompt; control: the same fit on shuffled pairs; measured: "
                    "language → English chrF++ and XQuAD F1. Every effect with a paired "
                    "bootstrap CI against no intervention. Writes OUTPUT/NAME/{interventions.csv,"
                    "generations.jsonl,report.html,manifest.json}.")
    intervene.add_argument("kind", choices=KINDS)
    intervene.add_argument("--language", required=True, help="the language X (not English)")
    add_model_options(intervene)
    intervene.add_argument("--layer", type=whole(COUNT_OR_NONE),
                           help="block output to act on (default: where X and English align "
                                "best on the fit pairs)")
    intervene.add_argument("--strengths", default="1,2", type=listed(STRENGTH, float),
                           help="comma-separated multipliers (steer: of the vector; map: of the "
                                "move towards the mapped state)")
    intervene.add_argument("--task", default="repeat", choices=STEER_TASKS,
                           help="steer: English prompts asking to repeat the sentence, or to "
                                "translate it into the language")
    intervene.add_argument("--fit-data", default="flores-dev")
    intervene.add_argument("--fit-sentences", type=whole(PAIRS), default=300)
    intervene.add_argument("--eval-data", default="flores-devtest")
    intervene.add_argument("--eval-sentences", type=whole(PAIRS), default=50)
    intervene.add_argument("--xquad", type=whole(COUNT_OR_NONE), default=50,
                           help="map: XQuAD questions in the language (0: none)")
    intervene.add_argument("--max-new-tokens", type=whole(), default=64)
    intervene.add_argument("--bootstrap", type=whole(), default=200)
    intervene.add_argument("--seed", type=whole(SEED), default=0)
    intervene.add_argument("--batch-size", type=whole(), default=16)
    add_device_options(intervene)
    add_run_directory_options(intervene, "MODEL-KIND-LANGUAGE")
    add_progress_option(intervene)


def cmd_neurons(args: argparse.Namespace) -> None:
    request = NeuronRequest(
        **run_settings(args), languages=args.languages.split(","), data=args.data,
        sentences=args.limit, eval_data=args.eval_data, eval_sentences=args.eval_sentences,
        thresholds=LapeThresholds(args.top_rate, args.filter_rate, args.bar_rate),
        bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
        static=not args.no_static)
    run_dir = execute_neurons(request, ["layer-analysis", *sys.argv[1:]],
                              stage_printer("neurons", not args.no_progress))
    counts = pd.read_csv(run_dir / "neuron_counts.csv")
    grid = counts.pivot_table(index="layer", columns="language", values="neurons", sort=False
                              ).astype(int)
    grid.columns = [display_name(c) for c in grid.columns]
    print("language-specific neurons per layer (LAPE)")
    print(grid.to_string())
    if (run_dir / DEACTIVATION_TABLE).exists():
        print("\n" + "\n".join(deactivation_summary(pd.read_csv(run_dir / DEACTIVATION_TABLE))))
    print(f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}")


def cmd_intervene(args: argparse.Namespace) -> None:
    request = InterventionRequest(
        **run_settings(args), kind=args.kind, language=args.language, layer=args.layer,
        strengths=args.strengths, task=args.task, fit_data=args.fit_data,
        fit_sentences=args.fit_sentences, eval_data=args.eval_data,
        eval_sentences=args.eval_sentences, xquad=args.xquad, max_new_tokens=args.max_new_tokens,
        bootstrap=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
        static=not args.no_static)
    run_dir, table = execute_intervention(request, ["layer-analysis", *sys.argv[1:]],
                                          stage_printer("intervene", not args.no_progress))
    print("effects vs no intervention, paired 95 % bootstrap CIs:")
    print("\n".join(summary_lines(table)))
    print(f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}")


HANDLERS = {"neurons": cmd_neurons, "intervene": cmd_intervene}
