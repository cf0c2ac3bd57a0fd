"""Typed run configuration: dataclasses, Python config files, and `--set a.b=c` overrides.

A config file is a Python file defining `get_config() -> Config`. Family helpers (`bert`, `t5`,
`gpt`) hold each model family's architectural defaults so presets stay a few lines long.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import typing
from typing import Any


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class _Section:
    """A config section whose fields are the only attributes one may set: a misspelt or moved key in a config
    file (`config.objective.nsp = False`, now objective.mlm.nsp) is an error, not an attribute nobody reads."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in {f.name for f in dataclasses.fields(self)}:
            moved = ['.'.join(new) for (_, key), new in MOVED.items() if key == name]
            hint = f" (it moved to {', '.join(moved)})" if moved else ""
            raise ConfigError(f"{type(self).__name__} has no field {name!r}{hint}")
        object.__setattr__(self, name, value)


@dataclasses.dataclass
class ModelConfig(_Section):
    """Architecture of the shared Transformer core; variants are switches, not new files."""

    arch: str = "encoder"  # encoder | encoder_decoder | decoder
    vocab_size: int = 30522
    hidden_size: int = 768
    embedding_size: int = 0  # 0: same as hidden_size; smaller: factorized embeddings
    num_layers: int = 12
    num_decoder_layers: int = 0  # 0: same as num_layers
    num_heads: int = 12
    head_dim: int = 0  # 0: hidden_size // num_heads
    mlp_dim: int = 3072
    activation: str = "gelu"  # a name in layers.activations.ACTIVATIONS
    gated_ffn: bool = False  # GLU-style FFN: act(x W_0) * (x W_1)
    ffn_kind: str = "dense"  # a name in layers.ffn.FFN_KINDS
    num_experts: int = 8  # ffn_kind=moe: experts per MoE layer
    moe_every: int = 1  # ffn_kind=moe: layers N-1, 2N-1, ... are MoE, the others dense
    router_kind: str = "tokens_choose"  # tokens_choose (top-k: 1 Switch, 2 GShard) | experts_choose
    router_top_k: int = 1  # experts per token (tokens_choose); capacity multiplier for both kinds
    train_capacity_factor: float = 1.25  # expert capacity = ceil(factor * top_k * tokens / experts)
    eval_capacity_factor: float = 2.0
    router_jitter: float = 0.0  # training: router inputs times uniform(1 - jitter, 1 + jitter)
    aux_loss_coef: float = 0.01  # load-balancing loss weight (mean over MoE layers)
    router_z_loss_coef: float = 0.001  # router z-loss weight (mean over MoE layers)
    attention_kind: str = "softmax"  # a name in layers.attention.ATTENTION_KERNELS (how scores and context are computed)
    layer_carry: str = ""  # a name in layers.hooks.LAYER_CARRIES: state each layer passes to the next
    projection_kind: str = "dense"  # a name in layers.linear.PROJECTION_KINDS (e.g. low-rank deltas)
    residual_adapter: str = ""  # a name in layers.hooks.RESIDUAL_ADAPTERS, applied after attention and FFN
    hidden_hook: str = ""  # a name in layers.hooks.HIDDEN_HOOKS, applied to hidden states between layers
    kv_prefix: str = ""  # a name in layers.hooks.KV_PREFIXES: extra learned keys/values per layer
    norm_kind: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-12
    norm_position: str = "post"  # post (BERT) | pre (T5, GPT-2)
    use_bias: bool = True
    position_kind: str = "learned"  # learned (absolute) | relative (T5 buckets) | none (the kernel's own: disentangled)
    position_input: bool = True  # add the learned positions to the input (false: the table only feeds the mask decoder)
    max_length: int = 512
    position_offset: int = 0  # learned position ids start here (RoBERTa: pad_token_id + 1)
    relative_buckets: int = 32
    relative_max_distance: int = 128
    position_terms: str = "c2p,p2c"  # attention_kind=disentangled: content-to-position and/or position-to-content
    position_buckets: int = 0  # disentangled: log-bucketed relative positions in this many buckets (0: exact)
    max_relative_positions: int = 0  # disentangled: relative distances span +-this (0: max_length)
    share_position_keys: bool = False  # disentangled: position keys/queries use the content key/query projections
    norm_relative_embeddings: bool = False  # disentangled: LayerNorm the relative-position table before use
    conv_kernel_size: int = 0  # >0: a convolution over the stack's input, added to the first layer's output
    conv_groups: int = 1
    conv_activation: str = "tanh"
    mask_decoder_passes: int = 0  # >0: MLM predictions from the last layer rerun with absolute positions as queries
    pooler_activation: str = "tanh"  # the [CLS] pooler's activation (DeBERTa: gelu)
    type_vocab_size: int = 2  # 0: no segment embeddings
    embedding_norm: bool = True  # LayerNorm right after the embeddings (BERT)
    tie_embeddings: bool = True
    scale_attention: bool = True  # divide logits by sqrt(head_dim); T5 folds it into the init
    scale_tied_logits: bool = False  # T5 v1.0: multiply by hidden_size**-0.5 before a tied head
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    ffn_dropout: bool = False  # dropout on the FFN's hidden layer too (T5 has it; BERT and GPT-2 do not)
    shared_layer_groups: int = 0  # 0: every layer its own weights; k: k groups reused in turn
    remat: str = "none"  # none | minimal | full
    scan_layers: bool = False
    dtype: str = "float32"  # compute dtype; parameters stay float32
    init: str = "normal"  # normal: N(0, initializer_range); fan_in: T5's variance scaling
    initializer_range: float = 0.02
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    num_labels: int = 2  # task heads (classification / token classification)

    def __post_init__(self):
        _check_choice("model.arch", self.arch, ("encoder", "encoder_decoder", "decoder"))
        _check_choice("model.norm_kind", self.norm_kind, ("layernorm", "rmsnorm"))
        _check_choice("model.norm_position", self.norm_position, ("pre", "post"))
        _check_choice("model.position_kind", self.position_kind, ("learned", "relative", "none"))
        _check_choice("model.remat", self.remat, ("none", "minimal", "full"))
        _check_choice("model.dtype", self.dtype, ("float32", "bfloat16"))
        _check_choice("model.init", self.init, ("normal", "fan_in"))
        for key in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}={getattr(self, key)} is not a dropout rate: it must be in [0, 1)")
        if self.hidden_size % self.num_heads and not self.head_dim:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by "
                f"model.num_heads={self.num_heads}; set model.head_dim explicitly"
            )
        if self.shared_layer_groups and self.num_layers % self.shared_layer_groups:
            raise ConfigError(
                f"model.num_layers={self.num_layers} must be a multiple of "
                f"model.shared_layer_groups={self.shared_layer_groups}"
            )
        if self.ffn_kind == "moe":
            _check_moe(self)
        _check_deberta_parts(self)

    @property
    def emb_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def relative_terms(self) -> tuple[str, ...]:
        """model.position_terms as names (comma or | separated, as HF's pos_att_type)."""
        return tuple(t.strip() for t in self.position_terms.replace("|", ",").split(",") if t.strip())

    @property
    def kv_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers


@dataclasses.dataclass
class DataConfig(_Section):
    """Where batches come from and their shapes."""

    corpus: str = "pydoc"  # pydoc (embedded, offline) | text_files:GLOB
    mixture: str = ""  # a seqio task or mixture (`plmjax tasks` lists them); empty: batches from corpus
    task_file: str = ""  # a task file of the user's own data (plmjax.data.task_files); `train --task FILE.json` sets it
    vocab: str = ""  # tokenizer.json or SentencePiece .model; empty: train one on the corpus
    # The vocabulary trained when data.vocab is empty: wordpiece | bpe (byte-level; an encoder's has RoBERTa's
    # <s> <pad> </s> <unk> <mask>, pad id 1); "": bpe for decoders, wordpiece otherwise.
    vocab_kind: str = ""
    seq_length: int = 128
    target_length: int = 0  # encoder-decoder targets; 0: derived from the objective
    batch_size: int = 32
    eval_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self):
        _check_choice("data.vocab_kind", self.vocab_kind, ("", "wordpiece", "bpe"))


# Typed options of registered kinds, `SECTION.<kind>.<field>` on the command line: (section, kind) -> dataclass.
# Objectives register theirs under "objective", gradient functions and transforms under "train".
OPTIONS: dict[tuple[str, str], type] = {}
BUILTIN_KINDS = "plmjax.objectives.builtin", "plmjax.training.step"  # modules whose import registers the built-ins


def register_options(section: str, kind: str, options: type) -> None:
    """Give kind `kind` of `section` its own typed keys `section.kind.field` (a dataclass with defaults)."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of {section}.{kind} must be a dataclass, not {options!r}")
    OPTIONS[(section, kind)] = options


def _default_options(section: str) -> dict[str, Any]:
    for module in BUILTIN_KINDS:
        importlib.import_module(module)
    return {kind: cls() for (owner, kind), cls in OPTIONS.items() if owner == section}


class _Options:
    """A section that also holds each registered kind's options, read as `section.<kind>` (e.g. objective.mlm)."""

    def __getattr__(self, name: str):
        options = self.__dict__.get("options") or {}
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no field or registered kind {name!r}")


@dataclasses.dataclass
class ObjectiveConfig(_Options, _Section):
    """What the model trains: `kind` names a registered objective (plmjax.objectives.registry), each of
    which has its own keys `objective.<kind>.*`; `regularizers` add terms to its loss."""

    kind: str = "mlm"
    regularizers: str = ""  # comma-separated names of registered regularizers (objective.<name>.* keys)
    options: dict[str, Any] = dataclasses.field(default_factory=lambda: _default_options("objective"), repr=False)


@dataclasses.dataclass
class OptimizerConfig(_Section):
    """AdamW (or LAMB) with warmup, a decay schedule, weight-decay masking and clipping."""

    kind: str = "adamw"  # adamw | lamb (layer-wise adaptive rates: ALBERT's large-batch optimizer)
    learning_rate: float = 1e-4
    schedule: str = "linear"  # linear | cosine | inverse_sqrt | constant
    warmup_steps: int = 0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    clip_grad_norm: float = 1.0  # 0: no clipping

    def __post_init__(self):
        _check_choice(
            "optimizer.schedule", self.schedule, ("linear", "cosine", "inverse_sqrt", "constant")
        )
        _check_choice("optimizer.kind", self.kind, ("adamw", "lamb"))


@dataclasses.dataclass
class TrainConfig(_Options, _Section):
    """The loop: steps, accumulation, what trains and how its gradient is made, evaluation, checkpoints."""

    num_steps: int = 1000
    grad_accum_steps: int = 1
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_steps: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 3
    init_from: str = ""  # a converted checkpoint directory whose params start a run with no checkpoint yet
    # What trains: "" everything; else comma-separated names in training.trainable.MASKS or regular expressions
    # searched in parameter paths ("encoder/stack/layers_0/mlp/wi/kernel"). Checkpoints then hold only these.
    trainable: str = ""
    gradient: str = "plain"  # a name in training.step.GRADIENTS: how one (micro-)batch's gradient is made
    grad_transform: str = "identity"  # a name in training.step.TRANSFORMS, applied before clipping
    options: dict[str, Any] = dataclasses.field(default_factory=lambda: _default_options("train"), repr=False)


@dataclasses.dataclass
class MeshConfig(_Section):
    """Device mesh shape; -1 takes the devices left over by the other axes."""

    data: int = -1
    expert: int = 1
    model: int = 1


@dataclasses.dataclass
class RuntimeConfig(_Section):
    """How a model executes, not what it computes: exports and converters ignore this section."""

    materialize_layer_grads: bool = True  # store each layer's output gradient once: XLA:CPU speed (layers.gradients)
    # Projections' and tied heads' gradients as matrix products read in place, kernel gradients in the kernel's
    # layout: XLA:CPU speed (layers.linear). False: plain autodiff, for forward mode (jax.jvp, Hessian-vector products).
    kernel_grads_in_layout: bool = True
    dropout_bits: int = 16  # keep masks from 8/16/32-bit random integers; rates round to multiples of 2**-bits

    def __post_init__(self):
        _check_choice("runtime.dropout_bits", self.dropout_bits, (8, 16, 32))


@dataclasses.dataclass
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    # Modules or .py files that register the kinds this config names (plmjax.plugins); saved in config.json
    # so that eval, decode, embed, convert and compile load them again.
    plugins: tuple[str, ...] = ()

    def __post_init__(self):
        for key in ("dropout_rate", "attention_dropout_rate"):
            _check_dropout_rate(f"model.{key}", getattr(self.model, key), self.runtime.dropout_bits)


SECTIONS = ("model", "data", "objective", "optimizer", "train", "mesh", "runtime")


def _check_choice(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, choices))}")


def _check_dropout_rate(key: str, rate: float, bits: int) -> None:
    """A rate that the `bits`-wide keep masks can express (they round it to a multiple of 2**-bits)."""
    if rate and round(rate * 2**bits) == 0:
        raise ConfigError(f"{key}={rate} rounds to 0 with runtime.dropout_bits={bits}; set runtime.dropout_bits=32")


def _check_moe(cfg: ModelConfig) -> None:
    """Mixture-of-experts settings that cannot work together."""
    _check_choice("model.router_kind", cfg.router_kind, ("tokens_choose", "experts_choose"))
    if cfg.num_experts < 1 or cfg.moe_every < 1 or not 1 <= cfg.router_top_k <= cfg.num_experts:
        raise ConfigError(
            f"model.num_experts={cfg.num_experts} and model.moe_every={cfg.moe_every} must be >= 1 and "
            f"model.router_top_k={cfg.router_top_k} between 1 and num_experts"
        )
    if min(cfg.train_capacity_factor, cfg.eval_capacity_factor) <= 0:
        raise ConfigError("model.train_capacity_factor and model.eval_capacity_factor must be > 0")
    if cfg.router_kind == "experts_choose" and cfg.arch != "encoder":
        raise ConfigError(
            "model.router_kind=experts_choose lets a token's routing depend on later tokens, so it only "
            f"suits bidirectional encoders, not model.arch={cfg.arch!r}; use tokens_choose"
        )
    if cfg.scan_layers and cfg.moe_every > 1:
        raise ConfigError("model.scan_layers needs identical layers: use model.moe_every=1 or scan_layers=false")
    if cfg.shared_layer_groups % cfg.moe_every:
        raise ConfigError(
            f"model.shared_layer_groups={cfg.shared_layer_groups} must be a multiple of "
            f"model.moe_every={cfg.moe_every}"
        )


def _check_deberta_parts(cfg: ModelConfig) -> None:
    """The disentangled-attention, convolution and mask-decoder switches that cannot work together."""
    if any(t not in ("c2p", "p2c") for t in cfg.relative_terms):
        raise ConfigError(f"model.position_terms={cfg.position_terms!r} must name c2p and/or p2c")
    if cfg.position_buckets < 0 or cfg.position_buckets == 1 or cfg.max_relative_positions < 0:
        raise ConfigError(f"model.position_buckets={cfg.position_buckets} must be 0 (exact offsets) or >= 2, and "
                          f"model.max_relative_positions={cfg.max_relative_positions} >= 0 (0: max_length)")
    if cfg.conv_kernel_size and (cfg.conv_kernel_size % 2 == 0 or cfg.hidden_size % cfg.conv_groups):
        raise ConfigError(f"model.conv_kernel_size={cfg.conv_kernel_size} must be odd and model.hidden_size a "
                          f"multiple of model.conv_groups={cfg.conv_groups}")
    if cfg.mask_decoder_passes:
        needs = {"model.position_kind=learned": cfg.position_kind == "learned",
                 "model.norm_position=post": cfg.norm_position == "post",
                 "model.embedding_size=0 (or hidden_size)": cfg.emb_dim == cfg.hidden_size,
                 "model.scan_layers=false": not cfg.scan_layers, "no model.layer_carry": not cfg.layer_carry}
        missing = [k for k, ok in needs.items() if not ok]
        if missing:
            raise ConfigError(f"model.mask_decoder_passes={cfg.mask_decoder_passes} adds absolute position embeddings "
                              f"to the last layer's input and reruns that layer; it needs {', '.join(missing)}")


# ---------------------------------------------------------------- family defaults


def bert(**model: Any) -> Config:
    """BERT: post-norm encoder, learned positions, segment embeddings, MLM + NSP."""
    return Config(model=ModelConfig(arch="encoder", **model))


def roberta(**model: Any) -> Config:
    """RoBERTa: BERT's encoder with positions offset by pad + 1, one segment type, trained on MLM alone over
    FULL-SENTENCES rows with dynamic masking, a byte-level BPE vocabulary and AdamW with beta2 0.98, eps 1e-6."""
    family = dict(arch="encoder", vocab_size=50265, pad_token_id=1, position_offset=2, max_length=514,
                  type_vocab_size=1, norm_eps=1e-5)
    family.update(model)
    config = Config(model=ModelConfig(**family), data=DataConfig(vocab_kind="bpe"),
                    optimizer=OptimizerConfig(b2=0.98, eps=1e-6, weight_decay=0.01))
    config.objective.mlm.nsp = False
    config.objective.mlm.full_sentences = True
    return config


def albert(**model: Any) -> Config:
    """ALBERT: factorized embeddings (E=128), every layer sharing one set of weights, tanh-GELU, no dropout (v2),
    trained on n-gram masked LM plus sentence-order prediction with LAMB."""
    family = dict(arch="encoder", vocab_size=30000, embedding_size=128, shared_layer_groups=1,
                  activation="gelu_tanh", dropout_rate=0.0, attention_dropout_rate=0.0)
    family.update(model)
    return Config(model=ModelConfig(**family), objective=ObjectiveConfig(kind="sop"),
                  optimizer=OptimizerConfig(kind="lamb", eps=1e-6))


def electra(**model: Any) -> Config:
    """ELECTRA: a BERT-shaped discriminator (no NSP) trained on replaced-token detection against a small
    masked-LM generator that shares its embeddings (objective.replaced_token_detection.*)."""
    return Config(model=ModelConfig(arch="encoder", **model), objective=ObjectiveConfig(kind="replaced_token_detection"))


def deberta(**model: Any) -> Config:
    """DeBERTa v3: disentangled attention over log-bucketed relative positions (no absolute positions in the input),
    no segment embeddings, GELU pooler, LayerNorm eps 1e-7; trained on replaced-token detection (v3) or, with
    model.mask_decoder_passes=2 and a learned position table, on MLM through the enhanced mask decoder (v1/v2)."""
    family = dict(arch="encoder", vocab_size=128100, attention_kind="disentangled", position_kind="none",
                  position_buckets=256, share_position_keys=True, norm_relative_embeddings=True, type_vocab_size=0,
                  norm_eps=1e-7, pooler_activation="gelu")
    family.update(model)
    config = Config(model=ModelConfig(**family), objective=ObjectiveConfig(kind="replaced_token_detection"))
    config.objective.mlm.nsp = False
    return config


def t5(*, v1_1: bool = False, **model: Any) -> Config:
    """T5 encoder-decoder: pre-RMSNorm, relative buckets, no biases; v1.1 = gated GELU, untied."""
    family = dict(
        arch="encoder_decoder",
        vocab_size=32128,
        norm_kind="rmsnorm",
        norm_eps=1e-6,
        norm_position="pre",
        use_bias=False,
        position_kind="relative",
        type_vocab_size=0,
        embedding_norm=False,
        scale_attention=False,
        activation="gelu_tanh" if v1_1 else "relu",
        gated_ffn=v1_1,
        tie_embeddings=not v1_1,
        scale_tied_logits=not v1_1,
        init="fan_in",
        initializer_range=1.0,
        attention_dropout_rate=0.0,
        ffn_dropout=True,
    )
    family.update(model)
    return Config(
        model=ModelConfig(**family),
        objective=ObjectiveConfig(kind="span_corruption"),
        data=DataConfig(seq_length=128, target_length=0),
    )


def gpt(**model: Any) -> Config:
    """GPT-2: pre-LayerNorm causal decoder, learned positions, tied head, tanh-GELU."""
    family = dict(
        arch="decoder",
        vocab_size=50257,
        norm_eps=1e-5,
        norm_position="pre",
        type_vocab_size=0,
        embedding_norm=False,
        activation="gelu_tanh",
        max_length=1024,
    )
    family.update(model)
    return Config(model=ModelConfig(**family), objective=ObjectiveConfig(kind="causal_lm"))


# ---------------------------------------------------------------- files and overrides


def load_config(path: str | pathlib.Path, overrides: list[str] | tuple[str, ...] = (),
                plugins: list[str] | tuple[str, ...] = ()) -> Config:
    """Run a config file's `get_config()`, load its and `plugins`' modules, and apply `key=value` overrides."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"plmjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, Config):
        raise ConfigError(f"get_config() in {str(path)!r} returned {type(config).__name__}, not Config")
    return apply_overrides(config, overrides, plugins)


def valid_keys(config: Config | None = None) -> list[str]:
    """Every dotted key an override may name: `section.field` and `section.<kind>.field` of registered kinds."""
    config = config or Config()
    keys = []
    for name in SECTIONS:
        section = getattr(config, name)
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(section) if f.name != "options"]
        for kind, options in getattr(section, "options", {}).items():
            keys += [f"{name}.{kind}.{f.name}" for f in dataclasses.fields(options)]
    return keys


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...],
                    plugins: list[str] | tuple[str, ...] = ()) -> Config:
    """Return a copy of `config` with `plugins` loaded and recorded, each `section[.kind].field=value` applied,
    and everything re-validated."""
    data = to_dict(config)
    data["plugins"] = [*data["plugins"], *plugins]
    config = from_dict(data)  # loads the plugins first, so their kinds' keys exist
    data = to_dict(config)
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        target, cls, name = _locate(config, data, key)
        target[name] = _parse_value(key, raw.strip(), typing.get_type_hints(cls)[name])
    return from_dict(data, strict=True)


def _locate(config: Config, data: dict, key: str) -> tuple[dict, type, str]:
    """(the dict in `data` = to_dict(config) that holds `key`'s value, the dataclass it belongs to, the field)."""
    parts = key.split(".")
    section = getattr(config, parts[0], None) if parts[0] in SECTIONS else None
    options = getattr(section, "options", {}) if section is not None else {}
    if len(parts) == 2 and section is not None:
        holder, name = section, parts[1]
    elif len(parts) == 3 and parts[1] in options:
        holder, name = options[parts[1]], parts[2]
    else:
        holder, name = None, ""
    if holder is None or name == "options" or name not in {f.name for f in dataclasses.fields(holder)}:
        raise ConfigError(f"unknown config key {key!r}; valid keys are:\n  " + "\n  ".join(valid_keys(config)))
    target = data[parts[0]] if len(parts) == 2 else data[parts[0]][parts[1]]
    return target, type(holder), name


def _parse_value(key: str, raw: str, field_type: type) -> Any:
    if field_type is bool:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} expects a bool (true/false), got {raw!r}")
    if field_type in (int, float):
        try:
            return field_type(raw)
        except ValueError:
            raise ConfigError(f"{key} expects {field_type.__name__}, got {raw!r}") from None
    return raw


def to_dict(config: Config) -> dict[str, Any]:
    """Plain JSON-ready data: each section's fields, its registered kinds' options as sub-dicts, the plugins."""
    data: dict[str, Any] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        data[name] = {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name != "options"}
        for kind, options in getattr(section, "options", {}).items():
            data[name][kind] = dataclasses.asdict(options)
    data["plugins"] = list(config.plugins)
    return data


# Keys that moved to another place, so that config.json files written before still read the same.
MOVED = {
    **{("objective", key): ("objective", "mlm", key) for key in ("mask_rate", "max_predictions", "nsp")},
    **{("objective", key): ("objective", "span_corruption", key) for key in ("noise_density", "mean_noise_span_length")},
    **{("model", key): ("runtime", key) for key in ("materialize_layer_grads", "kernel_grads_in_layout", "dropout_bits")},
}


def from_dict(data: dict[str, Any], strict: bool = False) -> Config:
    """Rebuild a Config saved by `to_dict` (e.g. next to a checkpoint), loading its plugins first.

    Keys it does not know are skipped (files of older or newer versions), unless `strict`; keys in MOVED are
    read from where they used to be.
    """
    from plmjax import plugins as plugin_lib

    recorded = plugin_lib.load_all(data.get("plugins", ()))
    data = {name: dict(data.get(name, {})) for name in SECTIONS}
    for (section, key), (new_section, *path) in MOVED.items():
        if key in data[section]:
            value = data[section].pop(key)
            holder = data[new_section]
            for part in path[:-1]:
                holder = holder.setdefault(part, {})
            holder.setdefault(path[-1], value)
    built = {}
    hints = typing.get_type_hints(Config)
    for name in SECTIONS:
        cls, values = hints[name], data[name]
        fields = {f.name for f in dataclasses.fields(cls)} - {"options"}
        kwargs = {k: v for k, v in values.items() if k in fields}
        if "options" in {f.name for f in dataclasses.fields(cls)}:
            options = _default_options(name)
            for kind, default in options.items():
                known = {f.name for f in dataclasses.fields(default)}
                given = values.get(kind, {})
                options[kind] = type(default)(**{k: v for k, v in given.items() if k in known})
            kwargs["options"] = options
        built[name] = cls(**kwargs)
    config = Config(**built, plugins=tuple(recorded))
    _check_kinds(config)
    return config


def _check_kinds(config: Config) -> None:
    """Every kind the config names is registered (plugins loaded), or an error listing the known ones."""
    from plmjax.objectives import registry as objectives
    from plmjax.training import step

    _check_choice("objective.kind", config.objective.kind, tuple(objectives.OBJECTIVES))
    check = objectives.OBJECTIVES[config.objective.kind].check
    if check is not None and config.model.arch == objectives.OBJECTIVES[config.objective.kind].arch:
        check(config)
    for name in names(config.objective.regularizers):
        _check_choice("objective.regularizers", name, tuple(objectives.REGULARIZERS))
    _check_choice("train.gradient", config.train.gradient, tuple(step.GRADIENTS))
    _check_choice("train.grad_transform", config.train.grad_transform, tuple(step.TRANSFORMS))


def names(text: str) -> list[str]:
    """The comma-separated names in a config string ("" -> [])."""
    return [name.strip() for name in text.split(",") if name.strip()]
