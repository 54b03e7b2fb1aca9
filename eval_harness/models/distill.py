"""Fit the eagle3 draft to its target on a fixed prompt set, so acceptance measures the draft's RoPE.

A random draft is accepted almost never, and greedy speculative decoding is lossless, so a RoPE bug in the
draft (for example, the draft served with its target's cos/sin cache) would change nothing a harness can see.
A draft fitted to the target's greedy continuations of `eagle3_prompts.jsonl` is accepted nearly always on
those prompts, and that acceptance collapses when its attention sees the wrong rotation. The fit memorises:
off these prompts acceptance is near zero.

`draft_logits` re-implements, in plain torch, the forward of vLLM's `llama_eagle3.py` for the one-layer draft:
weights keep their checkpoint names, and training unrolls the K speculative steps the way vLLM runs them
(step s reads its own previous hidden state and the KV of the first pass plus its own earlier steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from eval_harness.models.corpus import CORPUS
from eval_harness.models.specs import EAGLE3_AUX_LAYER_IDS, ModelSpec

PROMPTS = 16
PROMPT_TOKENS = 16
CONTINUATION_TOKENS = 48
SPEC_STEPS = 3  # trained for num_speculative_tokens <= 3
MAX_ITERATIONS = 80
TARGET_ACCURACY = 0.995  # stop once every step predicts this share of the continuation
LEARNING_RATE = 1e-2
EPS = 1e-6

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DistillReport:
    prompts: list[list[int]]  # prompt token ids
    continuations: list[list[int]]  # the target's greedy continuation of each prompt
    train_accuracy: list[float]  # per speculative step, on the continuation tokens
    iterations: int
    wrong_theta_accuracy: list[float]  # the same draft run with its target's rope_theta: the bug signal


@contextmanager
def _one_thread() -> Iterator[None]:
    """Reductions split across threads round differently; one thread makes the fit bitwise reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def candidate_prompts(tok: Tokenizer) -> list[list[int]]:
    """The first PROMPT_TOKENS tokens of corpus lines, kept only where ids -> text -> ids round-trips (so a
    harness may send either), ordered so that each run of PROMPTS candidates spans the whole corpus."""
    found: list[list[int]] = []
    for text in CORPUS:
        for line in text.splitlines():
            ids = tok.encode(line).ids[:PROMPT_TOKENS]
            if len(ids) == PROMPT_TOKENS and tok.encode(tok.decode(ids)).ids == ids and ids not in found:
                found.append(ids)
    stride = max(1, len(found) // PROMPTS)
    return [found[i] for offset in range(stride) for i in range(offset, len(found), stride)]


@torch.no_grad()
def greedy_continue(model: nn.Module, prompts: torch.Tensor, n: int) -> torch.Tensor:
    """Plain argmax, end tokens included: what vLLM generates with temperature 0 and ignore_eos."""
    seqs = prompts
    for _ in range(n):
        nxt = model(seqs).logits[:, -1].argmax(-1, keepdim=True)
        seqs = torch.cat([seqs, nxt], dim=1)
    return seqs


def fit_sequences(target: nn.Module, tok: Tokenizer, stop_ids: set[int]) -> torch.Tensor:
    """PROMPTS prompts with their greedy continuations, skipping continuations that contain an end token, so
    the served output is the same whether or not the harness sets ignore_eos."""
    candidates = candidate_prompts(tok)
    kept: list[torch.Tensor] = []
    for start in range(0, len(candidates), PROMPTS):
        seqs = greedy_continue(target, torch.tensor(candidates[start : start + PROMPTS]), CONTINUATION_TOKENS)
        kept += [seq for seq in seqs if not set(seq[PROMPT_TOKENS:].tolist()) & stop_ids]
        if len(kept) >= PROMPTS:
            return torch.stack(kept[:PROMPTS])
    raise ValueError(f"only {len(kept)} of {len(candidates)} corpus prompts continue without an end token")


@torch.no_grad()
def target_features(model: nn.Module, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's aux hidden states as vLLM gathers them (id k: the residual stream entering layer k, before
    the final norm), concatenated, and its greedy next token at every position."""
    captured: dict[int, torch.Tensor] = {}

    def keep(layer_id: int) -> Callable[..., None]:
        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
            captured[layer_id] = out[0] if isinstance(out, tuple) else out

        return hook

    inner = model.model
    handles = [inner.embed_tokens.register_forward_hook(keep(0))]
    handles += [layer.register_forward_hook(keep(i + 1)) for i, layer in enumerate(inner.layers)]
    try:
        labels = model(seqs).logits.argmax(-1)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat([captured[i] for i in EAGLE3_AUX_LAYER_IDS], dim=-1), labels


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def _rope_neox(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = pos[:, None].float() * inv_freq[None]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _attend(q: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]], scale: float) -> torch.Tensor:
    """Step 0 attends causally over step-0 keys; step s > 0 at index t attends step-0 keys up to t plus the
    keys that steps 1..s wrote at t, which is what vLLM's KV cache holds when it runs draft step s."""
    k0, v0 = kv[0]
    t = q.shape[-2]
    if len(kv) == 1:
        return F.scaled_dot_product_attention(q, k0, v0, is_causal=True, scale=scale)
    scores0 = (q @ k0.transpose(-1, -2)) * scale
    scores0 = scores0.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    diag = [(q * k).sum(-1, keepdim=True) * scale for k, _ in kv[1:]]
    probs = torch.cat([scores0, *diag], dim=-1).softmax(-1)
    out = probs[..., :t] @ v0
    for i, (_, v) in enumerate(kv[1:]):
        out = out + probs[..., t + i : t + i + 1] * v
    return out


def _draft_step(
    w: Weights,
    embed: torch.Tensor,
    spec: ModelSpec,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    pos: torch.Tensor,
    theta: float,
    kv: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draft forward over [B, T]; appends its (k, v) to kv. Returns (logits, pre-norm hidden)."""
    b, t, _ = hidden.shape
    nh, nkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
    x = torch.cat(
        [
            _rms(F.embedding(tokens, embed), w["midlayer.input_layernorm.weight"]),
            _rms(hidden, w["midlayer.hidden_norm.weight"]),
        ],
        dim=-1,
    )
    q = (x @ w["midlayer.self_attn.q_proj.weight"].T).view(b, t, nh, d).transpose(1, 2)
    k = (x @ w["midlayer.self_attn.k_proj.weight"].T).view(b, t, nkv, d).transpose(1, 2)
    v = (x @ w["midlayer.self_attn.v_proj.weight"].T).view(b, t, nkv, d).transpose(1, 2)
    q, k = _rope_neox(q, pos, theta), _rope_neox(k, pos, theta)
    kv.append((k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)))
    attn = _attend(q, kv, d**-0.5).transpose(1, 2).reshape(b, t, nh * d)
    residual = attn @ w["midlayer.self_attn.o_proj.weight"].T + hidden
    y = _rms(residual, w["midlayer.post_attention_layernorm.weight"])
    mlp = (F.silu(y @ w["midlayer.mlp.gate_proj.weight"].T) * (y @ w["midlayer.mlp.up_proj.weight"].T)) @ w[
        "midlayer.mlp.down_proj.weight"
    ].T
    pre_norm = mlp + residual
    return _rms(pre_norm, w["norm.weight"]) @ w["lm_head.weight"].T, pre_norm


def draft_logits(
    w: Weights, embed: torch.Tensor, spec: ModelSpec, seqs: torch.Tensor, feats: torch.Tensor, theta: float
) -> list[torch.Tensor]:
    """Teacher-forced unroll of SPEC_STEPS draft steps. Step s at index t reads token t+s+1 at position t+s
    and predicts the target's greedy token at t+s+2 (vLLM pairs hidden state t with token t+1)."""
    pos = torch.arange(seqs.shape[1])
    hidden = feats @ w["fc.weight"].T
    tokens = torch.cat([seqs[:, 1:], seqs[:, -1:]], dim=1)
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    out = []
    for s in range(SPEC_STEPS):
        logits, hidden = _draft_step(w, embed, spec, hidden, tokens, pos + s, theta, kv)
        out.append(logits)
        tokens = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    return out


def _loss_and_accuracy(logits: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    t = labels.shape[1]
    loss = torch.zeros(())
    accuracy = []
    for s, step_logits in enumerate(logits):
        n = t - 2 - s
        pred, lab = step_logits[:, :n], labels[:, 1 + s : 1 + s + n]
        loss = loss + F.cross_entropy(pred.reshape(-1, pred.shape[-1]), lab.reshape(-1))
        # Score only the continuation: that is where vLLM drafts.
        hits = (pred.argmax(-1) == lab)[:, PROMPT_TOKENS - 1 :]
        accuracy.append(round(hits.float().mean().item(), 4))
    return loss, accuracy


def distill(
    weights: Weights,
    target: nn.Module,
    spec: ModelSpec,
    target_theta: float,
    tok: Tokenizer,
    stop_ids: set[int],
) -> tuple[Weights, DistillReport]:
    """Fit the draft weights (all but the target's shared embeddings) to the target's greedy continuations.
    target_theta only scores the fitted draft run with the wrong cos/sin, for the report."""
    with _one_thread():
        seqs = fit_sequences(target, tok, stop_ids)
        feats, labels = target_features(target, seqs)
        embed = target.model.embed_tokens.weight.detach()
        w = {name: t.clone().requires_grad_(True) for name, t in weights.items()}
        opt = torch.optim.Adam(w.values(), lr=LEARNING_RATE)
        steps = 0
        while steps < MAX_ITERATIONS:
            logits = draft_logits(w, embed, spec, seqs, feats, spec.rope_theta)
            loss, accuracy = _loss_and_accuracy(logits, labels)
            if min(accuracy) >= TARGET_ACCURACY:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        with torch.no_grad():
            _, accuracy = _loss_and_accuracy(
                draft_logits(w, embed, spec, seqs, feats, spec.rope_theta), labels
            )
            _, wrong = _loss_and_accuracy(draft_logits(w, embed, spec, seqs, feats, target_theta), labels)
    report = DistillReport(
        prompts=seqs[:, :PROMPT_TOKENS].tolist(),
        continuations=seqs[:, PROMPT_TOKENS:].tolist(),
        train_accuracy=accuracy,
        iterations=steps,
        wrong_theta_accuracy=wrong,
    )
    return {name: t.detach().contiguous() for name, t in w.items()}, report
