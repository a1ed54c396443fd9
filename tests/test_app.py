"""The dashboard, driven headless with streamlit's AppTest on runs of a tiny model."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from layer_analysis.app.dashboard import extract_archive
from layer_analysis.probe.errors import StoreError

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


def app(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("LAYER_ANALYSIS_RUNS", str(root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def array(value):
    """A plotly JSON array, plain or typed (base64 ``bdata``), as numpy."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return data.reshape([int(n) for n in str(shape).split(",")]) if shape else data
    return np.asarray(value)


def missing_axis_titles(chart: dict) -> list[str]:
    """A figure's axes without a title (or hidden): none, when it has an x and a y title."""
    layout = chart["layout"]
    axes = {name: axis for name, axis in layout.items() if re.fullmatch(r"[xy]axis\d*", name)}
    hidden = [name for name, axis in axes.items() if axis.get("visible") is False]
    titled = {name[0] for name, axis in axes.items() if (axis.get("title") or {}).get("text")}
    return hidden + [f"{a}axis" for a in "xy" if a not in titled]


def check_figures(at: AppTest) -> None:
    """Every figure on the page has axis titles and draws the CI bands its title promises."""
    for chart in charts(at):
        title = chart["layout"]["title"]["text"]
        assert not missing_axis_titles(chart), (title, missing_axis_titles(chart))
        if "band" in title:
            assert any(t.get("fill") == "toself" for t in chart["data"]), title


def finish_job(at: AppTest) -> AppTest:
    """Wait for the New run page's job (it works in a thread) and draw its outcome."""
    if "new-job" in at.session_state:
        at.session_state["new-job"].wait(300)
        at.run()
    assert not at.exception, at.exception
    return at


def select_all_runs(at: AppTest) -> None:
    picker = at.sidebar.multiselect[0]
    picker.set_value(picker.options).run()


def test_runs_page_lists_runs_and_manifests(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    assert at.title[0].value == "Runs"
    listed = at.dataframe[0].value
    assert set(listed.run) == {"base", "x-de"}
    assert len(at.sidebar.multiselect[0].value) == 1  # the newest run, by default
    select_all_runs(at)
    assert len(at.json) == 2  # one manifest per selected run
    names = [json.loads(j.proto.body)["model"]["name"] for j in at.json]
    assert any(name.endswith("+x-de") for name in names)  # base model + adapter


@pytest.fixture
def mixed_root(dashboard_runs, intervention_runs, tmp_path) -> Path:
    """One runs directory with an output of every kind: two alignment runs, runs of neurons and
    intervene (copies), a lens and a mining run (manifests only), and, newest of all, a
    comparison of the two alignment runs."""
    from layer_analysis.probe.runs import compare_runs, read_run

    root = tmp_path / "runs"
    for run in [dashboard_runs / "base", dashboard_runs / "x-de", *intervention_runs.iterdir()]:
        shutil.copytree(run, root / run.name)
    for name, kind in (("lens-de", "lens"), ("mined", "mining")):
        (root / name).mkdir()
        (root / name / "manifest.json").write_text(json.dumps({"kind": kind}))
    compare_runs([read_run(root / "base"), read_run(root / "x-de")], root / "base-vs-x",
                 static=False)
    return root


def test_runs_page_lists_every_kind(mixed_root, monkeypatch):
    at = app(mixed_root, monkeypatch)
    listed = at.dataframe[0].value.set_index("run").kind.to_dict()
    assert listed == {"base": "alignment", "x-de": "alignment", "base-vs-x": "comparison",
                      "neurons-base": "neurons", "neurons-x-de": "neurons",
                      "steer-de": "intervention", "map-de": "intervention", "lens-de": "lens",
                      "mined": "mining"}


def test_default_selection_is_the_newest_run_the_page_shows(mixed_root, monkeypatch):
    at = app(mixed_root, monkeypatch)
    picker = at.sidebar.multiselect[0]
    assert picker.value == [str(mixed_root / "x-de")]  # not the newer comparison
    assert set(picker.options) == {"base", "x-de"}  # alignment runs only
    for page in ("overview", "compare", "projection", "neighbours"):
        goto(at, page)
        assert not at.warning, (page, [w.value for w in at.warning])
    goto(at, "neurons")
    assert at.multiselect(key="neurons-runs").value == [str(mixed_root / "neurons-x-de")]
    goto(at, "interventions")
    assert at.multiselect(key="intervention-runs").value == [str(mixed_root / "map-de")]


def test_a_reload_keeps_the_selection(mixed_root, monkeypatch):
    at = app(mixed_root, monkeypatch)
    at.sidebar.multiselect[0].set_value([str(mixed_root / "base")]).run()
    assert at.query_params["run"] == "base"
    goto(at, "neurons")
    at.multiselect(key="neurons-runs").set_value(
        [str(mixed_root / "neurons-base"), str(mixed_root / "neurons-x-de")]).run()
    url = dict(at.query_params)
    assert sorted(url["neurons-runs"]) == ["neurons-base", "neurons-x-de"] and url["run"] == "base"
    reloaded = AppTest.from_file(APP, default_timeout=120)  # a new session on that URL
    reloaded.query_params = url
    reloaded.switch_page("views/neurons.py").run()
    assert reloaded.sidebar.multiselect[0].value == [str(mixed_root / "base")]
    assert sorted(reloaded.multiselect(key="neurons-runs").value) == [
        str(mixed_root / "neurons-base"), str(mixed_root / "neurons-x-de")]
    other = mixed_root.parent / "elsewhere"  # another runs directory is kept too
    shutil.copytree(mixed_root / "base", other / "only")
    at.sidebar.text_input[0].set_value(str(other)).run()
    assert at.query_params["root"] == str(other)
    reloaded = AppTest.from_file(APP, default_timeout=120)
    reloaded.query_params = dict(at.query_params)
    reloaded.run()
    assert reloaded.sidebar.text_input[0].value == str(other)
    assert reloaded.sidebar.multiselect[0].value == [str(other / "only")]


def test_overview_widgets_change_the_figures(dashboard_runs, monkeypatch):
    at = goto(app(dashboard_runs, monkeypatch), "overview")
    heatmap, curves = charts(at)[:2]
    assert heatmap["layout"]["title"]["text"].startswith("P@1 per layer (centered)<br><sup>")
    assert "· run " in heatmap["layout"]["title"]["text"]  # the export names its run
    assert any(t.get("name") == "chance (random pairs)" for t in curves["data"])
    at.selectbox(key="overview-metric").set_value("mrr").run()
    at.selectbox(key="overview-norm").set_value("csls").run()
    assert charts(at)[0]["layout"]["title"]["text"].startswith("MRR per layer (csls)<br>")
    one_way = len(charts(at)[0]["data"][0]["y"])  # default: eng -> X only
    direction = at.selectbox(key="overview-direction")
    direction.select("both").run()
    assert len(charts(at)[0]["data"][0]["y"]) == 2 * one_way
    pairs = at.multiselect(key="overview-pairs")
    pairs.set_value(pairs.options[:1]).run()
    heatmap, curves = charts(at)[:2]
    assert len(heatmap["data"][0]["y"]) == 2  # one language, both directions
    lines = [t["name"] for t in curves["data"] if t.get("showlegend") is not False]
    assert len(lines) == 3 and lines[0] == "chance (random pairs)"  # both directions of one
    peaks = at.dataframe[0].value
    assert {"source", "target", "layer", "value"} <= set(peaks.columns)
    assert len(at.get("download_button")) >= 3
    check_figures(at)


def test_overview_symmetric_metrics_offer_no_direction(dashboard_runs, monkeypatch):
    at = goto(app(dashboard_runs, monkeypatch), "overview")
    direction = at.selectbox(key="overview-direction")
    direction.set_value(direction.options[1]).run()  # X → eng: a direction P@1 has
    assert direction.options[1].startswith("X →") and not at.error
    languages = at.multiselect(key="overview-pairs").value
    for metric in ("cosine", "cosine_adjusted", "mexa", "mutual_knn@10"):
        at.selectbox(key="overview-metric").set_value(metric).run()
        assert not at.exception and not at.error, (metric, [e.value for e in at.error])
        assert "overview-direction" not in [s.key for s in at.selectbox]  # no choice offered
        assert at.selectbox(key="overview-no-direction").disabled
        assert at.multiselect(key="overview-pairs").value == languages  # the box stays filled
        assert len(charts(at)[0]["data"][0]["y"]) == len(languages)  # heatmap: a row per pair
        check_figures(at)  # mutual kNN has no CIs: its title promises none
    at.selectbox(key="overview-metric").set_value("p@1").run()
    assert not at.error and at.multiselect(key="overview-pairs").value == languages
    assert at.selectbox(key="overview-direction").options[0].startswith("eng →")


def test_compare_base_and_adapter(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    select_all_runs(at)
    goto(at, "compare")
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("by model" in t for t in titles)
    assert any("paired difference" in t for t in titles)  # same sentences, same layers: paired
    assert not any("not paired" in t for t in titles)
    assert any("and the other models" in t for t in titles)  # model x model CKA
    base = at.selectbox(key="compare-base")
    other = next(name for name in base.options if name != base.value)
    base.set_value(other).run()
    assert any(f"vs {other}" in c["layout"]["title"]["text"] for c in charts(at))
    check_figures(at)


def test_compare_unpaired_difference_line_is_no_difference(dashboard_runs, monkeypatch,
                                                           tmp_path):
    root = tmp_path / "runs"
    for name in ("base", "x-de"):  # runs whose activations are gone: no pairing, plain difference
        shutil.copytree(dashboard_runs / name, root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        del manifest["activations"]
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    at = app(root, monkeypatch)
    select_all_runs(at)
    at.switch_page("views/compare.py").run()
    assert not at.exception and not at.error
    [difference] = [c for c in charts(at) if "not paired" in c["layout"]["title"]["text"]]
    names = {t.get("name") for t in difference["data"]}
    assert "no difference" in names and "chance (random pairs)" not in names
    check_figures(at)


def test_model_minus_base_keeps_models_apart_and_aligns_depths():
    import pandas as pd

    from layer_analysis.app.views.compare import difference
    from layer_analysis.probe import report

    def curve(model, layers, values, target="deu_Latn"):
        return pd.DataFrame({"model": model, "layer": list(range(layers + 1)), "source": "eng_Latn",
                             "target": target, "metric": "p@1", "normalisation": "centered",
                             "value": values, "ci_low": 0.0, "ci_high": 1.0, "null": 0.1})

    base = curve("base", 2, [0.0, 0.4, 0.8])
    same = curve("x", 2, [0.1, 0.5, 0.8])
    deep = curve("deep", 4, [0.0, 0.3, 0.5, 0.7, 0.9])  # 4 layers against the base's 2
    diff, notes = difference(pd.concat([base, same, deep]), "base")
    x = diff[diff.model == "x"].sort_values("layer").value.tolist()
    assert x == pytest.approx([0.1, 0.1, 0.0])
    # deep layer l sits at base layer l/2: base there is 0, 0.2, 0.4, 0.6, 0.8 (interpolated)
    d = diff[diff.model == "deep"].sort_values("layer").value.tolist()
    assert d == pytest.approx([0.0, 0.1, 0.1, 0.1, 0.1])
    assert len(notes) == 1 and "deep (4 layers)" in notes[0] and "relative depth" in notes[0]
    names = {trace.name for trace in report.curves(diff).data}
    assert {"x: eng_Latn → deu_Latn", "deep: eng_Latn → deu_Latn"} <= names  # never merged


def test_neighbours_show_failed_queries(dashboard_runs, monkeypatch):
    at = goto(app(dashboard_runs, monkeypatch), "neighbours")
    failures = at.dataframe[0].value
    assert list(failures.columns)[:6] == ["query", "translation", "retrieved",
                                          "translation_score", "retrieved_score", "gap"]
    assert (failures["rank"] > 1).all() and (failures.gap >= 0).all()
    assert (failures["query"].str.len() > 0).all()  # sentences, not indices
    inspect = at.selectbox(key="neighbours-row")
    inspect.set_value(inspect.options[-1]).run()
    assert f"**Query** (eng_Latn): {failures['query'].iloc[-1]}" in at.markdown[1].value
    assert "Retrieved instead" in at.markdown[1].value
    summary = at.markdown[0].value
    slider = at.select_slider(key="neighbours-layer")
    other = next(layer for layer in slider.options if int(layer) != slider.value)
    slider.set_value(int(other)).run()
    assert at.markdown[0].value != summary and f"layer {other}" in at.markdown[0].value
    inspect = at.selectbox(key="neighbours-row")  # another layer: label and query agree
    query = at.dataframe[0].value["query"]
    shown = next(i for i, q in enumerate(query) if inspect.value == f"{i + 1}. {q[:90]}")
    assert f"**Query** (eng_Latn): {query.iloc[shown]}" in at.markdown[1].value


def test_projection_layer_method_and_languages(dashboard_runs, monkeypatch):
    from layer_analysis.probe import projection

    calls = []
    real = projection.project
    monkeypatch.setattr(projection, "project",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    at = goto(app(dashboard_runs, monkeypatch), "projection")
    assert at.number_input(key="projection-n").value == 24  # what the run stored
    assert calls == []  # the first view reuses the stored projection: nothing recomputed
    scatter = charts(at)[0]
    assert len(scatter["data"]) == 3  # one trace per language
    assert all(t["text"] for t in scatter["data"])  # the sentence on hover
    assert scatter["layout"]["height"] >= 600 and scatter["layout"]["yaxis"]["scaleanchor"] == "x"
    at.select_slider(key="projection-layer").set_value(1).run()
    assert "layer 1" in charts(at)[0]["layout"]["title"]["text"]
    assert calls  # another layer is computed (so the check above could fail)
    at.multiselect(key="projection-languages").set_value(["deu_Latn"]).run()
    assert len(charts(at)[0]["data"]) == 1
    layout = charts(at)[0]["layout"]
    titles = (layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"])
    assert [t.split(" (")[0] for t in titles] == ["PC 1", "PC 2"]
    assert all("% of the variance)" in t for t in titles)  # PCA records its shares
    check_figures(at)


def test_projection_defaults_to_the_runs_count_and_titles_its_axes(dashboard_runs, monkeypatch,
                                                                   tmp_path):
    from layer_analysis.probe import projection

    root = tmp_path / "runs"
    shutil.copytree(dashboard_runs / "base", root / "base")
    (root / "base" / "projection.csv").write_text("\n")  # a run stored without a projection
    real = projection.project

    def umap(acts, layer, method, *args, **kwargs):  # PCA's numbers under UMAP's name: no JIT
        return real(acts, layer, "pca", *args, **kwargs).assign(  # wait
            method=method, explained_x=float("nan"), explained_y=float("nan"))

    monkeypatch.setattr(projection, "project", umap)
    at = goto(app(root, monkeypatch), "projection")
    count = at.number_input(key="projection-n")
    assert count.value == 24 and count.max == 24  # the run's 24 sentences, not 200
    assert len(array(charts(at)[0]["data"][0]["x"])) == 24
    check_figures(at)
    at.radio(key="projection-method").set_value("umap").run()
    layout = charts(at)[0]["layout"]
    assert layout["xaxis"]["title"]["text"] == "UMAP 1"
    assert any("no explained variance" in c.value for c in at.caption)


def test_projection_axis_titles_give_pca_shares():
    from layer_analysis.probe.report import projection_axes

    coords = pd.DataFrame({"x": [0.0], "y": [1.0], "explained_x": [0.4213],
                           "explained_y": [0.1], "method": ["pca"]})
    assert projection_axes(coords) == ("PC 1 (42.1% of the variance)",
                                       "PC 2 (10.0% of the variance)")
    assert projection_axes(coords[["x", "y", "method"]]) == ("PC 1", "PC 2")
    assert projection_axes(coords.assign(method="umap")) == ("UMAP 1", "UMAP 2")


def test_new_run_from_the_page(dashboard_runs, monkeypatch, tiny_llama_dir, tmp_path):
    root = tmp_path / "fresh"
    at = app(root, monkeypatch)
    assert "does not exist" in at.warning[0].value
    goto(at, "new_run")
    at.selectbox(key="new-model").set_value("other…").run()
    at.text_input(key="new-model-path").input(str(tiny_llama_dir)).run()
    at.multiselect(key="new-languages").set_value(["eng_Latn", "fra_Latn"]).run()
    at.number_input(key="new-limit").set_value(8).run()
    at.selectbox(key="new-projection").set_value("none").run()
    at.text_input(key="new-name").input("from-ui").run()
    finish_job(at.button(key="new-start").click().run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (root / "from-ui" / "results.parquet").exists()
    assert "Finished from-ui" in at.success[0].value
    assert at.sidebar.multiselect[0].value == [str(root / "from-ui")]


def test_new_run_error_is_a_message(dashboard_runs, monkeypatch, tmp_path):
    at = goto(app(tmp_path, monkeypatch), "new_run")
    at.selectbox(key="new-model").set_value("other…").run()
    at.text_input(key="new-model-path").input(str(tmp_path / "no-such-model")).run()
    at.multiselect(key="new-languages").set_value(["eng_Latn", "fra_Latn"]).run()
    finish_job(at.button(key="new-start").click().run())
    assert "no-such-model" in at.error[0].value


def test_new_run_can_be_cancelled_and_writes_nothing(dashboard_runs, monkeypatch,
                                                     tiny_llama_dir, tmp_path):
    import threading

    from layer_analysis.app.dashboard import discover_outputs
    from layer_analysis.probe import models

    released = threading.Event()
    real = models.load_model

    def held(*args, **kwargs):  # the run waits here until the test has pressed Cancel
        released.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_model", held)
    root = tmp_path / "runs"
    at = goto(app(root, monkeypatch), "new_run")
    at.selectbox(key="new-model").set_value("other…").run()
    at.text_input(key="new-model-path").input(str(tiny_llama_dir)).run()
    at.multiselect(key="new-languages").set_value(["eng_Latn", "fra_Latn"]).run()
    at.number_input(key="new-limit").set_value(8).run()
    at.text_input(key="new-name").input("cancel-me").run()
    at.button(key="new-start").click().run()
    assert at.button(key="new-start").disabled and at.get("progress")  # running
    at.button(key="new-cancel").click().run()
    assert any("Cancelling" in c.value for c in at.caption)
    released.set()
    finish_job(at)
    # cancelled at the first progress report after the click (loading or extracting: the
    # thread may or may not have reached the held load when the click lands)
    assert "Cancelled while" in at.warning[0].value and not at.error
    assert not (root / "cancel-me" / "manifest.json").exists()
    assert discover_outputs(root) == []  # nothing listed, nothing half-written
    assert not at.button(key="new-start").disabled
    finish_job(at.button(key="new-start").click().run())  # the same run again, not cancelled
    assert not at.error and "Finished cancel-me" in at.success[0].value
    assert (root / "cancel-me" / "manifest.json").exists()


@pytest.mark.parametrize(("name", "message"), [("../outside", "must be a plain name"),
                                              ("base", "exists")])
def test_new_run_names_are_checked_as_on_the_command_line(dashboard_runs, monkeypatch,
                                                          tiny_llama_dir, name, message):
    at = goto(app(dashboard_runs, monkeypatch), "new_run")
    at.selectbox(key="new-model").set_value("other…").run()
    at.text_input(key="new-model-path").input(str(tiny_llama_dir)).run()
    at.multiselect(key="new-languages").set_value(["eng_Latn", "fra_Latn"]).run()
    at.text_input(key="new-name").input(name).run()
    finish_job(at.button(key="new-start").click().run())
    assert message in at.error[0].value
    assert not (dashboard_runs.parent / "outside").exists()


def test_corrupt_and_missing_runs_show_messages(dashboard_runs, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(dashboard_runs / "base", root / "broken")
    (root / "broken" / "manifest.json").write_text("{not json")
    at = app(root, monkeypatch)
    assert not at.exception
    assert any("not valid JSON" in e.value for e in at.error)
    shutil.copytree(dashboard_runs / "x-de", root / "gone")
    (root / "gone" / "results.parquet").write_bytes(b"garbage")
    at = app(root, monkeypatch)
    assert any("no readable results" in e.value for e in at.error)
    at.sidebar.multiselect[0].set_value([str(root / "gone")]).run()
    at.switch_page("views/overview.py").run()
    assert not at.exception and any("no readable results" in e.value for e in at.error)


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_upload_archive(dashboard_runs, tmp_path):
    run_dir = dashboard_runs / "base"
    files = {f"base/{p.name}": p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    run = extract_archive(_zip(files), "base.zip", tmp_path)
    assert (run / "results.parquet").exists() and run.is_relative_to(tmp_path / "uploaded")
    with pytest.raises(StoreError, match="exists already"):
        extract_archive(_zip(files), "base.zip", tmp_path)
    with pytest.raises(StoreError, match="outside the run directory"):
        extract_archive(_zip({"../evil.txt": b"x"}), "evil.zip", tmp_path)
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(StoreError, match="neither a zip nor a tar"):
        extract_archive(b"plain bytes", "junk.zip", tmp_path)
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        extract_archive(_zip({"notes.txt": b"hello"}), "notes.zip", tmp_path)


def test_latent_language_page_shows_lens_runs(tiny_llama_dir, monkeypatch, tmp_path):
    from layer_analysis.cli import main

    at = goto(app(tmp_path / "empty", monkeypatch), "latent")
    assert "No lens runs" in at.info[0].value
    root = tmp_path / "runs"
    words = tmp_path / "words.tsv"
    words.write_text("eng_Latn\tdeu_Latn\nwater\tWasser\nfire\tFeuer\nhouse\tHaus\n"
                     "tree\tBaum\ndog\tHund\nbook\tBuch\n", encoding="utf-8")
    assert main(["lens", "--model", str(tiny_llama_dir), "--words", str(words), "--languages",
                 "de", "--source", "en", "--shots", "2", "--bootstrap", "20", "--limit", "3",
                 "--sentence-data", "default", "--table-data", "default", "--no-static",
                 "--output", str(root), "--name", "lens-tiny"]) == 0
    at = goto(app(root, monkeypatch), "latent")
    assert at.multiselect(key="latent-runs").value == [str(root / "lens-tiny")]
    latent, entropy = charts(at)[:2]
    names = {t.get("name") for t in latent["data"]}
    assert {"answer", "English"} <= names and "Entropy" in entropy["layout"]["title"]["text"]
    at.selectbox(key="latent-task").set_value("sentences").run()
    assert not at.exception and not at.error
    assert "running text" in charts(at)[0]["layout"]["title"]["text"]
    assert {"own language", "English"} <= {t.get("name") for t in charts(at)[0]["data"]}
    check_figures(at)


def test_training_page_draws_alignment_against_step(monkeypatch, tmp_path):
    at = goto(app(tmp_path / "empty", monkeypatch), "training")
    assert "No tracked training outputs" in at.info[0].value
    import pandas as pd

    from layer_analysis.train.tracking import ALIGNMENT_LOG, COLUMNS

    out = tmp_path / "runs" / "x-el"
    out.mkdir(parents=True)
    rows = [{"step": step, "layer": layer, "source": src, "target": tgt, "direction": d,
             "metric": "p@1", "normalisation": "centered", "value": 0.1 * layer + 0.01 * step,
             "ci_low": 0.0, "ci_high": 1.0, "sentences": 10, "seconds": 1.5}
            for step in (0, 5, 10) for layer in range(4)
            for src, tgt, d in (("eng_Latn", "ell_Grek", "forward"),
                                ("ell_Grek", "eng_Latn", "backward"))]
    pd.DataFrame(rows)[COLUMNS].to_csv(out / ALIGNMENT_LOG, index=False)
    (out / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 2.0 - s / 10, "alignment_loss": 1.0}) + "\n"
        for s in (5, 10)))
    at = goto(app(tmp_path / "runs", monkeypatch), "training")
    peaks, heatmap, curves, loss = charts(at)[:4]
    [line] = peaks["data"]
    assert array(line["y"]) == pytest.approx([0.3, 0.35, 0.4])
    assert list(array(line["customdata"])) == [3, 3, 3]  # the peak layer at each step
    assert array(heatmap["data"][0]["z"])[3] == pytest.approx([0.3, 0.35, 0.4])  # layer 3
    assert {t.get("name") for t in curves["data"]} >= {"eng → ell, step 0", "ell → eng, step 10"}
    assert [t["name"] for t in loss["data"]] == ["LM loss (responses)", "alignment loss (InfoNCE)"]
    check_figures(at)


def test_neurons_page_draws_counts_overlap_deactivation_and_changes(intervention_runs,
                                                                    monkeypatch, tmp_path):
    at = goto(app(tmp_path / "empty", monkeypatch), "neurons")
    assert "No neurons runs" in at.info[0].value
    at = goto(app(intervention_runs, monkeypatch), "neurons")
    picker = at.multiselect(key="neurons-runs")
    assert len(picker.options) == 2
    base = str(intervention_runs / "neurons-base")
    picker.set_value([base, str(intervention_runs / "neurons-x-de")]).run()
    at.selectbox(key="neurons-detail").set_value("neurons-base").run()
    assert not at.exception and not at.error
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert titles[0].startswith("Language-specific neurons per layer")
    assert titles[1].startswith("Language neurons shared") and "Deactivation" in titles[2]
    assert "appeared" in titles[3]
    counts = pd.read_csv(intervention_runs / "neurons-base" / "neuron_counts.csv")
    english = next(t for t in charts(at)[0]["data"] if t["name"] == "eng_Latn")
    assert list(array(english["y"])) == list(counts[counts.language == "eng_Latn"].neurons)
    assert any("zeroed: its own NLL" in m.value for m in at.markdown)
    check_figures(at)


def test_neurons_summary_names_the_random_control_and_the_difference(intervention_runs,
                                                                     monkeypatch):
    at = goto(app(intervention_runs, monkeypatch), "neurons")
    at.multiselect(key="neurons-runs").set_value([str(intervention_runs / "neurons-base")]).run()
    table = pd.read_csv(intervention_runs / "neurons-base" / "deactivation.csv")
    english = table[(table.deactivated == "eng_Latn") & (table.evaluated == "eng_Latn")]
    control = english[english.control == "random"].iloc[0]
    [line] = [m.value for m in at.markdown if m.value.startswith("- English neurons")]
    random_part = line.split("random neurons", 1)[1]
    assert f"{control.delta_nll:+.3f} [{control.ci_low:+.3f}, {control.ci_high:+.3f}]" in random_part
    assert "language − random" in line or "language - random" in line


def test_interventions_page_shows_effects_and_generations(intervention_runs, monkeypatch):
    from layer_analysis.probe.intervene_run import NONE

    at = goto(app(intervention_runs, monkeypatch), "interventions")
    picker = at.multiselect(key="intervention-runs")
    picker.set_value(picker.options).run()
    assert not at.exception and not at.error
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert len(titles) == 2 and all(t.startswith("Effect of the intervention") for t in titles)
    assert any(m.value.startswith("- vector, layer") for m in at.markdown)
    check_figures(at)
    for chart in charts(at):  # readable names, not the table's columns
        shown = [a["text"] for a in chart["layout"]["annotations"]]
        shown += [t["name"] for t in chart["data"]]
        assert "chrF++" in shown and any(re.fullmatch(r"outputs in \w+ \(share\)", x)
                                         for x in shown)
        assert not {"share_eng", "share_deu", "chrf++", "xquad_f1", "empty", "shuffled",
                    "random", "none", NONE} & set(shown)
    # the generated text is on screen: every setting's output for the first sentence, in full
    generations = [json.loads(line) for line in
                   (intervention_runs / "map-de" / "generations.jsonl").read_text().splitlines()]
    first = [g["output"] for g in generations if g["index"] == 0]
    tables = [t.value for t in at.table]
    assert any(sorted(t["generated text"]) == sorted(first) for t in tables)
    assert any(generations[0]["source"] in m.value for m in at.markdown)
