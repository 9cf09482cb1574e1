"""Start a run: save its configuration and the one initial model every trainer of round 1 starts from."""

from __future__ import annotations

from pathlib import Path

from common.layout import RunLayout
from common.runconfig import RunConfig, save_config


def initialize_run(layout: RunLayout, config: RunConfig) -> Path:
    """Write run.json and round 0's global model (seeded, or from ``config.start_model``); idempotent."""
    save_config(layout.config_path, config)
    initial_model_path = layout.global_model_path(0)
    if initial_model_path.is_file():
        return initial_model_path
    from common.model import build_model, load_model
    from common.modelfile import save_model_with_metadata

    model = build_model(seed=config.seed, architecture=config.model)
    if config.start_model:
        start_model = Path(config.start_model)
        if not start_model.is_file():
            raise ValueError(f"--start-model {start_model}: file not found")
        try:
            loaded = load_model(start_model)
        except Exception as error:  # Keras raises many types for a file it cannot read
            raise ValueError(f"--start-model {start_model}: not a loadable Keras model ({error})") from None
        expected = [weight.shape for weight in model.weights]
        found = [weight.shape for weight in loaded.weights]
        if expected != found:
            raise ValueError(f"--start-model {start_model}: its architecture is not the run's --model {config.model}")
        model = loaded
    save_model_with_metadata(model, initial_model_path, {"run_id": layout.run_id, "round": 0})
    return initial_model_path
