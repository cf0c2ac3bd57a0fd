"""Markdown tables of benchmark records."""

from __future__ import annotations

MIB = 2**20


def fmt(value, spec: str) -> str:
    """`value` formatted, or a dash when it was not measured."""
    return "–" if value is None else format(value, spec)


def comparison_table(records: list[dict]) -> str:
    """plmjax against PyTorch: one row per model, mode and shape."""
    lines = ["| model | mode | batch x seq | plmjax tok/s | PyTorch tok/s | ratio | plmjax MFU | PyTorch MFU "
             "| plmjax compile s | peak MiB plmjax / PyTorch |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        memory = r["torch_peak_memory_bytes"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['batch']} x {r['seq_length']} | {r['plmjax_tokens_per_s']:.0f} "
            f"| {fmt(r['torch_tokens_per_s'], '.0f')} | **{fmt(r['ratio'], '.2f')}** | {r['plmjax_mfu']:.0%} "
            f"| {fmt(r['torch_mfu'], '.0%')} | {r['plmjax_setup_s']:.1f} "
            f"| {r['plmjax_peak_memory_bytes'] / MIB:.0f} / {fmt(memory and memory / MIB, '.0f')} |")
    return "\n".join(lines)


def mesh_table(records: list[dict]) -> str:
    lines = ["| model | mesh | batch x seq | 1 device tok/s | mesh tok/s | mesh / 1 device | mesh MFU |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['mesh']} ({r['devices']} devices) | {r['batch']} x {r['seq_length']} "
                     f"| {r['one_device_tokens_per_s']:.0f} | {r['plmjax_tokens_per_s']:.0f} "
                     f"| {r['mesh_vs_one_device']:.2f} | {r['mfu']:.0%} |")
    return "\n".join(lines)


def markdown(records: list[dict], machine: dict) -> str:
    """All tables, with the machine facts that the figures depend on."""
    sections = [
        f"Machine: {machine['cores']} cores, {machine['threads']} threads per framework; measured float32 matmul "
        f"peak {machine['peak_flops'] / 1e9:.0f} GFLOP/s with jax.numpy (the MFU denominator; "
        f"torch.matmul: {machine['torch_peak_flops'] / 1e9:.0f}); load average {machine['load_before']:.1f} "
        f"before, {machine['load_after']:.1f} after.",
        "MFU counts the matrix-multiply FLOPs each framework's step performs (train = forward + backward). "
        "plmjax's BERT predicts MLM logits only at the masked positions (`masked_positions`, at most "
        "`objective.mlm.max_predictions` per row), a saving HF's BertForPreTraining does not make: it scores "
        "every position. Inference is the eval forward with the loss. PyTorch runs eager (nothing to compile).",
    ]
    titles = {"compare": "plmjax vs PyTorch", "seq_scaling": "Sequence length (1024 tokens per step, or one sequence)",
              "batch_scaling": "Batch size"}
    for bench, title in titles.items():
        rows = [r for r in records if r["bench"] == bench]
        if rows:
            sections.append(f"**{title}**\n\n{comparison_table(rows)}")
    mesh = [r for r in records if r["bench"] == "mesh"]
    if mesh:
        sections.append(f"**Fake CPU devices against one device, same total batch**\n\n{mesh_table(mesh)}")
    return "\n\n".join(sections)


def write(records, text: str, json_path: str | None, markdown_path: str | None) -> None:
    """A benchmark script's --json (the records) and --markdown (the tables) outputs, where asked for."""
    import json

    if json_path:
        with open(json_path, "w") as f:
            json.dump(records, f, indent=1)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text.rstrip("\n") + "\n")
