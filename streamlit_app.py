"""Entry point of the explorer: `streamlit run streamlit_app.py [-- --family F --weights W --official-compat]`."""
import streamlit as st

from app.warmup import curve_while_loading, launch_options

st.set_page_config(page_title="snnet: stitchable networks", layout="wide")
loading = curve_while_loading(launch_options())  # a cold server: the shipped curve before torch is imported

from app.main import render  # noqa: E402  (imports torch and timm: seconds on a cold server)

render(loading)
