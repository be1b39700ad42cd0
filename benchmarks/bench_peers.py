"""Agreement with peers: our mean-diff / PCA persona vectors against `repeng` and `steering-vectors`.

On the same contrast pairs (the same full texts, read at the last token of each text) this
computes, for every layer of the embedded SmolLM2-135M-Instruct:

* our `mean_diff` vs steering-vectors' ``mean_aggregator`` (both: mean of ``pos - neg``);
* our `pca_diff` vs repeng's ``ControlVector.train(method="pca_diff")`` (both: first component of
  the *centred* pair differences, sign so the positive side projects higher);
* our `pca_diff` vs steering-vectors' ``pca_aggregator``, which is an *uncentred* PCA of the
  differences (it mirrors them, ``[d; -d]``), so it is a different definition; we report it next to
  an uncentred PCA computed from our activations to show that the gap is the definition, not the
  activations.

and the wall time to extract one vector (all layers, capture included, no cache) with each library
on the same texts, several repeats in turn in one process.

Layer mapping. Ours: layer i = output of block i (pre final norm at every layer). steering-vectors:
a forward hook on ``model.model.layers[i]``, the same point. repeng: ``hidden_states[i + 1]``, the
same point except i = n-1, where Hugging Face returns the state *after* the final norm; at that
layer we also compare with our pca_diff of the normed activations (the matching point).

The peers are installed without dependencies (``pip install --no-deps --target benchmarks/.peers
repeng==0.4.0 steering-vectors==0.12.2``) and run on our venv's torch / transformers; see
``benchmarks/peers_requirements.txt``. repeng 0.4.0 uses ``np.float_`` in annotations, removed in
NumPy 2, so the script sets ``np.float_ = np.float64`` before importing it (that is all it needs).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=benchmarks/.peers .venv/bin/python benchmarks/bench_peers.py
[--write]`` (10-20 minutes with one thread, depending on load; ``--pairs 8 --repeats 1`` for a
two-minute check); ``--write`` appends / replaces the "Agreement with peers" section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA

import personascope as ps
from personascope.steering.extract import mean_diff, pca_diff
from personascope.store import ActivationSet, collect

ROOT = Path(__file__).resolve().parents[1]
TRAITS = ROOT / "personascope" / "data" / "traits"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
HEADING = "# Agreement with peers (repeng, steering-vectors)"
RESPONSE = "Here is my answer."  # fixed reply so both sides of a pair are full chat texts

if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, gone in NumPy 2
    np.float_ = np.float64  # type: ignore[attr-defined]

try:
    import steering_vectors as sv
    from repeng import ControlVector, DatasetEntry
except ImportError as exc:  # pragma: no cover - setup hint
    sys.exit(f"{exc}: install the peers with `.venv/bin/pip install --no-deps --target benchmarks/.peers "
             "-r benchmarks/peers_requirements.txt` and run with PYTHONPATH=benchmarks/.peers")


def contrast_pairs(trait: str, n: int, seed: int, model: Any) -> list[tuple[str, str]]:
    """``n`` (positive, negative) full texts: same question and reply, opposite system instruction."""
    spec = json.loads((TRAITS / f"{trait}.json").read_text())
    combos = [(i, q) for i in spec["instructions"] for q in spec["extraction_questions"]]
    if n > len(combos):
        raise SystemExit(f"{trait} has only {len(combos)} (instruction, question) pairs, asked for {n}")
    picked = random.Random(seed).sample(combos, n)
    return [
        (model.format_chat(user=q, system=ins["pos"]) + RESPONSE,
         model.format_chat(user=q, system=ins["neg"]) + RESPONSE)
        for ins, q in picked
    ]


# ---------------------------------------------------------------------- the four extractors
def ours(model: Any, pairs: list[tuple[str, str]], method: str, batch_size: int) -> dict[int, np.ndarray]:
    """Our vector: capture resid_post at the last token of every text (no cache), then extract."""
    sites = model.sites("all")
    got = collect(model, [p for p, _ in pairs] + [n for _, n in pairs], sites, "last",
                  batch_size=batch_size, cache=False, progress=False)
    acts = next(iter(got.values()))
    k = len(pairs)
    pos, neg = dataclasses.replace(acts, acts=acts.acts[:k]), dataclasses.replace(acts, acts=acts.acts[k:])
    fn = mean_diff if method == "mean" else pca_diff
    vec = fn(pos, neg)
    ours.last_acts = (pos, neg)  # type: ignore[attr-defined]  # kept for the matched-norm comparison
    return {k_: v.numpy() for k_, v in vec.directions.items()}


def repeng_pca(model: Any, pairs: list[tuple[str, str]], batch_size: int) -> dict[int, np.ndarray]:
    """repeng 0.4.0 ``ControlVector.train(method="pca_diff")`` at every layer 0..n-1."""
    data = [DatasetEntry(positive=p, negative=n) for p, n in pairs]
    cv = ControlVector.train(model.hf_model, model.tokenizer, data, method="pca_diff",
                             hidden_layers=list(range(model.n_layers)), batch_size=batch_size)
    return {int(k): np.asarray(v, dtype=np.float64) for k, v in cv.directions.items()}


def sv_vector(model: Any, pairs: list[tuple[str, str]], method: str, batch_size: int) -> dict[int, np.ndarray]:
    """steering-vectors 0.12.2 ``train_steering_vector`` (mean or pca aggregator), read token -1.

    Its ``batch_size`` counts pairs and it runs the positives and the negatives of a batch as two
    forward passes, so ``batch_size`` pairs give the same texts per forward as the others.
    """
    agg = sv.mean_aggregator() if method == "mean" else sv.pca_aggregator()
    vec = sv.train_steering_vector(model.hf_model, model.tokenizer, pairs, layers=list(range(model.n_layers)),
                                   read_token_index=-1, aggregator=agg, batch_size=batch_size)
    return {int(k): v.double().cpu().numpy() for k, v in vec.layer_activations.items()}


# ---------------------------------------------------------------------- comparisons
def cos(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity (signed: a flipped sign counts as disagreement)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def per_layer(a: dict[int, np.ndarray], b: dict[int, np.ndarray], layers: list[int]) -> list[float]:
    """Cosine at each of ``layers``."""
    return [cos(a[k], b[k]) for k in layers]


def summary(cs: list[float], layers: list[int]) -> dict[str, Any]:
    """Min (with its layer), median, min of abs, counts of layers with cos < 0 and cos > 0.99."""
    j = int(np.argmin(cs))
    return {"min": min(cs), "min_layer": layers[j], "median": statistics.median(cs),
            "min_abs": min(abs(c) for c in cs), "n_neg": sum(c < 0 for c in cs),
            "n_ge_099": sum(c > 0.99 for c in cs), "n": len(cs)}


def uncentred_pca(pos: ActivationSet, neg: ActivationSet) -> dict[int, np.ndarray]:
    """First right-singular vector of the raw (not centred) differences, sign toward the mean difference."""
    out = {}
    for j, s in enumerate(pos.sites):
        d = (pos.acts[:, j] - neg.acts[:, j]).double().numpy()
        v = np.linalg.svd(d, full_matrices=False)[2][0]
        out[s.layer] = v if (d @ v).mean() >= 0 else -v
    return out


def normed_last(model: Any, pos: ActivationSet, neg: ActivationSet) -> tuple[np.ndarray, ActivationSet, ActivationSet]:
    """Our pca_diff at the last layer after the model's final norm (what HF's last hidden state is).

    Returns the direction and the normed one-site activation sets.
    """
    norm = model._final_norm()
    j = pos.site_index(model.n_layers - 1)
    with torch.no_grad():
        p = dataclasses.replace(pos, acts=norm(pos.acts[:, j : j + 1]).float(), sites=[pos.sites[j]])
        n = dataclasses.replace(neg, acts=norm(neg.acts[:, j : j + 1]).float(), sites=[neg.sites[j]])
    return pca_diff(p, n)[model.n_layers - 1].numpy(), p, n


def repeng_sign(vec: dict[int, np.ndarray], pos: ActivationSet, neg: ActivationSet) -> dict[int, np.ndarray]:
    """``vec`` re-signed by repeng's rule: flip if more pairs have ``pos_i`` below ``neg_i`` than above.

    On a tie repeng keeps the sign scikit-learn's PCA returned, so a tie is resolved with a fresh
    ``PCA(n_components=1)`` fit on the same float32 differences, as repeng does.
    """
    out = {}
    for j, s in enumerate(pos.sites):
        v = vec[s.layer]
        a, b = pos.acts[:, j].numpy(), neg.acts[:, j].numpy()
        p, n = a.astype(np.float64) @ v, b.astype(np.float64) @ v
        below, above = (p < n).mean(), (p > n).mean()
        if below == above:
            raw = PCA(n_components=1, whiten=False).fit(a - b).components_[0]
            out[s.layer] = v if cos(v, raw) > 0 else -v
        else:
            out[s.layer] = -v if below > above else v
    return out


def extractors(model: Any, pairs: list[tuple[str, str]], bs: int) -> dict[str, Callable[[], dict[int, np.ndarray]]]:
    """The five extractions compared and timed, each returning ``{layer: direction}``."""
    return {
        "personascope mean_diff": lambda: ours(model, pairs, "mean", bs),
        "personascope pca_diff": lambda: ours(model, pairs, "pca", bs),
        "repeng pca_diff": lambda: repeng_pca(model, pairs, bs),
        "steering-vectors mean": lambda: sv_vector(model, pairs, "mean", bs),
        "steering-vectors pca": lambda: sv_vector(model, pairs, "pca", bs),
    }


def agreement(model: Any, trait: str, vecs: dict[str, dict[int, np.ndarray]],
              acts: tuple[ActivationSet, ActivationSet], n_pairs: int) -> dict[str, Any]:
    """All per-layer cosines for one trait, from the vectors of `extractors` and our activations."""
    o_mean, o_pca = vecs["personascope mean_diff"], vecs["personascope pca_diff"]
    r_pca, s_mean, s_pca = vecs["repeng pca_diff"], vecs["steering-vectors mean"], vecs["steering-vectors pca"]
    pos, neg = acts
    u_pca = uncentred_pca(pos, neg)
    o_pca_rsign = repeng_sign(o_pca, pos, neg)
    L = model.n_layers
    all_l, pre = list(range(L)), list(range(L - 1))
    norm_ratio = [float(np.linalg.norm(o_mean[k]) / np.linalg.norm(s_mean[k])) for k in all_l]
    last, pos_n, neg_n = normed_last(model, pos, neg)
    last_rsign = repeng_sign({L - 1: last}, pos_n, neg_n)[L - 1]
    rows = {
        "ours mean_diff vs steering-vectors mean": summary(per_layer(o_mean, s_mean, all_l), all_l),
        f"ours pca_diff vs repeng pca_diff (layers 0-{L - 2})": summary(per_layer(o_pca, r_pca, pre), pre),
        f"same, our direction with repeng's sign rule (layers 0-{L - 2})":
            summary(per_layer(o_pca_rsign, r_pca, pre), pre),
        f"ours pca_diff vs repeng pca_diff, layer {L - 1} as-is (ours pre-norm, repeng post-norm)":
            summary([cos(o_pca[L - 1], r_pca[L - 1])], [L - 1]),
        f"ours pca_diff vs repeng pca_diff, layer {L - 1} matched (final norm applied to ours, repeng's sign rule)":
            summary([cos(last_rsign, r_pca[L - 1])], [L - 1]),
        "ours pca_diff vs steering-vectors pca": summary(per_layer(o_pca, s_pca, all_l), all_l),
        "uncentred PCA of our diffs vs steering-vectors pca": summary(per_layer(u_pca, s_pca, all_l), all_l),
        "steering-vectors pca vs ours mean_diff": summary(per_layer(s_pca, o_mean, all_l), all_l),
        "ours pca_diff vs ours mean_diff": summary(per_layer(o_pca, o_mean, all_l), all_l),
    }
    flips = [k for k in pre if cos(o_pca[k], r_pca[k]) < 0]
    # How well our pca_diff separates the conditions: mean / sd of the pair differences' projections.
    sep = {}
    for j, s in enumerate(pos.sites):
        proj = (pos.acts[:, j] - neg.acts[:, j]).double().numpy() @ o_pca[s.layer]
        sep[s.layer] = float(proj.mean() / proj.std())
    keep = [k for k in pre if k not in flips]
    return {"trait": trait, "pairs": n_pairs, "rows": rows,
            "mean_norm_ratio_ours_over_sv": [min(norm_ratio), max(norm_ratio)],
            "pca_sign_flip_layers": flips,
            "separation_at_flips_max": max((sep[k] for k in flips), default=None),
            "separation_elsewhere_median": statistics.median(sep[k] for k in keep) if keep else None,
            "pca_vs_repeng_per_layer": per_layer(o_pca, r_pca, all_l),
            "pca_vs_mean_per_layer": per_layer(o_pca, o_mean, all_l)}


def run_all(model: Any, pairs: list[tuple[str, str]], bs: int) -> tuple[dict, tuple[ActivationSet, ActivationSet]]:
    """One call of every extractor (also the timing warm-up); returns the vectors and our activations."""
    fns = extractors(model, pairs, bs)
    vecs = {k: fns[k]() for k in ("personascope mean_diff", "personascope pca_diff")}
    acts = ours.last_acts  # type: ignore[attr-defined]
    vecs.update({k: f() for k, f in fns.items() if k not in vecs})
    return vecs, acts


def timing(model: Any, pairs: list[tuple[str, str]], repeats: int, bs: int) -> dict[str, dict[str, float]]:
    """Median / min seconds to extract one all-layer vector, methods taking turns (rotated) per repeat."""
    methods = extractors(model, pairs, bs)
    times: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()}


# ---------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    """The RESULTS.md section."""
    m = res["meta"]
    lines = [
        HEADING, "",
        f"- Date: {m['date']}; command: `{m['command']}`",
        f"- Versions: Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"numpy {m['numpy']}, scikit-learn {m['sklearn']}; repeng {m['repeng']}, steering-vectors "
        f"{m['steering_vectors']} (installed with `--no-deps` into `benchmarks/.peers`, run on our torch / "
        "transformers; repeng needs the one-line `np.float_ = np.float64` shim under NumPy 2, and "
        "steering-vectors pins `transformers<5` but ran unchanged on 5.x)",
        f"- Model: {m['model']} ({m['n_layers']} layers, d={m['d_model']}), fp32, CPU.",
        f"- Data: {m['pairs']} contrast pairs per trait from `personascope/data/traits/<trait>.json` (random "
        f"(instruction, extraction question) combinations, seed {m['seed']}): the chat-formatted question "
        f"with the positive vs the negative system instruction, plus the fixed reply \"{RESPONSE}\". "
        "Every library gets the same full texts and reads the last token; batch size "
        f"{m['batch_size']} texts per forward for all.",
        "- Layer i = output of block i for us and steering-vectors; repeng reads `hidden_states[i+1]`, the "
        f"same point except layer {m['n_layers'] - 1}, where Hugging Face returns the state after the final norm "
        "(compared both as-is and with the final norm applied to our activations).",
        "",
        "Cosine per layer (signed; min over layers with its layer, median, min of |cos|, layers with opposite "
        "sign, layers with cos > 0.99):",
        "",
        "| trait | comparison | min (layer) | median | min abs | cos < 0 | cos > 0.99 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for a in res["agreement"]:
        for name, s in a["rows"].items():
            lines.append(f"| {a['trait']} | {name} | {s['min']:.6f} ({s['min_layer']}) | {s['median']:.6f} | "
                         f"{s['min_abs']:.6f} | {s['n_neg']} | {s['n_ge_099']}/{s['n']} |")
    ratios = ", ".join(f"{a['trait']} {lo:.6f}-{hi:.6f}" for a in res["agreement"]
                       for lo, hi in [a["mean_norm_ratio_ours_over_sv"]])
    lines += ["", f"Norm of our mean_diff / steering-vectors' mean, range over layers: {ratios}.", ""]
    t = res["timing"]
    base = t["personascope mean_diff"]["median"]
    lines += [
        f"Extraction time of one vector (all {m['n_layers']} layers, {2 * m['pairs']} texts, capture included, "
        f"our activation cache off), trait `{m['timing_trait']}`, {m['repeats']} repeat(s) after one warm-up, "
        "methods taking turns: **1 torch thread on a 2-core machine shared with other jobs, so read the ratios, "
        f"not the seconds** (load average {m['load_before']:.1f} before, {m['load_after']:.1f} after).",
        "",
        "| library / method | median s | min s | max s | ratio to personascope mean_diff (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in t.items():
        lines.append(f"| {name} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {s['median'] / base:.2f} |")
    lines += ["", "Interpretation:", ""] + [f"- {x}" for x in res["notes"]]
    return "\n".join(lines) + "\n"


def notes(res: dict[str, Any]) -> list[str]:
    """Plain-language reading of the numbers (computed, not hard-coded)."""
    out = []
    L = res["meta"]["n_layers"]
    for a in res["agreement"]:
        r = a["rows"]
        mean = r["ours mean_diff vs steering-vectors mean"]
        rp = r[f"ours pca_diff vs repeng pca_diff (layers 0-{L - 2})"]
        rs = r[f"same, our direction with repeng's sign rule (layers 0-{L - 2})"]
        last = next(v for k, v in r.items() if k.startswith(f"ours pca_diff vs repeng pca_diff, layer {L - 1} matched"))
        out.append(
            f"`{a['trait']}`: mean_diff vs steering-vectors min cos {mean['min']:.6f} ({mean['n_ge_099']}/{mean['n']} "
            f"layers > 0.99). pca_diff vs repeng on layers 0-{L - 2}: min |cos| {rp['min_abs']:.6f}, but the sign "
            f"differs at {rp['n_neg']} layer(s) {a['pca_sign_flip_layers']}; with repeng's sign rule applied to our "
            f"direction the min cos is {rs['min']:.6f} ({rs['n_ge_099']}/{rs['n']} > 0.99). Layer {L - 1}: "
            f"{last['min']:.6f} once the final norm is applied to ours." + (
                f" Where the signs differ the pairs separate weakly along the component (mean / sd of the pair "
                f"differences' projections at most {a['separation_at_flips_max']:.2f}; median "
                f"{a['separation_elsewhere_median']:.2f} at the other layers), so a per-pair vote and the mean can "
                "point different ways." if a["pca_sign_flip_layers"] else ""))
    out.append("Sign: repeng orients each direction by a majority vote over pairs (flip when more pairs have pos "
               "below neg than above; on a tie it keeps scikit-learn's arbitrary SVD sign), ours (like "
               "steering-vectors') by the sign of the mean projection difference. The centred PCA direction is "
               "often nearly orthogonal to the mean difference (last row), so the vote is often close or tied "
               "and the two rules can disagree; the direction itself (up to sign) is the same, and with "
               "repeng's rule applied to our direction the vectors are equal.")
    out.append("steering-vectors' `pca_aggregator` is a different definition: an uncentred PCA (SVD of the mirrored "
               "differences `[d; -d]`), whose first component is pulled toward the mean difference, while "
               "repeng's `pca_diff` and ours centre the differences first (scikit-learn PCA) and so return the "
               "main direction of *variation* of the differences around their mean. The uncentred PCA computed "
               "from our activations matches steering-vectors' (row above), so the activations agree and only "
               "the definition differs; the cos between our pca_diff and our own mean_diff shows how far apart "
               "the two definitions are on this data.")
    return out


def write_section(text: str) -> None:
    """Replace our section of RESULTS.md (from its heading to the next top-level heading), or append it."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if HEADING in old:
        head, rest = old.split(HEADING, 1)
        nxt = rest.find("\n# ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traits", default="evil,humorous", help="comma-separated trait files to compare on")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    ap.add_argument("--json", default="", help="also dump the raw results to this path")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = ps.load_model()
    traits = args.traits.split(",")
    res: dict[str, Any] = {"agreement": []}
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink):  # repeng's tqdm bars
        for t in traits:
            pairs = contrast_pairs(t, args.pairs, args.seed, model)
            vecs, acts = run_all(model, pairs, args.batch_size)  # the first trait's run is the timing warm-up
            res["agreement"].append(agreement(model, t, vecs, acts, args.pairs))
            if t == traits[0]:
                load_before = os.getloadavg()[0]
                res["timing"] = timing(model, pairs, args.repeats, args.batch_size)
    res["meta"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=benchmarks/.peers python benchmarks/bench_peers.py "
                   + " ".join(sys.argv[1:]),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
        "numpy": np.__version__, "sklearn": version("scikit-learn"), "repeng": version("repeng"),
        "steering_vectors": version("steering-vectors"), "model": model.info.short, "n_layers": model.n_layers,
        "d_model": model.d_model, "pairs": args.pairs, "seed": args.seed, "batch_size": args.batch_size,
        "repeats": args.repeats, "timing_trait": traits[0], "threads": torch.get_num_threads(),
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    res["notes"] = notes(res)
    text = markdown(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
