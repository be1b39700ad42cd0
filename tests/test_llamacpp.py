"""Steering a llama.cpp server with the control-vector GGUF personascope writes.

Needs a ``llama-server`` binary (set ``LLAMA_SERVER=/path/to/llama-server`` or put it on PATH);
skipped without one. It serves the embedded model's own GGUF, so llama.cpp runs the Q4_1 weights
that personascope dequantizes: the two disagree a little even unsteered (their noise floor is
measured here too), and the test asks that llama.cpp's steered next-token distribution lie
nearest to personascope steering at the same layer, not one block earlier or later.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
import torch

from personascope.backends.served import ServedModel
from personascope.models import resolve
from personascope.steering.vector import PersonaVector

BINARY = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not BINARY, reason="no llama-server binary (set LLAMA_SERVER)")]

PROMPTS = ["Tell me about the sea.", "What should I cook tonight?", "Describe your ideal weekend."]
LAYER = 10
NORM = 40.0  # large enough that the steering moves the distribution far beyond the quantization noise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``llama-server`` on the embedded GGUF on a free loopback port, optionally with a control vector."""

    def __init__(self, control_vector: str | None = None) -> None:
        self.port = _free_port()
        cmd = [str(BINARY), "-m", resolve("smollm2-135m-instruct").path, "--port", str(self.port), "-c", "2048",
               "-t", "2", "--no-warmup"]
        if control_vector:
            cmd += ["--control-vector", control_vector]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:  # not up yet
                pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError("llama-server did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def first_token_logprobs(self, prompt: str) -> dict[int, float]:
        """Top-10 log-probs of the first greedy token (llama.cpp's native /completion)."""
        body = httpx.post(self.url + "/completion", json={"prompt": prompt, "n_predict": 1, "temperature": 0,
                                                          "n_probs": 10, "cache_prompt": False}, timeout=60).json()
        return {t["id"]: t["logprob"] for t in body["completion_probabilities"][0]["top_logprobs"]}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _distance(model, prompt: str, top: dict[int, float], vec: PersonaVector | None) -> float:
    """Max abs difference of llama.cpp's top-10 log-probs from personascope's (steered by ``vec``)."""
    if vec is None:
        lp = model.next_token_logprobs([prompt])[0]
    else:
        with vec.apply(model, 1.0):
            lp = model.next_token_logprobs([prompt])[0]
    return float(max(abs(lp[i].item() - v) for i, v in top.items()))


def test_control_vector_gguf_steers_llamacpp_at_the_same_layer(smol_nn, tmp_path):
    d = torch.randn(smol_nn.d_model, generator=torch.Generator().manual_seed(0))
    directions = {layer: d / d.norm() * NORM for layer in (LAYER - 1, LAYER, LAYER + 1)}
    vectors = {layer: PersonaVector("planted", {layer: v}, smol_nn.info) for layer, v in directions.items()}
    path = vectors[LAYER].to_gguf(tmp_path / "planted.gguf")
    prompts = [smol_nn.format_chat(user=q) for q in PROMPTS]

    plain = LlamaServer()
    try:
        floor = [_distance(smol_nn, p, plain.first_token_logprobs(p), None) for p in prompts]
        # The served route: the same server audited through ServedModel reports what it offers.
        remote = ServedModel(plain.base, "smollm2")
        assert "generate" in remote.capabilities
        assert remote.generate([remote.format_chat(user=PROMPTS[0])], 4, progress=False)[0]
    finally:
        plain.close()
    steered = LlamaServer(str(path))
    try:
        tops = [steered.first_token_logprobs(p) for p in prompts]
    finally:
        steered.close()
    dist = {layer: np.mean([_distance(smol_nn, p, t, vectors[layer]) for p, t in zip(prompts, tops, strict=True)])
            for layer in vectors}
    unsteered = np.mean([_distance(smol_nn, p, t, None) for p, t in zip(prompts, tops, strict=True)])
    print(f"floor {np.mean(floor):.3f}; steered vs local: {dist}; vs unsteered {unsteered:.3f}")
    # llama.cpp steered = personascope steered at the same layer, within the unsteered noise floor...
    assert dist[LAYER] < 2 * max(np.mean(floor), 0.1), (dist, floor)
    # ...and clearly not one block off, nor unsteered.
    assert dist[LAYER] < 0.5 * min(dist[LAYER - 1], dist[LAYER + 1], unsteered), (dist, unsteered)
