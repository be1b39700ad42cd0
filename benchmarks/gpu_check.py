"""Device check: both backends on a GPU in bf16 against fp32 on CPU, on the embedded model.

For each backend (nnsight, transformer_lens) loaded with ``device=--device`` and ``dtype=--dtype``
(default ``cuda`` and ``auto``: bf16) and ``batch_size="auto"`` (from free memory), against the
nnsight adapter in fp32 on CPU on the same prompts:

* capture: ``resid_post`` of every layer at the last prompt token; throughput (tokens/s) on both
  devices and the smallest per-layer cosine similarity to the fp32 activations;
* log-probs: max and median absolute difference of continuation log-probs;
* generation: greedy throughput (new tokens/s) and the fraction of texts identical to fp32 CPU
  (bf16 rounds differently, so some long generations part ways: the number says how many);
* steering parity: a planted direction at one layer; the steered-minus-unsteered log-prob shift on
  the device against the same shift in fp32 on CPU (correlation and max difference), and the
  steered greedy texts;
* ``device_map="auto"``: the model spread by accelerate (one or more GPUs) captures the same.

Without a GPU it says so and exits 0 (the CPU suite never runs it). ``--device cpu --dtype bfloat16``
runs the same checks on CPU (a dry run of the script). Writes ``gpu_check.json`` (and prints a
Markdown summary) to ``--out`` (default ``$OUT`` or the current folder). Takes a few minutes.

Run: ``python benchmarks/gpu_check.py`` on a machine with a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import build_prompts, machine_info  # noqa: E402 - the benchmarks' shared prompts

import personascope as ps  # noqa: E402
from personascope.backends.base import Steer  # noqa: E402
from personascope.chat import encode  # noqa: E402
from personascope.sites import Site  # noqa: E402

MODEL = "smollm2-135m-instruct"
STEER_LAYER = 10
STEER_NORM = 8.0


def timed(fn: Any) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``, synchronizing CUDA around it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def check(model: Any, ref: dict[str, Any], prompts: list[str], conts: list[str], direction: torch.Tensor,
          max_new: int) -> dict[str, Any]:
    """Every comparison of ``model`` against the fp32 CPU reference ``ref``."""
    n_tok = sum(len(encode(model.tokenizer, p)) for p in prompts)
    sites = model.sites("all")
    model.activations(prompts[:4], sites, progress=False)  # warm-up (kernels, allocator)
    secs, cap = timed(lambda: model.activations(prompts, sites, progress=False))
    acts = next(iter(cap.values())).acts.double()
    cos = torch.nn.functional.cosine_similarity(acts, ref["acts"], dim=-1)  # [n, layers]
    secs_lp, lp = timed(lambda: model.logprobs(prompts, conts, progress=False))
    d_lp = np.abs(np.asarray(lp) - ref["lp"])
    secs_gen, texts = timed(lambda: model.generate(prompts, max_new, progress=False))
    steer = Steer(Site(STEER_LAYER), direction.to(model.device), 1.0)
    with model.steer([steer]):
        lp_s = np.asarray(model.logprobs(prompts, conts, progress=False))
        texts_s = model.generate(prompts[:8], max_new, progress=False)
    shift, ref_shift = lp_s - np.asarray(lp), ref["lp_s"] - ref["lp"]
    return {
        "device": str(model.device), "dtype": str(model.info.dtype), "batch_size": model.batch_size,
        "capture_tokens_per_s": round(n_tok / secs, 1), "capture_s": round(secs, 2),
        "capture_min_cos_per_layer": [round(float(c), 5) for c in cos.min(0).values],
        "logprobs_s": round(secs_lp, 2),
        "logprob_abs_diff_max": round(float(d_lp.max()), 4),
        "logprob_abs_diff_median": round(float(np.median(d_lp)), 4),
        "generate_s": round(secs_gen, 2),
        "identical_texts": sum(a == b for a, b in zip(texts, ref["texts"], strict=True)) / len(texts),
        "steer_shift_corr": round(float(np.corrcoef(shift, ref_shift)[0, 1]), 4),
        "steer_shift_abs_diff_max": round(float(np.abs(shift - ref_shift).max()), 4),
        "steer_shift_mean": round(float(shift.mean()), 4), "steer_shift_mean_ref": round(float(ref_shift.mean()), 4),
        "identical_steered_texts": sum(a == b for a, b in zip(texts_s, ref["texts_s"], strict=True)) / len(texts_s),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every check; 0 when done (or skipped without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="device to check (cuda, cuda:1, cpu for a dry run)")
    parser.add_argument("--dtype", default="auto", help="dtype on the device (auto: bf16 on GPU)")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no GPU visible (torch.cuda.is_available() is False): skipped")
        return 0

    t_start = time.perf_counter()
    cpu = ps.load_model(MODEL, device="cpu", dtype="float32")
    prompts = build_prompts(cpu.format_chat, args.n_prompts)
    conts = [" Sure, here is what I think." if i % 2 else " I would rather not say." for i in range(len(prompts))]
    direction = torch.randn(cpu.d_model, generator=torch.Generator().manual_seed(0))
    direction = direction / direction.norm() * STEER_NORM
    n_tok = sum(len(encode(cpu.tokenizer, p)) for p in prompts)
    secs, cap = timed(lambda: cpu.activations(prompts, cpu.sites("all"), progress=False))
    ref: dict[str, Any] = {"acts": next(iter(cap.values())).acts.double()}
    ref["lp"] = np.asarray(cpu.logprobs(prompts, conts, progress=False))
    secs_gen, ref["texts"] = timed(lambda: cpu.generate(prompts, args.max_new_tokens, progress=False))
    with cpu.steer([Steer(Site(STEER_LAYER), direction, 1.0)]):
        ref["lp_s"] = np.asarray(cpu.logprobs(prompts, conts, progress=False))
        ref["texts_s"] = cpu.generate(prompts[:8], args.max_new_tokens, progress=False)
    report: dict[str, Any] = {
        "machine": machine_info(), "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "workload": {"model": MODEL, "prompts": len(prompts), "prompt_tokens": n_tok,
                     "max_new_tokens": args.max_new_tokens, "steer": [STEER_LAYER, STEER_NORM]},
        "cpu_fp32": {"capture_tokens_per_s": round(n_tok / secs, 1), "capture_s": round(secs, 2),
                     "generate_s": round(secs_gen, 2), "batch_size": cpu.batch_size},
        "backends": {},
    }
    for backend in ("nnsight", "transformer_lens"):
        model = ps.load_model(MODEL, backend=backend, device=args.device, dtype=args.dtype, batch_size="auto")
        report["backends"][backend] = check(model, ref, prompts, conts, direction, args.max_new_tokens)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.device.startswith("cuda"):
        spread = ps.load_model(MODEL, device_map="auto", dtype=args.dtype, batch_size="auto")
        got = next(iter(spread.activations(prompts[:16], spread.sites("all"), progress=False).values())).acts.double()
        cos = torch.nn.functional.cosine_similarity(got, ref["acts"][:16], dim=-1)
        report["device_map_auto"] = {"devices": sorted({str(d) for d in spread.hf_model.hf_device_map.values()}),
                                     "batch_size": spread.batch_size, "min_cos": round(float(cos.min()), 5)}
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(summary(report))
    return 0


def summary(report: dict[str, Any]) -> str:
    """Markdown table of ``report`` (for benchmarks/RESULTS.md)."""
    c = report["cpu_fp32"]
    lines = [f"Device: {report['device_name']}; {report['workload']['prompts']} prompts "
             f"({report['workload']['prompt_tokens']} tokens); fp32 CPU capture {c['capture_tokens_per_s']} tokens/s, "
             f"generate {c['generate_s']} s; total {report['seconds']} s", "",
             "| backend | dtype | batch | capture tokens/s (x CPU) | min cos/layer | max/median abs Δlogprob | "
             "generate s (x faster) | identical texts | steer shift corr | steered texts identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["backends"].items():
        lines.append(
            f"| {name} | {r['dtype']} | {r['batch_size']} | {r['capture_tokens_per_s']} "
            f"({r['capture_tokens_per_s'] / c['capture_tokens_per_s']:.1f}x) | "
            f"{min(r['capture_min_cos_per_layer']):.4f} | {r['logprob_abs_diff_max']}/{r['logprob_abs_diff_median']} | "
            f"{r['generate_s']} ({c['generate_s'] / r['generate_s']:.1f}x) | {r['identical_texts']:.0%} | "
            f"{r['steer_shift_corr']} | {r['identical_steered_texts']:.0%} |")
    if "device_map_auto" in report:
        d = report["device_map_auto"]
        lines.append(f"\ndevice_map='auto': devices {d['devices']}, batch {d['batch_size']}, min cos {d['min_cos']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
