"""What the DeBERTa parity tests share: inputs with padding and two segments, HF's and plmjax's outputs for a head,
and the comparison on real tokens."""

import jax.numpy as jnp
import numpy as np
import torch
from hf_reference import maxdiff

from plmjax.convert import hf

TOL = 1e-4


def inputs(length: int = 30, vocab: int = 99):
    rng = np.random.RandomState(0)
    ids = rng.randint(1, vocab, (2, length))
    mask = np.ones_like(ids)
    mask[1, 20:], ids[1, 20:] = 0, 0
    segments = np.zeros_like(ids)
    segments[:, 12:] = 1
    return ids, segments, mask


def hf_outputs(model, ids, segments, mask):
    kwargs = dict(attention_mask=torch.tensor(mask), output_hidden_states=True)
    if model.config.type_vocab_size:
        kwargs["token_type_ids"] = torch.tensor(segments)
    with torch.no_grad():
        return model(torch.tensor(ids), **kwargs)


def plmjax_outputs(cfg, head, params, ids, segments, mask):
    module = hf.module_for(cfg, head)(cfg)
    return module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(segments), jnp.asarray(mask))


def compared(head, ours, theirs):
    """(name, ours, HF's) pairs to compare for a head."""
    if head == "masked_lm":
        return [("hidden", ours["hidden"], theirs.hidden_states[-1]), ("logits", ours["mlm_logits"], theirs.logits)]
    if head == "encoder":
        return [("hidden", ours["hidden"], theirs.last_hidden_state)]
    if head == "span_extraction":
        return [("start", ours["start_logits"], theirs.start_logits), ("end", ours["end_logits"], theirs.end_logits)]
    return [("logits", ours, theirs.logits)]


def assert_parity(cfg, head, params, model, ids, segments, mask, label):
    ours, theirs = plmjax_outputs(cfg, head, params, ids, segments, mask), hf_outputs(model, ids, segments, mask)
    real = mask.astype(bool)
    for what, a, b in compared(head, ours, theirs):
        a, b = np.asarray(a), b.numpy()
        if a.ndim >= 2 and a.shape[:2] == real.shape:  # per-token outputs: the real tokens
            a, b = a[real], b[real]
        assert maxdiff(a, b) <= TOL, (label, head, what, maxdiff(a, b))
