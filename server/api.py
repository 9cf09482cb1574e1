"""The JSON API of the demo: ``POST /api/predict`` (image files in, digits out) and ``GET /api/model``."""

from __future__ import annotations

import base64
import binascii

import numpy as np
from flask import Blueprint, abort, current_app, jsonify, request

from common.data import to_model_input
from server.json_provider import json_body
from server.preprocess import BadImage, preprocess
from server.probes import get_model, get_store

blueprint = Blueprint("api", __name__, url_prefix="/api")

IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg")
USAGE = (
    "send images as multipart/form-data files (field 'image'), as JSON {\"image\": base64} or "
    "{\"images\": [base64, ...]}, or as a raw image/png or image/jpeg body"
)


@blueprint.post("/predict")
def predict():
    """Classify one or more PNG/JPEG images; each answer has the digit, its confidence, all ten
    probabilities and the 28x28 image the model saw."""
    uploads = uploaded_images()
    images = [preprocess_numbered(number, data, len(uploads)) for number, data in enumerate(uploads)]
    model = get_model()
    probabilities = model.predict(to_model_input(np.stack(images)))
    current_app.extensions["mnist_metrics"].images.labels("api").inc(len(images))
    return jsonify(
        model_version=model.version,
        predictions=[
            {
                "digit": int(row.argmax()),
                "confidence": round(float(row.max()), 6),
                "probabilities": [round(float(p), 6) for p in row],
                "image": image,  # uint8 28x28: orjson writes it as nested lists
            }
            for row, image in zip(probabilities, images)
        ],
    )


def preprocess_numbered(number: int, data: bytes, count: int) -> np.ndarray:
    """``preprocess``, with the image's position in the request in the error message when there are several."""
    try:
        return preprocess(data, max_pixels=int(current_app.config["MAX_IMAGE_PIXELS"]))
    except BadImage as error:
        if count > 1:
            raise BadImage(f"image {number}: {error}", error.status) from None
        raise


def uploaded_images() -> list[bytes]:
    """The image files of this request, read into memory, whichever of the three ways they were sent."""
    content_type = request.mimetype
    if content_type == "multipart/form-data":
        images = [file.read() for key in request.files for file in request.files.getlist(key)]
    elif not request.content_length and not content_type:
        images = []  # an empty POST: "no image" says more than "unsupported content type"
    elif request.is_json:
        images = json_images(json_body(USAGE))
    elif content_type in IMAGE_CONTENT_TYPES:
        images = [request.get_data()]
    else:
        abort(415, description=f"unsupported content type {content_type or '(none)'}: {USAGE}")
    if not images:
        abort(400, description=f"no image in the request: {USAGE}")
    limit = int(current_app.config["MAX_IMAGES"])
    if len(images) > limit:
        abort(413, description=f"too many images ({len(images)}); at most {limit} per request")
    return images


def json_images(payload) -> list[bytes]:
    """``{"image": b64}`` or ``{"images": [b64, ...]}`` -> bytes; data URLs (``data:image/png;base64,...``) too."""
    if not isinstance(payload, dict) or not ({"image", "images"} & payload.keys()):
        abort(400, description=f"expected a JSON object with 'image' or 'images': {USAGE}")
    encoded = payload["images"] if "images" in payload else [payload["image"]]
    if not isinstance(encoded, list) or not all(isinstance(item, str) for item in encoded):
        abort(400, description="'images' must be a list of base64 strings and 'image' one base64 string")
    return [decode_base64(number, item) for number, item in enumerate(encoded)]


def decode_base64(number: int, text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        abort(400, description=f"image {number} is not valid base64")


@blueprint.get("/model")
def model_info():
    """The served version's info.json (how it was trained, accuracy per round, confusion matrix)."""
    store = get_store()
    model = store.current
    if model is None:
        abort(503, description=store.status())
    return jsonify(version=model.version, info=model.info)
