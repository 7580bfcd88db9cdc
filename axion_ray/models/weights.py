"""Pretrained weights and checkpoints, read from local disk only — nothing is downloaded at run time.

Where we look for a published weight file (in this order):
1. `weights=` given by the user: a file (the main model's weights) or a directory holding the files
   by their Hub file name, in a subfolder named after the repository, or as a Hugging Face cache;
2. the directory in `$AXION_RAY_WEIGHTS`, searched the same way;
3. the Hugging Face cache (`$HF_HUB_CACHE` / `$HF_HOME`), read with `try_to_load_from_cache`, which
   never touches the network.
Missing weights raise `WeightsNotFoundError` naming every place looked in; random initialisation
happens only when the caller asks for it, and is then recorded in provenance.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axion_ray.errors import CheckpointError, WeightsNotFoundError
from axion_ray.models.presets import WeightFile, weight_file

WEIGHTS_ENV = "AXION_RAY_WEIGHTS"


@dataclass
class WeightsRecord:
    """What a built model was initialised from: goes into the provenance of everything it writes."""

    random_init: bool
    files: dict[str, str] = field(default_factory=dict)      # variant -> path
    sha256: dict[str, str] = field(default_factory=dict)     # variant -> digest

    def to_dict(self) -> dict[str, Any]:
        return {"random_init": self.random_init, "files": dict(self.files), "sha256": dict(self.sha256)}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _candidates_in_dir(directory: Path, wf: WeightFile) -> list[Path]:
    return [directory / wf.filename, directory / wf.repo_id.split("/")[-1] / wf.filename]


def _from_hf_cache(wf: WeightFile, cache_dir: Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(wf.repo_id, wf.filename, cache_dir=str(cache_dir) if cache_dir else None)
    return Path(found) if isinstance(found, str) else None


def find_weight_file(variant: str, weights: str | Path | None = None, *, main: bool = True) -> tuple[Path | None, list[str]]:
    """Look for `variant`'s published file; return (path or None, the places looked in).

    `main` marks the model's own weights: only those may be given as a bare file path.
    """
    wf = weight_file(variant)
    if wf is None:
        return None, [f"{variant} has no published weights"]
    looked: list[str] = []
    directories: list[Path] = []
    if weights is not None:
        weights = Path(weights)
        if weights.is_file():
            if main:
                return weights, [str(weights)]
            directories.append(weights.parent)
        elif weights.is_dir():
            directories.append(weights)
        else:
            looked.append(f"{weights} (does not exist)")
    if os.environ.get(WEIGHTS_ENV):
        directories.append(Path(os.environ[WEIGHTS_ENV]))
    for directory in directories:
        for candidate in _candidates_in_dir(directory, wf):
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate, looked
        looked.append(f"Hugging Face cache at {directory}")
        if (found := _from_hf_cache(wf, directory)) is not None:
            return found, looked
    from huggingface_hub import constants

    looked.append(f"Hugging Face cache at {constants.HF_HUB_CACHE} ({wf.repo_id}/{wf.filename})")
    found = _from_hf_cache(wf, None)
    return found, looked


def resolve_weights(variants: list[str], weights: str | Path | None, allow_random_init: bool) -> WeightsRecord:
    """Find every file a model needs (`variants[0]` is the model itself), or decide on random init.

    Raises:
        WeightsNotFoundError: a file is missing and `allow_random_init` is False.
    """
    files: dict[str, str] = {}
    missing: list[str] = []
    for i, variant in enumerate(variants):
        path, looked = find_weight_file(variant, weights, main=(i == 0))
        if path is None:
            wf = weight_file(variant)
            what = f"{wf.filename} from {wf.repo_id}" if wf else "no published weights exist"
            missing.append(f"{variant} ({what}); looked in: {'; '.join(looked)}")
        else:
            files[variant] = str(path)
    if missing:
        if allow_random_init:
            return WeightsRecord(random_init=True)
        hint = ("put the files in a --weights directory or $AXION_RAY_WEIGHTS, pre-fill the Hugging Face cache "
                "(`huggingface-cli download REPO FILE` on a connected machine), pass a trained checkpoint, "
                "or use --allow-random-init for a smoke run")
        raise WeightsNotFoundError(f"pretrained weights not found: {' | '.join(missing)}. Fix: {hint}")
    return WeightsRecord(random_init=False, files=files, sha256={v: sha256_file(p) for v, p in files.items()})


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from a `.pt` file (safe loading: `weights_only=True`), unwrapped from common containers."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsNotFoundError(f"weights file {path} does not exist") from None
    except Exception as exc:  # torch raises several types for a corrupt or unsafe file
        raise CheckpointError(f"{path} cannot be loaded as PyTorch weights ({type(exc).__name__}: {exc})") from exc
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_fitting_state(model, state: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """`model.load_state_dict(state, strict=False)` that reports tensors whose shapes differ instead of
    raising on them: (missing, unexpected, mismatched), the mismatched named with both shapes.

    A checkpoint written by another version of a model is a user's problem to be told about clearly,
    by `build_stage` and by a resumed training run alike.
    """
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    described = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
    return [k for k in missing if k not in mismatched], list(unexpected), described


@dataclass
class Checkpoint:
    """An Axion-Ray training checkpoint (docs/ARCHITECTURE.md §4) and where it came from."""

    path: str
    sha256: str
    state_dict: dict[str, Any]
    config: dict[str, Any]
    meta: dict[str, Any]


@dataclass(frozen=True)
class ForeignCheckpoint:
    """A checkpoint layout of a system we replace, recognised by its top-level tensor names, with what
    each part is and why it cannot be loaded: one clear line instead of a list of missing keys."""

    name: str
    parts: dict[str, str]          # top-level prefix → what it is
    advice: str


#: Axion-Sat's Stage 2 (`Stage2ModelWithMetadata` of their scripts/train_stage2.py, also after their
#: fp16 export): a PrithviRefiner (Prithvi encoder + LoRA, input projection, ConvNeXt head) behind a
#: sinusoidal-month/biome-table embedding fused into the input by a 1x1 convolution. Our Stage 2 is a
#: different network (FiLM-conditioned refiner, models/stage2.py). Their encoder is terratorch's Prithvi
#: like ours, but the 600M variant (not one of our presets), under their LoRA wrapping, feeding a head we
#: do not have: deliberately not matched (their forward reshapes 1 + h·w tokens, class token included,
#: into a grid; see the note in docs/AXION_SAT.md).
FOREIGN_CHECKPOINTS = (
    ForeignCheckpoint(
        "Axion-Sat's Stage 2 model (Stage2ModelWithMetadata)",
        {"prithvi_refiner.prithvi": "their Prithvi encoder with LoRA adapters",
         "prithvi_refiner.input_proj": "their input projection",
         "prithvi_refiner.refinement_head": "their ConvNeXt refinement head",
         "metadata_embed": "their sinusoidal-month + biome-table embedding",
         "input_fusion": "their 8→4 channel input fusion"},
        "train axion-ray's Stage 2 on your tiles instead (`axion-ray import-npz`, then `axion-ray train "
        "stage2`; docs/AXION_SAT.md)"),
)


def recognise_foreign(path: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Raise `CheckpointError` naming what cannot be matched when `state` is a known foreign layout."""
    for foreign in FOREIGN_CHECKPOINTS:
        counts = {prefix: sum(1 for k in state if k == prefix or k.startswith(prefix + "."))
                  for prefix in foreign.parts}
        if sum(1 for c in counts.values() if c) < 2:
            continue
        fp16 = " (fp16 export)" if (meta.get("quantization_info") or {}).get("dtype") == "fp16" else ""
        found = "; ".join(f"{prefix}.* ({n} tensors: {foreign.parts[prefix]})"
                          for prefix, n in counts.items() if n)
        raise CheckpointError(f"checkpoint {path} is {foreign.name}{fp16}, a different network from axion-ray's, "
                              f"so it cannot be loaded — {found}; {foreign.advice}")


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """`torch.save` to `path` atomically: a reader (or a killed run) never sees half a file."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, *, digest: bool = True) -> Checkpoint:
    """Load a checkpoint `.pt` with `weights_only=True` and record its sha256 (unless `digest=False`:
    a training run resuming from its own checkpoint has no provenance to write).

    Raises:
        WeightsNotFoundError: the file does not exist.
        CheckpointError: it is not a checkpoint dict with `model_state_dict`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} has no model_state_dict; is it an Axion-Ray checkpoint?")
    meta = {k: v for k, v in obj.items() if k not in ("model_state_dict", "config")}
    recognise_foreign(path, obj["model_state_dict"], meta)
    return Checkpoint(str(path), sha256_file(path) if digest else "", obj["model_state_dict"],
                      dict(obj.get("config") or {}), meta)
