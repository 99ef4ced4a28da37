"""A trained model on disk: weights, optimiser state, normaliser, config and the feature schema.

Saved with torch.save and loaded with `weights_only=True`, so a file can hold tensors and plain
values but never code: a tampered artefact cannot run anything on load. Every artefact is
identified by the sha256 of its bytes; the registry stores it and loads verify it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A model file that cannot be used: unreadable, corrupt, or not ours. Says which file."""


class SchemaMismatch(CheckpointError):
    """The model was trained on another feature layout than the running code computes."""


class ArtefactCorrupt(CheckpointError):
    """The file's bytes do not match the hash recorded when it was registered."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    schema_hash: str
    feature_names: tuple[str, ...]
    policy_state: dict[str, torch.Tensor]
    # Running statistics of the market block: {"count": float, "mean": [...], "m2": [...]}.
    normaliser: dict[str, Any]
    # Plain values only (numbers, strings, lists, dicts): network, environment, PPO, features.
    config: dict[str, Any]
    optimiser_state: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> str:
    """Write atomically (temp file, fsync, rename) and return the file's sha256."""
    payload = {
        "format": FORMAT_VERSION,
        "schema_hash": checkpoint.schema_hash,
        "feature_names": list(checkpoint.feature_names),
        "policy_state": checkpoint.policy_state,
        "normaliser": checkpoint.normaliser,
        "config": checkpoint.config,
        "optimiser_state": checkpoint.optimiser_state,
        "metrics": dict(checkpoint.metrics),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file_sha256(path)


def load_checkpoint(
    path: Path, *, expected_schema_hash: str | None = None, expected_sha256: str | None = None
) -> Checkpoint:
    """Load and check a model file. Raises CheckpointError (or a subclass) naming the file."""
    # One read: the bytes whose hash is checked are the bytes that are loaded.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ArtefactCorrupt(
                f"{path}: sha256 {actual[:12]}... does not match the registered {expected_sha256[:12]}...; "
                "the file was changed or damaged after registration"
            )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable Huracan model ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a Huracan model of format {FORMAT_VERSION} (found {found!r})")
    try:
        checkpoint = Checkpoint(
            schema_hash=str(payload["schema_hash"]),
            feature_names=tuple(str(n) for n in payload["feature_names"]),
            policy_state=dict(payload["policy_state"]),
            normaliser=dict(payload["normaliser"]),
            config=dict(payload["config"]),
            optimiser_state=payload.get("optimiser_state"),
            metrics={str(k): float(v) for k, v in payload.get("metrics", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model file is missing or has a bad field: {exc}") from None
    if expected_schema_hash is not None and checkpoint.schema_hash != expected_schema_hash:
        raise SchemaMismatch(
            f"{path}: trained on feature schema {checkpoint.schema_hash[:12]}, but this build computes "
            f"{expected_schema_hash[:12]}; retrain the model (huracan train) for the current features"
        )
    return checkpoint
