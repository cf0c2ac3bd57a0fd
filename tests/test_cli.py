"""The `plmjax` command as a user runs it: train, eval and decode on the tiny presets."""

import json
import os
import re
import shlex
import subprocess

import pytest

from plmjax.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--set", "train.num_steps=6", "--set", "train.log_every=2", "--set", "train.eval_steps=1",
         "--set", "train.checkpoint_every=3", "--no-progress"]


def test_help_documents_every_verb():
    out = subprocess.run(["plmjax", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("train", "eval", "decode"):
        assert verb in out
    assert "model.num_layers" in out


def readme_commands() -> list[str]:
    """The `plmjax` commands in the README's code blocks, without comments, optional [...] parts and placeholders."""
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = f.read().split("```")[1::2]
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        found = re.search(r"(?:^|&& |^[A-Z_]+=\S+ )plmjax (.+)$", line)
        if found:
            command = re.sub(r"\[[^\]]*\]", "", re.sub(r"\s+#.*$", "", found.group(1)))
            if "|" not in command and "..." not in command and command.strip() != "--help":
                commands.append(command)
    return commands


def test_every_plmjax_command_in_the_readme_parses():
    commands = readme_commands()
    assert len(commands) > 15
    for command in commands:
        build_parser().parse_args(shlex.split(command))  # argparse exits on an unknown verb or option


def test_the_readme_train_command_parses_with_no_overrides_and_mixture_joins_set():
    first = shlex.split(readme_commands()[0])  # the README's first line: train bert_tiny on the defaults
    args = build_parser().parse_args(first)
    assert args.config == "configs/bert_tiny.py" and args.overrides == []
    args = build_parser().parse_args([*first, "--mixture", "c4_mlm", "--set", "train.num_steps=5"])
    assert args.overrides == ["data.mixture=c4_mlm", "train.num_steps=5"]


@pytest.mark.parametrize("preset", ["t5_tiny", "gpt_tiny"])
def test_train_eval_decode_round_trip(tmp_path, capsys, preset):
    workdir = str(tmp_path)
    assert main(["train", "--config", os.path.join(ROOT, "configs", f"{preset}.py"), "--workdir", workdir] + QUICK) == 0
    assert capsys.readouterr().out.strip().startswith("eval step 6: accuracy=")
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6]
    assert "eval_loss" in records[-1] and records[-1]["step"] == 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

    assert main(["eval", "--workdir", workdir]) == 0
    table = capsys.readouterr().out
    assert f"eval of {workdir} at step 6" in table and "loss" in table

    prompts = ["The for statement", "Names refer to objects"]
    for method in ("greedy", "beam", "sample"):
        args = ["decode", "--workdir", workdir, "--method", method, "--max-new-tokens", "5"]
        assert main(args + [arg for p in prompts for arg in ("--prompt", p)]) == 0
        lines = capsys.readouterr().out.strip().split("\n")
        assert [line.split("\t")[0] for line in lines] == prompts


def test_decode_refuses_an_encoder_and_eval_a_non_run(tmp_path, capsys):
    workdir = str(tmp_path / "bert")
    assert main(["train", "--config", os.path.join(ROOT, "configs", "bert_tiny.py"), "--workdir", workdir,
                 "--set", "model.vocab_size=512", "--set", "data.seq_length=32"] + QUICK) == 0
    assert main(["decode", "--workdir", workdir, "--prompt", "x"]) == 2
    assert "decode needs a decoder-only or encoder-decoder model" in capsys.readouterr().err
    assert main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "is not a plmjax run directory" in capsys.readouterr().err
