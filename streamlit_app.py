"""Entry point of the explorer: `streamlit run streamlit_app.py [-- --family F --weights W --official-compat]`."""
from app.main import render

render()
