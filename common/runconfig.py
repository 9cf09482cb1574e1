"""A run's configuration, saved as ``run.json`` so a resumed or re-submitted run can be checked against it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import read_json, write_json

SPLIT_STRATEGIES = ("iid", "dirichlet")


@dataclass(frozen=True)
class RunConfig:
    """What defines a run's result; two runs with the same config and seed train the same way."""

    workers: int = 3
    rounds: int = 5  # measured: 99.23 % on the test set after 5 rounds, 98.98 % after 3 (README)
    epochs: int = 1
    batch_size: int = 64
    split: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration: smaller means more label skew per worker.
    seed: int = 0
    start_model: str | None = None  # a published model to continue training, or None for a fresh seeded one

    def __post_init__(self) -> None:
        for name in ("workers", "rounds", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.split not in SPLIT_STRATEGIES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_STRATEGIES)}, got {self.split!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be greater than 0, got {self.alpha!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def save_config(path: Path, config: RunConfig) -> None:
    """Write ``run.json``, or check that an existing one holds the same config (a run never changes shape)."""
    if Path(path).exists():
        existing = load_config(path)
        if existing != config:
            differences = {
                key: (value, getattr(config, key))
                for key, value in existing.to_dict().items()
                if value != getattr(config, key)
            }
            raise ValueError(
                f"{path} was made with a different configuration {differences} (existing, requested); "
                "use another --run-id for a new run"
            )
        return
    write_json(path, config.to_dict())


def load_config(path: Path) -> RunConfig:
    """Read ``run.json``."""
    payload = read_json(path)
    try:
        return RunConfig(**payload)
    except TypeError as error:
        raise ValueError(f"{path}: not a run configuration ({error})") from None
