"""KServe's Open Inference Protocol (V2) over REST, so clients written for KServe, Triton or MLServer work unchanged.

``GET /v2/health/live`` and ``/v2/health/ready``, ``GET /v2`` (server metadata), ``GET /v2/models/mnist`` (model
metadata), ``GET /v2/models/mnist/ready`` and ``POST /v2/models/mnist/infer`` (also under ``/versions/<v>``). An
inference request has one input tensor of datatype FP32 and shape [n, 28, 28], [n, 28, 28, 1] or [n, 784], values in
[0, 1] (white ink on black), its ``data`` flat or nested in row-major order; the answer is the output tensor
``probabilities``, FP32 [n, 10], flat. Errors are the protocol's ``{"error": "..."}`` with a 4xx status (503 while no
model is loaded).

Triton's binary tensor data extension too, which Triton's own client uses by default: with the header
``Inference-Header-Content-Length: L``, the body is L bytes of JSON and then the input's raw little-endian FP32 bytes
(its ``parameters.binary_data_size``); an output requested with ``parameters.binary_data`` (or the request's
``parameters.binary_data_output``) comes back the same way.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
from flask import Blueprint, Response, abort, current_app, jsonify, request

from common.layout import MODEL_NAME
from server.json_provider import json_body
from server.model_store import LoadedModel
from server.probes import get_model, get_store
from server.tensors import model_batch, number_array

blueprint = Blueprint("v2", __name__, url_prefix="/v2")

INPUT_NAME, OUTPUT_NAME, DATATYPE = "input", "probabilities", "FP32"
BINARY_HEADER = "Inference-Header-Content-Length"  # Triton's binary tensor data extension
INPUT_SHAPES = ([-1, 28, 28], [-1, 28, 28, 1], [-1, 784])
USAGE = ('expected {"inputs": [{"name": "input", "shape": [n, 28, 28], "datatype": "FP32", '
         '"data": [n*784 numbers in [0, 1]]}]}')
MODEL_URLS = ("/models/<name>", "/models/<name>/versions/<version>")


@blueprint.get("/health/live")
def live():
    """The server answers (whether or not a model is loaded)."""
    return jsonify(live=True)


@blueprint.get("/health/ready")
def ready():
    """200 once a model is loaded, 503 before."""
    ready_now = get_store().current is not None
    return jsonify(ready=ready_now), 200 if ready_now else 503


@blueprint.get("")
def server_metadata():
    return jsonify(name="mnist-federated", version="1", extensions=[])


@blueprint.get("/models/<name>/ready")
@blueprint.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    check_name(name)
    model = get_store().current
    ready_now = model is not None and version in (None, str(model.version))
    return jsonify(name=MODEL_NAME, ready=ready_now), 200 if ready_now else 503


@blueprint.get(MODEL_URLS[0])
@blueprint.get(MODEL_URLS[1])
def model_metadata(name: str, version: str | None = None):
    """The served version and the tensors the model takes and gives."""
    model = served_model(name, version, wait=False)
    return jsonify(
        name=MODEL_NAME,
        versions=[str(model.version)],
        platform="tflite",
        inputs=[{"name": INPUT_NAME, "datatype": DATATYPE, "shape": INPUT_SHAPES[1]}],
        outputs=[{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, 10]}],
    )


@blueprint.post(f"{MODEL_URLS[0]}/infer")
@blueprint.post(f"{MODEL_URLS[1]}/infer")
def infer(name: str, version: str | None = None):
    """Probabilities of the ten digits for each image of the input tensor."""
    check_name(name)
    payload, binary = inference_request()
    if not isinstance(payload, dict):
        abort(400, description=f"the body must be a JSON object: {USAGE}")
    images = input_images(payload.get("inputs"), binary, int(current_app.config["MAX_INSTANCES"]))
    binary_output = wants_binary_output(payload)
    model = served_model(name, version, wait=True)
    probabilities = np.ascontiguousarray(model.predict(images), dtype="<f4")
    current_app.extensions["mnist_metrics"].images.labels("v2").inc(len(images))
    output = {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(probabilities.shape)}
    answer = {"model_name": MODEL_NAME, "model_version": str(model.version), "outputs": [output]}
    if isinstance(payload.get("id"), str):
        answer["id"] = payload["id"]
    if not binary_output:
        output["data"] = probabilities.ravel()
        return jsonify(answer)
    data = probabilities.tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    header = orjson.dumps(answer)
    return Response(header + data, mimetype="application/octet-stream", headers={BINARY_HEADER: str(len(header))})


def inference_request() -> tuple[object, bytes]:
    """The request's JSON, and the raw tensor bytes after it when it uses the binary extension (else b"")."""
    if BINARY_HEADER not in request.headers:
        return json_body(USAGE), b""
    body = request.get_data(cache=False)
    header_length = request.headers[BINARY_HEADER]
    if not header_length.isdigit() or int(header_length) > len(body):
        abort(400, description=f"{BINARY_HEADER} must be the length of the JSON at the start of the body "
                               f"({len(body)} bytes), got {header_length[:20]!r}")
    try:
        return orjson.loads(body[: int(header_length)]), body[int(header_length) :]
    except orjson.JSONDecodeError as error:
        abort(400, description=f"the inference header is not valid JSON ({error}): {USAGE}")


def check_name(name: str) -> None:
    if name != MODEL_NAME:
        abort(404, description=f'unknown model "{name}"; this server serves "{MODEL_NAME}"')


def served_model(name: str, version: str | None, wait: bool) -> LoadedModel:
    """The loaded model, if it is the one asked for; 404 for another model or version, 503 while there is none."""
    check_name(name)
    if wait:
        model = get_model()
    else:
        model = get_store().current
        if model is None:
            abort(503, description=get_store().status())
    if version is not None and version != str(model.version):
        abort(404, description=f"version {version} of {MODEL_NAME} is not served; version {model.version} is")
    return model


def input_images(inputs, binary: bytes, limit: int) -> np.ndarray:
    """The request's one input tensor -> the model's input, float32 (n, 28, 28, 1); 4xx with the reason."""
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        abort(400, description=f'"inputs" must be a list of one tensor object: {USAGE}')
    tensor = inputs[0]
    parameters = tensor.get("parameters")
    binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    missing = [key for key in ("name", "shape", "datatype") if key not in tensor]
    if "data" not in tensor and binary_size is None:
        missing.append("data")
    if missing:
        abort(400, description=f"the input tensor lacks {', '.join(missing)}: {USAGE}")
    if not isinstance(tensor["name"], str):
        abort(400, description="the input tensor's name must be a string")
    if tensor["datatype"] != DATATYPE:
        abort(400, description=f'datatype must be "{DATATYPE}", got {str(tensor["datatype"])[:40]!r}')
    shape = tensor["shape"]
    if (not isinstance(shape, list) or not 2 <= len(shape) <= 4
            or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in shape)):
        abort(400, description=f"shape must be a list of 2-4 positive integers like [n, 28, 28]: {USAGE}")
    if shape[0] > limit:
        abort(413, description=f"too many images ({shape[0]}); at most {limit} per request")
    if [-1, *shape[1:]] not in INPUT_SHAPES:
        abort(400, description=f"shape must be [n, 28, 28], [n, 28, 28, 1] or [n, 784]; got {shape}")
    if binary_size is not None:
        values = binary_values(binary_size, binary, math.prod(shape))
    else:
        if not isinstance(tensor["data"], list):
            abort(400, description='"data" must be a list of numbers (flat, or nested as the shape)')
        values = number_array(tensor["data"], '"data"')
    if values.size != math.prod(shape):
        abort(400, description=f"shape {shape} needs {math.prod(shape)} numbers; data has {values.size}")
    return model_batch(values.reshape(shape), '"data"', limit)


def binary_values(binary_size, binary: bytes, count: int) -> np.ndarray:
    """The input's raw bytes (binary extension): ``count`` little-endian FP32 numbers."""
    if isinstance(binary_size, bool) or not isinstance(binary_size, int) or binary_size != 4 * count:
        abort(400, description=f"binary_data_size must be {4 * count} (the shape's {count} FP32 numbers), "
                               f"got {str(binary_size)[:20]}")
    if len(binary) != binary_size:
        abort(400, description=f"the body has {len(binary)} bytes after the inference header; "
                               f"binary_data_size says {binary_size}")
    return np.frombuffer(binary, dtype="<f4")


def wants_binary_output(payload: dict) -> bool:
    """Whether the answer's tensor goes back as raw bytes (binary extension) rather than JSON numbers."""
    outputs = payload.get("outputs")
    check_requested_outputs(outputs)
    parameters = payload.get("parameters")
    if isinstance(parameters, dict) and parameters.get("binary_data_output") is True:
        return True
    return any(isinstance(output.get("parameters"), dict) and output["parameters"].get("binary_data") is True
               for output in outputs or [])


def check_requested_outputs(outputs) -> None:
    """Outputs, if named, can only be the one the model has."""
    if outputs is None:
        return
    if not isinstance(outputs, list) or not all(isinstance(output, dict) for output in outputs):
        abort(400, description=f'"outputs" must be a list of objects like {{"name": "{OUTPUT_NAME}"}}')
    unknown = [str(output.get("name"))[:40] for output in outputs if output.get("name") != OUTPUT_NAME]
    if unknown:
        abort(400, description=f'unknown output {unknown[0]!r}; the model has only "{OUTPUT_NAME}"')
