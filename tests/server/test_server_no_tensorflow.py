"""The server runs without TensorFlow: a server process answers an upload and a TF-Serving request, and has imported
neither tensorflow nor keras."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT, png_bytes

# Runs in a fresh interpreter: the real app on a loopback port (werkzeug's server), real HTTP requests to it, then
# the modules it imported.
SERVER_SCRIPT = """
import io, json, sys, threading, time, urllib.request
import numpy as np
from werkzeug.serving import make_server
from server import create_app

models_dir, upload_path, pixels_path = sys.argv[1:4]
app = create_app({"MODEL_DIR": models_dir})
server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"

def post(path, body, content_type):
    request = urllib.request.Request(url + path, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())

upload = post("/api/predict", open(upload_path, "rb").read(), "image/png")
instances = (np.load(pixels_path) / 255.0).tolist()
tfserving = post("/v1/models/mnist:predict", json.dumps({"instances": instances}).encode(), "application/json")
server.shutdown()
print(json.dumps({
    "upload": [upload[0], upload[1]["predictions"][0]["digit"]],
    "tfserving": [tfserving[0], int(np.argmax(tfserving[1]["predictions"][0]))],
    "imported": sorted({name.split(".")[0] for name in sys.modules} & {"tensorflow", "keras", "tf_keras"}),
}))
"""


def test_the_server_answers_without_importing_tensorflow_or_keras(tmp_path, models_dir, mnist_test_set):
    import numpy as np

    images, labels = mnist_test_set
    upload = tmp_path / "digit.png"
    upload.write_bytes(png_bytes(images[0], size=280, invert=True))
    pixels = tmp_path / "digit.npy"
    np.save(pixels, images[:1])

    finished = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT, str(models_dir), str(upload), str(pixels)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["upload"] == [200, labels[0]]
    assert result["tfserving"] == [200, labels[0]]
    assert result["imported"] == []
