"""Benchmark generation: personascope's generate against bare batched ``transformers.generate``, and served.

Measures, in one process and on the same prompts (the embedded SmolLM2-135M model, fp32 on CPU):

* ``HF generate``: ``model.generate`` on left-padded batches (sorted by length, longest first,
  ``--batch-size`` prompts each), greedy, the same stop tokens; the work a user would do by hand.
* ``nnsight`` and ``transformer_lens``: ``adapter.generate(batch, max_new_tokens, batch_size=...)``.
* ``served, concurrency C``: `ServedModel` (completions mode, local tokenizer) against a
  ``personascope serve-judge`` subprocess on loopback (micro-batching up to ``--max-batch``), for
  each C in ``--concurrency``; and the same at the highest C against a server with ``--max-batch 1``
  (one request at a time: what micro-batching buys).

The local methods take turns after every batch (order rotated), ``--repeats`` times, after one
warm-up batch each; the median total is reported. The served runs use a second process that
competes for the same 2 cores with the client, so their ratios include HTTP, JSON and the client.
Greedy texts are compared with ``HF generate``'s (identical fraction).

Run: ``.venv/bin/python benchmarks/bench_generate.py --write`` (about 10 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import (  # noqa: E402 - the shared prompts and helpers of the benchmarks
    BACKENDS,
    build_prompts,
    cpu_seconds,
    length_batches,
    load_adapter,
    load_bare_model,
    machine_info,
    other_load,
)

from personascope.chat import encode  # noqa: E402

MODEL = "smollm2-135m-instruct"
BASELINE = "HF generate"
GOAL = 10.0  # max overhead % of the adapters over bare generate (issue #21/#22)
START, END = "<!-- bench_generate:start -->", "<!-- bench_generate:end -->"


def eos_ids(adapter: Any) -> list[int]:
    """The stop tokens personascope uses (the model's eos and the chat template's end-of-turn)."""
    return adapter._eos_ids()


def bare_generate(model: Any, tok: Any, prompts: list[str], max_new: int, eos: list[int]) -> tuple[list[str], int]:
    """Greedy ``model.generate`` on one left-padded batch; (texts, generated tokens before a stop)."""
    enc = [encode(tok, p) for p in prompts]
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for j, e in enumerate(enc):
        ids[j, width - len(e):] = torch.tensor(e)
        mask[j, width - len(e):] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos)
    texts, n = [], 0
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        n += cut
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return texts, n


def start_server(max_batch: int) -> tuple[subprocess.Popen[str], str]:
    """``personascope serve-judge`` on a free loopback port; (process, base URL)."""
    cmd = [sys.executable, "-m", "personascope.cli", "serve-judge", "--model", MODEL, "--port", "0",
           "--max-batch", str(max_batch), "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"at (http://\S+/v1)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("serve-judge did not start")


def served_run(base: str, tok: Any, prompts: list[str], max_new: int, concurrency: int) -> tuple[float, list[str]]:
    """Seconds and texts of greedy generation over HTTP with ``concurrency`` requests in flight."""
    from personascope.backends.served import ServedModel

    remote = ServedModel(base, MODEL, tokenizer=tok, concurrency=concurrency)
    remote.generate(prompts[:2], 4, progress=False)  # warm the connection pool and the server
    t0 = time.perf_counter()
    texts = remote.generate(prompts, max_new, progress=False)
    return time.perf_counter() - t0, texts


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print (and with ``--write`` store) the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=64, help="number of chat prompts")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate batch")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the local methods")
    parser.add_argument("--concurrency", default="1,4,16", help="served concurrency levels")
    parser.add_argument("--max-batch", type=int, default=16, help="serve-judge --max-batch")
    parser.add_argument("--no-served", action="store_true", help="skip the served runs")
    parser.add_argument("--write", action="store_true", help="replace this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)

    bare, tok, bare_how = load_bare_model()
    adapters = {b: load_adapter(b, bare, tok, by_alias=bare_how.endswith("load_hf"))[0] for b in BACKENDS}
    bare = copy.deepcopy(bare)  # never the adapters' own module: nothing they leave behind can touch it
    eos = eos_ids(adapters["nnsight"])
    prompts = build_prompts(adapters["nnsight"].format_chat, args.n_prompts)
    batches = length_batches(tok, prompts, args.batch_size)
    n_prompt_tokens = sum(len(encode(tok, p)) for p in prompts)
    methods = (BASELINE, *BACKENDS)

    def run(method: str, chunk: list[str]) -> list[str]:
        if method == BASELINE:
            return bare_generate(bare, tok, chunk, args.max_new_tokens, eos)[0]
        return adapters[method].generate(chunk, args.max_new_tokens, batch_size=args.batch_size, progress=False)

    for m in methods:  # warm-up
        run(m, batches[-1])
    times: dict[str, list[float]] = {m: [] for m in methods}
    texts: dict[str, list[str]] = {m: [] for m in methods}
    cpu0 = cpu_seconds()
    for rep in range(args.repeats):
        total = dict.fromkeys(methods, 0.0)
        for u, chunk in enumerate(batches):
            for k in range(len(methods)):
                m = methods[(u + rep + k) % len(methods)]
                t0 = time.perf_counter()
                out = run(m, chunk)
                total[m] += time.perf_counter() - t0
                if rep == 0:
                    texts[m] += out
        for m in methods:
            times[m].append(total[m])
        print(f"repeat {rep + 1}: " + ", ".join(f"{m} {total[m]:.1f} s" for m in methods), flush=True)
    load = other_load(cpu0, cpu_seconds())
    order = [p for chunk in batches for p in chunk]
    ref_texts = texts[BASELINE]
    n_new = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in ref_texts)
    med = {m: statistics.median(times[m]) for m in methods}

    served: list[tuple[str, float, float]] = []  # (label, seconds, identical fraction)
    if not args.no_served:
        levels = [int(c) for c in args.concurrency.split(",")]
        by_prompt = dict(zip(order, ref_texts, strict=True))
        want = [by_prompt[p] for p in prompts]
        for max_batch, cs in ((args.max_batch, levels), (1, [max(levels)])):
            proc, base = start_server(max_batch)
            try:
                for c in cs:
                    secs, got = served_run(base, tok, prompts, args.max_new_tokens, c)
                    same = sum(a == b for a, b in zip(got, want, strict=True)) / len(want)
                    label = f"served, concurrency {c}, server --max-batch {max_batch}"
                    served.append((label, secs, same))
                    print(f"{label}: {secs:.1f} s, identical {same:.0%}", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)

    info = machine_info()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [START, "## Generation throughput (bench_generate.py; issues #21, #22)", "",
             f"- Date: {now}; {info['nproc']} cores ({info['cpu']}), torch threads {info['threads']}, CPU, fp32",
             f"- Versions: {info['versions']}",
             f"- Command: `python benchmarks/bench_generate.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
             f"- Workload: {MODEL}, {len(prompts)} persona chat prompts ({n_prompt_tokens} prompt tokens), greedy, "
             f"{args.max_new_tokens} new tokens at most ({n_new} generated before a stop token), batch "
             f"{args.batch_size} sorted by length; local methods: median of {args.repeats} runs, taking turns "
             "after every batch (order rotated), after one warm-up batch each.",
             f"- Other processes kept {load:.2f} of the cores busy on average during the local runs.", "",
             "| method | seconds | new tokens/s | ratio to HF generate (overhead) | identical texts | goal |",
             "|---|---:|---:|---:|---:|---|"]
    for m in methods:
        ratio = med[m] / med[BASELINE]
        same = sum(a == b for a, b in zip(texts[m], ref_texts, strict=True)) / len(ref_texts)
        goal = "—" if m == BASELINE else f"≤{GOAL:.0f}%: {'met' if (ratio - 1) * 100 <= GOAL else 'not met'}"
        lines.append(f"| {m} | {med[m]:.1f} | {n_new / med[m]:.0f} | {ratio:.3f} ({(ratio - 1) * 100:+.1f}%) | "
                     f"{same:.0%} | {goal} |")
    for label, secs, same in served:
        ratio = secs / med[BASELINE]
        lines.append(f"| {label} | {secs:.1f} | {n_new / secs:.0f} | {ratio:.3f} ({(ratio - 1) * 100:+.1f}%) | "
                     f"{same:.0%} | — |")
    lines += ["", "Served runs: one timed call each (server and client share the cores); a text that differs from "
              "HF generate's comes from a different batch (other padding), not a different model.", END]
    section = "\n".join(lines)
    print("\n" + section)
    if args.write:
        print(f"wrote {write_section(section, START, END)}")


def write_section(section: str, start: str, end: str) -> Path:
    """Replace the part of benchmarks/RESULTS.md between ``start`` and ``end`` (or append it)."""
    path = Path(__file__).resolve().parent / "RESULTS.md"
    doc = path.read_text()
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + section + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)
    return path


if __name__ == "__main__":
    main()
