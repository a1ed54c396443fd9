"""``layer-analysis patch``: cross-lingual activation patching with controls and CIs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layer_analysis.probe.checks import SEED
from layer_analysis.probe.extract import MIN_LENGTH
from layer_analysis.probe.latent import WORDS
from layer_analysis.probe.patch_run import DEFAULT_SETTINGS, PatchRequest, execute_patch

from .options import (
    DefaultsFormatter,
    add_device_options,
    add_model_options,
    add_progress_option,
    add_run_directory_options,
    parse_layers,
    run_settings,
    stage_printer,
    whole,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    patch = sub.add_parser(
        "patch", formatter_class=DefaultsFormatter,
        help="cross-lingual activation patching: where the output language and the concept "
             "switch (Dumas et al. 2025)",
        description="A source word-translation prompt (concept C, language A → B) and a target "
                    "prompt (C′, A′ → B′); at each layer the target's last-token state is "
                    "replaced by the source's and the output read: P(C′ in B′), P(C in B′), "
                    "P(C in B), P(C′ in B), means over concept pairs with bootstrap CIs; the "
                    "language and concept switch layers; the mean latent over several source "
                    "languages; controls (random concept, random direction, self-patch) with "
                    "paired CIs. Writes OUTPUT/NAME/{patching.csv,patch_switch.csv,"
                    "patch_pairs.csv,report.html,figures/,manifest.json}.")
    add_model_options(patch)
    patch.add_argument("--pair", nargs=4, action="append", metavar=("A", "B", "A2", "B2"),
                       help="a setting: source prompts translate A → B, target prompts A2 → B2 "
                            "(repeat for several; default: " + "; ".join(
                                " ".join(x.split("_")[0] for x in s) for s in DEFAULT_SETTINGS)
                            + ")")
    patch.add_argument("--mean-languages",
                       help="source languages A1,...,Ak (k ≥ 2) whose latents of C (each "
                            "→ B) are averaged (default: de,fr,ru,zh,es less each setting's B)")
    patch.add_argument("--layers", type=parse_layers, default=None,
                       help="layers to patch: 'all', '4,8,12' or '2-10', within 1..blocks "
                            "(default: all)")
    patch.add_argument("--onward", action="store_true",
                       help="also patch every layer from l on (at the last token this includes "
                            "the read-out layer: the output is then the source's own)")
    patch.add_argument("--words", type=Path, default=WORDS,
                       help="word list: TSV, a header of languages, one row per concept")
    patch.add_argument("--concepts", type=whole(everything=True), metavar="N|all",
                       help="target concepts per setting, one concept pair each (default: all)")
    patch.add_argument("--shots", type=whole(), default=4,
                       help="solved examples before each prompt")
    patch.add_argument("--bootstrap", type=whole(), default=1000)
    patch.add_argument("--seed", type=whole(SEED), default=0,
                       help="picks the pairs, examples and random controls")
    patch.add_argument("--batch-size", type=whole(), default=16)
    patch.add_argument("--max-length", type=whole(MIN_LENGTH), default=2048,
                       help="tokens per prompt; a longer prompt is an error, never truncated")
    add_device_options(patch)
    add_progress_option(patch)
    add_run_directory_options(patch, "MODEL-patch")


def request_from(args: argparse.Namespace) -> PatchRequest:
    """The request the command line describes (the API builds the same)."""
    return PatchRequest(
        **run_settings(args), settings=[tuple(p) for p in args.pair] if args.pair else None,
        mean_languages=args.mean_languages.split(",") if args.mean_languages else None,
        layers=tuple(args.layers) if args.layers else None, onward=args.onward,
        words=args.words, limit=args.concepts, shots=args.shots, bootstrap=args.bootstrap,
        seed=args.seed, batch_size=args.batch_size, max_length=args.max_length,
        static=not args.no_static)


def cmd_patch(args: argparse.Namespace) -> None:
    run_dir, _, switch = execute_patch(
        request_from(args), ["layer-analysis", *sys.argv[1:]],
        stage_printer("patch", not args.no_progress))
    shown = switch[switch.switch.isin(["language", "concept", "concept - language"])]
    print("\nswitch layers (mean over the concept pairs that switch, 95 % CI):")
    print(shown[["setting", "condition", "switch", "value", "ci_low", "ci_high", "defined",
                 "pairs"]].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}")


HANDLERS = {"patch": cmd_patch}
