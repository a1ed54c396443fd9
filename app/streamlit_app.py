"""layer-analysis dashboard: ``streamlit run app`` (listens on 127.0.0.1, see .streamlit/)."""

from __future__ import annotations

import streamlit as st

from layer_analysis.app.dashboard import (
    default_root,
    discover_runs,
    keep_in_url,
    run_label,
    runs_root,
    url_selection,
)

st.set_page_config(page_title="layer-analysis", page_icon="📈",  # an emoji: no font download
                   layout="wide")

with st.sidebar:  # what it shows lives in the URL (?root=…&run=…), so a reload keeps it
    if "runs_root" not in st.session_state:
        st.session_state["runs_root"] = st.query_params.get("root") or str(default_root())
    st.text_input("Runs directory", key="runs_root",
                  help="where `layer-analysis run --output` wrote its runs")
    if runs_root() != default_root():
        st.query_params["root"] = str(runs_root())
    else:
        st.query_params.pop("root", None)
    found = [str(p) for p in discover_runs(runs_root())]
    chosen = url_selection("selected_runs", found, [], url_key="run")
    pending = st.session_state.pop("pending_select", None)  # a run the New run page finished
    if pending in found and pending not in chosen:
        chosen.insert(0, pending)
    st.session_state["selected_runs"] = chosen or found[:1]  # default: the newest run
    st.multiselect("Runs shown", found, key="selected_runs", format_func=run_label,
                   help="alignment runs (`layer-analysis run`) the pages work on; Compare uses "
                        "all of them")
    keep_in_url("run", st.session_state["selected_runs"])
    if not found:
        st.caption(f"No finished runs under `{runs_root()}` yet.")

pages = [
    st.Page("views/runs.py", title="Runs", icon=":material/folder_open:", default=True),
    st.Page("views/overview.py", title="Overview", icon=":material/grid_on:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/neighbours.py", title="Neighbours", icon=":material/join_inner:"),
    st.Page("views/projection.py", title="Projection", icon=":material/scatter_plot:"),
    st.Page("views/latent.py", title="Latent language", icon=":material/translate:"),
    st.Page("views/patching.py", title="Patching", icon=":material/swap_horiz:"),
    st.Page("views/training.py", title="Training", icon=":material/trending_up:"),
    st.Page("views/neurons.py", title="Language neurons", icon=":material/hub:"),
    st.Page("views/interventions.py", title="Interventions", icon=":material/tune:"),
    st.Page("views/transfer.py", title="Transfer", icon=":material/swap_horiz:"),
    st.Page("views/new_run.py", title="New run", icon=":material/play_arrow:"),
]
st.navigation(pages).run()
