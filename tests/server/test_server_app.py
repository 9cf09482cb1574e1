"""Every route through Flask's test client, with a real model: the demo API, TF-Serving REST, probes, bad input,
and switching to a newly published version without a restart."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from server import create_app

from conftest import make_app, publish, wait_for


# ---- probes ----


def test_healthz_answers_at_once_even_before_a_model_loads(empty_app):
    response = empty_app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_503_until_a_model_is_published_then_200(empty_app, trained_versions):
    client = empty_app.test_client()
    wait_for(lambda: client.get("/readyz").json["reason"].startswith("no model published"))
    response = client.get("/readyz")
    assert response.status_code == 503

    publish(trained_versions, empty_app.extensions["mnist_model_store"].models_dir, 1)

    response = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r)
    assert response.json == {"status": "ready", "model_version": 1}


def test_without_a_model_predictions_are_503_with_a_reason(empty_app, png, mnist_test_set):
    client = empty_app.test_client()

    for response in (
        client.post("/api/predict", data={"image": (io.BytesIO(png(mnist_test_set[0][0])), "d.png")}),
        client.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]}),
        client.get("/v1/models/mnist"),
        client.get("/api/model"),
        client.post("/v2/models/mnist/infer",
                    json={"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]}),
        client.get("/v2/models/mnist"),
    ):
        assert response.status_code == 503
        assert "no model published yet" in response.json["error"]
    assert client.get("/model").status_code == 503
    assert b"No model yet" in client.get("/model").data


def test_metrics_count_requests_and_report_the_model_version(ready_client, png, mnist_test_set):
    ready_client.post("/api/predict", data={"image": (io.BytesIO(png(mnist_test_set[0][0])), "d.png")})
    ready_client.post("/api/predict", data={})

    text = ready_client.get("/metrics").get_data(as_text=True)

    assert 'mnist_http_requests_total{endpoint="/api/predict",method="POST",status="200"} 1.0' in text
    assert 'mnist_http_requests_total{endpoint="/api/predict",method="POST",status="400"} 1.0' in text
    assert 'mnist_http_request_duration_seconds_bucket{endpoint="/api/predict",le="0.1"}' in text
    assert "mnist_model_version 1.0" in text
    assert 'mnist_predicted_images_total{api="api"} 1.0' in text


# ---- pages ----


def test_the_demo_page_has_the_canvas_the_upload_and_no_external_resources(ready_client):
    html = ready_client.get("/").get_data(as_text=True)

    assert '<canvas id="pad"' in html and 'type="file"' in html and "version 1" in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    for asset in ("/static/style.css", "/static/demo.js"):
        assert ready_client.get(asset).status_code == 200


def test_the_model_page_shows_how_the_model_was_made(ready_client):
    response = ready_client.get("/model")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert "Model version 1" in html and "quick-model" in html
    assert "<polyline" in html  # accuracy per round
    assert html.count('<td class="hit"') == 10  # the confusion matrix's diagonal
    assert "our convnet" in html and "fedavg over the mean of every client" in html


def test_api_model_returns_the_info_json(ready_client):
    body = ready_client.get("/api/model").json

    assert body["version"] == 1
    assert len(body["info"]["confusion_matrix"]) == 10


# ---- POST /api/predict ----


def test_predict_a_multipart_upload(ready_client, png, mnist_test_set):
    images, labels = mnist_test_set

    response = ready_client.post("/api/predict", data={"image": (io.BytesIO(png(images[0], size=280)), "mine.png")})

    assert response.status_code == 200
    body = response.json
    assert body["model_version"] == 1
    [prediction] = body["predictions"]
    assert prediction["digit"] == labels[0]
    assert 0.5 < prediction["confidence"] <= 1.0
    assert len(prediction["probabilities"]) == 10 and abs(sum(prediction["probabilities"]) - 1) < 1e-3
    assert np.array(prediction["image"]).shape == (28, 28)


def test_predict_many_images_at_once_in_every_encoding(ready_client, png, jpeg, mnist_test_set):
    images, labels = mnist_test_set
    files = [png(images[0]), jpeg(images[1], size=300, invert=True), png(images[2], size=90, invert=True)]

    multipart = ready_client.post(
        "/api/predict", data={"image": [(io.BytesIO(data), f"{n}.img") for n, data in enumerate(files)]}
    )
    as_json = ready_client.post("/api/predict", json={"images": [base64.b64encode(data).decode() for data in files]})
    as_data_url = ready_client.post(
        "/api/predict", json={"image": "data:image/png;base64," + base64.b64encode(files[0]).decode()}
    )
    raw = ready_client.post("/api/predict", data=files[1], content_type="image/jpeg")

    assert [p["digit"] for p in multipart.json["predictions"]] == list(labels[:3])
    assert [p["digit"] for p in as_json.json["predictions"]] == list(labels[:3])
    assert as_data_url.json["predictions"][0]["digit"] == labels[0]
    assert raw.json["predictions"][0]["digit"] == labels[1]


def truncated_png(png, image) -> bytes:
    data = png(image, size=200)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "make_request, status, message",
    [
        (lambda c, png, img: c.post("/api/predict", data={}), 400, "no image"),
        (lambda c, png, img: c.post("/api/predict", data={"image": (io.BytesIO(b""), "e.png")}), 400, "empty"),
        (lambda c, png, img: c.post("/api/predict", data={"image": (io.BytesIO(b"%PDF-1.4 ..."), "x.pdf")}), 400,
         "not a PNG or JPEG"),
        (lambda c, png, img: c.post("/api/predict", data={"image": (io.BytesIO(truncated_png(png, img)), "t.png")}),
         400, "could not be decoded"),
        (lambda c, png, img: c.post("/api/predict", data=b"\x89PNG\r\n\x1a\n", content_type="image/png"), 400,
         "not a PNG or JPEG"),
        (lambda c, png, img: c.post("/api/predict", data="hello", content_type="text/plain"), 415,
         "unsupported content type"),
        (lambda c, png, img: c.post("/api/predict", data="{not json", content_type="application/json"), 400, "JSON"),
        (lambda c, png, img: c.post("/api/predict", json=[1, 2]), 400, "'image' or 'images'"),
        (lambda c, png, img: c.post("/api/predict", json={"images": "abc"}), 400, "list of base64"),
        (lambda c, png, img: c.post("/api/predict", json={"image": "***"}), 400, "not valid base64"),
        (lambda c, png, img: c.post("/api/predict", json={"images": [base64.b64encode(png(img)).decode(), "aGk="]}),
         400, "image 1: not a PNG or JPEG"),
        (lambda c, png, img: c.post("/api/predict", json={"images": [base64.b64encode(png(img)).decode()] * 65}),
         413, "too many images"),
        (lambda c, png, img: c.post("/api/predict", data={"image": (io.BytesIO(png(img * 0)), "b.png")}), 400,
         "no digit"),
        (lambda c, png, img: c.get("/api/predict"), 405, "method"),
    ],
    ids=["no-file", "empty", "pdf", "truncated", "png-signature-only", "text", "bad-json", "json-list",
         "images-not-list", "bad-base64", "second-image-bad", "too-many", "blank", "get"],
)
def test_bad_input_to_api_predict_is_a_4xx_with_a_clear_message(ready_client, png, mnist_test_set,
                                                                make_request, status, message):
    response = make_request(ready_client, png, mnist_test_set[0][0])

    assert response.status_code == status
    assert message.lower() in response.json["error"].lower()


def test_a_body_over_the_size_limit_is_413(models_dir):
    app = make_app(models_dir, MAX_CONTENT_LENGTH=1000)
    try:
        response = app.test_client().post("/api/predict", data={"image": (io.BytesIO(b"x" * 5000), "big.png")})
    finally:
        app.extensions["mnist_model_store"].stop()

    assert response.status_code == 413
    assert "request too large" in response.json["error"]


def test_a_decompression_bomb_is_413(ready_client):
    picture = Image.new("L", (9000, 5000))  # 45 megapixels of black: compresses to ~50 kB
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")

    response = ready_client.post("/api/predict", data=buffer.getvalue(), content_type="image/png")

    assert response.status_code == 413
    assert "too large" in response.json["error"]


def test_uploads_are_never_written_to_disk(ready_client, png, mnist_test_set, monkeypatch, tmp_path):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    big = png(mnist_test_set[0][0], size=2000)  # well over werkzeug's 500 kB in-memory threshold
    noise = np.random.default_rng(0).integers(0, 40, (2000, 2000), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.maximum(np.array(Image.open(io.BytesIO(big))), noise)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 600_000

    response = ready_client.post("/api/predict", data={"image": (io.BytesIO(buffer.getvalue()), "../../evil.png")})

    assert response.status_code == 200


# ---- TF-Serving REST ----


def test_tf_serving_status(ready_client):
    response = ready_client.get("/v1/models/mnist")

    assert response.status_code == 200
    assert response.json == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


@pytest.mark.parametrize("shape", [(28, 28), (784,), (28, 28, 1)])
def test_tf_serving_predict_row_format(ready_client, mnist_test_set, shape):
    images, labels = mnist_test_set
    instances = [(image / 255.0).reshape(shape).tolist() for image in images[:5]]

    response = ready_client.post("/v1/models/mnist:predict", json={"instances": instances})

    assert response.status_code == 200
    predictions = np.array(response.json["predictions"])
    assert predictions.shape == (5, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-4)
    assert (predictions.argmax(axis=1) == labels[:5]).sum() >= 4


def test_tf_serving_predict_columnar_format_and_the_model_itself_agree(ready_client, app, mnist_test_set):
    images, _ = mnist_test_set
    batch = (images[:3] / 255.0).astype(np.float32)

    response = ready_client.post("/v1/models/mnist:predict", json={"inputs": batch.tolist(),
                                                                   "signature_name": "serving_default"})

    direct = app.extensions["mnist_model_store"].current.predict(batch[..., np.newaxis])
    np.testing.assert_allclose(np.array(response.json["outputs"]), direct, atol=1e-5)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"instances": []}, 400, "non-empty list"),
        ({"instances": "image"}, 400, "non-empty list"),
        ({"images": [[0] * 784]}, 400, 'exactly one of "instances" or "inputs"'),
        ({"instances": [[0] * 784], "inputs": [[0] * 784]}, 400, "exactly one"),
        ({"instances": [[0] * 783]}, 400, "got shape [783]"),
        ({"instances": [[[0] * 28] * 27]}, 400, "got shape [27, 28]"),
        ({"instances": [[0] * 784, [0] * 10]}, 400, "same shape"),
        ({"instances": [["0"] * 784]}, 400, "numbers only"),
        ({"instances": [[None] * 784]}, 400, "numbers only"),
        ({"instances": [[True] * 784]}, 400, "numbers only"),
        ({"instances": [[{"b64": "x"}] * 784]}, 400, "numbers only"),
        ({"instances": [[255] * 784]}, 400, "in [0, 1]"),
        ({"instances": [[-0.5] * 784]}, 400, "in [0, 1]"),
        ({"instances": [[0] * 784], "signature_name": "other"}, 400, "signature_name"),
        ({"instances": [[0] * 784]} | {"instances": [[0] * 784] * 1025}, 413, "too many instances"),
        ([1, 2, 3], 400, "exactly one"),
    ],
)
def test_tf_serving_bad_requests_are_4xx_json(ready_client, body, status, message):
    response = ready_client.post("/v1/models/mnist:predict", json=body)

    assert response.status_code == status
    assert message in response.json["error"]


@pytest.mark.parametrize("data", ["{not json", "NaN", ""])
def test_tf_serving_unparseable_body_is_400(ready_client, data):
    response = ready_client.post("/v1/models/mnist:predict", data=data, content_type="application/json")

    assert response.status_code == 400
    assert "instances" in response.json["error"]


def test_numbers_too_big_for_a_float_are_refused(ready_client):
    response = ready_client.post(
        "/v1/models/mnist:predict", data='{"instances": [[' + ",".join([str(10**400)] * 784) + "]]}",
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "not valid JSON (number is infinity" in response.json["error"]


def test_unknown_routes_are_json_404(ready_client):
    response = ready_client.get("/v1/models/other")

    assert response.status_code == 404
    assert "error" in response.json


# ---- a newer model, published while serving ----


def test_a_newer_version_is_served_without_a_restart_or_a_failed_request(app, client, trained_versions,
                                                                          models_dir, mnist_test_set):
    wait_for(lambda: client.get("/readyz").status_code == 200)
    instances = {"instances": (mnist_test_set[0][:2] / 255.0).tolist()}
    before = client.post("/v1/models/mnist:predict", json=instances).json["predictions"]
    failures, versions, stop = [], set(), threading.Event()

    def keep_predicting():
        local = app.test_client()
        while not stop.is_set():
            response = local.post("/api/predict", data=b"", content_type="image/png")  # bad input: 400, cheap
            response = local.post("/v1/models/mnist:predict", json={"instances": [[0.5] * 784]})
            if response.status_code != 200:
                failures.append(response.status_code)
            versions.add(local.get("/v1/models/mnist").json["model_version_status"][0]["version"])

    thread = threading.Thread(target=keep_predicting)
    thread.start()
    try:
        publish(trained_versions, models_dir, 2)
        wait_for(lambda: client.get("/readyz").json.get("model_version") == 2)
    finally:
        stop.set()
        thread.join()

    after = client.post("/v1/models/mnist:predict", json=instances).json["predictions"]
    assert failures == []
    assert versions <= {"1", "2"}
    assert client.get("/v1/models/mnist").json["model_version_status"][0]["version"] == "2"
    assert not np.allclose(before, after)  # really another model (trained with another seed)
    assert "mnist_model_version 2.0" in client.get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize(
    "files, reason",
    [
        ({"model.tflite": b"not a LiteRT model"}, "not a valid Flatbuffer"),
        ({}, "no model.tflite"),  # published before the publisher converted: the conversion command is in the reason
    ],
    ids=["corrupt-tflite", "no-tflite"],
)
def test_a_broken_new_version_keeps_the_old_one_serving(app, client, models_dir, files, reason):
    wait_for(lambda: client.get("/readyz").status_code == 200)
    broken = models_dir / ".3.incoming"
    broken.mkdir()
    (broken / "model.h5").write_bytes(b"not an h5 file")
    (broken / "info.json").write_text("{}")
    for name, content in files.items():
        (broken / name).write_bytes(content)
    broken.rename(models_dir / "3")

    store = app.extensions["mnist_model_store"]
    wait_for(lambda: store.last_error is not None)

    assert client.get("/readyz").json["model_version"] == 1
    assert client.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]}).status_code == 200
    assert "version 3 could not be loaded" in store.last_error and reason in store.last_error


def test_create_app_reads_the_model_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_MODEL_DIR", str(tmp_path / "elsewhere"))

    app = create_app()

    assert app.config["MODEL_DIR"] == str(tmp_path / "elsewhere")
    assert str(app.extensions["mnist_model_store"].models_dir) == str(tmp_path / "elsewhere")


def test_the_model_page_names_the_architecture_and_the_server_strategy(tmp_path, trained_versions):
    """A run of the paper's CNN with sampling, FedAdam over a trimmed mean and FedProx says so on the page."""
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_versions / "1", models / "1")
    info_path = models / "1" / "info.json"
    info = json.loads(info_path.read_text())
    info["config"].update(model="fedavg-cnn", strategy="fedadam", aggregation="trimmed-mean", clients_per_round=10,
                          proximal_mu=0.01)
    info_path.write_text(json.dumps(info))
    client = make_app(models).test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200)
    html = client.get("/model").get_data(as_text=True)
    assert "the FedAvg paper&#39;s MNIST CNN" in html or "the FedAvg paper's MNIST CNN" in html
    assert "fedadam over the trimmed-mean of 10 sampled clients per round; FedProx &mu; = 0.01" in html


def test_the_model_page_shows_privacy_krum_and_missing_clients(tmp_path, trained_versions):
    """A DP run with partial rounds says what it spent and who was missing; a Krum run how many it tolerates."""
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_versions / "1", models / "1")
    info_path = models / "1" / "info.json"
    info = json.loads(info_path.read_text())
    info["config"].update(dp_clip="adaptive", dp_noise_multiplier=1.0, min_clients=8)
    info["history"][0].update(clients=9, missing=[{"worker": 3, "reason": "failed 2 times: its trainer process died"}])
    info["privacy"] = {"clip": 0.4321, "noise_multiplier": 1.0, "epsilon": 3.456, "delta": 0.001}
    info_path.write_text(json.dumps(info))
    shutil.copytree(trained_versions / "2", models / "2")
    info_path = models / "2" / "info.json"
    krum = json.loads(info_path.read_text())
    krum["config"].update(aggregation="multi-krum", byzantine_clients=4)
    info_path.write_text(json.dumps(krum))
    shutil.move(models / "2", tmp_path / "krum")
    client = make_app(models).test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200)

    html = client.get("/model").get_data(as_text=True)

    assert "clipped to an adaptive norm (last 0.432), noise multiplier 1.0: &epsilon; = 3.46 at &delta; = 0.001" in html
    assert "round 1: 9 clients, without worker 3 (failed 2 times: its trainer process died)" in html
    shutil.move(tmp_path / "krum", models / "2")
    wait_for(lambda: "Byzantine clients tolerated" in client.get("/model").get_data(as_text=True))
    assert "<dd>4 per round</dd>" in client.get("/model").get_data(as_text=True)


def test_the_model_page_of_a_dp_run_counts_missing_clients_and_shows_epsilon_per_round(tmp_path, trained_versions):
    """Under DP the published facts only count the missing clients (aggregator/record.py), never name them."""
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained_versions / "1", models / "1")
    info_path = models / "1" / "info.json"
    info = json.loads(info_path.read_text())
    info["config"].update(dp_clip=1.0, dp_noise_multiplier=1.0, min_clients=8, dp_epsilon_budget=5.0)
    privacy = {"clip": 1.0, "noise_multiplier": 1.0, "epsilon": 3.456, "delta": 0.001, "relation": "replace-one user-level"}
    info["history"][0].update(clients=9, missing=1, privacy=privacy)
    info["privacy"] = privacy
    info_path.write_text(json.dumps(info))
    client = make_app(models).test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200)

    html = client.get("/model").get_data(as_text=True)

    assert "round 1: 9 clients, without 1 of the sampled" in html and "worker" not in html.split("Missing clients")[1][:200]
    assert "(replace-one user-level: one worker = one user)" in html
    assert "round 1: 3.46" in html and "(budget 5)" in html
