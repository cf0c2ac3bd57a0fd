"""`plmjax convert`: a released checkpoint -> a converted checkpoint directory, and back to HF.

Every source is first read as an HF-style (config dict, state dict) pair — HF directories as they
are, TF1 BERT and T5X by renaming (`tf1`, `t5x`) — so one set of family rules converts them all.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np

from plmjax.config import Config, ModelConfig, ObjectiveConfig, apply_overrides
from plmjax.convert import directory, hf, t5x, tf1, vocab

# Vocabulary files copied over as they are: a SentencePiece model, read by plmjax.data.vocabularies.
VERBATIM = ("spiece.model",)

# The pretraining objective a converted model of each architecture trains with, unless its family's
# HEAD_OBJECTIVES names another for its head (ALBERT's sentence-order prediction; ELECTRA's discriminator on
# replaced-token detection, training from it starting a fresh generator).
OBJECTIVES = {"encoder": "mlm", "encoder_decoder": "span_corruption", "decoder": "causal_lm"}


def read_hf(source: str | pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, state dict) of an HF model directory."""
    source = pathlib.Path(source)
    if not (source / "config.json").is_file():
        raise ValueError(f"{str(source)!r} is not an HF model directory (no config.json)")
    return json.loads((source / "config.json").read_text()), hf.read_state_dict(source)


READERS = {"hf": read_hf, "tf1": tf1.read, "t5x": t5x.read}


def import_release(source: str, out: str, kind: str = "hf", overrides: list[str] | tuple[str, ...] = (),
                   with_tokenizer: bool = True) -> Config:
    """Convert the release at `source` (a `READERS` kind) into the directory `out`; returns its Config.

    overrides: `section.field=value` for the plmjax Config (e.g. model.scan_layers=true for a
    scanned layout, mesh.model=2); the architecture itself comes from the release.
    """
    if kind not in READERS:
        raise ValueError(f"unknown source kind {kind!r}; supported: {', '.join(READERS)}")
    hf_config, state_dict = READERS[kind](source)
    source_dir = source if os.path.isdir(source) else os.path.dirname(source)
    tokenizer = vocab.release_tokenizer(source_dir) if with_tokenizer else None
    model_type, head = hf_config["model_type"], hf.release_head(hf_config, state_dict)
    config = apply_overrides(base_config(hf.config_from_hf(hf_config), source, head, model_type), overrides)
    params = hf.params_from_hf(model_type, state_dict, config.model, head)
    if head is not None:  # hf_config.json names the head the directory holds
        hf_config = {**hf_config, "architectures": [hf.architecture(model_type, head)]}
    directory.save(out, config, params, tokenizer, hf_config)
    for name in VERBATIM if with_tokenizer else ():
        if os.path.isfile(os.path.join(source_dir, name)):
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(out, name))
    return config


def base_config(model: ModelConfig, source: str, head: str | None = None, model_type: str | None = None) -> Config:
    """A Config around a release's model: its family's objective (MLM without NSP for a masked_lm head; see
    OBJECTIVES), and the sequence length the release states (sentence-transformers' max_seq_length) or plmjax's
    default, within the position table."""
    head_objectives = getattr(hf.family(model_type), "HEAD_OBJECTIVES", {}) if model_type else {}
    config = Config(model=model, objective=ObjectiveConfig(kind=head_objectives.get(head, OBJECTIVES[model.arch])))
    config.objective.mlm.nsp = head != "masked_lm"
    st_config = pathlib.Path(source) / "sentence_bert_config.json"
    length = json.loads(st_config.read_text()).get("max_seq_length") if st_config.is_file() else None
    length = int(length or config.data.seq_length)
    if model.position_kind == "learned":
        length = min(length, model.max_length - model.position_offset)
    config.data.seq_length = length
    return config


def export_hf(source: str, out: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """Write a converted checkpoint or a training workdir as an HF directory (config.json,
    model.safetensors, tokenizer.json); returns the HF model_type. Tied copies are left out, as
    transformers' save_pretrained leaves them out.

    An ELECTRA training run (its model task ReplacedTokenDetection) holds two models: its discriminator is
    written to `out` (ElectraForPreTraining), its generator to `out`/generator (ElectraForMaskedLM), each
    with its own copy of the embeddings they share. A DeBERTa v3 run's discriminator is written as a
    DebertaV2Model (HF has no class for its detection head, which is left out) with its embedding deltas folded
    in, its generator as a DebertaV2ForMaskedLM."""
    config = directory.read_config(source, overrides)
    if _is_replaced_token_detection_run(source, config):
        return _export_electra_run(source, out, config)
    cfg = config.model
    base = directory.read_hf_config(source) or {}
    model_type = base.get("model_type") or hf.model_type_for(cfg)
    head = directory.head(source)
    params, _ = directory.restore_params(source, directory.abstract_params(cfg, head),
                                         fresh=lambda: directory.fresh_params(config, head))
    write_hf(out, *hf_model(model_type, cfg, head, params, base), _vocab_path(source, config))
    return model_type


def hf_model(model_type: str, cfg: ModelConfig, head: str | None, params,
             base: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict: `base` updated with `cfg`'s, state dict of the keys save_pretrained writes) of one model;
    raises what HF cannot express before anything is written."""
    keys = hf.rule_keys(model_type, cfg, head)
    state_dict = {k: v for k, v in hf.params_to_hf(model_type, params, cfg, head).items() if k in keys}
    return {**(base or {}), **hf.config_to_hf(model_type, cfg, head)}, state_dict


def write_hf(out: str, hf_config: dict, state_dict: dict[str, np.ndarray], vocab_path: str | None = None) -> None:
    """One HF model directory: config.json, model.safetensors and a copy of the tokenizer.json at `vocab_path`
    when there is one."""
    import safetensors.numpy

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    safetensors.numpy.save_file(state_dict, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    if vocab_path and os.path.exists(vocab_path):
        shutil.copyfile(vocab_path, os.path.join(out, directory.TOKENIZER))


def _vocab_path(source: str, config: Config) -> str:
    return config.data.vocab or os.path.join(source, directory.TOKENIZER)


# ---------------------------------------------------------------- ELECTRA training runs

GENERATOR = "generator"  # the subdirectory an ELECTRA run's generator is exported to


def _is_replaced_token_detection_run(source: str, config: Config) -> bool:
    """A training workdir whose model task trains ELECTRA's joint discriminator + generator."""
    if directory.trains_a_head(source, config):
        return False
    from plmjax.models.electra import ReplacedTokenDetection
    from plmjax.models.task import make_model_task

    return isinstance(make_model_task(config).module, ReplacedTokenDetection)


def _export_electra_run(source: str, out: str, config: Config) -> str:
    from plmjax.models import electra

    params, _ = directory.restore_task_params(source, config)
    discriminator, generator = electra.split_generator(params)
    generator_cfg = electra.generator_config(config.model, config.objective.replaced_token_detection)
    model_type = "deberta-v2" if hf.model_type_for(config.model) == "deberta-v2" else "electra"
    head = {"electra": "replaced_token_detection", "deberta-v2": "encoder"}[model_type]
    if head == "encoder":
        discriminator = {"encoder": discriminator["encoder"]}
    models = [hf_model(model_type, config.model, head, discriminator),
              hf_model(model_type, generator_cfg, "masked_lm", generator)]  # both checked before either is written
    for path, model in zip((out, os.path.join(out, GENERATOR)), models):
        write_hf(path, *model, _vocab_path(source, config))
    return model_type
