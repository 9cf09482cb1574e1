"""KServe's Open Inference Protocol (V2) REST endpoints, and bad input to every prediction API: always a 4xx."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from conftest import wait_for


def infer_body(images: np.ndarray, shape: list[int] | None = None, nested: bool = False, **tensor) -> dict:
    """An inference request for float images (n, 28, 28) in [0, 1]."""
    shape = shape or [len(images), 28, 28]
    data = images.reshape(shape).tolist() if nested else images.ravel().tolist()
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data, **tensor}]}


def test_health_and_metadata(ready_client):
    assert ready_client.get("/v2/health/live").json == {"live": True}
    assert ready_client.get("/v2/health/ready").json == {"ready": True}
    assert ready_client.get("/v2/models/mnist/ready").json == {"name": "mnist", "ready": True}
    assert ready_client.get("/v2").json["extensions"] == []
    metadata = ready_client.get("/v2/models/mnist").json
    assert metadata["name"] == "mnist" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


def test_not_ready_before_a_model_is_published(empty_app):
    client = empty_app.test_client()

    assert client.get("/v2/health/live").status_code == 200
    wait_for(lambda: client.get("/v2/health/ready").status_code == 503)
    assert client.get("/v2/health/ready").json == {"ready": False}
    assert client.get("/v2/models/mnist/ready").status_code == 503


@pytest.mark.parametrize("shape, nested", [([3, 28, 28], False), ([3, 784], False), ([3, 28, 28, 1], True)])
def test_infer_answers_the_probabilities_of_each_image(ready_client, app, mnist_test_set, shape, nested):
    images, labels = mnist_test_set
    batch = (images[:3] / 255.0).astype(np.float32)

    response = ready_client.post("/v2/models/mnist/infer", json=infer_body(batch, shape, nested) | {"id": "req-7"})

    assert response.status_code == 200
    body = response.json
    assert body["model_name"] == "mnist" and body["model_version"] == "1" and body["id"] == "req-7"
    [output] = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [3, 10]
    probabilities = np.array(output["data"]).reshape(3, 10)
    direct = app.extensions["mnist_model_store"].current.predict(batch[..., np.newaxis])
    np.testing.assert_allclose(probabilities, direct, atol=1e-6)
    assert list(probabilities.argmax(axis=1)) == list(labels[:3])


def test_the_versioned_routes_serve_only_the_loaded_version(ready_client, mnist_test_set):
    body = infer_body((mnist_test_set[0][:1] / 255.0).astype(np.float32))

    assert ready_client.post("/v2/models/mnist/versions/1/infer", json=body).status_code == 200
    assert ready_client.get("/v2/models/mnist/versions/1").json["versions"] == ["1"]
    response = ready_client.post("/v2/models/mnist/versions/7/infer", json=body)
    assert response.status_code == 404 and "version 7" in response.json["error"]
    assert ready_client.get("/v2/models/mnist/versions/7/ready").status_code == 503


ONE = [0.5] * 784


def tensor(**fields) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": ONE} | fields]}


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v2/models/other/infer", tensor(), 404, 'unknown model "other"'),
        ("/v2/models/mnist/infer", {"inputs": []}, 400, "list of one tensor"),
        ("/v2/models/mnist/infer", {"inputs": [tensor()["inputs"][0]] * 2}, 400, "list of one tensor"),
        ("/v2/models/mnist/infer", [1, 2], 400, "JSON object"),
        ("/v2/models/mnist/infer", {"inputs": [{"name": "input", "data": ONE}]}, 400, "lacks shape, datatype"),
        ("/v2/models/mnist/infer", tensor(datatype="INT64"), 400, 'datatype must be "FP32"'),
        ("/v2/models/mnist/infer", tensor(datatype=["FP32"]), 400, 'datatype must be "FP32"'),
        ("/v2/models/mnist/infer", tensor(name=3), 400, "name must be a string"),
        ("/v2/models/mnist/infer", tensor(shape=[1, 783]), 400, "got [1, 783]"),
        ("/v2/models/mnist/infer", tensor(shape=[1, 28, 28, 3]), 400, "got [1, 28, 28, 3]"),
        ("/v2/models/mnist/infer", tensor(shape="1x784"), 400, "shape must be a list"),
        ("/v2/models/mnist/infer", tensor(shape=[1.0, 784]), 400, "shape must be a list"),
        ("/v2/models/mnist/infer", tensor(shape=[0, 784]), 400, "positive integers"),
        ("/v2/models/mnist/infer", tensor(shape=[True, 784]), 400, "positive integers"),
        ("/v2/models/mnist/infer", tensor(shape=[2, 784]), 400, "needs 1568 numbers; data has 784"),
        ("/v2/models/mnist/infer", tensor(shape=[5000, 784]), 413, "too many images"),
        ("/v2/models/mnist/infer", tensor(data="0.5"), 400, "list of numbers"),
        ("/v2/models/mnist/infer", tensor(data=["0.5"] * 784), 400, "numbers only"),
        ("/v2/models/mnist/infer", tensor(data=[None] * 784), 400, "numbers only"),
        ("/v2/models/mnist/infer", tensor(data=[True] * 784), 400, "numbers only"),
        ("/v2/models/mnist/infer", tensor(data=[[0.5] * 400, [0.5] * 384]), 400, "numbers only"),
        ("/v2/models/mnist/infer", tensor(data=[255] * 784), 400, "in [0, 1]"),
        ("/v2/models/mnist/infer", tensor() | {"outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
        ("/v2/models/mnist/infer", tensor() | {"outputs": "probabilities"}, 400, '"outputs" must be a list'),
    ],
)
def test_v2_bad_requests_are_4xx_in_the_protocols_error_shape(ready_client, path, body, status, message):
    response = ready_client.post(path, json=body)

    assert response.status_code == status
    assert set(response.json) == {"error"}
    assert message in response.json["error"]


def nested(depth: int) -> str:
    return "[" * depth + "0.5" + "]" * depth


PREDICT_ROUTES = ["/api/predict", "/v1/models/mnist:predict", "/v2/models/mnist/infer"]


@pytest.mark.parametrize("path", PREDICT_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        "[" * 10000,  # unbalanced: the parser stops at its depth limit
        nested(10000),
        '{"instances": ' + nested(5000) + ', "image": ' + nested(5000) + ', "inputs": ' + nested(5000) + "}",
        '{"instances": ' + nested(100) + ', "image": ' + nested(100) + ', "inputs": [{"name": "input", '
        '"shape": [1, 784], "datatype": "FP32", "data": ' + nested(100) + "}]}",  # deeper than numpy's 64 dimensions
        '{"instances": [[1e999]], "inputs": [{"data": [1e999]}]}',
        '{"instances": [[' + "9" * 5000 + ']], "inputs": [{"data": [' + "9" * 5000 + "]}]}",
        '{"instances": [[NaN]], "inputs": [{"data": [NaN]}]}',
        '{"instances": 5, "image": 5, "inputs": 5}',
        '{"instances": {"a": 1}, "images": {"a": 1}, "inputs": {"a": 1}}',
        '"just a string"',
        "null",
        "",
        "\xff\xfe not utf-8",
    ],
    ids=["unbalanced-10000", "nested-10000", "nested-5000-in-fields", "nested-100-in-fields", "1e999",
         "5000-digits", "nan", "numbers-not-lists", "objects-not-lists", "string", "null", "empty", "not-utf8"],
)
def test_bad_json_to_every_prediction_api_is_a_4xx_never_a_500(ready_client, path, body):
    response = ready_client.post(path, data=body.encode("utf-8", "surrogateescape"),
                                 content_type="application/json")

    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:300]
    assert response.json["error"]


@pytest.mark.parametrize("path", PREDICT_ROUTES)
def test_a_body_that_is_not_json_is_415_or_400(ready_client, path):
    response = ready_client.post(path, data=b"instances=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code in (400, 415)
    assert response.json["error"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("path, body", [
    ("/v1/models/mnist:predict", {"instances": [ONE]}),
    ("/v2/models/mnist/infer", tensor()),
])
def test_json_is_read_whatever_the_content_type_says(ready_client, path, body, content_type):
    """`curl -d` (TF Serving's own examples) sends form-encoded; Triton's client sends no Content-Type."""
    response = ready_client.post(path, data=json.dumps(body), content_type=content_type)

    assert response.status_code == 200


def test_images_as_base64_of_nested_lists_are_refused(ready_client):
    response = ready_client.post("/api/predict", json={"images": [[base64.b64encode(b"x").decode()]]})

    assert response.status_code == 400
    assert "list of base64" in response.json["error"]


def binary_request(images: np.ndarray, binary_output: bool, header_length_offset: int = 0) -> tuple[bytes, dict]:
    """A request in Triton's binary tensor data extension: JSON header, then the raw little-endian FP32 pixels."""
    data = images.astype("<f4").tobytes()
    header = {"inputs": [{"name": "input", "shape": [len(images), 28, 28], "datatype": "FP32",
                          "parameters": {"binary_data_size": len(data)}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": binary_output}}]}
    header_bytes = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(header_bytes) + header_length_offset)}
    return header_bytes + data, headers


@pytest.mark.parametrize("bad_pixel", [np.nan, np.inf, -0.5, 1.5])
def test_non_finite_or_out_of_range_pixels_are_refused(ready_client, bad_pixel):
    """JSON cannot carry NaN (its parser refuses it first); raw FP32 bytes can, so the pixel check must."""
    images = np.zeros((1, 28, 28), dtype=np.float32)
    images[0, 14, 14] = bad_pixel
    body, headers = binary_request(images, binary_output=False)

    response = ready_client.post("/v2/models/mnist/infer", data=body, headers=headers,
                                 content_type="application/octet-stream")

    assert response.status_code == 400
    assert "pixel values must be numbers in [0, 1]" in response.json["error"]


@pytest.mark.parametrize("binary_output", [True, False])
def test_infer_with_the_binary_tensor_extension(ready_client, app, mnist_test_set, binary_output):
    images, labels = mnist_test_set
    batch = (images[:3] / 255.0).astype(np.float32)
    body, headers = binary_request(batch, binary_output)

    response = ready_client.post("/v2/models/mnist/infer", data=body, headers=headers,
                                 content_type="application/octet-stream")

    assert response.status_code == 200
    direct = app.extensions["mnist_model_store"].current.predict(batch[..., np.newaxis])
    if binary_output:
        header_length = int(response.headers["Inference-Header-Content-Length"])
        header = json.loads(response.data[:header_length])
        [output] = header["outputs"]
        assert output["shape"] == [3, 10] and output["parameters"] == {"binary_data_size": 120}
        probabilities = np.frombuffer(response.data[header_length:], dtype="<f4").reshape(3, 10)
    else:
        probabilities = np.array(response.json["outputs"][0]["data"]).reshape(3, 10)
    np.testing.assert_allclose(probabilities, direct, atol=1e-6)
    assert list(probabilities.argmax(axis=1)) == list(labels[:3])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda body, headers: (body, {"Inference-Header-Content-Length": "abc"}), "must be the length"),
        (lambda body, headers: (body, {"Inference-Header-Content-Length": str(len(body) + 1)}), "must be the length"),
        (lambda body, headers: (body, {"Inference-Header-Content-Length": "3"}), "header is not valid JSON"),
        (lambda body, headers: (body[:-4], headers), "binary_data_size says 3136"),
        (lambda body, headers: (body + b"\0" * 4, headers), "binary_data_size says 3136"),
        (lambda body, headers: (body.replace(b'"binary_data_size": 3136', b'"binary_data_size": 3132'), headers),
         "binary_data_size must be 3136"),
        (lambda body, headers: (body[: int(headers["Inference-Header-Content-Length"])]
                                + np.full(784, np.nan, "<f4").tobytes(), headers), "in [0, 1]"),
    ],
    ids=["length-not-a-number", "length-past-the-body", "length-cuts-the-json", "too-few-bytes", "too-many-bytes",
         "wrong-size", "nan"],
)
def test_bad_binary_requests_are_400(ready_client, change, message):
    body, headers = binary_request(np.full((1, 28, 28), 0.5), binary_output=False)
    body, headers = change(body, headers)

    response = ready_client.post("/v2/models/mnist/infer", data=body, headers=headers)

    assert response.status_code == 400
    assert message in response.json["error"]
