"""Config sections: registered kinds' typed keys, runtime settings apart from the model, keys that moved."""

import pytest

from plmjax.config import ConfigError, apply_overrides, bert, from_dict, t5, to_dict, valid_keys

RUNTIME = ("materialize_layer_grads", "kernel_grads_in_layout", "dropout_bits")


def test_each_objective_has_its_own_typed_keys():
    config = apply_overrides(bert(), ["objective.mlm.nsp=false", "objective.mlm.max_predictions=7"])
    assert config.objective.mlm.nsp is False and config.objective.mlm.max_predictions == 7
    assert t5().objective.span_corruption.mean_noise_span_length == 3.0
    assert {"objective.kind", "objective.mlm.mask_rate", "objective.span_corruption.noise_density",
            "train.gradient", "train.grad_transform", "train.trainable"} <= set(valid_keys())
    with pytest.raises(ConfigError, match="objective.mlm.nsp expects a bool"):
        apply_overrides(config, ["objective.mlm.nsp=maybe"])
    with pytest.raises(ConfigError, match="objective.kind='nope' is not one of (.*, )?mlm, span_corruption, causal_lm"):
        apply_overrides(config, ["objective.kind=nope"])
    with pytest.raises(ConfigError, match="train.gradient='nope' is not one of (.*, )?plain"):
        apply_overrides(config, ["train.gradient=nope"])
    with pytest.raises(ConfigError, match="unknown config key 'objective.nsp'"):
        apply_overrides(config, ["objective.nsp=false"])


def test_runtime_settings_are_their_own_section_and_no_model_field():
    keys = set(valid_keys())
    assert {f"runtime.{name}" for name in RUNTIME} <= keys and not {f"model.{name}" for name in RUNTIME} & keys
    config = apply_overrides(bert(), ["runtime.dropout_bits=8"])
    with pytest.raises(ConfigError, match="model.dropout_rate=0.001 rounds to 0 with runtime.dropout_bits=8"):
        apply_overrides(config, ["model.dropout_rate=0.001"])


def test_a_config_json_written_before_the_keys_moved_reads_the_same():
    data = to_dict(bert())
    del data["runtime"], data["objective"]["mlm"]
    data["objective"].update(nsp=False, max_predictions=7, mask_rate=0.2)
    data["model"].update(dropout_bits=8, kernel_grads_in_layout=False)
    config = from_dict(data)
    assert (config.objective.mlm.nsp, config.objective.mlm.max_predictions, config.objective.mlm.mask_rate) == (
        False, 7, 0.2)
    assert config.runtime.dropout_bits == 8 and config.runtime.kernel_grads_in_layout is False
    assert from_dict(to_dict(config)) == config


def test_setting_a_field_a_section_does_not_have_is_an_error_naming_where_it_went():
    config = bert()
    with pytest.raises(ConfigError, match=r"ObjectiveConfig has no field 'nsp' \(it moved to objective.mlm.nsp\)"):
        config.objective.nsp = False
    with pytest.raises(ConfigError, match=r"ModelConfig has no field 'dropout_bits' \(it moved to runtime.dropout_bits\)"):
        config.model.dropout_bits = 8
    with pytest.raises(ConfigError, match="DataConfig has no field 'batchsize'"):
        config.data.batchsize = 8
