"""Train the toy models on toy-arith with plain PyTorch and transformers, on the CPU, and export them as HF
checkpoints that vLLM serves.

    python -m eval_harness.toy.train --out eval_harness/toy/weights --seed 0 --model qwen3-toy

1. qwen3-toy and glm4-toy: the tiny Qwen3 and GLM-4-0414 shapes and RoPE forms (TOY_SPECS), trained from
   scratch on toy-arith's train split, loss on the answer tokens only. Steps alternate between two kinds of
   batch: drills (the solutions' equations alone, packed 8 to a sequence: dense practice of the column
   arithmetic; the first `drill_only_steps` are all drills) and prompted problems (chat-0shot and
   completion-0shot, which add copying the operands out of the question). Greedy accuracy on the test split
   is measured with transformers every `eval_every` steps; training stops once both styles clear
   `stop_accuracy` (a margin over the 80% target: vLLM's greedy may break rare near-ties differently).
2. qwen3-toy-eagle3: a one-layer eagle3 draft fitted to qwen3-toy's own hidden states and greedy
   continuations of toy-arith train prompts, with its own rope_theta. Its forward is distill.py's (vLLM's
   llama_eagle3 K-step unroll); this generalises that fit from memorised prompts to a task.

Each model directory gets rope_eval_spec.json (the spec, the training config and a log summary) and
training.log; SHA256SUMS.json beside them records the served files' sha256s (checked by resolve_model),
and TRAINING.md is regenerated from every model present. Training is deterministic for a seed on one
machine (one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jinja2 import Template
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from eval_harness.models import distill
from eval_harness.models import tokenizer as tokmod
from eval_harness.models.builder import (
    PROMPTS_FILE,
    SPEC_FILE,
    _add_legacy_rope_keys,
    _hf_config,
    _quiet_progress,
    _token_ids,
    _write_generation_config,
    _write_json,
    eagle3_config,
)
from eval_harness.models.specs import EAGLE3_AUX_LAYER_IDS, INTERMEDIATE, TOY_SPECS, VOCAB, ModelSpec
from eval_harness.suites import toy_arith
from eval_harness.suites.gsm8k import score_text
from eval_harness.toy import checksums

TARGETS = ("qwen3-toy", "glm4-toy")
DRAFT = "qwen3-toy-eagle3"
CHAT, COMPLETION = "chat-0shot", "completion-0shot"
STYLES = (CHAT, COMPLETION)
IGNORE = -100
PROBES = 16  # test prompts written beside the draft for the harness's acceptance probe


@dataclass(frozen=True)
class TargetConfig:
    steps: int = 2400
    batch_size: int = 32
    lr: float = 5e-3
    warmup: int = 50
    weight_decay: float = 0.1  # at 0.01 GLM-4 had not learnt to copy operands by the last step
    init_std: float = 0.02  # the random builder's 0.1 suits untrained outputs, not training
    completion_share: float = 0.3  # the rest is chat-0shot, the style the configs use
    preamble_keep: float = 0.35  # share of the train split's preamble problems kept
    word_share: float = 0.3  # of the prompted examples
    drill_only_steps: int = 400  # column arithmetic first: the prompted problems then only add copying
    drill_share: float = 0.3  # share of the later steps on drills (Codec.drills) rather than problems
    drill_batch_size: int = 32
    drill_equations: int = 8
    eval_every: int = 250
    eval_problems: int = 100
    stop_accuracy: float = 0.92
    max_new_tokens: int = 40


# GLM-4 has no QK norm: at Qwen3's rate its attention logits run away once the prompted problems start. It
# also learns to copy the word problems' third number later, so it gets more of them and more steps.
TARGET_DEFAULTS = {
    "qwen3-toy": TargetConfig(),
    "glm4-toy": TargetConfig(lr=3e-3, steps=3000, word_share=0.4, completion_share=0.2),
}


@dataclass(frozen=True)
class DraftConfig:
    prompts: int = 1024  # toy-arith train prompts continued greedily by the target
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 30
    init_std: float = 0.02
    eval_prompts: int = 128  # test prompts for the teacher-forced acceptance estimate
    max_new_tokens: int = 40


@dataclass
class Log:
    """Progress lines (printed as they come) and the summary recorded with the checkpoint."""

    lines: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f}s] {msg}"
        self.lines.append(line)
        print(line, flush=True)

    @property
    def elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 1)


# ---- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    ids: list[int]
    labels: list[int]  # the token each position should be followed by is trained on where not IGNORE

    @classmethod
    def prompted(cls, prompt: list[int], answer: list[int]) -> Example:
        """A prompt (not trained on) and its answer (trained on)."""
        return cls(prompt + answer, [IGNORE] * len(prompt) + answer)


@dataclass(frozen=True)
class Codec:
    """Prompts rendered exactly as vLLM renders them: the committed tokenizer's ChatML template for chat,
    the suite's text for completion."""

    tok: Tokenizer
    chat_prefix: str
    chat_suffix: str
    im_end: int
    endoftext: int

    @classmethod
    def build(cls) -> Codec:
        tok = tokmod.load_tokenizer()
        # The template inserts the content verbatim, so rendering a marker once splits it for every prompt.
        marker = "\x00"
        rendered = Template(tokmod.CHAT_TEMPLATE).render(
            messages=[{"role": "user", "content": marker}], add_generation_prompt=True
        )
        prefix, suffix = rendered.split(marker)
        return cls(
            tok, prefix, suffix, tokmod.token_id(tok, tokmod.IM_END), tokmod.token_id(tok, tokmod.ENDOFTEXT)
        )

    def prompt_text(self, question: str, style: str) -> str:
        prompt = toy_arith.render(question, style)
        if prompt.messages is not None:
            return self.chat_prefix + prompt.messages[0]["content"] + self.chat_suffix
        return prompt.text or ""

    def end_token(self, style: str) -> int:
        # Both are eos in generation_config.json; chat turns end with <|im_end|> as in ChatML.
        return self.im_end if style == CHAT else self.endoftext

    def examples(self, problems: Sequence[toy_arith.Problem], styles: Sequence[str]) -> list[Example]:
        pairs = list(zip(problems, styles, strict=True))
        prompts = [self.prompt_text(toy_arith.full_question(p), s) for p, s in pairs]
        answers = [p.solution if s == CHAT else toy_arith.completion_target(p.solution) for p, s in pairs]
        p_ids, a_ids = self.tok.encode_batch(prompts), self.tok.encode_batch(answers)
        return [
            Example.prompted(p.ids, a.ids + [self.end_token(s)])
            for p, a, s in zip(p_ids, a_ids, styles, strict=True)
        ]

    def drills(self, problems: Sequence[toy_arith.Problem], per_sequence: int) -> list[Example]:
        """The solutions' equations alone, `per_sequence` to a sequence, trained on what follows each `=`.
        Three times denser in arithmetic than a prompted example, so the column sums are learnt sooner."""
        lefts, rights = [], []
        for p in problems:
            for step in p.solution.partition(" #### ")[0].split(", "):
                left, _, right = step.partition("=")
                lefts.append(left + "=")
                rights.append(right + ", ")
        l_ids, r_ids = self.tok.encode_batch(lefts), self.tok.encode_batch(rights)
        out = []
        for start in range(0, len(lefts) - per_sequence + 1, per_sequence):
            ids: list[int] = []
            labels: list[int] = []
            chunk = slice(start, start + per_sequence)
            for left, right in zip(l_ids[chunk], r_ids[chunk], strict=True):
                ids += left.ids + right.ids
                labels += [IGNORE] * len(left.ids) + right.ids
            out.append(Example(ids, labels))
        return out


def _styles(n: int, completion_share: float, rng: random.Random) -> list[str]:
    return [COMPLETION if rng.random() < completion_share else CHAT for _ in range(n)]


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar lengths (sorted within windows of 32 batches), in shuffled order: a
    preamble prompt is three times a plain one, and padding a batch to its longest wastes the CPU."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    out = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def _pad_right(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs])


def _collate(batch: Sequence[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels. Causal attention keeps right padding from touching the real tokens, so
    no attention mask is needed."""
    return _pad_right([e.ids for e in batch], pad), _pad_right([e.labels for e in batch], IGNORE)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine down to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def greedy_generate(
    model: nn.Module, prompts: Sequence[list[int]], max_new_tokens: int, stop: set[int], pad: int
) -> list[list[int]]:
    """Greedy continuations (end token included), batched over left-padded prompts with transformers."""
    ids = torch.tensor([[pad] * (max(map(len, prompts)) - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (ids.shape[1] - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(  # type: ignore[operator]
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(stop),
        pad_token_id=pad,
    )
    result = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
        result.append(row[:cut])
    return result


@dataclass(frozen=True)
class Accuracy:
    overall: float
    by_group: dict[str, float]  # kind, preamble, style
    samples: list[tuple[str, str]]  # (reference, output) for a few failures


def greedy_accuracy(
    model: nn.Module, codec: Codec, problems: Sequence[toy_arith.Problem], style: str, max_new_tokens: int
) -> Accuracy:
    """Greedy accuracy, scored by the suite's GSM8K scorer, per kind and with/without preamble."""
    model.eval()
    stop = {codec.im_end, codec.endoftext}
    prompts = [codec.tok.encode(codec.prompt_text(toy_arith.full_question(p), style)).ids for p in problems]
    # Batch prompts of similar length together: left padding costs compute.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: dict[int, str] = {}
    for start in range(0, len(order), 50):
        idx = order[start : start + 50]
        outs = greedy_generate(model, [prompts[i] for i in idx], max_new_tokens, stop, codec.endoftext)
        texts.update({i: codec.tok.decode(o) for i, o in zip(idx, outs, strict=True)})
    hits = [score_text(texts[i], str(p.answer)).correct for i, p in enumerate(problems)]
    groups: dict[str, list[bool]] = {}
    for hit, p in zip(hits, problems, strict=True):
        for g in (p.kind, "preamble" if p.preamble_sentences else "no-preamble"):
            groups.setdefault(g, []).append(hit)
    fails = [(p.solution, texts[i]) for i, (p, h) in enumerate(zip(problems, hits, strict=True)) if not h][:3]
    model.train()
    return Accuracy(
        round(sum(hits) / len(hits), 4),
        {g: round(sum(v) / len(v), 4) for g, v in sorted(groups.items())},
        fails,
    )


# ---- the target models -------------------------------------------------------------------------


def new_target(spec: ModelSpec, codec: Codec, seed: int, init_std: float) -> PreTrainedModel:
    ids = {"eos_token_id": codec.im_end, "pad_token_id": codec.endoftext}
    config = _hf_config(spec, ids)
    config.initializer_range = init_std
    torch.manual_seed(seed + spec.seed_offset)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _answer_loss(model: PreTrainedModel, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token loss on the labelled positions; the output head runs on those alone (a tenth of the
    step's work goes there otherwise)."""
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != IGNORE
    return F.cross_entropy(model.lm_head(hidden[keep]), target[keep])


def _schedule(steps: int, drill_only: int, drill_share: float) -> list[bool]:
    """Which steps train on drills: the first `drill_only`, then a share spread evenly over the rest."""
    return [
        k <= drill_only or math.floor(k * drill_share) > math.floor((k - 1) * drill_share)
        for k in range(1, steps + 1)
    ]


def train_target(
    spec: ModelSpec, codec: Codec, seed: int, cfg: TargetConfig, log: Log, device: str
) -> tuple[PreTrainedModel, dict[str, Any]]:
    model = new_target(spec, codec, seed, cfg.init_std).to(device).train()
    rng = random.Random(f"{spec.name}/{seed}")
    schedule = _schedule(cfg.steps, cfg.drill_only_steps, cfg.drill_share)
    n_chat = (len(schedule) - sum(schedule)) * cfg.batch_size
    n_drill = sum(schedule) * cfg.drill_batch_size * cfg.drill_equations
    problems = toy_arith.generate("train", 2 * n_chat + n_drill, unique=False)
    rng.shuffle(problems)  # the split's order is fixed; each seed sees it in its own order
    # Preamble prompts cost three plain ones; a few teach the model to read past the filler. Word problems
    # are rarer in the suite than their extra copying needs.
    kept = [p for p in problems[: 2 * n_chat] if not p.preamble_sentences or rng.random() < cfg.preamble_keep]
    words = [p for p in kept if p.kind == "word"]
    n_words = min(len(words), round(cfg.word_share * n_chat))
    prompted = words[:n_words] + [p for p in kept if p.kind != "word"][: n_chat - n_words]
    rng.shuffle(prompted)
    examples = codec.examples(prompted, _styles(n_chat, cfg.completion_share, rng))
    drills = codec.drills(problems[-n_drill:], cfg.drill_equations)
    queues = {
        False: iter(_length_batches([len(e.ids) for e in examples], cfg.batch_size, rng)),
        True: iter(_length_batches([len(e.ids) for e in drills], cfg.drill_batch_size, rng)),
    }
    pools = {False: examples, True: drills}
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{spec.name}: {n_params} parameters, {len(examples)} prompted examples, {len(drills)} drills")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    test = toy_arith.generate("test", cfg.eval_problems)
    history: list[dict[str, Any]] = []
    running, tokens, step = 0.0, 0, 0
    for step, drill in enumerate(schedule, start=1):
        ids, labels = _collate([pools[drill][i] for i in next(queues[drill])], codec.endoftext)
        ids, labels = ids.to(device), labels.to(device)
        loss = _answer_loss(model, ids, labels)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step - 1, cfg.warmup, cfg.steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        tokens += ids.numel()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            accs = {style: greedy_accuracy(model, codec, test, style, cfg.max_new_tokens) for style in STYLES}
            history.append(
                {
                    "step": step,
                    "loss": round(running / cfg.eval_every, 4),
                    **{style: acc.overall for style, acc in accs.items()},
                }
            )
            log(f"step {step} loss {running / cfg.eval_every:.4f} tokens {tokens}")
            for style, acc in accs.items():
                log(f"  {style} test greedy accuracy {acc.overall:.3f} {acc.by_group}")
                for ref, got in acc.samples[:2]:
                    log(f"    want {ref!r} got {got!r}")
            running = 0.0
            if min(acc.overall for acc in accs.values()) >= cfg.stop_accuracy:
                break
    model.eval()
    final = {
        style: asdict(
            greedy_accuracy(model, codec, toy_arith.generate("test", 500), style, cfg.max_new_tokens)
        )
        for style in STYLES
    }
    for style, acc in final.items():
        log(f"final test greedy accuracy ({style}, 500 problems): {acc['overall']:.3f} {acc['by_group']}")
    summary = {
        "steps": step,
        "train_tokens": tokens,
        "history": history,
        "test_accuracy": {s: {"overall": a["overall"], **a["by_group"]} for s, a in final.items()},
    }
    return model, summary


def export_target(model: PreTrainedModel, spec: ModelSpec, out: Path) -> None:
    with _quiet_progress():
        model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)  # ours below: no sampling defaults for vLLM
    _add_legacy_rope_keys(out / "config.json", spec)


# ---- the eagle3 draft --------------------------------------------------------------------------


def new_draft(spec: ModelSpec, target: ModelSpec, seed: int, init_std: float) -> distill.Weights:
    """Draft weights under the names llama_eagle3.py loads; no embed_tokens (shared with the target)."""
    h, q, kv = spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    gen = torch.Generator().manual_seed(seed + spec.seed_offset)
    shapes = {
        "fc.weight": (h, target.hidden_size * len(EAGLE3_AUX_LAYER_IDS)),
        "midlayer.self_attn.q_proj.weight": (q, 2 * h),  # attends over [embeds, hidden]
        "midlayer.self_attn.k_proj.weight": (kv, 2 * h),
        "midlayer.self_attn.v_proj.weight": (kv, 2 * h),
        "midlayer.self_attn.o_proj.weight": (h, q),
        "midlayer.mlp.gate_proj.weight": (INTERMEDIATE, h),
        "midlayer.mlp.up_proj.weight": (INTERMEDIATE, h),
        "midlayer.mlp.down_proj.weight": (h, INTERMEDIATE),
        "lm_head.weight": (VOCAB, h),
    }
    norms = ("input_layernorm", "hidden_norm", "post_attention_layernorm")
    weights = {name: torch.randn(*shape, generator=gen) * init_std for name, shape in shapes.items()}
    weights |= {f"midlayer.{n}.weight": torch.ones(h) for n in norms}
    weights["norm.weight"] = torch.ones(h)
    return weights


@dataclass(frozen=True)
class DraftData:
    seqs: list[list[int]]  # prompt + the target's greedy continuation (end token included)
    prompt_lens: list[int]


def draft_data(
    target: nn.Module, codec: Codec, problems: Sequence[toy_arith.Problem], max_new_tokens: int
) -> DraftData:
    """Chat prompts and the target's own greedy continuations: the tokens vLLM will ask the draft to guess."""
    stop = {codec.im_end, codec.endoftext}
    prompts = [codec.tok.encode(codec.prompt_text(toy_arith.full_question(p), CHAT)).ids for p in problems]
    seqs: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), 64):
        idx = order[start : start + 64]
        outs = greedy_generate(target, [prompts[i] for i in idx], max_new_tokens, stop, codec.endoftext)
        for i, o in zip(idx, outs, strict=True):
            seqs[i] = prompts[i] + o
    return DraftData(seqs, [len(p) for p in prompts])


def _draft_masks(prompt_lens: Sequence[int], lens: Sequence[int], width: int) -> list[torch.Tensor]:
    """Per speculative step s, the indices t whose prediction counts: vLLM drafts from the last prompt
    token on (t >= prompt_len - 1), and step s at t guesses the token at t + s + 2, which must exist."""
    t = torch.arange(width)[None]
    plen, n = torch.tensor(prompt_lens)[:, None], torch.tensor(lens)[:, None]
    return [(t >= plen - 1) & (t + s + 2 < n) for s in range(distill.SPEC_STEPS)]


def draft_step_stats(
    w: distill.Weights,
    embed: torch.Tensor,
    spec: ModelSpec,
    target: nn.Module,
    seqs: Sequence[list[int]],
    prompt_lens: Sequence[int],
    pad: int,
    theta: float,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Teacher-forced unroll over a batch: (loss, per-step hit tensors, per-step masks). Labels are the
    target's greedy tokens; step s at index t is scored against the target's choice at t + s + 1."""
    ids = _pad_right(seqs, pad)
    feats, labels = distill.target_features(target, ids)
    logits = distill.draft_logits(w, embed, spec, ids, feats, theta)
    masks = _draft_masks(prompt_lens, [len(s) for s in seqs], ids.shape[1])
    loss = torch.zeros(())
    hits = []
    for s, (step_logits, mask) in enumerate(zip(logits, masks, strict=True)):
        lab = torch.cat([labels[:, 1 + s :], labels.new_full((labels.shape[0], 1 + s), IGNORE)], dim=1)
        lab = lab.masked_fill(~mask, IGNORE)
        loss = loss + F.cross_entropy(step_logits.reshape(-1, VOCAB), lab.reshape(-1), ignore_index=IGNORE)
        hits.append((step_logits.argmax(-1) == lab) & mask)
    return loss, hits, masks


def acceptance_estimate(hits: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[float, list[float]]:
    """Mean acceptance length (1 + consecutive accepted drafts) over every drafting index, and the per-step
    acceptance rates, as vLLM would count them for K = SPEC_STEPS."""
    valid = masks[-1]  # indices where all K steps have a target token to compare with
    run = torch.ones_like(valid)
    accepted = []
    for h in hits:
        run = run & h
        accepted.append(run[valid].float().mean().item())
    return 1 + sum(accepted), [round(a, 4) for a in accepted]


def train_draft(
    spec: ModelSpec, target: nn.Module, codec: Codec, seed: int, cfg: DraftConfig, log: Log
) -> tuple[distill.Weights, dict[str, Any], DraftData]:
    """Returns the weights, the log summary, and the test prompts with the target's continuations."""
    target_spec = TOY_SPECS[spec.target or ""]
    target.eval()
    rng = random.Random(f"{spec.name}/{seed}")
    problems = toy_arith.generate("train", cfg.prompts * 4, unique=False)
    rng.shuffle(problems)
    data = draft_data(target, codec, problems[: cfg.prompts], cfg.max_new_tokens)
    test = draft_data(target, codec, toy_arith.generate("test", cfg.eval_prompts), cfg.max_new_tokens)
    log(f"{spec.name}: {cfg.prompts} train continuations, {cfg.eval_prompts} test continuations")
    embed = target.model.embed_tokens.weight.detach()
    w = {k: v.requires_grad_(True) for k, v in new_draft(spec, target_spec, seed, cfg.init_std).items()}
    opt = torch.optim.AdamW(w.values(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    batches: list[list[int]] = []
    while len(batches) < cfg.steps:
        batches += _length_batches([len(s) for s in data.seqs], cfg.batch_size, rng)

    def evaluate(theta: float) -> tuple[float, list[float]]:
        with torch.no_grad():
            _, hits, masks = draft_step_stats(
                w, embed, spec, target, test.seqs, test.prompt_lens, codec.endoftext, theta
            )
        return acceptance_estimate(hits, masks)

    history = []
    running = 0.0
    for step, idx in enumerate(batches[: cfg.steps], start=1):
        seqs = [data.seqs[i] for i in idx]
        loss, _, _ = draft_step_stats(
            w, embed, spec, target, seqs, [data.prompt_lens[i] for i in idx], codec.endoftext, spec.rope_theta
        )
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step - 1, cfg.warmup, cfg.steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        running += loss.item()
        if step % 100 == 0 or step == cfg.steps:
            length, rates = evaluate(spec.rope_theta)
            history.append(
                {"step": step, "loss": round(running / 100, 4), "acceptance_length": round(length, 3)}
            )
            log(f"step {step} loss {running / 100:.4f} test acceptance length {length:.3f} per step {rates}")
            running = 0.0
    length, rates = evaluate(spec.rope_theta)
    wrong_length, wrong_rates = evaluate(target_spec.rope_theta)
    log(f"with the target's rope_theta {target_spec.rope_theta:g}: acceptance length {wrong_length:.3f}")
    summary = {
        "steps": cfg.steps,
        "history": history,
        "test_acceptance_length_estimate": round(length, 3),
        "test_acceptance_per_step_estimate": rates,
        "wrong_theta_acceptance_length_estimate": round(wrong_length, 3),
        "wrong_theta_acceptance_per_step_estimate": wrong_rates,
    }
    return {k: v.detach().contiguous() for k, v in w.items()}, summary, test


def export_draft(
    weights: distill.Weights,
    spec: ModelSpec,
    out: Path,
    ids: dict[str, int],
    probes: DraftData,
    tok: Tokenizer,
) -> None:
    _write_json(out / "config.json", eagle3_config(spec, TOY_SPECS[spec.target or ""], ids))
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    _add_legacy_rope_keys(out / "config.json", spec)
    # The harness's draft-probe workload (workload.draft_probe_work) sends these prompts by token id.
    rows = [
        {
            "prompt": tok.decode(seq[:n], skip_special_tokens=False),
            "prompt_token_ids": seq[:n],
            "target_greedy_token_ids": seq[n:],
        }
        for seq, n in list(zip(probes.seqs, probes.prompt_lens, strict=True))[:PROBES]
    ]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    (out / PROMPTS_FILE).write_text(text, encoding="utf-8")


def load_target(path: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


# ---- driver ------------------------------------------------------------------------------------


def _finish_dir(tmp: Path, final: Path) -> None:
    for path in tmp.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; a server under another user must read it
    if final.exists():
        if not (final / SPEC_FILE).exists():
            raise FileExistsError(f"{final} exists and is not a rope-eval model; not replacing it")
        shutil.rmtree(final)
    tmp.rename(final)


def train_one(
    name: str,
    out_dir: Path,
    seed: int,
    overrides: Sequence[str],
    dcfg: DraftConfig,
    device: str,
    command: str,
) -> Path:
    spec = TOY_SPECS[name]
    codec = Codec.build()
    log = Log()
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tok = tokmod.save_tokenizer(tmp)
        ids = _token_ids(tok)
        config: dict[str, Any]
        if spec.target is None:
            tcfg = _override(TARGET_DEFAULTS[name], overrides)
            model, summary = train_target(spec, codec, seed, tcfg, log, device)
            export_target(model.to("cpu"), spec, tmp)
            config = asdict(tcfg)
        else:
            target = load_target(out_dir / (spec.target or ""))
            weights, summary, probes = train_draft(spec, target, codec, seed, dcfg, log)
            export_draft(weights, spec, tmp, ids, probes, tok)
            config = asdict(dcfg)
        _write_generation_config(tmp, ids)
        record = {
            **asdict(spec),
            "seed": seed,
            "trained_on": toy_arith.NAME,
            "command": command,
            "device": device,
            "torch": torch.__version__,
            "wall_seconds": log.elapsed,
            "train_config": config,
            "summary": summary,
        }
        _write_json(tmp / SPEC_FILE, record)
        (tmp / "training.log").write_text("\n".join(log.lines) + "\n", encoding="utf-8")
        _finish_dir(tmp, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / name


def write_training_md(out_dir: Path) -> Path:
    """TRAINING.md from every trained model's record: the command, seed, wall time, summary, and the sha256s
    of SHA256SUMS.json (written by `write_checksums` after training, never here: regenerating this text, as
    verify.py does, must not bless whatever bytes are on disk)."""
    record = checksums.recorded(out_dir) if (out_dir / checksums.CHECKSUMS_FILE).is_file() else {}
    lines = [
        "# Toy model weights",
        "",
        "Trained by `eval_harness/toy/train.py` on the `toy-arith` suite; regenerated by that script.",
        "Each directory's `rope_eval_spec.json` holds the full record and `training.log` the whole log.",
        "",
    ]
    for name in TOY_SPECS:
        spec_file = out_dir / name / SPEC_FILE
        if not spec_file.is_file():
            continue
        rec = json.loads(spec_file.read_text())
        summary = {k: v for k, v in rec["summary"].items() if k != "history"}
        style = "neox" if rec["is_neox"] else "GPT-J"
        lines += [
            f"## {name}",
            "",
            f"- command: `{rec['command']}`",
            f"- seed: {rec['seed']}; device: {rec['device']}; torch {rec['torch']}",
            f"- wall time: {rec['wall_seconds']} s",
            f"- architecture: {rec['architecture']}; rotary {rec['rotary_dim']}/{rec['head_dim']} {style}; "
            f"rope_theta {rec['rope_theta']:g}",
            f"- config: `{json.dumps(rec['train_config'], sort_keys=True)}`",
            f"- summary: `{json.dumps(summary, sort_keys=True)}`",
            "",
            "| file | sha256 |",
            "| --- | --- |",
        ]
        lines += [f"| {name}/{f} | {digest} |" for f, digest in sorted(record.get(name, {}).items())]
        lines.append("")
    lines += _verification_lines(out_dir / "vllm_verification.jsonl")
    path = out_dir / "TRAINING.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _verification_lines(path: Path) -> list[str]:
    """The vLLM measurements `python -m eval_harness.toy.verify --record` left beside the weights."""
    if not path.is_file():
        return []
    lines = [
        "## Measured through vLLM",
        "",
        "`python -m eval_harness.toy.verify --record` (vLLM on the CPU, float32, eager, greedy; test split).",
        "",
        "| model | draft | path | style | problems | accuracy | acceptance length | per position | outputs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        spec = r.get("spec_decode") or {}
        length = spec.get("mean_acceptance_length")
        lines.append(
            f"| {r['model']} | {r['draft'] or '-'} | {r['path']} | {r['style']} | {r['problems']} | "
            f"{r['accuracy']:.3f} | {'-' if length is None else f'{length:.3f}'} | "
            f"{spec.get('acceptance_per_position') or '-'} | `{r['texts_sha']}` |"
        )
    return [*lines, ""]


def _override(cfg: Any, pairs: Sequence[str]) -> Any:
    """`key=value` overrides of a config dataclass, typed after its defaults."""
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not hasattr(cfg, key):
            raise SystemExit(f"unknown setting {key!r} for {type(cfg).__name__}")
        changes[key] = type(getattr(cfg, key))(value)
    return replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval_harness.toy.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="directory to write the model directories into"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight and data-order seed (default 0)")
    parser.add_argument(
        "--model", action="append", choices=list(TOY_SPECS), help="train only these (repeatable)"
    )
    parser.add_argument("--target", nargs="*", default=[], metavar="KEY=VALUE", help="TargetConfig overrides")
    parser.add_argument("--draft", nargs="*", default=[], metavar="KEY=VALUE", help="DraftConfig overrides")
    parser.add_argument("--device", default="cpu", help="torch device for the targets (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dcfg = _override(DraftConfig(), args.draft)
    command = "python -m eval_harness.toy.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.model or list(TOY_SPECS)
    for name in names:
        path = train_one(name, args.out, args.seed, args.target, dcfg, args.device, command)
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(f"{name}: {path} ({size:.1f} MB)", flush=True)
    write_checksums(args.out, names)
    write_training_md(args.out)
    return 0


def write_checksums(out_dir: Path, names: Sequence[str]) -> Path:
    """Record the just-trained models' sha256s in SHA256SUMS.json (what resolve_model checks them against);
    the other models' entries stay as they were."""
    return checksums.write_checksums(out_dir, {n: TOY_SPECS[n].target is not None for n in names})


if __name__ == "__main__":
    sys.exit(main())
