"""The iris frontend: flower measurements in, the model server's prediction out.

It calls the model server's `/invocations` (MLflow's scoring protocol, `dataframe_split`) and
shows the predicted class, how sure the model is of each class, and which model version answered.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st
from frontend import DEFAULTS, FEATURES, ModelServerError, model_identity, predict


def page() -> None:
    server_url = os.environ.get("MODEL_SERVER_URL", "http://model-server:8080")
    name, version = model_identity(os.environ.get("MODEL_URI", ""))
    st.set_page_config(page_title="Iris classifier", page_icon="🌸")
    st.title("Iris classifier")
    st.caption(f"Model **{name}**, version **{version}**, served at {server_url}")
    columns = st.columns(2)
    measurements = [
        columns[index % 2].number_input(
            feature, min_value=0.0, max_value=10.0, value=default, step=0.1, key=feature
        )
        for index, (feature, default) in enumerate(zip(FEATURES, DEFAULTS, strict=True))
    ]
    # Every change of a measurement asks again: no button to forget.
    try:
        prediction = predict(server_url, measurements)
    except ModelServerError as error:
        st.error(f"No prediction: {error}")
        return
    st.success(f"Predicted class: **{prediction.label}**")
    st.dataframe(
        pd.DataFrame(
            {
                "class": list(prediction.probabilities),
                "probability": list(prediction.probabilities.values()),
            }
        ),
        hide_index=True,
    )


page()
