"""Regenerate the README's figure, docs/assets/alignment-curves.png, from a run of the tool.

    .venv/bin/python docs/make_figure.py                  # runs gemma3-270m on the shipped data
    .venv/bin/python docs/make_figure.py --run runs/NAME  # or draws an existing run

The figure is the run's own curves (``report.curves``): centered retrieval P@1 per layer,
English → X, with 95 % bootstrap bands and the chance line. Without ``--run`` it makes the
default run (``layer-analysis run --name readme-figure --no-static``: 1–2 minutes on a CPU, the
activations are cached under runs/store/).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

from layer_analysis.probe import report
from layer_analysis.probe.pipeline import RunRequest, execute
from layer_analysis.probe.runs import read_run

FIGURE = Path(__file__).resolve().parent / "assets" / "alignment-curves.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run directory (default: make one)")
    parser.add_argument("--output", type=Path, default=FIGURE, help="the PNG to write")
    args = parser.parse_args()
    if args.run is None:
        request = RunRequest(name="readme-figure", overwrite=True, static=False)
        outcome = execute(request, ["docs/make_figure.py"])
        assert outcome is not None  # one process
        results = outcome.results
    else:
        results = read_run(args.run)
    table = results.table
    pivot = results.manifest.get("analysis", {}).get("pivot")
    if pivot:  # the pivot's direction only, as in the report
        table = table[table.source.str.startswith(pivot)]
    fig = report.curves(table, "p@1", "centered")
    fig.update_layout(title=f"{results.manifest['model']['name']}, "
                            "shipped sentences: English → X retrieval P@1 per layer (centered; "
                            "bands: 95 % bootstrap CI)", title_font_size=14,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(report.figure_image(fig, "png"))).convert("RGB")
    image.quantize(colors=256).save(args.output, optimize=True)  # a palette PNG: < 200 kB
    print(f"{args.output} ({args.output.stat().st_size // 1024} kB) from {results.directory}")


if __name__ == "__main__":
    main()
