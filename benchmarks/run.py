"""plmjax against HF transformers (PyTorch) on this CPU: throughput, MFU, compile time, memory and scaling.

    python benchmarks/run.py [--quick] [--json OUT.json] [--markdown OUT.md] [--models bert_base,t5_small]

Both frameworks run in one process (a fresh one per model and shape) with the same thread count and are
timed in turns, so machine load hits them alike: the ratio is the figure to read. Prints Markdown tables;
--json writes the records.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import setup_process  # noqa: F401  (first: before JAX or PyTorch start threads)
import report
import torch
import workloads
from peak import matmul_peak, torch_matmul_peak
from side_by_side import BUILDERS, MODES

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, SEQ = 8, 128
SCALING_MODEL = "bert_base"
SCALING_TOKENS = BATCH * SEQ  # per step in the sequence-length sweep (one sequence when longer)
PLANS = {  # quick: scaling for plmjax alone, fewer points, three turns (a median that drops one disturbed turn)
    "quick": dict(repeats=3, steps=1, scaling_frameworks=("plmjax",), seq_lengths=(128, 2048), batches=(1, 8)),
    "full": dict(repeats=5, steps=1, scaling_frameworks=tuple(BUILDERS), seq_lengths=(128, 256, 512, 1024, 2048),
                 batches=(1, 2, 4, 8, 16, 32)),
}
# 8 fake devices with 4-way tensor parallelism: bert_base's 30522-token vocabulary does not split 4 ways, and
# a data=8 mesh would hold 8 replicas of the AdamW state.
MESH_MODEL, MESH = "t5_small", "data=2,model=4"


def child_json(script: str, *args, xla_flags: str = ""):
    """What `script` in this folder prints as JSON on its last line, run in a fresh process (its stderr shows)."""
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip())
    command = [sys.executable, os.path.join(HERE, script), *map(str, args)]
    out = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(command[1:])} failed (exit status {out.returncode}); its error is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mesh_record(repeats: int) -> dict:
    """The 8-device mesh record, from a child process that starts JAX with 8 fake CPU devices."""
    return child_json("mesh.py", MESH_MODEL, BATCH, SEQ, repeats, MESH,
                      xla_flags="--xla_force_host_platform_device_count=8")


def compare_in_child(model: str, batch: int, seq_length: int, modes: tuple[str, ...], frameworks: tuple[str, ...],
                     plan: dict) -> list[dict]:
    """side_by_side.compare's records, measured in a fresh process so no earlier model's heap is in the way."""
    return child_json("side_by_side.py", model, batch, seq_length, ",".join(modes), ",".join(frameworks),
                      plan["repeats"], plan["steps"])


def add_mfu(record: dict, peak_flops: float) -> None:
    """MFU of each framework measured in `record`: its step's matmul FLOPs per second over the peak."""
    for name in BUILDERS:
        flops, seconds = record.get(f"{name}_flops_per_step"), record.get(f"{name}_step_s")
        record[f"{name}_mfu"] = flops / seconds / peak_flops if flops and seconds else None
    record["mfu"] = record["plmjax_mfu"]


def run(models: list[str], plan: dict, log) -> tuple[list[dict], dict]:
    """All records, and the machine facts they were measured under."""
    torch.set_num_threads(os.cpu_count())  # XLA's CPU client also uses one thread per core
    machine = dict(cores=os.cpu_count(), threads=torch.get_num_threads(), load_before=os.getloadavg()[0],
                   torch_peak_flops=torch_matmul_peak())
    peaks = [matmul_peak()]
    log(f"float32 matmul peak: jax {peaks[0] / 1e9:.0f} GFLOP/s, PyTorch {machine['torch_peak_flops'] / 1e9:.0f}")
    records, measured = [], {}

    def add(bench: str, model: str, modes: tuple[str, ...], batch: int, seq_length: int, frameworks) -> None:
        missing = tuple(mode for mode in modes if (model, mode, batch, seq_length) not in measured)
        if missing:  # a shape shared with the comparison or another sweep is measured once
            peaks.append(matmul_peak(repeats=3))  # the peak is re-measured as the load changes; the best is kept
            for record in compare_in_child(model, batch, seq_length, missing, frameworks, plan):
                measured[(model, record["mode"], batch, seq_length)] = record
        for mode in modes:
            records.append(dict(measured[(model, mode, batch, seq_length)], bench=bench))
            log(f"{bench} {model} {mode} {batch}x{seq_length}: plmjax {records[-1]['plmjax_tokens_per_s']:.0f} "
                f"tok/s, PyTorch {report.fmt(records[-1]['torch_tokens_per_s'], '.0f')}")

    for model in models:
        add("compare", model, MODES, BATCH, SEQ, tuple(BUILDERS))
    scaling = plan["scaling_frameworks"]
    for seq_length in plan["seq_lengths"]:
        add("seq_scaling", SCALING_MODEL, ("train",), max(1, SCALING_TOKENS // seq_length), seq_length, scaling)
    for batch in plan["batches"]:
        add("batch_scaling", SCALING_MODEL, ("train",), batch, SEQ, scaling)
    records.append(dict(mesh_record(plan["repeats"]), bench="mesh"))
    log(f"mesh {MESH}: {records[-1]['mesh_vs_one_device']:.2f}x one device")
    machine.update(peak_flops=max(peaks), load_after=os.getloadavg()[0])
    for record in records:
        add_mfu(record, machine["peak_flops"])
    return records, machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and scaling points (under 10 minutes)")
    parser.add_argument("--json", help="write the list of records here")
    parser.add_argument("--markdown", help="also write the tables here")
    parser.add_argument("--models", default=",".join(workloads.MODELS), help="comma-separated presets to compare")
    args = parser.parse_args(argv)
    unknown = [model for model in args.models.split(",") if not (workloads.CONFIGS / f"{model}.py").is_file()]
    if unknown:
        presets = sorted(path.stem for path in workloads.CONFIGS.glob("*.py"))
        parser.error(f"no preset {', '.join(unknown)} in configs/; there are: {', '.join(presets)}")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    records, machine = run(args.models.split(","), PLANS["quick" if args.quick else "full"], log)
    tables = report.markdown(records, machine)
    print(tables)
    report.write(records, tables, args.json, args.markdown)


if __name__ == "__main__":
    main()
