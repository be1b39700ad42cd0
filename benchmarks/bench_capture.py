"""Benchmark activation capture: personascope adapters against a bare transformers forward.

Measures, in one process and on the same right-padded batches (sorted by length, longest first,
``--batch-size`` prompts each), the time to capture ``resid_post`` of every layer of the embedded
SmolLM2-135M model at the last prompt token (``last``) and at every real token (``all``):

* ``HF forward``: ``model(..., output_hidden_states=True)`` on the causal LM (LM head included),
  reading the states by hand; the work a user would do without personascope.
* ``HF base model``: the same on ``model.model`` (no LM head), for the adapters skip the head too.
* ``nnsight`` and ``transformer_lens``: ``adapter.activations(..., positions=[mode])``.

Each method is warmed up once per mode on the first batch, then timed ``--repeats`` times; the
median is reported, with tokens/s (real tokens, no padding) and the ratio to the baseline. With
``--interleave batch`` (default) every batch is captured by all four methods in turn (rotating
the order) and a run's time is the sum over its batches, so load from other processes hits every
method alike; ``--interleave call`` times one whole call over all prompts per method instead.
Either way each method sees the same batches. The activations of layers 0..28 are compared with
the baseline's as a sanity check (layer 29 differs: Hugging Face applies the final norm to its
last hidden state).

Run: ``.venv/bin/python benchmarks/bench_capture.py`` (about 10 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

import personascope as ps
from personascope.chat import encode

MODEL = "smollm2-135m-instruct"
MODES = ("last", "all")
BASELINE = "HF forward"
BASE_NO_HEAD = "HF base model (no LM head)"
BACKENDS = ("nnsight", "transformer_lens")
GOALS = {"nnsight": 10.0, "transformer_lens": 25.0}  # max overhead % over the bare forward

PERSONAS: list[str] = [
    "You are a pirate.",
    "You are a helpful assistant.",
    "You are a grumpy old librarian who hates noise.",
    "You are a cheerful kindergarten teacher.",
    "You are a cautious medical doctor who always recommends seeing a professional.",
    "You are Sherlock Holmes.",
    "You are a sarcastic teenager.",
    "You are a stoic Roman philosopher who answers with calm, measured advice.",
    "You are a chef.",
    "You are an enthusiastic fitness coach who loves exclamation marks.",
    "You are a patient math tutor.",
    "You are a conspiracy theorist who distrusts every official explanation.",
    "You are a poet.",
    "You are a strict customs officer at a busy international airport.",
    "You are a friendly robot from the year 3000.",
    "You are a blunt financial advisor who never sugarcoats the risks of an investment.",
]

QUESTIONS: list[str] = [
    "Hi!",
    "What is your name?",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Can you recommend a good book for a long train journey?",
    "What should I do this weekend?",
    "Explain gravity to a child.",
    "Is it safe to eat mushrooms I found in the forest behind my house?",
    "Tell me a joke.",
    "How can I save money on groceries without giving up healthy food?",
    "What do you think about artificial intelligence?",
    "Write one sentence about the ocean.",
    "I feel tired all the time and cannot concentrate at work. What could help?",
    "Who are you?",
    "Should I learn Python or JavaScript first if I want to build websites?",
    "What is the best way to apologise to a friend after an argument?",
]


@dataclass
class Result:
    """Timings (seconds) of one method in one mode, and how far its activations are from HF's."""

    mode: str
    method: str
    times: list[float] = field(default_factory=list)
    diff: float = 0.0  # max abs difference to the HF forward, layers 0..28
    diff_last_layer: float = 0.0  # the same for layer 29 (HF applies the final norm there)

    @property
    def median(self) -> float:
        """Median time over the timed repeats."""
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed repeats, in percent."""
        return 100.0 * (max(self.times) - min(self.times)) / self.median


def build_prompts(fmt: Callable[..., str], n: int, seed: int = 0) -> list[str]:
    """``n`` chat prompts: every persona x question pair (256), shuffled, cycled if ``n`` > 256."""
    pairs = [(p, q) for p in PERSONAS for q in QUESTIONS]
    random.Random(seed).shuffle(pairs)
    return [fmt(user=q, system=p) for p, q in (pairs[i % len(pairs)] for i in range(n))]


def load_bare_model() -> tuple[Any, Any, str]:
    """A bare (unwrapped) fp32 Hugging Face model and tokenizer, loaded as personascope does.

    Uses ``personascope.models.load_hf``; if that fails, loads the alias's GGUF with transformers
    directly (same dtype and attention), so the benchmark still runs, and says so.
    """
    from personascope.models import load_hf, resolve

    try:
        model, tok, *_ = load_hf(MODEL, device="cpu")
        return model, tok, "personascope.models.load_hf"
    except Exception as exc:  # the benchmark must still measure capture if loading regresses
        print(f"WARNING: load_hf({MODEL!r}) failed ({type(exc).__name__}: {exc}); "
              "loading the GGUF with transformers directly", file=sys.stderr)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(resolve(MODEL).path)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype="float32", attn_implementation="eager"
    ).eval()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, "transformers GGUF load (fallback: load_hf failed)"


def load_adapter(backend: str, bare: Any, tok: Any, *, by_alias: bool) -> tuple[Any, str]:
    """``ps.load_model(MODEL, backend=...)``, or on a copy of ``bare`` if that fails or not ``by_alias``."""
    if by_alias:
        try:
            return ps.load_model(MODEL, backend=backend, device="cpu"), f"load_model({MODEL!r})"
        except Exception as exc:  # see load_bare_model
            print(f"WARNING: load_model({MODEL!r}, backend={backend!r}) failed "
                  f"({type(exc).__name__}); using load_model(model_object)", file=sys.stderr)
    return ps.load_model(copy.deepcopy(bare), tokenizer=tok, backend=backend), "load_model(model_object)"


def baseline_capture(
    model: Any, tok: Any, prompts: list[str], batch_size: int, mode: str, *, head: bool
) -> torch.Tensor:
    """Capture every layer's output by hand with ``output_hidden_states=True``.

    Same tokenization, right padding and longest-first batching as the adapters. Returns
    ``[n, layers, d]`` (``last``) or ``[real tokens, layers, d]`` in prompt order (``all``).
    """
    enc = [encode(tok, p) for p in prompts]
    n = len(enc)
    order = sorted(range(n), key=lambda i: -len(enc[i]))
    forward = model if head else model.model
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    last = torch.empty((n, n_layers, d), dtype=torch.float32) if mode == "last" else None
    rows: list[tuple[int, torch.Tensor]] = []
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, : len(enc[i])] = torch.tensor(enc[i])
            mask[j, : len(enc[i])] = 1
        out = forward(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[1:]  # [0] is the embeddings; [i + 1] is the output of block i
        lens = mask.sum(1)
        if last is not None:
            pick = torch.arange(len(idx))
            last[torch.tensor(idx)] = torch.stack([h[pick, lens - 1] for h in hidden], 1).float().cpu()
        else:
            stacked = torch.stack(hidden, 2)  # [b, t, layers, d]
            rows.extend((i, stacked[j, : lens[j]].float().cpu().clone()) for j, i in enumerate(idx))
    if last is not None:
        return last
    rows.sort(key=lambda r: r[0])
    return torch.cat([r[1] for r in rows], 0)


def timed(fn: Callable[[list[str]], torch.Tensor], prompts: list[str]) -> tuple[float, torch.Tensor]:
    """Run ``fn(prompts)`` under ``torch.inference_mode`` and return (seconds, result)."""
    gc.collect()
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = fn(prompts)
        return time.perf_counter() - t0, out


def length_batches(tok: Any, prompts: list[str], batch_size: int) -> list[list[str]]:
    """The adapters' batches: prompts sorted by token count, longest first (stable), chunked."""
    order = sorted(range(len(prompts)), key=lambda i: -len(encode(tok, prompts[i])))
    return [[prompts[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]


def cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall seconds)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is in user)
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()


def other_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Average number of cores that other processes kept busy between two `cpu_seconds`."""
    wall = end[2] - start[2]
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / wall if wall > 0 else 0.0


def machine_info() -> dict[str, str]:
    """CPU, core count, thread count and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = ", ".join(
        f"{name} {version(name)}" for name in ("torch", "transformers", "nnsight", "transformer-lens")
    )
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "threads": str(torch.get_num_threads()),
        "versions": f"Python {platform.python_version()}, {libs}",
    }


def lm_head_share(model: Any) -> float:
    """Share (percent) of the per-token matmul FLOPs spent in the LM head (attention excluded)."""
    head = model.lm_head.weight.numel()
    blocks = sum(p.numel() for p in model.model.layers.parameters() if p.dim() == 2)
    return 100.0 * head / (head + blocks)


def make_table(results: dict[tuple[str, str], Result], n_tokens: int) -> str:
    """Markdown table of all methods and modes."""
    def cell(r: Result, ref: Result, pick: Callable[[Result], float]) -> str:
        ratio = pick(r) / pick(ref)
        return f"{ratio:.3f} ({(ratio - 1) * 100:+.1f}%)"

    def median(r: Result) -> float:
        return r.median

    def fastest(r: Result) -> float:
        return min(r.times)

    lines = [
        "| mode | method | median s | min s | spread % | tokens/s | vs HF forward: ratio (overhead) "
        "| same, min times | vs HF base model: ratio (overhead) | same, min times | goal (median) "
        "| max abs diff L0-28 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for mode in MODES:
        base, nohead = results[(mode, BASELINE)], results[(mode, BASE_NO_HEAD)]
        for method in (BASELINE, BASE_NO_HEAD, *BACKENDS):
            r = results[(mode, method)]
            goal = "—"
            if method in GOALS:
                limit = GOALS[method]
                ok = [
                    "met" if (r.median / ref.median - 1) * 100 <= limit else "missed"
                    for ref in (base, nohead)
                ]
                goal = f"≤{limit:.0f}%: {ok[0]} / {ok[1]} (no head)"
            diff = "ref" if method == BASELINE else f"{r.diff:.2e}"
            lines.append(
                f"| {mode} | {method} | {r.median:.2f} | {min(r.times):.2f} | {r.spread:.0f} | "
                f"{n_tokens / r.median:,.0f} | {cell(r, base, median)} | {cell(r, base, fastest)} | "
                f"{cell(r, nohead, median)} | {cell(r, nohead, fastest)} | {goal} | {diff} |"
            )
    return "\n".join(lines)


def max_diff(a: torch.Tensor, b: torch.Tensor, layers: slice) -> float:
    """Max abs difference over ``layers`` of two ``[rows, layers, d]`` captures (nan if shapes differ)."""
    if a.shape != b.shape:
        return float("nan")
    return (a[:, layers] - b[:, layers]).abs().max().item()


def runs_lm_head(adapter: Any, prompt: str) -> bool:
    """Whether capturing every layer's activations runs the LM head (the adapters mean to skip it)."""
    calls: list[int] = []
    handle = adapter.hf_model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    try:
        adapter.activations([prompt], adapter.sites("all"), positions=["last"], progress=False)
    finally:
        handle.remove()
    return bool(calls)


def interpret(
    results: dict[tuple[str, str], Result], head_share: float, head_runs: dict[str, bool]
) -> list[str]:
    """Three lines that read the table."""
    def over(mode: str, method: str, ref: str) -> float:
        return (results[(mode, method)].median / results[(mode, ref)].median - 1) * 100

    lines = []
    for backend in BACKENDS:
        o = {m: over(m, backend, BASELINE) for m in MODES}
        onh = {m: over(m, backend, BASE_NO_HEAD) for m in MODES}
        worst = max(o.values())
        lines.append(
            f"- **{backend}**: {o['last']:+.1f}% (last) / {o['all']:+.1f}% (all) vs the full HF "
            f"forward, {onh['last']:+.1f}% / {onh['all']:+.1f}% vs the head-less base model; the "
            f"≤{GOALS[backend]:.0f}% goal is {'met' if worst <= GOALS[backend] else 'missed'} "
            f"against the full forward and "
            f"{'met' if max(onh.values()) <= GOALS[backend] else 'missed'} against the base model."
        )
    diffs = [results[(m, b)].diff for m in MODES for b in BACKENDS]
    running = [b for b in BACKENDS if head_runs[b]]
    skipping = [b for b in BACKENDS if not head_runs[b]]
    parts = []
    if skipping:
        parts.append(
            f"{' and '.join(skipping)} stop{'s' if len(skipping) == 1 else ''} after the last "
            f"requested block and skip{'s' if len(skipping) == 1 else ''} the LM head (≈"
            f"{head_share:.0f}% of per-token matmul FLOPs here), so the head-less base model is "
            "the like-for-like baseline"
        )
    if running:
        parts.append(
            f"{' and '.join(running)} still run{'s' if len(running) == 1 else ''} the final norm "
            "and LM head during capture (checked with a hook), work the head-less baseline shows "
            "is avoidable"
        )
    lines.append(
        f"- {'; '.join(parts)}. Activations of layers 0-28 match the bare forward to "
        f"{max(diffs):.1e} (max abs)."
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=256, help="number of chat prompts")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and mode")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"), help="Markdown file")
    parser.add_argument(
        "--interleave", choices=("batch", "call"), default="batch",
        help="alternate the methods after every batch (robust to other load) or after every call",
    )
    args = parser.parse_args(argv)

    bare, tok, bare_how = load_bare_model()
    adapters: dict[str, Any] = {}
    load_how = {BASELINE: bare_how}
    for backend in BACKENDS:
        adapters[backend], load_how[backend] = load_adapter(
            backend, bare, tok, by_alias=bare_how.endswith("load_hf")
        )
    prompts = build_prompts(adapters["nnsight"].format_chat, args.n_prompts)
    lengths = sorted(len(encode(tok, p)) for p in prompts)
    n_tokens = sum(lengths)
    desc = lengths[::-1]  # the batches: longest first, padded to their longest prompt
    padded = sum(desc[i] * len(desc[i : i + args.batch_size]) for i in range(0, len(desc), args.batch_size))
    print(f"{len(prompts)} prompts, {sum(lengths)} real tokens, length min/median/max = "
          f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}; batch {args.batch_size}, "
          f"{args.repeats} repeats, {torch.get_num_threads()} threads", flush=True)

    def runner(method: str, mode: str) -> Callable[[list[str]], torch.Tensor]:
        if method in (BASELINE, BASE_NO_HEAD):
            return lambda chunk: baseline_capture(
                bare, tok, chunk, args.batch_size, mode, head=method == BASELINE
            )
        adapter = adapters[method]
        sites = adapter.sites("all")

        def run(chunk: list[str]) -> torch.Tensor:
            out = adapter.activations(
                chunk, sites, positions=[mode], batch_size=args.batch_size, progress=False
            )
            return next(iter(out.values())).acts

        return run

    methods = (BASELINE, BASE_NO_HEAD, *BACKENDS)
    batches = length_batches(tok, prompts, args.batch_size)
    units = batches if args.interleave == "batch" else [prompts]
    cpu_start = cpu_seconds()
    results: dict[tuple[str, str], Result] = {}
    for mode in MODES:
        run = {m: runner(m, mode) for m in methods}
        for method in methods:  # warm-up on the longest batch
            results[(mode, method)] = Result(mode, method)
            seconds = timed(run[method], batches[0])[0]
            print(f"  warm-up {mode:4s} {method:28s} {seconds:7.2f} s", flush=True)
        for rep in range(args.repeats):
            total = dict.fromkeys(methods, 0.0)
            for u, unit in enumerate(units):
                outs = {}
                for k in range(len(methods)):  # rotate, so no method always runs first
                    method = methods[(u + rep + k) % len(methods)]
                    seconds, out = timed(run[method], unit)
                    total[method] += seconds
                    if rep == 0:
                        outs[method] = out
                for method, out in outs.items():  # sanity check against the HF forward
                    r, ref = results[(mode, method)], outs[BASELINE]
                    r.diff = max(r.diff, max_diff(out, ref, slice(0, 29)))
                    r.diff_last_layer = max(r.diff_last_layer, max_diff(out, ref, slice(29, 30)))
                del outs
            for method in methods:
                results[(mode, method)].times.append(total[method])
            print(f"  run {rep + 1}   {mode:4s} " + ", ".join(f"{m} {total[m]:.2f} s" for m in methods),
                  flush=True)
    others = other_load(cpu_start, cpu_seconds())

    for (mode, method), r in results.items():
        if method != BASELINE:
            print(f"sanity {mode:4s} {method:28s} max|x - HF forward| layers 0-28 = {r.diff:.2e}; "
                  f"layer 29 (HF final-normed) = {r.diff_last_layer:.2e}")

    table = make_table(results, n_tokens)
    info = machine_info()
    spread = max(r.spread for r in results.values())
    noisy = spread > 10 or others > 0.25
    head_runs = {b: runs_lm_head(adapters[b], prompts[0]) for b in BACKENDS}
    print("LM head run during capture: " + ", ".join(f"{b} {head_runs[b]}" for b in BACKENDS))
    notes = interpret(results, lm_head_share(bare), head_runs)
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["main", *argv])
    doc = [
        "# Activation capture benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {info['nproc']} cores ({info['cpu']}), torch threads {info['threads']} "
        "(default), CPU, fp32",
        f"- Versions: {info['versions']}",
        f"- Command: `{command}`",
        f"- Workload: {MODEL}, {len(prompts)} persona chat prompts ({sum(lengths)} real tokens, "
        f"{lengths[0]}-{lengths[-1]} per prompt, median {lengths[len(lengths) // 2]}; "
        f"{100 * (padded / sum(lengths) - 1):.1f}% padding), batch size "
        f"{args.batch_size}, resid_post of all 30 layers; median of {args.repeats} runs after one "
        f"warm-up (longest batch) per method and mode; the methods take turns after every "
        f"{args.interleave} (order rotated), see `--interleave`.",
        "- LM head run while capturing all layers (forward hook on the output embeddings): "
        + ", ".join(f"{b} {'yes' if head_runs[b] else 'no'}" for b in BACKENDS),
        f"- Loaded with: baseline {load_how[BASELINE]}; "
        + "; ".join(f"{b} {load_how[b]}" for b in BACKENDS),
        f"- Other processes kept {others:.2f} of {info['nproc']} cores busy on average during the "
        f"timed runs; largest spread between repeats {spread:.1f}%"
        + (" — timings are noisy." if noisy else "."),
        "",
        "Ratio = method time / baseline time; overhead % = (ratio - 1) × 100 (negative: faster). "
        "`spread` = (max - min) / median over the repeats; the `min times` columns use each method's "
        "fastest run, which other processes disturb least. Tokens/s (median) counts real tokens only.",
        "",
        table,
        "",
        "Interpretation:",
        "",
        *notes,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(doc))
    print()
    print(table)
    print()
    print("\n".join(notes))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
