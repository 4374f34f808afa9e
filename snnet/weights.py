"""Weights on disk: safetensors (never executes code), content hashes, clear errors for bad files."""
import hashlib
from pathlib import Path

import torch
from torch import nn

from snnet.errors import SnnetError


def save_weights(model: nn.Module, path: Path, dtype: torch.dtype | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", dtype or t.dtype).contiguous() for name, t in model.state_dict().items()}
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary))
    temporary.replace(path)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SnnetError(f"weights file {path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise SnnetError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]})") from None


def check_fit(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], problem: str) -> None:
    """One clear error, starting with `problem`, unless `tensors` has exactly the names and shapes expected."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise SnnetError(f"{problem}: {len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {example!r})")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise SnnetError(f"{problem}: {name} has shape {tuple(tensor.shape)}, the model needs "
                             f"{tuple(expected[name].shape)}")


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a state dict saved by `save_weights` into `model`, in the model's own dtype."""
    tensors = read_weights(path)
    expected = model.state_dict()
    check_fit(tensors, expected, f"{path} does not fit this model")
    model.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()})
    return model


def weights_hash(model: nn.Module) -> str:
    """A content hash of a model's weights: equal weights, equal hash, wherever they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # flattened first: a 0-dim tensor (BatchNorm's step count) cannot be viewed as bytes
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]
