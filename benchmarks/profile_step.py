"""Where a plmjax step's time goes on this CPU: XLA's thunks from a profiler trace, by kind and by model part.

    python benchmarks/profile_step.py [--model bert_base] [--mode train] [--set model.dropout_rate=0.0 ...]

Every thunk in the trace is matched to its HLO instruction: the kind of work comes from the ops it runs
(matmul, random bits, scatter, reduction, ...), the model part from the instruction's op_name with layer
numbers folded together. Times are thunk durations per step summed over XLA's threads; thunks that run
concurrently with a multi-threaded matmul also count the time they waited for a core.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

import setup_process  # noqa: F401  (first: before JAX or PyTorch start threads)
import experiments  # noqa: F401  (registers the benchmark-local variants, e.g. model.attention_kind=fused_qkv)
import jax
import plmjax_steps
import workloads

INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*op_name=\"([^\"]*)\"")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
METADATA = re.compile(r"metadata=\{[^}]*\}")
COMPUTATION = re.compile(r"^%?([\w.\-]+) .*\{$")
KINDS = (  # first match wins, tested on the ops of the instruction and its fused computation (metadata removed)
    ("matmul", re.compile(r" dot\(|convolution\(")),
    ("rng", re.compile(r"shift-right-logical\(|rng-bit-generator\(|threefry")),
    ("scatter/gather", re.compile(r" scatter\(| gather\(")),
    ("softmax/exp/log", re.compile(r" exponential\(| log\(")),
    ("reduction", re.compile(r" reduce\(")),
    ("copy/transpose", re.compile(r" copy\(| transpose\(")),
)
WRAPPERS = re.compile(r"jit\(train_step\)/|jit\(<lambda>\)/|(?:jvp|transpose|remat|checkpoint)\(|\)|/while/body.*")


def hlo_index(hlo: str) -> dict[str, tuple[str, str]]:
    """instruction name -> (kind, model part) for every instruction of the optimized HLO module."""
    bodies, current = collections.defaultdict(list), None
    for line in hlo.splitlines():
        match = COMPUTATION.match(line)
        if match and "=" not in line.split("{")[0]:
            current = match.group(1)
        elif current:
            bodies[current].append(line)
    index = {}
    for line in hlo.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, op_name = match.groups()
        called = CALLS.search(line)
        text = METADATA.sub("", line + "\n".join(bodies.get(called.group(1), ()) if called else ()))
        kind = next((k for k, pattern in KINDS if pattern.search(text)), "elementwise")
        part = re.sub(r"layers_\d+", "layers_N", WRAPPERS.sub("", op_name)).rsplit("/", 1)[0]
        index[name] = (kind, part)
    return index


def thunk_times(run, steps: int) -> tuple[collections.Counter, float]:
    """Busy milliseconds per thunk name over `steps` steps, and the wall milliseconds they took."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the trace format; TensorFlow ships its proto

    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            run(steps)
        space = xplane_pb2.XSpace()
        with open(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    times, wall = collections.Counter(), 0.0
    for line in plane.lines:
        for event in line.events:
            name = plane.event_metadata[event.metadata_id].name
            if line.name == "python" and "run_" in name:
                wall += event.duration_ps / 1e9
            elif line.name.startswith("tf_XLA") and not name.startswith(("ThunkExecutor", "SlinkyThreadPool",
                                                                          "ThreadpoolListener")):
                times[name] += event.duration_ps / 1e9
    return times, wall


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert_base")
    parser.add_argument("--mode", default="train", choices=("train", "infer"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = workloads.load(args.model, args.batch, args.seq, tuple(args.overrides))
    runner = plmjax_steps.build(config, workloads.make_batch(config), (args.mode,))[args.mode]
    runner.run(1)
    index = hlo_index(runner.compiled.as_text())
    times, wall = thunk_times(runner.run, args.steps)
    by_kind, by_part = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        kind, part = index.get(name, ("other", "(unmatched) " + name))
        by_kind[kind] += ms / args.steps
        by_part[f"{kind:<15} {part}"] += ms / args.steps
    busy = sum(by_kind.values())
    print(f"{args.model} {args.mode} {args.batch}x{args.seq} {' '.join(args.overrides)}: "
          f"{wall / args.steps:.0f} ms per step, thunks {busy:.0f} thread-ms on {os.cpu_count()} cores")
    for title, counter, top in (("kind", by_kind, None), ("model part", by_part, args.top)):
        print(f"\n| {title} | thread-ms per step | share |\n|---|---:|---:|")
        for key, ms in counter.most_common(top):
            print(f"| {key} | {ms:.0f} | {ms / busy:.0%} |")


if __name__ == "__main__":
    sys.exit(main())
