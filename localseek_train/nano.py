"""Train localseek-nano from scratch and write its FP8 checkpoint into the package.

    python -m localseek_train.nano                 # the shipped model (seeded, CPU, ~40 min on one core)
    python -m localseek_train.nano --steps 50 --out /tmp/nano-smoke --eval-n 20   # a quick smoke run

Everything is seeded: the tokenizer's corpus, the initial weights, the data stream. The log (one JSON object per
line: losses, throughput, held-out accuracy along the way) and a final metrics JSON go to --log-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from localseek.nano import CHECKPOINT
from localseek.nano.evaluate import evaluate_many
from localseek.nano.problems import CHAT_TEMPLATE, eval_problems
from localseek_train.checkpoint import fp8_roundtrip, is_fp8_weight, load_checkpoint, save_checkpoint, v3_state_dict
from localseek_train.data import Sampler, corpus_segments
from localseek_train.generate import torch_generate_many
from localseek_train.model import NANO_CONFIG, NanoModel, RouterBalancer, param_count
from localseek_train.tokenizer import build_tokenizer, tokenizer_config

GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.95,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=CHECKPOINT, help="checkpoint directory (replaced atomically)")
    ap.add_argument("--log-dir", type=Path, default=Path("build/nano"), help="training log and metrics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--mtp-weight", type=float, default=0.3, help="lambda of the MTP loss (V3 report: 0.3)")
    ap.add_argument("--bias-gamma", type=float, default=1e-3, help="router bias update speed (V3: 0.001)")
    ap.add_argument("--qat-frac", type=float, default=0.1, help="final fraction of steps trained through FP8")
    ap.add_argument("--vocab", type=int, default=512, help="BPE vocabulary target (digit merges are dropped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=500, help="held-out problems for the final evaluation")
    ap.add_argument("--config", type=str, default="{}", help="JSON overrides of the model config")
    return ap.parse_args(argv)


class FakeFP8(nn.Module):
    """Parametrization: the weight as it will be after FP8 block quantization (straight-through gradient)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fp8_roundtrip(w.detach()) - w.detach())


def fp8_modules(model: NanoModel) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) for every weight the checkpoint stores in FP8."""
    fp8_names = {k for k in v3_state_dict(model) if is_fp8_weight(k)}
    found = []
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{name}.{pname}"
            v3 = full.removeprefix("lm.").replace("mtp.layer.", f"model.layers.{n}.")
            if v3.endswith("mlp.experts.gate_up_proj"):
                v3 = v3.replace("experts.gate_up_proj", "experts.0.gate_proj.weight")
            elif v3.endswith("mlp.experts.down_proj"):
                v3 = v3.replace("experts.down_proj", "experts.0.down_proj.weight")
            if v3 in fp8_names:
                found.append((module, pname))
    return found


def enable_qat(model: NanoModel) -> int:
    mods = fp8_modules(model)
    for module, pname in mods:
        if pname == "gate_up_proj":  # gate and up are separate FP8 matrices in the checkpoint
            parametrize.register_parametrization(module, pname, FakeFP8Split(model.config.moe_intermediate_size))
        else:
            parametrize.register_parametrization(module, pname, FakeFP8())
    return len(mods)


class FakeFP8Split(nn.Module):
    def __init__(self, inter: int) -> None:
        super().__init__()
        self.inter = inter

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g, u = w[:, : self.inter], w[:, self.inter :]
        q = torch.cat([fp8_roundtrip(g.detach()), fp8_roundtrip(u.detach())], dim=1)
        return w + (q - w.detach())


def remove_qat(model: NanoModel) -> None:
    for module, pname in fp8_modules_parametrized(model):
        parametrize.remove_parametrizations(module, pname, leave_parametrized=False)


def fp8_modules_parametrized(model: NanoModel) -> list[tuple[nn.Module, str]]:
    out = []
    for module in model.modules():
        if parametrize.is_parametrized(module):
            out.extend((module, p) for p in list(module.parametrizations.keys()))
    return out


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def quick_accuracy(model: NanoModel, tok, n: int) -> float:
    problems = eval_problems(n, seed=7)
    return evaluate_many(torch_generate_many(model, tok), problems, batch_size=n).accuracy


def mtp_acceptance(model: NanoModel, tok, n: int = 100) -> float:
    """Share of greedy reply tokens t_{i+2} that the MTP head predicts (argmax) from h_i and t_{i+1}."""
    problems = eval_problems(n, seed=11)
    from localseek.nano.problems import render_prompt

    gen = torch_generate_many(model, tok)
    hits = total = 0
    for p, out in zip(problems, gen([render_prompt(p.question) for p in problems])):
        prompt_ids = tok.encode(render_prompt(p.question), add_special_tokens=False).ids
        reply_ids = tok.encode(out, add_special_tokens=False).ids
        ids = torch.tensor([prompt_ids + reply_ids])
        _, mlogits = model.mtp_logits(ids)
        start = len(prompt_ids) - 1  # MTP row i predicts token i + 2
        pred = mlogits[0, start - 1 : ids.shape[1] - 2].argmax(-1)
        target = ids[0, start + 1 :]
        hits += int((pred == target).sum())
        total += target.numel()
    return hits / max(1, total)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.log_dir / "train_log.jsonl"
    log = log_path.open("w", encoding="utf-8")

    def emit(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(json.dumps(record), flush=True)

    t0 = time.time()
    tok = build_tokenizer(corpus_segments(random.Random(args.seed + 1), 20000), args.vocab)
    cfg = dict(NANO_CONFIG, vocab_size=tok.get_vocab_size(), **json.loads(args.config))
    model = NanoModel(cfg)
    emit({"event": "start", "params": param_count(model), "trunk_params": param_count(model.lm),
          "vocab": tok.get_vocab_size(), "args": {k: str(v) for k, v in vars(args).items()}, "config": cfg})

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    balancer = RouterBalancer(model, args.bias_gamma)
    sampler = Sampler(tok, seed=args.seed + 2, batch_size=args.batch)
    qat_start = int(args.steps * (1 - args.qat_frac)) if args.qat_frac > 0 else args.steps + 1
    window = {"main": 0.0, "mtp": 0.0, "tokens": 0, "steps": 0, "t": time.time()}
    for step in range(args.steps):
        if step == qat_start:
            emit({"event": "qat", "step": step, "fp8_weights": enable_qat(model)})
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        batch = sampler.next()
        with parametrize.cached():  # FP8 fake-quant (if on) computed once per step, not per expert access
            main_loss, mtp_loss = model.losses(batch.ids, batch.mask)
            (main_loss + args.mtp_weight * mtp_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        load = balancer.step()
        window["main"] += main_loss.item()
        window["mtp"] += mtp_loss.item()
        window["tokens"] += batch.n_tokens
        window["steps"] += 1
        if (step + 1) % 25 == 0 or step + 1 == args.steps:
            dt = time.time() - window["t"]
            emit({"step": step + 1, "elapsed_s": round(time.time() - t0, 1), "lr": round(lr_at(step, args), 6),
                  "loss": round(window["main"] / window["steps"], 4),
                  "mtp_loss": round(window["mtp"] / window["steps"], 4),
                  "tok_per_s": round(window["tokens"] / dt), "max_expert_load": round(load, 2)})
            window = {"main": 0.0, "mtp": 0.0, "tokens": 0, "steps": 0, "t": time.time()}
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            emit({"step": step + 1, "elapsed_s": round(time.time() - t0, 1),
                  "heldout_acc_100": quick_accuracy(model, tok, 100)})

    if parametrize.is_parametrized(model.lm.model.layers[0].self_attn.q_a_proj):
        remove_qat(model)  # keep the latent full-precision weights; the checkpoint quantizes them
    model.eval()
    train_s = time.time() - t0
    problems = eval_problems(args.eval_n)
    full = evaluate_many(torch_generate_many(model, tok), problems)
    emit({"event": "eval", "precision": "fp32", **_result(full)})

    save_checkpoint(model, args.out, {
        "tokenizer.json": tok.to_str(pretty=True),
        "tokenizer_config.json": tokenizer_config(CHAT_TEMPLATE, cfg["max_position_embeddings"]),
        "generation_config.json": GENERATION_CONFIG,
    })
    fp8_model = load_checkpoint(args.out)
    fp8 = evaluate_many(torch_generate_many(fp8_model, tok), problems)
    emit({"event": "eval", "precision": "fp8-checkpoint", **_result(fp8)})
    acc = mtp_acceptance(fp8_model, tok)
    metrics = {"train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t0, 1),
               "params": param_count(model), "fp32": _result(full), "fp8": _result(fp8),
               "mtp_top1_acceptance": round(acc, 4)}
    emit({"event": "done", **metrics})
    (args.log_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    for p, out in fp8.failures[:20]:
        print("FAIL", repr(p.question), p.answer, repr(out[-80:]), file=sys.stderr)
    return 0


def _result(r) -> dict:
    return {"accuracy": round(r.accuracy, 4), "correct": r.correct, "n": r.n,
            "by_op": {op: f"{c}/{t}" for op, (c, t) in r.by_op.items()}}


if __name__ == "__main__":
    sys.exit(main())
