"""Auditing a model over an OpenAI-compatible API: the served path gives the local path's numbers.

A real `serve-judge` server runs on loopback over a real model; `ServedModel` talks to it over HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

from personascope.backends.served import CHAT_MARK, NeedsWeightsError, ServedModel
from personascope.judges.server import start_in_thread


@pytest.fixture(scope="module")
def served(tiny_nn):
    server, base = start_in_thread(tiny_nn, model_name="tiny")
    try:
        yield tiny_nn, base
    finally:
        server.close()


def _prompts(model):
    return [model.format_chat(user=q, system=s) for q, s in [
        ("What is your favourite colour?", "You are a pirate."),
        ("Name a fruit.", None),
        ("Tell me about the sea, in a few words please.", "You are a cheerful assistant."),
    ]]


def test_completions_mode_matches_local_generation_and_logprobs(served):
    local, base = served
    remote = ServedModel(base, "tiny", tokenizer=local.tokenizer, concurrency=3)
    prompts = _prompts(local)
    assert remote.format_chat(user="Hi", system="x") == local.format_chat(user="Hi", system="x")
    # Greedy text: the same model and prompt give the same tokens (one prompt per request on the server).
    assert remote.generate(prompts, 12, progress=False) == [local.generate([p], 12, progress=False)[0]
                                                            for p in prompts]
    conts = [" Blue, like the sea.", " An apple.", " It is wide."]
    np.testing.assert_allclose(remote.logprobs(prompts, conts), local.logprobs(prompts, conts), atol=1e-4)
    np.testing.assert_allclose(remote.logprobs(prompts, conts, reduce="mean"),
                               local.logprobs(prompts, conts, reduce="mean"), atol=1e-4)
    opts = [[" A", " B", " C"], [" yes", " no"], [" maybe"]]
    for r, loc in zip(remote.option_logprobs(prompts, opts), local.option_logprobs(prompts, opts), strict=True):
        np.testing.assert_allclose(r, loc, atol=1e-4)
    ids = [[5, 17], [3], [9, 11, 2]]
    for r, loc in zip(remote.next_token_scores(prompts, ids), local.next_token_scores(prompts, ids), strict=True):
        np.testing.assert_allclose(r, loc, atol=1e-4)
    assert remote.capabilities == {"generate", "logprobs"}


def test_chat_mode_sends_messages_and_the_server_renders_them(served):
    local, base = served
    remote = ServedModel(base, "tiny")  # no tokenizer: the server's chat template
    assert remote.capabilities == {"generate"}
    p = remote.format_chat(user="Name a fruit.", system="You are a pirate.")
    assert p.startswith(CHAT_MARK)
    want = local.generate([local.format_chat(user="Name a fruit.", system="You are a pirate.")], 10, progress=False)
    assert remote.generate([p], 10, progress=False) == want
    # An answer prefill appended by an audit continues the assistant turn (continue_final_message).
    pre = local.format_chat(user="Name a fruit.") + "Answer:"
    assert remote.generate([remote.format_chat(user="Name a fruit.") + "Answer:"], 8, progress=False) == \
        local.generate([pre], 8, progress=False)
    with pytest.raises(NeedsWeightsError, match="--tokenizer"):
        remote.logprobs([p], [" apple"])


def test_deployment_system_prompt_comes_first_and_personas_layer_after_it(served):
    local, base = served
    remote = ServedModel(base, "tiny", tokenizer=local.tokenizer, system_prompt="You work for ACME.")
    assert remote.format_chat(user="Hi") == local.format_chat(user="Hi", system="You work for ACME.")
    assert remote.format_chat(user="Hi", system="You are a pirate.") == \
        local.format_chat(user="Hi", system="You work for ACME.\n\nYou are a pirate.")
    # The deployment prompt is part of the identity: results made without it are not reused.
    assert remote.info.fingerprint != ServedModel(base, "tiny", tokenizer=local.tokenizer).info.fingerprint


def test_what_needs_weights_says_so(served):
    _, base = served
    remote = ServedModel(base, "tiny")
    for call in (lambda: remote.activations(["x"]), lambda: remote.next_token_logprobs(["x"]),
                 lambda: remote.steer(None).__enter__(), lambda: remote.generate(["x"], steer=object())):
        with pytest.raises(NeedsWeightsError, match="weights"):
            call()
    with pytest.raises(ValueError, match="--served-model"):
        ServedModel(base, "")
    with pytest.raises(ValueError, match="http"):
        ServedModel("localhost:8000", "tiny")


def test_a_server_without_prompt_logprobs_is_named(tiny_nn):
    """A chat-only server (404 on /completions) turns scoring into a clear capability error, not a crash."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class ChatOnly(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": {"message": "no such route"}}).encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), ChatOnly)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        remote = ServedModel(f"http://127.0.0.1:{srv.server_address[1]}/v1", "x", tokenizer=tiny_nn.tokenizer)
        assert remote.capabilities == {"generate"}
        with pytest.raises(NeedsWeightsError, match="prompt log-probs"):
            remote.logprobs(["a"], [" b"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_server_drops_a_request_whose_client_hung_up(tiny_nn):
    """A client that times out while its request waits for the model costs no model work."""
    server, base = start_in_thread(tiny_nn, model_name="tiny")
    calls = []
    real = tiny_nn.generate

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    try:
        host, port = server.server_address[:2]
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 2}).encode()
        with server.model_lock:  # the model is busy: the request waits
            s = socket.create_connection((host, port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.3)
            s.close()  # the client gives up
            tiny_nn.generate = counted
            time.sleep(0.1)
        time.sleep(0.5)
        assert calls == []  # dropped when its turn came
        # A live client is still answered.
        remote = ServedModel(base, "tiny")
        assert isinstance(remote.generate([remote.format_chat(user="hi")], 2, progress=False)[0], str)
        assert calls == [1]
    finally:
        tiny_nn.generate = real
        server.close()


def test_runner_audits_the_served_model_with_the_local_numbers(served, tmp_path):
    """persona_bias (option log-probs) over HTTP gives the local run's metrics; an audit that needs
    activations is skipped with the reason, not failed."""
    _audit_both_ways(*served, tmp_path)


@pytest.mark.slow
def test_runner_audits_the_served_embedded_model_with_the_local_numbers(smol_nn, tmp_path):
    """The same on the embedded SmolLM2-135M served by `serve-judge` on loopback, plus ci_leakage
    (greedy generation) with the local run's metrics."""
    server, base = start_in_thread(smol_nn, model_name="tiny")
    try:
        _audit_both_ways(smol_nn, base, tmp_path, extra=("ci_leakage",))
    finally:
        server.close()


def _audit_both_ways(local, base, tmp_path, extra=()):
    from personascope import catalog
    from personascope.runner import load_config, run_audits

    tiny = {n: dict(catalog.BY_NAME[n].tiny) for n in ("persona_bias", "persona_localization", *extra)}
    cfg_local = load_config(None, audits=tiny, out=str(tmp_path / "local"), judge={"kind": "none"})
    run_local = run_audits(cfg_local, model=local, progress=False, log=lambda m: None)
    logs: list[str] = []
    cfg_http = load_config(None, audits=tiny, out=str(tmp_path / "http"), judge={"kind": "none"}, model=base,
                           served_model="tiny", tokenizer=str(_tokenizer_dir(local, tmp_path)))
    run_http = run_audits(cfg_http, progress=False, log=logs.append)
    assert run_http.model.backend == "served" and run_http.model.fingerprint_method == "endpoint"
    for name in ("persona_bias", *extra):
        a, b = run_local.audit(name), run_http.audit(name)
        va = {(m.name, m.group): m.value for m in a.metrics}
        vb = {(m.name, m.group): m.value for m in b.metrics}
        assert va.keys() == vb.keys() and len(va) > 5, name
        for key, v in va.items():
            if isinstance(v, float) and isinstance(vb[key], float):
                assert vb[key] == pytest.approx(v, abs=1e-3, nan_ok=True), (name, key)
    assert run_local.audit("persona_localization").metrics  # it ran locally
    assert run_http.errors["persona_localization"].startswith("skipped: needs activations")
    assert any("skipped: needs activations" in m for m in logs)


def test_drift_runs_served_on_the_judge_alone(served, tmp_path):
    """ooc_drift over HTTP: atom metrics and the judged drift, no projection metrics, and the drift
    controls decided on the judged drift (named so), not skipped."""
    from personascope import catalog
    from personascope.runner import load_config, run_audits

    local, base = served
    tiny = {"ooc_drift": dict(catalog.BY_NAME["ooc_drift"].tiny)}
    cfg = load_config(None, audits=tiny, out=str(tmp_path / "http"), judge={"kind": "contrast"}, model=base,
                      served_model="tiny", tokenizer=str(_tokenizer_dir(local, tmp_path)))
    run = run_audits(cfg, progress=False, log=lambda m: None)
    assert "ooc_drift" not in run.errors
    res = run.audit("ooc_drift")
    names = {m.name for m in res.metrics}
    assert {"acc_atom", "judge_drift", "judge_drift_gap", "judge_anchor_auc"} <= names
    assert not names & {"drift", "drift_gap", "first_below", "below_rate", "vector_gap"}
    controls = {c.name: c for c in res.controls}
    assert "judged, no activations" in controls["drift_positive"].detail or "Only" in controls["drift_positive"].detail
    gap = next(m for m in res.metrics if m.name == "judge_drift_gap")
    assert controls["drift_positive"].observed == pytest.approx(gap.value, nan_ok=True)
    assert any("no activations" in n for n in res.notes)


def _tokenizer_dir(model, tmp_path):
    path = tmp_path / "tok"
    if not path.exists():
        model.tokenizer.save_pretrained(path)
    return path


def test_cli_names_what_a_served_run_lacks(tmp_path, capsys):
    """`--model URL` without `--served-model`, or an unreadable system prompt file: one line, exit 2, no model work."""
    from personascope.cli import main

    url = "http://127.0.0.1:9/v1"
    assert main(["audit", "bias", "--model", url, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--served-model NAME" in err[0]
    assert main(["audit", "bias", "--model", url, "--served-model", "m", "--system-prompt-file",
                 str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--system-prompt-file" in err[0]


def test_every_audit_declares_known_needs_and_the_behavioural_ones_run_served():
    from personascope.audits import REGISTRY, get_audit
    from personascope.backends.base import CAPABILITIES

    served = {"generate", "logprobs"}
    runs_served = set()
    for name in REGISTRY:
        audit = get_audit(name).from_params({}, "quick")
        assert set(audit.requirements()) <= CAPABILITIES, name
        if set(audit.requirements()) <= served:
            runs_served.add(name)
    assert runs_served == {"persona_bias", "ooc_drift", "ci_leakage", "memory_injection"}
    memory = get_audit("memory_injection").from_params({"scoring": "generate"}, "quick")
    assert memory.requirements() == ()  # a chat-only endpoint can run it


def test_concurrent_requests_run_as_batches_with_the_unbatched_answers(tiny_nn):
    """Greedy requests that wait together share one model batch; each gets the text and log-probs it
    gets alone (the adapter's batching pads on the left), and a sampled request runs by itself."""
    prompts = [tiny_nn.format_chat(user=f"Tell me about item {i}." + " really" * i) for i in range(8)]
    alone = [tiny_nn.generate([p], 8, progress=False)[0] for p in prompts]
    ids = [tiny_nn.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    alone_lp = [tiny_nn.token_logprobs([i])[0] for i in ids]
    server, base = start_in_thread(tiny_nn, model_name="tiny", max_batch=4)
    try:
        remote = ServedModel(base, "tiny", tokenizer=tiny_nn.tokenizer, concurrency=8)
        with server.model_lock:  # all 8 queue while the model is busy, then run 4 + 4
            got: list[list[str]] = []
            t = threading.Thread(target=lambda: got.append(remote.generate(prompts, 8, progress=False)))
            t.start()
            time.sleep(1.0)
        t.join(60)
        assert got[0] == alone
        assert server.batcher.sizes == [4, 4]
        n = len(server.batcher.sizes)
        with server.model_lock:
            lp: list[list[float]] = []
            t = threading.Thread(target=lambda: lp.extend(remote.token_logprobs(ids)))
            t.start()
            time.sleep(1.0)
        t.join(60)
        for r, a in zip(lp, alone_lp, strict=True):
            np.testing.assert_allclose(np.asarray(r[1:], float), np.asarray(a[1:], float), atol=1e-4)
        assert server.batcher.sizes[n:] == [4, 4]
        # Sampled requests (each with its own seed) are never batched together.
        remote.generate(prompts[:3], 4, do_sample=True, temperature=0.8, seed=1, progress=False)
        assert server.batcher.sizes[n + 2:] == [1, 1, 1]
    finally:
        server.close()
