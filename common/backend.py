"""The one place that knows Keras's backends: CPU threads and GPU memory for whichever one KERAS_BACKEND names.

Everything else uses Keras's public API only, so the trainer and evaluator run on TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

import os

from common.native_log import min_log_level_on_stderr

DEFAULT_BACKEND = "tensorflow"


def backend_name() -> str:
    """The Keras backend this process uses (Keras reads KERAS_BACKEND the same way)."""
    return os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND)


def configure_backend(num_threads: int | None = None) -> None:
    """Cap CPU threads and let GPU memory grow on demand, so several trainers share one machine or card.

    Call before Keras is imported: JAX reads its settings from the environment when it starts.
    """
    backend = backend_name()
    if backend == "tensorflow":
        with min_log_level_on_stderr():  # importing TensorFlow prints INFO lines that ignore TF_CPP_MIN_LOG_LEVEL
            import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        if num_threads:
            tf.config.threading.set_intra_op_parallelism_threads(num_threads)
            tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    elif backend == "jax":
        # Without this each JAX process reserves 75 % of the GPU's memory up front.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if num_threads:
            os.environ.setdefault(
                "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={num_threads}"
            )
    elif backend == "torch":
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)


def device_names() -> list[str]:
    """The devices the Keras backend computes on, e.g. ``['cuda:0']`` or ``['cpu:0']`` (for logs and benchmarks)."""
    backend = backend_name()
    if backend == "jax":
        import jax

        return [f"{device.platform}:{device.id} ({device.device_kind})" for device in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [gpu.name for gpu in gpus] or ["cpu"]
    if backend == "torch":
        import torch

        return [f"cuda:{index} ({torch.cuda.get_device_name(index)})" for index in range(torch.cuda.device_count())] or ["cpu"]
    return ["cpu"]


def start_backend(num_threads: int | None = None) -> None:
    """Configure the backend and run its first operation now, its start-up notices held below TF_CPP_MIN_LOG_LEVEL.

    For long-lived processes (the runner's workers, trainer.serve, the coordinator): they pay this once.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with min_log_level_on_stderr():
        configure_backend(num_threads)
        import keras

        keras.ops.zeros(1)  # the backend's start-up notices come with its first operation
