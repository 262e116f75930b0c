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

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from gguf import Keys

from localseek.errors import EngineError, ModelFileError, UsageError
from localseek.models.gguf_info import GGUFInfo, read_gguf
from localseek.runtime.decode import Batch, DecodeContext, Sampler, common_prefix, prefill, reusable_prefix
from localseek.runtime.options import SpecStats

DEFAULT_MTP_DRAFT = 3  # most tokens per draft; the tuner picks the length that pays (0 = plain decoding)
DEFAULT_MODEL_DRAFT = 6
# llama.cpp builds an MTP graph for these (V3/R1/V3.1, V3.2 with its indexer, V4); other nextn archs stay opt-in
MTP_ARCHS = ("deepseek2", "deepseek32", "deepseek4")
DEFAULT_P_MIN = 0.5  # after the first draft token, stop once the drafter's own top probability falls below this


class DraftTuner:
    """Chooses each round's draft length (0 … n_max) by the tokens per second each length has delivered.

    Verifying k drafts costs a batch of k+1 tokens, which is nearly free where decoding is memory-bound (big dense
    models, GPUs) and not where it is compute-bound or where extra tokens route to other experts (MoE on a few CPU
    cores): whether drafting pays, and how far, is measured rather than assumed. Every length is tried first (longest
    first, twice: the first round of a length only warms it up), then the best is used, with one of its neighbours
    tried again after `explore` rounds, then after twice as many while the best stays the best (up to 16×), and
    often again once it changes. Output does not depend on the length, only speed does.
    """

    def __init__(self, n_max: int, *, fixed: bool = False, explore: int = 12, alpha: float = 0.1) -> None:
        self.n_max = n_max
        self.fixed = fixed
        self.explore = explore
        self.alpha = alpha
        self.tokens: dict[int, float] = {}  # per draft length: EMA of tokens a round delivered …
        self.seconds: dict[int, float] = {}  # … and of the round's wall time
        self.rounds = 0
        self._flip = False
        self._best = -1
        self._warm: set[int] = set()
        self._interval = explore
        self._next = 0

    @property
    def rate(self) -> dict[int, float]:
        """Tokens/second per draft length (ratio of the averages: steadier than averaging each round's ratio)."""
        return {k: self.tokens[k] / self.seconds[k] for k in self.tokens}

    def pick(self) -> int:
        self.rounds += 1
        if self.fixed:
            return self.n_max
        for k in range(self.n_max, -1, -1):
            if k not in self.tokens:
                return k
        rate = self.rate
        best = max(rate, key=rate.__getitem__)
        if best != self._best:  # conditions changed (or first choice): look around often again
            self._best, self._interval, self._next = best, self.explore, self.rounds + self.explore
        if self.rounds >= self._next:
            # While the best stays the best, exploring costs more than it finds: back off, up to 16× `explore`.
            self._next = self.rounds + self._interval
            self._interval = min(2 * self._interval, 16 * self.explore)
            self._flip = not self._flip
            near = best + 1 if self._flip else best - 1
            if 0 <= near <= self.n_max:
                return near
        return best

    def update(self, k: int, tokens: int, seconds: float) -> None:
        if seconds <= 0:
            return
        if k not in self._warm:
            self._warm.add(k)  # a length's first round builds llama.cpp graphs for new batch shapes: not counted
            return
        if k not in self.tokens:
            self.tokens[k], self.seconds[k] = float(tokens), seconds
            return
        # A neighbour tried on purpose counts for more: a stale estimate must be able to win back in one try.
        a = self.alpha if k == self._best else 0.5
        self.tokens[k] += a * (tokens - self.tokens[k])
        # A round the OS interrupted says nothing about the draft length: clip it to twice the average.
        self.seconds[k] += a * (min(seconds, 2 * self.seconds[k]) - self.seconds[k])


class Drafter(Protocol):
    kind: str
    n_draft: int
    tuner: DraftTuner

    def prepare(self, target: DecodeContext, keep: int) -> int:
        """The target is about to keep `keep` cached tokens and decode the rest; return how many it may keep."""

    def catch_up(self, target: DecodeContext) -> None:
        """Process what the target has decoded (the prompt) now, so that no draft round is charged for it."""

    def draft(self, target: DecodeContext, last: int, n_max: int) -> list[int]:
        """Propose up to n_max tokens to follow `target.tokens + [last]`."""

    def accepted(self, target: DecodeContext, n_accepted: int) -> None:
        """The last verification kept `n_accepted` drafts; the target cache has been truncated to match."""

    def suspended(self, target: DecodeContext) -> AbstractContextManager[None]:
        """While inside, the target decodes without the drafter (plain decoding, nothing kept for drafting)."""

    def set_threads(self, n: int, n_batch: int) -> None: ...

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


class _HiddenStates:
    """The main model's final hidden states for a run of consecutive positions [start, end)."""

    def __init__(self, n_embd: int) -> None:
        self.rows = np.zeros((64, n_embd), dtype=np.float32)
        self.start = 0
        self.n = 0

    @property
    def end(self) -> int:
        return self.start + self.n

    def holds(self, lo: int, hi: int) -> bool:
        """Whether rows for every position in [lo, hi] are here (trivially so for an empty range)."""
        return hi < lo or (self.start <= lo and hi < self.end)

    def get(self, pos: int) -> np.ndarray:
        return self.rows[pos - self.start]

    def put(self, pos0: int, rows: np.ndarray) -> None:
        """Rows for positions pos0, pos0+1, …: they replace whatever was held from pos0 on."""
        if self.start <= pos0 <= self.end:
            self.n = pos0 - self.start
        else:
            self.start, self.n = pos0, 0
        need = self.n + len(rows)
        if need > len(self.rows):
            grown = np.zeros((max(need, 2 * len(self.rows)), self.rows.shape[1]), dtype=np.float32)
            grown[: self.n] = self.rows[: self.n]
            self.rows = grown
        self.rows[self.n : need] = rows
        self.n = need

    def forget_before(self, pos: int) -> None:
        k = min(max(pos - self.start, 0), self.n)
        if k:
            self.rows[: self.n - k] = self.rows[k : self.n]
            self.start += k
            self.n -= k


class MTPDrafter:
    """Drafts with the model's MTP block. Requires the model to be loaded with its MTP layers (`load_mtp`).

    The MTP entry at position p is (token p, the main model's hidden state at p-1); the MTP KV cache holds the
    entries for positions 0 … len(self.dc.tokens)-1, always a prefix of the main context's tokens. Entries are added
    lazily: the main model's hidden states are kept after each of its decodes, and the entries they complete go into
    the same MTP batch as the next draft query (last sampled token, hidden state before it) — which is itself the
    entry for its position and stays in the cache. A round therefore costs one MTP decode plus one per chained
    draft, and rounds that do not draft (the tuner chose 0) cost nothing until `FLUSH` entries are waiting.
    """

    kind = "mtp"
    FLUSH = 64  # decode waiting entries once this many have piled up (bounds the hidden states kept)

    def __init__(self, target: DecodeContext, *, n_draft: int = DEFAULT_MTP_DRAFT, p_min: float = DEFAULT_P_MIN,
                 fixed: bool = False, n_threads: int | None = None, n_threads_batch: int | None = None,
                 model: object | None = None) -> None:
        """`model`: a separate MTP-only llama.cpp model (V4's MTP file), owned by the drafter from here on;
        default: the target's own MTP block."""
        import llama_cpp
        from llama_cpp import llama_cpp_ext

        self._lib, self._ext = llama_cpp, llama_cpp_ext
        self._own_model = model
        model = model or target.model
        if int(llama_cpp.llama_model_n_layer_nextn(model)) < 1:
            raise UsageError("This model has no MTP layers; run it without --mtp (or re-convert keeping MTP).")
        self.n_embd = _embd_out(model)
        if self._own_model is not None and self.n_embd != _embd_out(target.model):
            self._free_model()
            raise UsageError("The MTP file does not belong to this model (its hidden-state width differs); "
                             "pass the MTP file converted from the same checkpoint, or --no-mtp.")
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
        params.n_rs_seq = n_draft  # chained drafts are taken back after each round (see `draft`)
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            self._free_model()
            raise EngineError("llama.cpp could not create the MTP draft context; run with --no-mtp.")
        self.ctx = ctx
        self.dc = DecodeContext(ctx, model)  # tokens = the positions whose MTP entries are cached
        self.batch = Batch(target.n_batch, self.n_embd)
        # The main context outputs its final hidden state for every token; the MTP context only for its outputs.
        llama_cpp_ext.llama_set_embeddings_nextn(target.ctx, True, False)
        llama_cpp_ext.llama_set_embeddings_nextn(ctx, True, True)
        self.target_ctx = target.ctx
        self.hidden = _HiddenStates(self.n_embd)
        self._zero = np.zeros(self.n_embd, dtype=np.float32)
        target.observers.append(self._observe)
        self._target = target

    def _needs(self, upto: int) -> tuple[int, int]:
        """The positions whose hidden states the entries after the cached ones, up to position `upto`, pair with."""
        return max(len(self.dc.tokens) - 1, 0), upto - 1

    def prepare(self, target: DecodeContext, keep: int) -> int:
        m = min(common_prefix(self.dc.tokens, target.tokens), keep)
        self.dc.truncate(m)
        lo, hi = self._needs(keep)
        if self.hidden.holds(lo, hi):
            return keep
        if self.hidden.start <= lo < self.hidden.end:
            return min(keep, self.hidden.end)  # decode again from the first position whose state is gone
        return lo

    def catch_up(self, target: DecodeContext) -> None:
        """Decode every entry the kept hidden states complete (all but the one the next query brings)."""
        end = len(target.tokens)
        if len(self.dc.tokens) < end and self.hidden.holds(*self._needs(end - 1)):
            self._add_entries(end)

    def _observe(self, tokens: Sequence[int], pos0: int) -> None:
        """After each main decode: keep its hidden states (the entries they complete are decoded later)."""
        ptr = self._ext.llama_get_embeddings_nextn(self.target_ctx)
        if not ptr:
            raise EngineError("internal: llama.cpp returned no hidden states for MTP")
        self.hidden.put(pos0, np.ctypeslib.as_array(ptr, shape=(len(tokens), self.n_embd)))
        if pos0 + len(tokens) - len(self.dc.tokens) > self.FLUSH:
            self.catch_up(self._target)

    def _add_entries(self, upto: int, query: int | None = None) -> None:
        """Decode the entries for positions len(self.dc.tokens) … upto-1, then (with logits) `query` at `upto`."""
        target = self._target.tokens
        first = len(self.dc.tokens)
        entries = [(target[p], p) for p in range(first, upto)]
        if query is not None:
            entries.append((query, upto))
        batch, hidden = self.batch, self.hidden
        for start in range(0, len(entries), batch.capacity):
            batch.clear()
            for tok, p in entries[start : start + batch.capacity]:
                batch.add(tok, p, p == upto, hidden.get(p - 1) if p > 0 else self._zero)
            self._decode(batch)
        self.dc.tokens.extend(tok for tok, _ in entries)
        hidden.forget_before(len(self.dc.tokens) - 1)

    def _decode(self, batch: Batch) -> None:
        rc = self._lib.llama_decode(self.ctx, batch.raw)
        if rc != 0:
            raise EngineError(f"llama.cpp could not run the MTP block (code {rc}); run with --no-mtp.")

    def draft(self, target: DecodeContext, last: int, n_max: int) -> list[int]:
        pos = len(target.tokens)
        if n_max <= 0 or len(self.dc.tokens) > pos or not self.hidden.holds(*self._needs(pos)):
            return []
        self._add_entries(pos, last)
        batch = self.batch
        row = batch.n_tokens - 1
        drafts: list[int] = []
        chained = False
        for i in range(n_max):
            best, p = self.conf.top(self.dc.logits_row(row), i)
            if p < self.conf.p_min:
                break
            drafts.append(best)
            if i + 1 == n_max:
                break
            hp = self._ext.llama_get_embeddings_nextn_ith(self.ctx, row)
            if not hp:
                break
            # Chained drafts pair a draft with the MTP block's own output state, not the main model's: these
            # entries are dropped afterwards (verification brings the real ones).
            batch.clear()
            batch.add(best, pos + 1 + i, True, np.ctypeslib.as_array(hp, shape=(self.n_embd,)))
            self._decode(batch)
            row = 0
            chained = True
        if chained and not self._lib.llama_memory_seq_rm(self.dc.mem, 0, pos + 1, -1):
            raise EngineError("llama.cpp could not take back the MTP block's chained drafts; run with --no-mtp.")
        return drafts

    def accepted(self, target: DecodeContext, n_accepted: int) -> None:
        pass  # the cache ends at the verified query; the next decode's hidden states replace the rejected ones

    @contextmanager
    def suspended(self, target: DecodeContext) -> Iterator[None]:
        """Plain decoding costs what it costs without MTP: no hidden states output or kept. Afterwards `prepare`
        finds the states of the positions decoded meanwhile missing and has them decoded again."""
        self._target.observers.remove(self._observe)
        self._ext.llama_set_embeddings_nextn(self.target_ctx, False, False)
        try:
            yield
        finally:
            self._ext.llama_set_embeddings_nextn(self.target_ctx, True, False)
            self._target.observers.append(self._observe)

    def set_threads(self, n: int, n_batch: int) -> None:
        self._lib.llama_set_n_threads(self.ctx, n, n_batch)

    def close(self) -> None:
        if self._observe in self._target.observers:
            self._target.observers.remove(self._observe)
        self._ext.llama_set_embeddings_nextn(self.target_ctx, False, False)
        self.batch.close()
        self.dc.close()
        if self.ctx:
            self._lib.llama_free(self.ctx)
            self.ctx = None
        self._free_model()

    def _free_model(self) -> None:
        if self._own_model is not None:
            self._lib.llama_model_free(self._own_model)
            self._own_model = None


def _embd_out(model: object) -> int:
    import llama_cpp

    return int(llama_cpp.llama_model_n_embd_out(model)) or int(llama_cpp.llama_model_n_embd(model))


class DraftEngine(Protocol):
    """What `ModelDrafter` needs of the draft model's engine (an `engine.Engine` without a drafter of its own)."""

    decoder: DecodeContext

    def set_threads(self, n: int, n_batch: int | None = None) -> None: ...

    def close(self) -> None: ...


class ModelDrafter:
    """Drafts greedily with a smaller model that shares the tokenizer; owns (and closes) the draft engine."""

    kind = "draft-model"

    def __init__(self, draft_engine: DraftEngine, target: DecodeContext, *, n_draft: int = DEFAULT_MODEL_DRAFT,
                 p_min: float = DEFAULT_P_MIN, fixed: bool = False) -> None:
        draft = draft_engine.decoder
        check_same_tokenizer(target.model, draft.model)
        self.engine = draft_engine
        self.dc = draft
        self.n_draft = n_draft
        self.tuner = DraftTuner(n_draft, fixed=fixed)
        self.conf = _Confidence(p_min)

    def prepare(self, target: DecodeContext, keep: int) -> int:
        return keep

    def catch_up(self, target: DecodeContext) -> None:
        if target.tokens and len(target.tokens) < self.dc.n_ctx:
            prefill(self.dc, target.tokens, reusable_prefix(self.dc, target.tokens))

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

    def suspended(self, target: DecodeContext) -> AbstractContextManager[None]:
        return nullcontext()  # the draft model catches up by itself on the next draft

    def set_threads(self, n: int, n_batch: int) -> None:
        self.engine.set_threads(n, n_batch)

    def close(self) -> None:
        self.engine.close()


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
    keep = drafter.prepare(dc, reusable_prefix(dc, prompt))
    prefill(dc, prompt, keep)
    sampler.accept(prompt)
    last = sampler.sample(dc.ctx, -1)
    yield last
    drafter.catch_up(dc)
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
        dc.truncate(len(dc.tokens) - len(draft) + n_acc, replay=True)  # a cache that went back further catches up
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


# -- building a drafter (handed to the engine when it is built) ------------------------------------------------
@dataclass(frozen=True)
class DrafterFactory:
    """What `Engine.load(..., drafter=)` takes: builds the drafter once the main context exists. `n_max` (the most
    tokens a round drafts) is known before, so the context can be made able to take that many back."""

    build: Callable[[DecodeContext], Drafter]
    n_max: int

    def __call__(self, target: DecodeContext) -> Drafter:
        return self.build(target)


def mtp_drafter(n_draft: int | None = None, *, p_min: float = DEFAULT_P_MIN, fixed: bool = False
                ) -> DrafterFactory:
    """What `Engine.load(..., drafter=)` takes to draft with the model's MTP block (load it with `load_mtp`)."""
    n = n_draft or DEFAULT_MTP_DRAFT
    return DrafterFactory(lambda target: MTPDrafter(target, n_draft=n, p_min=p_min, fixed=fixed), n)


def model_drafter(draft_engine: DraftEngine, n_draft: int | None = None, *, p_min: float = DEFAULT_P_MIN,
                  fixed: bool = False) -> DrafterFactory:
    """What `Engine.load(..., drafter=)` takes to draft with a loaded smaller model; the drafter owns it (and closes
    it also when the tokenizers turn out not to match)."""
    n = n_draft or DEFAULT_MODEL_DRAFT

    def build(target: DecodeContext) -> ModelDrafter:
        try:
            return ModelDrafter(draft_engine, target, n_draft=n, p_min=p_min, fixed=fixed)
        except BaseException:
            draft_engine.close()
            raise
    return DrafterFactory(build, n)


# -- choosing a drafter ----------------------------------------------------------------------------------------
def mtp_layers(info: GGUFInfo) -> int:
    """How many MTP blocks the GGUF carries (0 when its converter dropped them, as llama.cpp's own does)."""
    n = info.int_value(Keys.LLM.NEXTN_PREDICT_LAYERS)
    blocks = info.int_value(Keys.LLM.BLOCK_COUNT)
    if n <= 0 or blocks <= n:
        return 0
    names = {t.name for t in info.tensors}
    return n if f"blk.{blocks - n}.nextn.eh_proj.weight" in names else 0


def is_mtp_only(info: GGUFInfo) -> bool:
    """A GGUF that holds only an MTP block (with the embeddings and head it needs), as DeepSeek-V4's converters write
    it beside the model: llama.cpp's own test is the same (no `blk.0.attn_norm.weight`)."""
    return mtp_layers(info) > 0 and not any(t.name == "blk.0.attn_norm.weight" for t in info.tensors)


def mtp_file_fits(main: GGUFInfo, mtp: GGUFInfo) -> str:
    """Why `mtp` is not the MTP file of `main` ("" when it is)."""
    if not is_mtp_only(mtp):
        return "it is not an MTP-only GGUF"
    if mtp.arch != main.arch:
        return f"it is a {mtp.arch} file and the model is {main.arch}"
    for key in (Keys.LLM.EMBEDDING_LENGTH, Keys.LLM.VOCAB_SIZE):
        if mtp.int_value(key) != main.int_value(key):
            return f"its {key.split('.')[-1]} differs from the model's"
    if mtp.int_value(Keys.LLM.BLOCK_COUNT) != main.int_value(Keys.LLM.BLOCK_COUNT) + mtp_layers(mtp):
        return "its MTP block does not follow this model's layers"
    return ""


MAX_MTP_CANDIDATES = 16  # sibling files whose name says "mtp" that are read to find the model's MTP file


def find_mtp_file(info: GGUFInfo, also: Sequence[Path] = ()) -> GGUFInfo | None:
    """The header of the MTP-only GGUF for a model that carries none of its own (DeepSeek-V4), or None: one `pull`
    took with the model (`also`), else one beside it whose name says "mtp" (`mtp-….gguf` as llama.cpp's downloader
    pairs them, `…-MTP-….gguf` as `quantize --mtp-only` writes them)."""
    if info.arch not in MTP_ARCHS or mtp_layers(info) > 0:
        return None
    try:
        siblings = sorted(p for p in info.path.parent.iterdir()
                          if p.suffix == ".gguf" and "mtp" in p.name.lower() and p != info.path and p.is_file())
    except OSError:
        siblings = []
    for path in [*also, *siblings][:MAX_MTP_CANDIDATES]:
        try:
            candidate = read_gguf(path)
        except (ModelFileError, OSError):
            continue
        if not mtp_file_fits(info, candidate):
            return candidate
    return None


def mtp_file_drafter(path: Path, n_draft: int | None = None, *, p_min: float = DEFAULT_P_MIN, fixed: bool = False,
                     n_gpu_layers: int = 0) -> DrafterFactory:
    """Draft with an MTP-only GGUF (V4's MTP file), loaded beside the main model when the drafter is built."""
    n = n_draft or DEFAULT_MTP_DRAFT

    def build(target: DecodeContext) -> MTPDrafter:
        import llama_cpp

        params = llama_cpp.llama_model_default_params()
        params.load_mtp = True
        params.n_gpu_layers = n_gpu_layers
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise EngineError(f"llama.cpp could not load the MTP file {path.name}; run with --no-mtp.")
        return MTPDrafter(target, n_draft=n, p_min=p_min, fixed=fixed, model=model)

    return DrafterFactory(build, n)


def want_mtp(info: GGUFInfo, requested: bool | None) -> bool:
    """--mtp/--no-mtp/neither → whether to load and use the MTP block. On by default when the model has one."""
    has = mtp_layers(info) > 0
    if requested and not has:
        if info.arch == "deepseek4":
            raise UsageError(
                f"{info.path.name} has no MTP module: DeepSeek-V4 keeps it in a file of its own (`localseek quantize "
                "--mtp-only`); put that file beside the model (its name containing 'mtp') or pass it with --draft, "
                "or drop --mtp."
            )
        raise UsageError(
            f"{info.path.name} has no MTP module (blk.N.nextn.* tensors); drop --mtp, or convert the model with "
            "`localseek` (which keeps MTP) instead of llama.cpp's converter."
        )
    if requested is None:
        return has and info.arch in MTP_ARCHS
    return requested


def resolve(info: GGUFInfo, *, mtp: bool | None, draft: str | None, mtp_file: GGUFInfo | None = None) -> bool:
    """Whether to load the MTP block, given --mtp/--no-mtp and --draft (one drafter at a time); `mtp_file`: the MTP
    file found for a model without a block of its own (`find_mtp_file`), which answers --mtp instead."""
    if draft:
        if mtp:
            raise UsageError("Use either --mtp or --draft, not both.")
        return False
    if mtp and mtp_file is not None:
        return False  # the MTP file drafts
    return want_mtp(info, mtp)
