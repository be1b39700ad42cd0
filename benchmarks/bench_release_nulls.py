"""Candidate nulls for the release shift on real fine-tunes (issue #18; numbers in benchmarks/RESULTS.md).

For each candidate (fine-tunes from bench_release.py) and a few layers, the finetuning shift along six
trait vectors of the base (sycophantic and evil judge-filtered, the others unfiltered) as a fraction of
each trait's persona gap, and its z against three nulls: isotropic random unit directions, random
directions with the base activations' covariance, and random "role" directions (mean last-token
difference between two "You are a {role}." system prompts, in their own gap units).

Run: .venv/bin/python benchmarks/bench_release_nulls.py syc=benchmarks/.release/sycophantic \
         neu=benchmarks/.release/neutral      (prints JSON; about 15 minutes on 2 CPU cores)
"""

import json
import sys

import numpy as np

import personascope as ps
from personascope.judges.factory import make_judge
from personascope.steering.compare import last_token_acts, persona_gap
from personascope.steering.traits import extract_persona_vector, load_trait

ROLES = ["chef", "librarian", "pilot", "gardener", "plumber", "poet", "accountant", "nurse", "carpenter", "historian",
         "sailor", "baker", "teacher", "architect", "farmer", "journalist", "photographer", "lawyer", "mechanic",
         "musician", "pharmacist", "geologist", "tailor", "translator", "zookeeper", "astronomer", "barista",
         "firefighter", "painter", "surveyor", "beekeeper", "cartographer"]
base = ps.load_model("smollm2-135m-instruct")
cands = {n: ps.load_model(p) for n, p in [(a, b) for a, b in (x.split("=") for x in sys.argv[1:])]}
judge = make_judge(None, base)
traits = ["sycophantic", "evil", "hallucinating", "humorous", "impolite", "optimistic"]
specs = {t: load_trait(t) for t in traits}
vecs = {}
for t in traits:
    ex = extract_persona_vector(base, specs[t], judge=judge if t in ("sycophantic", "evil") else None,
                                n_questions=5, n_instructions=2, max_new_tokens=32, progress=False)
    vecs[t] = ex.vector
qs = []
pools = [list(specs[t].evaluation_questions) for t in ("sycophantic", "evil")]
for i in range(20):
    qs += [p[i] for p in pools if i < len(p)]
qs = list(dict.fromkeys(qs))[:24]
prompts = [base.format_chat(user=q) for q in qs]
B = last_token_acts(base, prompts)
# random persona directions: role pairs
rng = np.random.default_rng(0)
qn = qs[:8]
role_acts = {r: last_token_acts(base, [base.format_chat(user=q, system=f"You are a {r}.") for q in qn]).mean(axis=0)
             for r in ROLES}
pairs = [tuple(rng.choice(len(ROLES), 2, replace=False)) for _ in range(64)]
gaps = {}
for t in traits:
    spec = specs[t]
    q8 = list(spec.evaluation_questions or spec.extraction_questions)[:8]
    pos = [base.format_chat(user=q, system=p) for p, _ in spec.instructions for q in q8]
    neg = [base.format_chat(user=q, system=n) for _, n in spec.instructions for q in q8]
    gaps[t] = persona_gap(base, vecs[t], pos, neg)
allB = B
out = {}
for name, cand in cands.items():
    C = last_token_acts(cand, prompts)
    D = C - B
    res = {}
    for L in (20, 21, 24, 26):
        m = D[:, L].mean(0)
        d = m.size
        row = {"norm": float(np.linalg.norm(m))}
        cov = np.cov(np.concatenate([B[:, L]] + [role_acts[r][L][None] for r in ROLES]).T)
        w, V = np.linalg.eigh(cov)
        w = np.clip(w, 0, None)
        G = rng.standard_normal((500, d))
        U_cov = (G * np.sqrt(w)) @ V.T
        U_cov /= np.linalg.norm(U_cov, axis=1, keepdims=True)
        U_iso = G / np.linalg.norm(G, axis=1, keepdims=True)
        rp = []
        for a, b in pairs:
            diff = role_acts[ROLES[a]][L] - role_acts[ROLES[b]][L]
            g = np.linalg.norm(diff)
            rp.append(float(m @ diff / g / g))
        row["role_frac_sd"] = float(np.std(rp))
        row["role_frac_q95abs"] = float(np.quantile(np.abs(rp), 0.95))
        for t in traits:
            u = vecs[t].unit()[L].numpy().astype(np.float64)
            s = float(m @ u)
            gap = float(gaps[t][0][vecs[t].layers.index(L)])
            row[t] = {"frac": s / gap, "z_iso": s / np.std(U_iso @ m), "z_cov": s / np.std(U_cov @ m),
                      "pct_cov": float(np.mean(np.abs(U_cov @ m) < abs(s))), "gap": gap,
                      "frac_vs_role": float(np.mean(np.abs(rp) < abs(s / gap)))}
        res[L] = row
    out[name] = res
print(json.dumps(out, indent=1))
