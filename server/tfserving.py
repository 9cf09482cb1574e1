"""TensorFlow-Serving-compatible REST API, so clients written for ``tensorflow/serving`` work unchanged.

``GET /v1/models/mnist`` reports the served version; ``POST /v1/models/mnist:predict`` takes the row format
``{"instances": [...]}`` (answer ``{"predictions": ...}``) or the columnar ``{"inputs": [...]}`` (answer
``{"outputs": ...}``). An instance is one image already in MNIST form: 28x28, 28x28x1 or 784 numbers in [0, 1].
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, abort, current_app, jsonify

from common.layout import MODEL_NAME
from server.json_provider import json_body
from server.probes import get_model, get_store
from server.tensors import model_batch, number_array

blueprint = Blueprint("tfserving", __name__)
MODEL_URL = f"/v1/models/{MODEL_NAME}"  # no url_prefix: Flask would put a "/" before ":predict"
USAGE = 'expected a JSON body like {"instances": [[28x28 numbers in [0, 1]], ...]}'


@blueprint.get(MODEL_URL)
def model_status():
    """TF Serving's model status: the loaded version and its state."""
    store = get_store()
    model = store.current
    if model is None:
        abort(503, description=store.status())
    return jsonify(
        model_version_status=[
            {"version": str(model.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    )


@blueprint.post(f"{MODEL_URL}:predict")
def predict():
    """Probabilities of the ten digits for each instance, in TF Serving's request and response shapes."""
    payload = json_body(USAGE)
    if not isinstance(payload, dict) or len({"instances", "inputs"} & payload.keys()) != 1:
        abort(400, description='the JSON object must have exactly one of "instances" or "inputs"')
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        abort(400, description=f'unknown signature_name {signature!r}; this model has only "serving_default"')
    key = "instances" if "instances" in payload else "inputs"
    images = to_images(payload[key], key, int(current_app.config["MAX_INSTANCES"]))
    model = get_model()
    probabilities = model.predict(images)
    current_app.extensions["mnist_metrics"].images.labels("tfserving").inc(len(images))
    return jsonify({"predictions" if key == "instances" else "outputs": probabilities})


def to_images(instances, key: str, limit: int) -> np.ndarray:
    """A JSON list of instances -> the model's input, float32 (n, 28, 28, 1) in [0, 1]; 4xx if malformed."""
    if not isinstance(instances, list) or not instances:
        abort(400, description=f'"{key}" must be a non-empty list of images')
    if len(instances) > limit:  # before numpy sees them: a cheap refusal
        abort(413, description=f"too many instances ({len(instances)}); at most {limit} per request")
    return model_batch(number_array(instances, f'"{key}"'), f'"{key}"', limit)
