"""Figures and exports: self-contained HTML, batched PNG/PDF through Debian's Chromium."""

from __future__ import annotations

import pandas as pd
import pytest

from layer_analysis.probe import report
from layer_analysis.probe.analysis import COLUMNS


@pytest.fixture
def table():
    rows = []
    for layer in range(4):
        for target in ("deu_Latn", "zho_Hans"):
            value = 0.2 + 0.2 * layer
            rows.append(["m", layer, "eng_Latn", target, "mean", "centered", "p@1", value,
                         value - 0.1, value + 0.1, 0.01, 0.01])
    return pd.DataFrame(rows, columns=COLUMNS)


def test_figures_state_metric_and_normalisation(table):
    heat = report.heatmap(table)
    assert "P@1" in heat.layout.title.text and "centered" in heat.layout.title.text
    assert heat.data[0].z.shape == (2, 4)
    curves = report.curves(table)
    names = [trace.name for trace in curves.data]
    assert "chance (random pairs)" in names and "eng_Latn → deu_Latn" in names
    assert any(trace.fill == "toself" for trace in curves.data)  # the CI bands
    with pytest.raises(Exception, match="no mrr values"):
        report.heatmap(table, "mrr")


def test_many_curves_keep_the_whole_legend_and_the_chance_line(table):
    few = report.curves(table)
    assert few.data[0].name == "chance (random pairs)"  # first: never pushed out of the legend
    assert few.layout.legend.orientation is None
    many = pd.concat([table.assign(target=f"x{i:02d}_Latn") for i in range(report.LEGEND_ROWS + 1)])
    figure = report.curves(many)
    assert figure.layout.legend.orientation == "h" and figure.layout.legend.y < 0  # below, wrapped
    assert sum(t.showlegend is not False for t in figure.data) == report.LEGEND_ROWS + 2


def test_bounded_metrics_share_one_colour_scale(table):
    assert (heat := report.heatmap(table)).data[0].zmin == 0 and heat.data[0].zmax == 1
    cosines = table.assign(metric="cosine", value=table.value - 0.5)
    assert report.heatmap(cosines, "cosine").data[0].zmin is None  # signed: scaled to the data
    assert report.metric_label("mutual_knn@10") == "mutual kNN overlap (k = 10)"


def test_html_is_self_contained(table, tmp_path):
    path = tmp_path / "r" / "report.html"
    report.write_html({"heat": report.heatmap(table)}, path, "title <x>", "intro")
    text = path.read_text()
    assert "<script src=" not in text and "Plotly" in text and "title &lt;x&gt;" in text
    assert not list(path.parent.glob("*.tmp"))


def test_static_export_batches_png_and_pdf(table, tmp_path):
    if report.find_browser() is None:
        pytest.skip("no Chromium here (make install puts Debian's chromium in place as root)")
    figures = {"heat": report.heatmap(table), "curves": report.curves(table)}
    paths = report.write_static(figures, tmp_path)
    assert sorted(p.name for p in paths) == ["curves.pdf", "curves.png", "heat.pdf", "heat.png"]
    png = (tmp_path / "heat.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000  # a drawn figure, not a blank page
    assert (tmp_path / "heat.pdf").read_bytes().startswith(b"%PDF")
    assert report.figure_image(figures["heat"]).startswith(b"\x89PNG")  # the dashboard's button
