"""Entry point of the explorer: `streamlit run streamlit_app.py`."""
from app.space_view import render

render()
