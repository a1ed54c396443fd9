"""Quickstart: how a model aligns English, German and Chinese, layer by layer, from Python.

    python examples/quickstart.py                      # the packaged gemma3-270m, offline
    python examples/quickstart.py --model smollm2-135m --limit 50 --output runs

The model can also come from $LAYER_ANALYSIS_EXAMPLE_MODEL (the test suite runs this script on
a tiny random model that way).
"""

from __future__ import annotations

import argparse
import os

import layer_analysis as la
from layer_analysis.probe.data import load_parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("LAYER_ANALYSIS_EXAMPLE_MODEL",
                                                          "gemma3-270m"))
    parser.add_argument("--output", default="runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, help="sentences per language (default: all 122)")
    args = parser.parse_args()

    # Any parallel sentences will do: a dict of line-aligned lists (or a DataFrame with one
    # column per language). Here: the shipped set's sentences.
    shipped = load_parallel("default").select(["en", "de", "zh"], args.limit)
    sentences = {side.language: list(side.sentences) for side in shipped.sides.values()}

    run = la.align(sentences, model=args.model, device=args.device, output=args.output,
                   name="quickstart", overwrite=True, bootstrap=200, static=False)
    print(run)

    # The tidy table: one row per layer, pair, pooling, normalisation and metric.
    table = run.table
    p_at_1 = table[(table.metric == "p@1") & (table.normalisation == "centered")]
    print(p_at_1.pivot_table(index="layer", columns="target", values="value").round(3))
    print(f"peak layer (of centered P@1 averaged over pairs): {run.peak_layer}")

    # Figures are plotly objects: run.show() draws them (inline in Jupyter).
    print("figures:", ", ".join(run.figures()))

    # Any run directory reads back the same way.
    again = la.load(run.directory)
    assert again.table.equals(run.table)
    print(f"report: {run.directory / 'report.html'}")


if __name__ == "__main__":
    main()
