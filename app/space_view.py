"""The configurations of a family and their cost, until the Pareto explorer lands."""
import pandas as pd
import plotly.express as px
import streamlit as st

from snnet.cost import space_rows
from snnet.errors import SnnetError
from snnet.families import family_names, get_family


@st.cache_data(show_spinner="Measuring the cost of every configuration...")
def load_rows(family_name: str, kernel: int, stride: int, direction: str) -> pd.DataFrame:
    family = get_family(family_name)
    return pd.DataFrame(space_rows(family, family.space(kernel, stride, direction)))


def render() -> None:
    st.set_page_config(page_title="snnet: stitchable networks", layout="wide")
    st.title("Stitchable Neural Networks")
    with st.sidebar:
        names = family_names()
        family_name = st.selectbox("Family", names, index=names.index("mini"))
        kernel = st.number_input("Window kernel", min_value=1, value=2)
        stride = st.number_input("Window stride", min_value=1, value=1)
        direction = st.radio("Direction", ["fast-to-slow", "slow-to-fast"])
    family = get_family(family_name)
    st.caption(family.description)
    try:
        rows = load_rows(family_name, int(kernel), int(stride), direction)
    except SnnetError as error:
        st.error(str(error))
        return
    rows["pair"] = rows["front"] + " → " + rows["back"]
    figure = px.scatter(
        rows, x="gmacs", y="params_m", color="pair", symbol="kind",
        hover_data=["id", "front_block", "back_block", "layer"],
        labels={"gmacs": "GMACs", "params_m": "parameters (M)"},
    )
    st.plotly_chart(figure, width="stretch")
    st.dataframe(rows.drop(columns="pair"), hide_index=True, width="stretch")
