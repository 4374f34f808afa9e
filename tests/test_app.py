from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def test_app_starts_on_the_mini_family_and_reports_bad_input():
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    assert app.selectbox[0].value == "mini"
    table = app.dataframe[0].value
    assert len(table) == 71 and table["gmacs"].iloc[2] > table["gmacs"].iloc[0]
    app.sidebar.number_input[0].set_value(13).run()
    assert not app.exception
    assert [e.value for e in app.error] == ["kernel must be between 1 and the anchors' depth 12, got 13"]
