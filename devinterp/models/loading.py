"""Loading a checkpoint's state dict into a freshly built model, with errors that say what does not fit."""

from __future__ import annotations

from torch import Tensor, nn


def load_checked(model: nn.Module, state_dict: dict[str, Tensor]) -> nn.Module:
    """Load ``state_dict`` (cast to float32) into ``model`` and return it.

    Raises ValueError naming up to five missing or unexpected keys, or the first parameter whose
    shape differs, instead of torch's long RuntimeError.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f"state dict does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"parameter {k}: shape {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} expected")
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model
