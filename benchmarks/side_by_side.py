"""One preset at one shape, measured in both frameworks in one process: a record per mode.

run.py runs each comparison in a child process of its own, since a step measured right after another
model's steps in the same process re-faults its temporaries for several steps (GPT-2 small: 5.4-5.8 s
a step after bert_base and t5_small, 4.6-4.9 s alone):
    python benchmarks/side_by_side.py MODEL BATCH SEQ MODES FRAMEWORKS REPEATS STEPS
(MODES and FRAMEWORKS comma-separated) prints the records as one JSON list.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import setup_process  # noqa: F401  (first: before JAX or PyTorch start threads)
import plmjax_steps
import torch
import torch_steps
import workloads
from measure import interleaved

MODES = ("train", "infer")
BUILDERS = {"plmjax": plmjax_steps.build, "torch": torch_steps.build}


def compare(model: str, batch: int, seq_length: int, modes: tuple[str, ...], frameworks: tuple[str, ...],
            repeats: int, steps: int) -> list[dict]:
    """Records of tokens/s, FLOPs, setup time and peak memory per framework; `ratio` = plmjax / PyTorch.

    Both frameworks see the same batch and thread count and are timed in turns. A framework left out
    has None in its fields. MFU is filled in by the caller, against the run's measured peak.
    """
    config = workloads.load(model, batch, seq_length)
    features = workloads.make_batch(config)
    built = {name: BUILDERS[name](config, features, modes) for name in frameworks}
    records = []
    for mode in modes:
        seconds, memory = interleaved({name: built[name][mode] for name in frameworks}, repeats, steps)
        record = dict(model=model, mode=mode, batch=batch, seq_length=seq_length, threads=torch.get_num_threads())
        for name in BUILDERS:
            runner = built[name][mode] if name in built else None
            record.update({
                f"{name}_tokens_per_s": batch * seq_length / seconds[name] if runner else None,
                f"{name}_step_s": seconds.get(name),
                f"{name}_flops_per_step": runner.flops if runner else None,
                f"{name}_setup_s": runner.setup_s if runner else None,
                f"{name}_peak_memory_bytes": memory.get(name),
            })
        torch_speed = record["torch_tokens_per_s"]
        record["ratio"] = record["plmjax_tokens_per_s"] / torch_speed if torch_speed else None
        records.append(record)
    del built
    gc.collect()
    return records


def main(argv: list[str] | None = None) -> None:
    words = lambda text: tuple(text.split(","))  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, kind in (("model", str), ("batch", int), ("seq_length", int), ("modes", words), ("frameworks", words),
                       ("repeats", int), ("steps", int)):
        parser.add_argument(name, type=kind)
    args = parser.parse_args(argv)
    for name, chosen, known in (("mode", args.modes, MODES), ("framework", args.frameworks, tuple(BUILDERS))):
        if not set(chosen) <= set(known):
            parser.error(f"unknown {name} in {','.join(chosen)}; known: {', '.join(known)}")
    torch.set_num_threads(os.cpu_count())  # XLA's CPU client also uses one thread per core
    print(json.dumps(compare(args.model, args.batch, args.seq_length, args.modes, args.frameworks, args.repeats,
                             args.steps)))


if __name__ == "__main__":
    main()
