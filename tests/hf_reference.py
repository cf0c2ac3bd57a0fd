"""Helpers shared by the tests that compare plmjax with HF transformers (PyTorch) models."""

import torch


def perturbed(model, seed: int):
    """Every weight moved off its initial value, so a swapped or transposed mapping cannot pass; eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def state_dict(model) -> dict:
    """The model's tensors as numpy copies."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def maxdiff(ours, theirs) -> float:
    """max |ours - theirs| of two arrays (or a torch tensor) of the same shape."""
    import numpy as np

    theirs = theirs.detach().numpy() if torch.is_tensor(theirs) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max())


def shapes(tree) -> dict:
    """Parameter path -> shape of a (boxed or plain) parameter tree."""
    import flax

    from plmjax.convert import hf

    return {k: tuple(v.shape) for k, v in hf.flatten(flax.core.meta.unbox(tree)).items()}
