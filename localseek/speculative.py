"""Speculative decoding: a cheap drafter proposes tokens, the main model checks them all in one batch.

Two drafters:
- `MTPDrafter` — DeepSeek-V3/R1's own multi-token-prediction module (the GGUF's `blk.<n_layer>.nextn.*` tensors),
  run by llama.cpp as a second context of the *same* model (`LLAMA_CONTEXT_TYPE_MTP`). The MTP block at position p
  reads the main model's hidden state at p-1 and the token at p, and predicts the token at p+1. Its KV cache is
  kept in step with the main one: every batch the main model decodes is also fed to the MTP context, each token
  paired with the previous position's hidden state (what llama.cpp's `common_speculative` and the llama-cpp-python
  example server do). Further draft tokens chain the MTP block on its own output.
- `ModelDrafter` — a smaller model with the same tokenizer (e.g. R1-Distill-Qwen-1.5B for the 7B/14B/32B distills).

Verification samples the main model at every drafted position with the normal sampler and keeps drafts while they
equal what it sampled, so the output is exactly what plain decoding gives (token for token under greedy decoding;
the same distribution otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from localseek.decode import Batch, DecodeContext, Sampler, prefill, reusable_prefix
from localseek.errors import EngineError, UsageError

DEFAULT_MTP_DRAFT = 3  # most tokens per draft; the tuner picks the length that pays (0 = plain decoding)
DEFAULT_MODEL_DRAFT = 6
DEFAULT_P_MIN = 0.5  # after the first draft token, stop once the drafter's own top probability falls below this


@dataclass
class SpecStats:
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0  # verification batches
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"drafted": self.drafted, "accepted": self.accepted, "rounds": self.rounds,
                "acceptance": round(self.acceptance, 4)}


class DraftTuner:
    """Chooses each round's draft length (0 … n_max) by the tokens per second each length has delivered.

    Verifying k drafts costs a batch of k+1 tokens, which is nearly free where decoding is memory-bound (big dense
    models, GPUs) and not where it is compute-bound or where extra tokens route to other experts (MoE on a few CPU
    cores): whether drafting pays, and how far, is measured rather than assumed. Every length is tried first (longest
    first), then the best is used, with one of its neighbours tried again every `explore` rounds. Output does not
    depend on the length, only speed does.
    """

    def __init__(self, n_max: int, *, fixed: bool = False, explore: int = 12, alpha: float = 0.25) -> None:
        self.n_max = n_max
        self.fixed = fixed
        self.explore = explore
        self.alpha = alpha
        self.rate: dict[int, float] = {}  # EMA of tokens/second per draft length
        self.rounds = 0
        self._flip = False

    def pick(self) -> int:
        self.rounds += 1
        if self.fixed:
            return self.n_max
        for k in range(self.n_max, -1, -1):
            if k not in self.rate:
                return k
        best = max(self.rate, key=self.rate.__getitem__)
        if self.rounds % self.explore == 0:
            self._flip = not self._flip
            near = best + 1 if self._flip else best - 1
            if 0 <= near <= self.n_max:
                return near
        return best

    def update(self, k: int, tokens: int, seconds: float) -> None:
        if seconds <= 0:
            return
        r = tokens / seconds
        self.rate[k] = r if k not in self.rate else (1 - self.alpha) * self.rate[k] + self.alpha * r


class Drafter(Protocol):
    kind: str
    n_draft: int
    tuner: DraftTuner

    def prepare(self, target: DecodeContext, keep: int) -> int:
        """The target is about to keep `keep` cached tokens and decode the rest; return how many it may keep."""

    def draft(self, target: DecodeContext, last: int, n_max: int) -> list[int]:
        """Propose up to n_max tokens to follow `target.tokens + [last]`."""

    def accepted(self, target: DecodeContext, n_accepted: int) -> None:
        """The last verification kept `n_accepted` drafts; the target cache has been truncated to match."""

    def close(self) -> None: ...


@dataclass
class _Confidence:
    p_min: float

    def top(self, logits: np.ndarray, i: int) -> tuple[int, float]:
        """The drafter's greedy choice and its probability (1.0 for the first token: it is always tried)."""
        best = int(np.argmax(logits))
        if self.p_min <= 0 or i == 0:
            return best, 1.0
        z = logits - logits[best]
        return best, float(1.0 / np.exp(z, dtype=np.float64).sum())


class MTPDrafter:
    """Drafts with the model's MTP block. Requires the model to be loaded with its MTP layers (`load_mtp`)."""

    kind = "mtp"

    def __init__(self, target: DecodeContext, *, n_draft: int = DEFAULT_MTP_DRAFT, p_min: float = DEFAULT_P_MIN,
                 fixed: bool = False, n_threads: int | None = None, n_threads_batch: int | None = None) -> None:
        import llama_cpp
        from llama_cpp import llama_cpp_ext

        self._lib, self._ext = llama_cpp, llama_cpp_ext
        model = target.model
        if int(llama_cpp.llama_model_n_layer_nextn(model)) < 1:
            raise UsageError("This model has no MTP layers; run it without --mtp (or re-convert keeping MTP).")
        self.n_embd = int(llama_cpp.llama_model_n_embd_out(model)) or int(llama_cpp.llama_model_n_embd(model))
        self.n_draft = n_draft
        self.tuner = DraftTuner(n_draft, fixed=fixed)
        self.conf = _Confidence(p_min)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = target.n_ctx
        params.n_batch = target.n_batch
        params.n_ubatch = min(target.n_batch, int(llama_cpp.llama_n_ubatch(target.ctx)))
        params.n_seq_max = 1
        threads = n_threads or int(llama_cpp.llama_n_threads(target.ctx))
        params.n_threads = threads
        params.n_threads_batch = n_threads_batch or int(llama_cpp.llama_n_threads_batch(target.ctx))
        params.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise EngineError("llama.cpp could not create the MTP draft context; run with --no-mtp.")
        self.ctx = ctx
        self.dc = DecodeContext(ctx, model)  # tokens = what the MTP KV cache holds (one entry per position)
        self.batch = Batch(target.n_batch, self.n_embd)
        # The main context outputs its final hidden state for every token; the MTP context only for its outputs.
        llama_cpp_ext.llama_set_embeddings_nextn(target.ctx, True, False)
        llama_cpp_ext.llama_set_embeddings_nextn(ctx, True, True)
        self.target_ctx = target.ctx
        self.pending_h = np.zeros(self.n_embd, dtype=np.float32)
        self.pending_pos = -1  # the position whose hidden state pending_h is
        self.rows = np.zeros((0, self.n_embd), dtype=np.float32)  # hidden states of the last target decode
        self.rows_start = 0
        target.observers.append(self._observe)
        self._target = target

    # The MTP entry at position p is (token p, main hidden state p-1): valid while tokens 0..p are unchanged.
    def prepare(self, target: DecodeContext, keep: int) -> int:
        need = keep  # MTP entries that must stay valid
        if keep > 0 and self.pending_pos != keep - 1:
            # The hidden state of position keep-1 is gone: decode that token again; its MTP entry must stay.
            keep -= 1
            need = keep + 1
        if len(self.dc.tokens) < need or self.dc.tokens[:need] != target.tokens[:need]:
            keep = need = 0
        self.dc.truncate(need)
        if keep == 0:
            self.pending_h[:] = 0
            self.pending_pos = -1
        return keep

    def _observe(self, tokens: Sequence[int], pos0: int) -> None:
        """After each main decode: feed the same tokens to the MTP context, each with the previous hidden state."""
        ptr = self._ext.llama_get_embeddings_nextn(self.target_ctx)
        if not ptr:
            raise EngineError("internal: llama.cpp returned no hidden states for MTP")
        rows = np.ctypeslib.as_array(ptr, shape=(len(tokens), self.n_embd))
        batch = self.batch
        batch.clear()
        have = len(self.dc.tokens)
        for k, tok in enumerate(tokens):
            pos = pos0 + k
            if pos < have:
                continue  # already there (a token decoded again to recover its hidden state)
            if pos != have + batch.n_tokens:
                raise EngineError("internal: MTP cache out of step with the main model")
            if k > 0:
                h = rows[k - 1]
            elif self.pending_pos == pos - 1:
                h = self.pending_h
            else:
                h = np.zeros(self.n_embd, dtype=np.float32)
            batch.add(tok, pos, False, h)
        if batch.n_tokens:
            self._decode(batch)
            self.dc.tokens.extend(tokens[len(tokens) - batch.n_tokens :])
        self.rows = rows.copy()
        self.rows_start = pos0
        self.pending_h[:] = rows[-1]
        self.pending_pos = pos0 + len(tokens) - 1

    def _decode(self, batch: Batch) -> None:
        rc = self._lib.llama_decode(self.ctx, batch.raw)
        if rc != 0:
            raise EngineError(f"llama.cpp could not run the MTP block (code {rc}); run with --no-mtp.")

    def draft(self, target: DecodeContext, last: int, n_max: int) -> list[int]:
        pos = len(target.tokens)
        if n_max <= 0 or self.pending_pos != pos - 1 or len(self.dc.tokens) != pos:
            return []
        drafts: list[int] = []
        token, h = last, self.pending_h
        batch = self.batch
        for i in range(n_max):
            batch.clear()
            batch.add(token, pos + i, True, h)
            self._decode(batch)
            best, p = self.conf.top(self.dc.logits_row(0), i)
            if p < self.conf.p_min:
                break
            drafts.append(best)
            hp = self._ext.llama_get_embeddings_nextn_ith(self.ctx, 0)
            if not hp:
                break
            h = np.ctypeslib.as_array(hp, shape=(self.n_embd,)).copy()
            token = best
        # Drop the draft-time entries: the verification batch writes them again from the main model's states.
        self._lib.llama_memory_seq_rm(self.dc.mem, 0, pos, -1)
        return drafts

    def accepted(self, target: DecodeContext, n_accepted: int) -> None:
        n = len(target.tokens)
        self.dc.truncate(n)
        row = n - 1 - self.rows_start
        if 0 <= row < len(self.rows):
            self.pending_h[:] = self.rows[row]
            self.pending_pos = n - 1

    def close(self) -> None:
        if self._observe in self._target.observers:
            self._target.observers.remove(self._observe)
        self._ext.llama_set_embeddings_nextn(self.target_ctx, False, False)
        self.batch.close()
        self.dc.close()
        if self.ctx:
            self._lib.llama_free(self.ctx)
            self.ctx = None


class ModelDrafter:
    """Drafts greedily with a smaller model that shares the tokenizer; owns (and closes) the draft engine."""

    kind = "draft-model"

    def __init__(self, draft_engine: object, target: DecodeContext, *, n_draft: int = DEFAULT_MODEL_DRAFT,
                 p_min: float = DEFAULT_P_MIN, fixed: bool = False) -> None:
        draft: DecodeContext = draft_engine.decoder  # type: ignore[attr-defined]
        check_same_tokenizer(target.model, draft.model)
        self.engine = draft_engine
        self.dc = draft
        self.n_draft = n_draft
        self.tuner = DraftTuner(n_draft, fixed=fixed)
        self.conf = _Confidence(p_min)

    def prepare(self, target: DecodeContext, keep: int) -> int:
        return keep

    def draft(self, target: DecodeContext, last: int, n_max: int) -> list[int]:
        if n_max <= 0:
            return []
        seq = [*target.tokens, last]
        dc = self.dc
        if len(seq) + n_max > dc.n_ctx:
            return []
        prefill(dc, seq, reusable_prefix(dc, seq))
        drafts: list[int] = []
        for i in range(n_max):
            best, p = self.conf.top(dc.logits_row(-1), i)
            if p < self.conf.p_min:
                break
            drafts.append(best)
            if i + 1 < n_max:
                dc.decode((best,))
        return drafts

    def accepted(self, target: DecodeContext, n_accepted: int) -> None:
        pass  # the next draft() reuses the common prefix and drops the rest

    def close(self) -> None:
        self.engine.close()  # type: ignore[attr-defined]


def check_same_tokenizer(target_model: object, draft_model: object) -> None:
    """Refuse a draft model whose tokens mean something else (llama.cpp's own compatibility rules, plus a check of
    every token text both vocabularies share; padded vocabularies of different sizes are fine)."""
    import llama_cpp

    vt, vd = llama_cpp.llama_model_get_vocab(target_model), llama_cpp.llama_model_get_vocab(draft_model)
    why = ""
    if llama_cpp.llama_vocab_type(vt) != llama_cpp.llama_vocab_type(vd):
        why = "different tokenizer types"
    elif llama_cpp.llama_vocab_bos(vt) != llama_cpp.llama_vocab_bos(vd) or \
            llama_cpp.llama_vocab_eos(vt) != llama_cpp.llama_vocab_eos(vd):
        why = "different begin/end-of-sequence tokens"
    else:
        nt, nd = llama_cpp.llama_vocab_n_tokens(vt), llama_cpp.llama_vocab_n_tokens(vd)
        if abs(nt - nd) > 512:
            why = f"vocabularies of {nt} and {nd} tokens"
        else:
            for i in range(min(nt, nd)):
                if llama_cpp.llama_vocab_get_text(vt, i) != llama_cpp.llama_vocab_get_text(vd, i):
                    why = f"token {i} differs"
                    break
    if why:
        raise UsageError(f"The draft model does not share the main model's tokenizer ({why}); pick a draft model "
                         "from the same family (e.g. deepseek-r1:1.5b for the Qwen distills).")


def speculative_tokens(dc: DecodeContext, sampler: Sampler, drafter: Drafter, prompt: Sequence[int],
                       stats: SpecStats) -> Iterator[int]:
    """Like `decode.plain_tokens`, but each round decodes [last, draft…] together and yields every token the main
    model agrees with, plus its own next token."""
    import time

    keep = drafter.prepare(dc, reusable_prefix(dc, prompt))
    prefill(dc, prompt, keep)
    sampler.accept(prompt)
    last = sampler.sample(dc.ctx, -1)
    yield last
    while True:
        room = dc.n_ctx - len(dc.tokens)
        if room <= 0:
            return
        t0 = time.perf_counter()
        k = drafter.tuner.pick()
        draft = drafter.draft(dc, last, min(k, room - 1, dc.n_batch - 1))
        t1 = time.perf_counter()
        dc.decode([last, *draft], logits="all")
        out: list[int] = []
        for i in range(len(draft) + 1):
            token = sampler.sample(dc.ctx, i)
            out.append(token)
            if i == len(draft) or token != draft[i]:
                break
        n_acc = len(out) - 1
        dc.truncate(len(dc.tokens) - len(draft) + n_acc)
        drafter.accepted(dc, n_acc)
        stats.rounds += 1
        stats.drafted += len(draft)
        stats.accepted += n_acc
        t2 = time.perf_counter()
        stats.draft_seconds += t1 - t0
        stats.verify_seconds += t2 - t1
        drafter.tuner.update(k, len(out), t2 - t0)
        yield from out
        last = out[-1]


# -- wiring: what `run` and `bench` call ------------------------------------------------------------
def mtp_layers(info: object) -> int:
    """How many MTP blocks the GGUF carries (0 when its converter dropped them, as llama.cpp's own does)."""
    n = int(info.get("nextn_predict_layers", 0) or 0)  # type: ignore[attr-defined]
    blocks = int(info.get("block_count", 0) or 0)  # type: ignore[attr-defined]
    if n <= 0 or blocks <= n:
        return 0
    names = {t.name for t in info.tensors}  # type: ignore[attr-defined]
    return n if f"blk.{blocks - n}.nextn.eh_proj.weight" in names else 0


def want_mtp(info: object, requested: bool | None) -> bool:
    """--mtp/--no-mtp/neither → whether to load and use the MTP block. On by default when the model has one."""
    has = mtp_layers(info) > 0
    if requested and not has:
        raise UsageError(
            f"{info.path.name} has no MTP module (blk.N.nextn.* tensors); drop --mtp, or convert the model with "  # type: ignore[attr-defined]
            "`localseek` (which keeps MTP) instead of llama.cpp's converter."
        )
    if requested is None:
        return has and info.arch == "deepseek2"  # type: ignore[attr-defined]
    return requested


def attach_mtp(engine: object, *, n_draft: int | None = None, p_min: float = DEFAULT_P_MIN,
               fixed: bool = False) -> MTPDrafter:
    drafter = MTPDrafter(engine.decoder, n_draft=n_draft or DEFAULT_MTP_DRAFT, p_min=p_min,  # type: ignore[attr-defined]
                         fixed=fixed)
    engine.drafter = drafter  # type: ignore[attr-defined]
    return drafter


def attach_draft_model(engine: object, draft_engine: object, *, n_draft: int | None = None,
                       p_min: float = DEFAULT_P_MIN, fixed: bool = False) -> ModelDrafter:
    try:
        drafter = ModelDrafter(draft_engine, engine.decoder, n_draft=n_draft or DEFAULT_MODEL_DRAFT,  # type: ignore[attr-defined]
                               p_min=p_min, fixed=fixed)
    except Exception:
        draft_engine.close()  # type: ignore[attr-defined]
        raise
    engine.drafter = drafter  # type: ignore[attr-defined]
    return drafter


def resolve(info: object, *, mtp: bool | None, draft: str | None) -> bool:
    """Whether to load the MTP block, given --mtp/--no-mtp and --draft (one drafter at a time)."""
    if draft:
        if mtp:
            raise UsageError("Use either --mtp or --draft, not both.")
        return False
    return want_mtp(info, mtp)


def enable(engine: object, *, mtp: bool, draft: str | None, n_draft: int | None = None,
           p_min: float = DEFAULT_P_MIN, fixed: bool = False) -> str:
    """Attach the drafter `resolve` chose to a loaded engine; returns "mtp", "draft-model" or "" (none)."""
    if mtp:
        attach_mtp(engine, n_draft=n_draft, p_min=p_min, fixed=fixed)
        return MTPDrafter.kind
    if draft:
        from localseek.engine import LoadOptions
        from localseek.loader import open_model

        main = engine.options  # type: ignore[attr-defined]
        opts = LoadOptions(n_ctx=engine.n_ctx, n_threads=main.n_threads, n_threads_batch=main.n_threads_batch,  # type: ignore[attr-defined]
                           n_batch=main.n_batch, n_ubatch=main.n_ubatch, verbose=main.verbose)
        draft_engine, _ = open_model(draft, opts)
        attach_draft_model(engine, draft_engine, n_draft=n_draft, p_min=p_min, fixed=fixed)
        return ModelDrafter.kind
    return ""
