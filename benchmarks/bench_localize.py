"""Benchmark and findings run: `localize` on 12 shared persona files x 100 statements, all layers.

Usage: python benchmarks/bench_localize.py [--model smollm2-135m-instruct] [--out DIR]
Prints wall time per stage (capture vs measurement) and writes the result JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import personascope as ps
from personascope.data import load_persona_statements
from personascope.probes.localize import localize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "anthropic-persona"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default="/tmp/localize-bench")
    args = ap.parse_args()
    names = sorted({s.persona for s in load_persona_statements(SHARED)})
    t0 = time.perf_counter()
    model = ps.load_model(args.model)
    t1 = time.perf_counter()
    # A fresh cache folder so capture is timed, not served from an earlier run.
    cache = Path(args.out) / f"cache-{int(time.time())}"
    res = localize(model, names, source=SHARED, n_per_persona=args.n, background=None, cache=cache)
    t2 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.model.replace("/", "_")
    (out / f"{name}.json").write_text(res.model_dump_json(indent=1))
    timing = {"model": args.model, "personas": len(names), "n_per_persona": args.n,
              "layers": res.n_layers, "load_s": round(t1 - t0, 1), "localize_s": round(t2 - t1, 1)}
    print(json.dumps(timing))
    print(f"best layer {res.best_layer} acc {res.layers[res.best_layer].accuracy:.3f} "
          f"band {res.band} frac {res.band_fraction}")


if __name__ == "__main__":
    main()
