"""A converted checkpoint directory, and loading parameters from it or from a training workdir.

  DIR/config.json      the plmjax Config (its model section from the release's config)
  DIR/tokenizer.json   the release's vocabulary as a plmjax Tokenizer (when the release ships one)
  DIR/spiece.model     a T5 release's SentencePiece model, copied as is (read when there is no tokenizer.json)
  DIR/hf_config.json   the release's HF-style config: picks the head, and is the base of an export
  DIR/params/          an orbax checkpoint of the parameter tree alone (float32, unsharded on disk)

config.json and tokenizer.json have the names a training workdir uses, so `eval`, `decode`, `embed`
and `train --init_from` take either kind of directory; a workdir's parameters come from its latest
checkpoint. Restoring checks every name and shape first and places arrays straight into the
shardings the caller asks for, so a converted checkpoint loads on any mesh, or fails whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.config import Config, ConfigError, apply_overrides, from_dict, to_dict
from plmjax.data import pipeline
from plmjax.data.tokenizer import Tokenizer
from plmjax.layers.embeddings import fold_deltas

PARAMS, CONFIG, TOKENIZER, HF_CONFIG = "params", "config.json", "tokenizer.json", "hf_config.json"


def save(out: str, config: Config, params: Mapping, tokenizer: Tokenizer | None = None,
         hf_config: Mapping[str, Any] | None = None) -> None:
    """Write a converted checkpoint directory; `out` must not hold one already."""
    import orbax.checkpoint as ocp

    out = os.path.abspath(out)
    if os.path.exists(os.path.join(out, PARAMS)):
        raise ValueError(f"{out!r} already holds a converted checkpoint; choose a new --out")
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, CONFIG), to_dict(config))
    if hf_config is not None:
        _write_json(os.path.join(out, HF_CONFIG), dict(hf_config))
    if tokenizer is not None:
        tokenizer.save(os.path.join(out, TOKENIZER))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), dict(params))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(out, PARAMS), params)


def _write_json(path: str, data: Mapping) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def is_converted(directory: str) -> bool:
    return os.path.isdir(os.path.join(directory, PARAMS))


def read_config(directory: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The Config of a converted checkpoint or a training workdir, with `key=value` overrides."""
    path = os.path.join(directory, CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f"{directory!r} is not a plmjax run directory or converted checkpoint (no {CONFIG}); "
                          "train into it or `plmjax convert` into it first")
    with open(path) as f:
        return apply_overrides(from_dict(json.load(f)), overrides)


def read_hf_config(directory: str) -> dict | None:
    path = os.path.join(directory, HF_CONFIG)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_tokenizer(directory: str, config: Config):
    """The vocabulary a directory's model reads: data.vocab if set (a tokenizer.json, or a SentencePiece
    .model read by plmjax.data.vocabularies), else DIR/tokenizer.json or DIR/spiece.model."""
    path = pipeline.vocabulary_path(config, directory)
    if path is None or not os.path.exists(path):
        raise ConfigError(f"{directory!r} has no vocabulary ({path or ' or '.join(pipeline.VOCAB_FILES)} "
                          "missing); convert with one, or name one with --set data.vocab=PATH")
    return pipeline.read_vocabulary(path)


def init_config(config: Config, source: str) -> Config:
    """`config` set to start training from the converted checkpoint `source`: its params and vocabulary."""
    source = os.path.abspath(source)
    overrides = [f"train.init_from={source}"]
    vocab = pipeline.vocabulary_path(config, source)
    if not config.data.vocab and vocab:
        overrides.append(f"data.vocab={vocab}")
    return apply_overrides(config, overrides)


def head(directory: str) -> str | None:
    """The task head a checkpoint carries: a converted one's from its HF config, a training run's from the model
    its model task trains (an encoder's MLM-only, classification, tagging or QA model); None: the family's model."""
    from plmjax.convert import hf

    hf_config = read_hf_config(directory)
    if hf_config is not None:
        return hf.head_from_hf(hf_config) or hf.default_head(hf_config["model_type"])
    if is_converted(directory) or not os.path.exists(os.path.join(directory, CONFIG)):
        return None
    config = read_config(directory)
    if config.model.arch != "encoder":
        return None
    from plmjax.models.encoder import HEADS
    from plmjax.models.task import make_model_task

    return {module: name for name, module in HEADS.items()}.get(type(make_model_task(config).module))


def _init_params(cfg, head_name: str | None):
    """key -> the parameters of `hf.module_for(cfg, head_name)` initialised from that key."""
    import flax.linen as nn

    from plmjax.convert import hf

    module = hf.module_for(cfg, head_name)(cfg)
    ids = jnp.zeros((1, 1), jnp.int32)
    inputs = (ids, ids) if cfg.arch == "encoder_decoder" else (ids,)
    return lambda key: nn.meta.unbox(module.init(key, *inputs)["params"])


def abstract_params(cfg, head_name: str | None = None) -> Any:
    """ShapeDtypeStructs of the parameters of `hf.module_for(cfg, head_name)`; nothing is allocated."""
    return jax.eval_shape(_init_params(cfg, head_name), jax.random.key(0))


def fresh_params(config: Config, head_name: str | None = None) -> Any:
    """The fresh initialisation (train.seed) of `hf.module_for(config.model, head_name)`'s parameters."""
    return jax.jit(_init_params(config.model, head_name))(jax.random.key(config.train.seed))


def restore_params(directory: str, abstract: Any, fresh: Callable[[], Any] | None = None) -> tuple[Any, int]:
    """(params, step) from a converted checkpoint (step 0) or a workdir's latest checkpoint.

    `abstract`: ShapeDtypeStructs, with shardings to restore straight into them (else numpy arrays).
    Missing, unexpected or mis-shaped parameters raise one CheckpointMismatchError naming them all.
    A run that trained only some parameters (train.trainable) stores only those: they are put on the base
    it was trained on (train.init_from, mapped onto `fresh()`, the model's fresh initialisation), checked first.
    """
    import orbax.checkpoint as ocp

    from plmjax.training.checkpoints import Checkpointer, check_compatible

    if is_converted(directory):
        path = os.path.join(os.path.abspath(directory), PARAMS)
        with ocp.StandardCheckpointer() as checkpointer:
            check_compatible(checkpointer.metadata(path).item_metadata.tree, abstract)
            return checkpointer.restore(path, abstract), 0
    checkpoints = os.path.join(directory, "checkpoints")
    missing = ConfigError(f"no checkpoint in {directory!r}: neither a converted checkpoint ({PARAMS}/) "
                          "nor a training run with checkpoints/")
    if not os.path.isdir(checkpoints):
        raise missing
    with Checkpointer(checkpoints) as checkpointer:
        step = checkpointer.latest_step()
        if step is None:
            raise missing
        base = checkpointer.restore_extra(step).get("base")
        if base is None:
            return checkpointer.restore_params(step, abstract), step
        return _on_base(read_config(directory), checkpointer, step, base, abstract, fresh), step


def _on_base(config: Config, checkpointer, step: int, recorded: dict, abstract: Any, fresh) -> Any:
    """A trainable-only checkpoint's parameters on the base they were trained on (see restore_params)."""
    from plmjax.training import trainable, transfer

    if fresh is None:
        raise ConfigError(f"checkpoint step {step} in {checkpointer.directory} holds only the trainable parameters; "
                          "this command cannot rebuild their base")
    paths = trainable.trainable_paths(config.train.trainable, abstract)
    params = transfer.start_params(config, abstract, fresh)
    transfer.check_base(recorded, transfer.base_record(config, params, paths),
                        f"checkpoint step {step} in {checkpointer.directory}")
    return trainable.merge(params, checkpointer.restore_params(step, trainable.select(abstract, paths)))


@dataclasses.dataclass
class Loaded:
    """A model ready to run on one host: config, head, params (numpy), vocabulary, checkpoint step."""

    config: Config
    head: str | None
    params: Any
    tokenizer: Any  # a Tokenizer, or a seqio vocabulary for a SentencePiece model
    step: int

    def module(self):
        from plmjax.convert import hf

        return hf.module_for(self.config.model, self.head)(self.config.model)


def trains_a_head(directory: str, config: Config) -> bool:
    """Whether the directory's parameters are those of `hf.module_for(config.model, head(directory))`: true but for
    a training run whose model task trains another model (ELECTRA's generator and discriminator, a plug-in's)."""
    return is_converted(directory) or config.model.arch != "encoder" or head(directory) is not None


def task_init(config: Config) -> Callable[[Any], Any]:
    """key -> the parameters of the model the config's model task trains, initialised on a one-row dummy batch of
    its objective's features (for runs whose model is no HF head)."""
    import flax.linen as nn

    from plmjax.models.task import make_model_task
    from plmjax.objectives import registry

    task = make_model_task(config)
    batch = {name: np.zeros((1, *shape), dtype)
             for name, (shape, dtype) in registry.for_config(config).features(config).items()}
    return lambda key: nn.meta.unbox(task.init(key, batch)["params"])


def restore_task_params(directory: str, config: Config) -> tuple[Any, int]:
    """`restore_params` of a run whose parameters are its model task's whole model (see `trains_a_head`)."""
    init = task_init(config)
    return restore_params(directory, jax.eval_shape(init, jax.random.key(0)),
                          fresh=lambda: jax.jit(init)(jax.random.key(config.train.seed)))


def load(directory: str, overrides: list[str] | tuple[str, ...] = ()) -> Loaded:
    """Everything `decode` and `embed` need from a converted checkpoint or a training workdir (for a run whose model
    is no HF head, `params` are its model task's and `head` is None)."""
    config = read_config(directory, overrides)
    tokenizer = load_tokenizer(directory, config)
    head_name = head(directory)
    if trains_a_head(directory, config):
        params, step = restore_params(directory, abstract_params(config.model, head_name),
                                      fresh=lambda: fresh_params(config, head_name))
    else:  # the task's whole model; what models started from it read by path has the embedding deltas folded in
        params, step = restore_task_params(directory, config)
        params = fold_deltas(params)
    return Loaded(config, head_name, params, tokenizer, step)

