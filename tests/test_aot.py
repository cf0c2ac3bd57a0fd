"""`plmjax compile`: the real train step compiled for TPU slices on this CPU, and the fit it reports."""

import json
import pathlib

import pytest

from plmjax import aot
from plmjax.cli import main
from plmjax.config import load_config
from plmjax.data import sources

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
GIB = 2**30
T5_XXL_PARAMS = 11.1e9  # T5 v1.1 XXL without its untied head's padding: ~11.1B float32 parameters


def compile_report(capsys, preset: str, topology: str, *overrides: str) -> dict:
    """`plmjax compile --json` as a user runs it; the exit status says whether the step fits."""
    args = ["compile", "--config", str(CONFIGS / f"{preset}.py"), "--topology", topology, "--json"]
    status = main(args + [arg for override in overrides for arg in ("--set", override)])
    report = json.loads(capsys.readouterr().out)
    assert status == (0 if report["fits"] else 1)
    return report


@pytest.mark.parametrize("preset", ["bert_tiny", "t5_tiny", "gpt_tiny", "roberta_tiny", "albert_tiny", "electra_tiny"])
def test_abstract_batch_is_what_the_data_pipeline_yields(preset):
    config = load_config(CONFIGS / f"{preset}.py", ["data.batch_size=4"])
    batch = sources.make_source(config, sources.build_vocabulary(config), "train").batch(0)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, s in aot.batch_spec(config).items()}


def test_t5_xxl_fits_a_v5p_pod_slice_with_16_way_model_parallelism(capsys):
    # A small global batch keeps compilation short; parameters and optimizer state are the full 11B model's.
    report = compile_report(capsys, "t5_xxl", "v5p:4x4x4", "data.batch_size=16", "data.seq_length=128")
    assert report["fits"] and report["chip"] == "TPU v5" and report["num_chips"] == 64
    assert report["mesh"] == {"data": 4, "expert": 1, "model": 16}
    assert report["params_bytes"] == pytest.approx(4 * T5_XXL_PARAMS / 16, rel=0.05)
    assert report["optimizer_bytes"] == pytest.approx(2 * report["params_bytes"], rel=0.01)
    assert report["temp_bytes"] > 0
    assert report["hbm_per_chip_bytes"] <= report["hbm_capacity_bytes"] == 95 * GIB
    tokens = 16 * (128 + aot.batch_spec(load_config(CONFIGS / "t5_xxl.py", ["data.seq_length=128"]))[
        "decoder_input_ids"].shape[1])
    assert 0.5 < report["flops_per_step"] / (6 * T5_XXL_PARAMS * tokens / 2) < 2  # each half of the model sees its half
    assert 0 < report["estimated_mfu"] < 1


# (preset, parameters, parameters each token's matmuls read: ALBERT's one layer is read 12 times; ELECTRA's are the
# discriminator's and the generator's 12 layers each)
# (scanned layers compile ELECTRA's 24 once each: a TPU run's layout, and a quarter of the compile time)
@pytest.mark.parametrize("preset, params, matmul_params, layout", [
    ("albert_base", 11.8e6, 12 * 7.08e6, "model.scan_layers=false"),
    ("electra_base", 119.4e6, 12 * 7.08e6 + 12 * 0.79e6, "model.scan_layers=true")])
def test_albert_and_electra_base_compile_for_a_tpu_slice(capsys, preset, params, matmul_params, layout):
    report = compile_report(capsys, preset, "v5e:2x2", "data.batch_size=8", "data.seq_length=64", layout)
    assert report["fits"] and report["mesh"] == {"data": 4, "expert": 1, "model": 1}
    assert report["params_bytes"] == pytest.approx(4 * params, rel=0.01)  # replicated: every chip holds all
    assert report["optimizer_bytes"] == pytest.approx(2 * report["params_bytes"], rel=0.01)
    assert 0.95 < report["flops_per_step"] / (6 * matmul_params * 8 * 64) < 1.25


def test_t5_xxl_without_model_parallelism_overflows_a_small_slice(capsys):
    report = compile_report(capsys, "t5_xxl", "v5p:2x2x1", "mesh.model=1")
    assert not report["fits"] and report["mesh"] == {"data": 4, "expert": 1, "model": 1}
    assert report["params_bytes"] == pytest.approx(4 * T5_XXL_PARAMS, rel=0.05)  # every chip holds everything
    assert report["hbm_per_chip_bytes"] > report["hbm_capacity_bytes"]
    assert report["estimated_mfu"] is None

    assert main(["compile", "--config", str(CONFIGS / "t5_xxl.py"), "--topology", "v5p:2x2x1",
                 "--set", "mesh.model=1"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_moe_lm_1_1t_without_model_parallelism_overflows_a_512_chip_v4_slice(capsys):
    # One expert per chip: the 1.1T parameters' experts split 512 ways, the dense half replicated; float32
    # parameters plus AdamW's two moments already exceed a v4 chip, so nothing is compiled.
    report = compile_report(capsys, "moe_lm_1_1t", "v4:8x8x8", "mesh.model=1")
    assert not report["fits"] and report["num_chips"] == 512 and report["mesh"]["expert"] == 512
    assert "not compiled" in report["compiler_message"] and report["estimated_mfu"] is None
    assert 4 * 1.1e12 / 512 < report["params_bytes"] < 4 * 1.1e12 / 100
    assert report["params_bytes"] + report["optimizer_bytes"] > report["hbm_capacity_bytes"] == 32 * GIB


def test_activations_beyond_hbm_are_caught_by_the_compiler(capsys):
    # 2 layers fit anywhere, but 16384 sequences' vocabulary logits per chip do not fit a v5e's 16 GiB.
    report = compile_report(capsys, "gpt_tiny", "v5e:2x2", "data.batch_size=65536")
    assert not report["fits"] and report["chip"] == "TPU v5 lite"
    assert report["params_bytes"] + report["optimizer_bytes"] < GIB
    assert "RESOURCE_EXHAUSTED" in report["compiler_message"]
    assert report["temp_bytes"] > report["hbm_capacity_bytes"] == 16 * GIB


def test_unknown_topology_is_a_clear_error(capsys):
    assert main(["compile", "--config", str(CONFIGS / "t5_tiny.py"), "--topology", "v9x:1x1"]) == 2
    assert "v9x:1x1" in capsys.readouterr().err
