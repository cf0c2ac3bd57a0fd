"""What the DeBERTa parity tests share: inputs with padding and two segments, HF's and plmjax's outputs for a head,
and the comparison on real tokens."""

import json

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from hf_reference import maxdiff, perturbed
from pydoc_data.topics import topics

from plmjax.cli import main
from plmjax.convert import directory, hf
from plmjax.data.tokenizer import Tokenizer
from plmjax.models import encoder

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


def assert_converts_both_ways(tmp_path, model_class, config) -> dict:
    """A `model_class` (an HF *ForMaskedLM) of `config` saved with a tokenizer.json, through `plmjax convert --from hf`
    (a disentangled masked-LM model computing HF's logits) and `--to hf` (the same tensors, reloaded by transformers
    computing the same logits); returns the written config.json."""
    tokenizer = Tokenizer.train(list(topics.values())[:20], "wordpiece", 300)
    model = perturbed(model_class(config(tokenizer.vocab_size)), 3)
    hf_dir, out, back = tmp_path / "release", str(tmp_path / "converted"), tmp_path / "back"
    model.save_pretrained(hf_dir)
    tokenizer.save(hf_dir / "tokenizer.json")
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", out]) == 0
    loaded = directory.load(out)
    assert loaded.head == "masked_lm" and type(loaded.module()) is encoder.EncoderForMaskedLM
    assert loaded.config.objective.kind == "mlm" and loaded.config.model.attention_kind == "disentangled"
    ids, segments, mask = inputs(vocab=tokenizer.vocab_size)
    ours = loaded.module().apply({"params": loaded.params}, ids, segments, mask)["mlm_logits"]
    theirs = hf_outputs(model, ids, segments, mask).logits
    assert maxdiff(np.asarray(ours)[mask.astype(bool)], theirs.numpy()[mask.astype(bool)]) <= TOL

    assert main(["convert", "--to", "hf", out, "--out", str(back)]) == 0
    original, exported = hf.read_state_dict(hf_dir), hf.read_state_dict(back)
    assert sorted(exported) == sorted(original)
    for k in original:
        np.testing.assert_array_equal(exported[k], original[k], err_msg=k)
    written = json.loads((back / "config.json").read_text())
    assert written["architectures"] == [model_class.__name__]
    again = transformers.AutoModelForMaskedLM.from_pretrained(back).eval()
    assert type(again) is model_class
    np.testing.assert_array_equal(hf_outputs(again, ids, segments, mask).logits.numpy(), theirs.numpy())
    return written
