"""The iris frontend: flower measurements in, the model server's prediction out.

It calls the model server's `/invocations` (MLflow's scoring protocol, `dataframe_split`) and
shows the predicted class, how sure the model is of each class, and which model version answered.
While no version is promoted to the environment (a pin of version 0, or the model server's
placeholder answering NO_MODEL_PROMOTED) it says so, and how a first version gets there.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st
from frontend import (
    DEFAULTS,
    FEATURES,
    NOTHING_PROMOTED,
    ModelServerError,
    NoModelPromoted,
    Prediction,
    model_identity,
    no_model_message,
    predict,
)


def page() -> None:
    server_url = os.environ.get("MODEL_SERVER_URL", "http://model-server:8080")
    name, version = model_identity(os.environ.get("MODEL_URI", ""))
    st.set_page_config(page_title="Iris classifier", page_icon="🌸")
    st.title("Iris classifier")
    if version == NOTHING_PROMOTED:
        st.caption(f"Model **{name}**: no version promoted to this environment yet")
        st.info(no_model_message(name))
        return
    st.caption(f"Model **{name}**, version **{version}**, served at {server_url}")
    # Asked before the inputs are drawn, with the values they hold (the defaults at first), so
    # a model server with nothing promoted gets a plain message instead of inputs that lead
    # nowhere. Every change of a measurement asks again: no button to forget.
    measurements = [
        float(st.session_state.get(feature, default))
        for feature, default in zip(FEATURES, DEFAULTS, strict=True)
    ]
    prediction: Prediction | ModelServerError
    try:
        prediction = predict(server_url, measurements)
    except NoModelPromoted:
        st.info(no_model_message(name))
        return
    except ModelServerError as error:
        prediction = error
    columns = st.columns(2)
    for index, (feature, default) in enumerate(zip(FEATURES, DEFAULTS, strict=True)):
        columns[index % 2].number_input(
            feature, min_value=0.0, max_value=10.0, value=default, step=0.1, key=feature
        )
    if isinstance(prediction, ModelServerError):
        st.error(f"No prediction: {prediction}")
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
