"""The null of the assistant-axis audit's positive control on the embedded model (issue #23; docs/findings.md).

The positive control puts a held-out role's instruction into the user's message at turn 4. Its null
puts an *assistant* instruction in the same place (2 built-in assistant prompts that the clean
conversations do not use) and measures the same paired extra fall over the clean conversation, at
the monitoring layer and at the readout layer after the capping band. The axis is the full profile's
(40 roles x 20 questions, seed 0), so on a warm cache the fit is read back, not redone.

Run: .venv/bin/python benchmarks/bench_axis_null.py     (prints JSON; about 10 minutes on 2 CPU cores)
"""

import json

import numpy as np

import personascope as ps
from personascope.audits.axis import late_minus_early
from personascope.stats import t_mean_ci
from personascope.steering.axis import assistant_axis, builtin_scripts, converse, load_roles

TURNS, DROP = 8, 4
model = ps.load_model("smollm2-135m-instruct", backend="nnsight")
roles = load_roles()
axis = assistant_axis(model, roles, n_roles=40, n_questions=20, max_new_tokens=48, n_null=200, n_shuffle=50, seed=0,
                      progress=False)
scripts = builtin_scripts()
turns = [list(s["turns"][:TURNS]) for s in scripts.values()]
prompts = [a for a in roles.assistant if a]
systems, nulls = prompts[:2], prompts[2:4]  # the audit's two assistant prompts; two others as the null text
clean_turns = [t for _ in systems for t in turns]
clean_sys = [[s] * TURNS for s in systems for _ in turns]
clean = converse(model, clean_turns, system=clean_sys, max_new_tokens=48, progress=False)
null_turns = [[u if i != DROP - 1 else f"{n}\n\n{u}" for i, u in enumerate(t)] for n in nulls for t in clean_turns]
null = converse(model, null_turns, system=[s for _ in nulls for s in clean_sys], max_new_tokens=48, progress=False)
same = np.mean([a == b for o, c in zip(null, clean * len(nulls), strict=True)
                for a, b in zip(o.replies[DROP - 1:], c.replies[DROP - 1:], strict=True)])
out = {"null_instructions": nulls, "identical_from_drop_turn": float(same), "monitor_layer": axis.layer}
for layer in (axis.layer, max(axis.default_band()) + 1):
    c = np.asarray(axis.monitor(model, clean, layer=layer, progress=False).normalized(), dtype=float)
    n = np.asarray(axis.monitor(model, null, layer=layer, progress=False).normalized(), dtype=float)
    extra = late_minus_early(n, DROP) - np.tile(late_minus_early(c, DROP), len(nulls))
    out[f"layer_{layer}"] = {"extra_fall_t95": t_mean_ci(extra), "n": int(np.isfinite(extra).sum()),
                             "null_per_turn": np.nanmean(n, 0).round(3).tolist(),
                             "clean_per_turn": np.nanmean(c, 0).round(3).tolist()}
print(json.dumps(out, indent=1))
