"""A round's record, ``rounds/round-K/aggregate.json``: what its global model combines, and what users may see of it.

Written before the global model, so that a retried aggregation combines exactly the same clients with exactly
the same noise (a client file that turns up late is never mixed in). The noise seed stays in this file on the
volume: with it, anybody could subtract the noise from the published model, so the public facts leave it out.
"""

from __future__ import annotations

from pathlib import Path

from common.atomic import read_json, write_json
from common.layout import RunLayout


def write_round_record(path: Path, record: dict) -> None:
    """Save a round's record (atomic)."""
    write_json(path, record)


def read_round_record(path: Path, run_id: str, round_number: int) -> dict:
    """A round's record, refused if it belongs to another run or round or lacks its client list."""
    record = read_json(path)
    if not isinstance(record, dict) or record.get("run_id") != run_id or record.get("round") != round_number:
        raise ValueError(f"{path}: not the record of run {run_id!r} round {round_number}")
    clients = record.get("clients")
    if not isinstance(clients, list) or not all(isinstance(worker, int) and not isinstance(worker, bool) for worker in clients):
        raise ValueError(f"{path}: 'clients' must be a list of worker numbers")
    return record


def public_round_facts(record: dict) -> dict:
    """What a round's metrics, the run's summary and the model page show: clients, missing ones, privacy spent.

    Under DP only how many clients were missing: which ones and why are facts about users outside the guarantee,
    and stay in this record on the volume.
    """
    missing = record.get("missing", [])
    privacy = record.get("privacy")
    facts: dict = {"clients": len(record["clients"]), "missing": len(missing) if privacy else missing}
    if privacy:
        facts["privacy"] = {key: privacy[key] for key in ("epsilon", "delta", "clip", "noise_multiplier", "relation") if key in privacy}
    return facts


def missing_count(missing: list | int) -> int:
    """How many clients a round went on without: public facts hold a list of them, or under DP only the count."""
    return missing if isinstance(missing, int) else len(missing)


def round_facts(layout: RunLayout, round_number: int) -> dict:
    """The public facts of a round's record, or nothing for a round aggregated before records existed."""
    path = layout.round_record_path(round_number)
    if not path.is_file():
        return {}
    return public_round_facts(read_round_record(path, layout.run_id, round_number))
