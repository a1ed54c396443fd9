"""The Streamlit dashboard over layer-analysis runs: ``streamlit run app``."""
