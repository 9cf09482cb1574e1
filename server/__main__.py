"""``python -m server``: the demo on http://127.0.0.1:8080 with Flask's threaded server (production: gunicorn)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from common.cli import ArgumentParser, user_errors
from common.layout import models_dir


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m server",
        description="Serve the newest published MNIST model: the web demo, the JSON API, TF-Serving REST and "
        "the Open Inference Protocol (V2).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=models_dir(Path("volume")),
        help="published versions <dir>/<n>/model.tflite + info.json; the newest is served (default: %(default)s)",
    )
    return parser


@user_errors("server")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1-65535, got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server import create_app

    app = create_app({"MODEL_DIR": str(args.model_dir)})
    app.extensions["mnist_model_store"].start()  # load the model now, not on the first request
    print(f"Serving {args.model_dir} on http://{args.host}:{args.port}/  (Ctrl-C to stop)")
    app.run(host=args.host, port=args.port, debug=False, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
