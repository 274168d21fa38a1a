"""Entry point of the dashboard (`make run`): the page navigation, the shared sidebar and the one error frame."""

import shared
import streamlit as st

st.set_page_config(page_title="Chest X-ray toolkit", page_icon=":material/radiology:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/dataset.py", title="Dataset", icon=":material/database:"),
    st.Page("views/leakage.py", title="Leakage", icon=":material/group:"),
    st.Page("views/balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("views/performance.py", title="Model performance", icon=":material/monitoring:"),
    st.Page("views/predict.py", title="Predict", icon=":material/image_search:"),
]
page = st.navigation(pages)
with shared.guard():  # pages guard their own sections; this catches what escapes them, in the same words
    shared.sidebar()
    page.run()
