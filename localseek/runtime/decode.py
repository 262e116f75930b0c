"""The token loop on llama.cpp's low-level API: batches, KV-cache bookkeeping, samplers.

`Llama.generate` re-creates its sampler on every call, copies every logits row into numpy and keeps its own view of
the KV cache; this module does the same work with one reusable `llama_batch`, a native sampler chain and an explicit
record of which tokens sit in the cache (`DecodeContext.tokens`), so that speculative decoding (localseek/speculative.py)
can verify several tokens in one batch and roll the cache back to the accepted prefix.

`DecodeContext` uses sequence 0 only: one conversation per context. Several sequences in one context (the HTTP
server) are runtime/parallel.py's, which shares `Batch` and `Sampler` with this module.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from localseek.errors import EngineError
from localseek.planning.hardware import memory

if TYPE_CHECKING:
    from localseek.runtime.options import Sampling

# Called after every llama_decode of a DecodeContext with (tokens, position of the first one).
DecodeObserver = Callable[[Sequence[int], int], None]


class Pacer(Protocol):
    """Chooses the threads of each llama_decode from how long the earlier ones took (`threads.ThreadPolicy`)."""

    sync: bool  # wait for the backend after a decode before timing it (a GPU's decode returns before it is done)

    def before(self, n_tokens: int) -> None: ...

    def after(self, n_tokens: int, seconds: float) -> None: ...


class Batch:
    """A reusable `llama_batch` for one sequence; with `n_embd` it also carries one float row per token."""

    def __init__(self, capacity: int, n_embd: int = 0) -> None:
        import llama_cpp

        self.capacity = capacity
        self.n_embd = n_embd
        self._lib = llama_cpp
        self.raw = llama_cpp.llama_batch_init(capacity, n_embd, 1)
        self._tokens = None
        if n_embd:
            # llama_batch_init allocates either token ids or embeddings; MTP needs both (token + hidden state).
            self._tokens = (llama_cpp.llama_token * capacity)()
            self.raw.token = self._tokens
            self.embd = np.ctypeslib.as_array(self.raw.embd, shape=(capacity, n_embd))
        for i in range(capacity):
            self.raw.n_seq_id[i] = 1
            self.raw.seq_id[i][0] = 0
        self.raw.n_tokens = 0

    @property
    def n_tokens(self) -> int:
        return int(self.raw.n_tokens)

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, logits: bool, embd: np.ndarray | None = None, seq: int = 0) -> int:
        i = int(self.raw.n_tokens)
        if i >= self.capacity:
            raise EngineError(f"internal: batch of {self.capacity} tokens overflowed")
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.logits[i] = logits
        raw.seq_id[i][0] = seq
        if embd is not None:
            self.embd[i] = embd
        raw.n_tokens = i + 1
        return i

    def close(self) -> None:
        if self.raw is None:
            return
        if self._tokens is not None:
            self.raw.token = ctypes.POINTER(self._lib.llama_token)()  # ours, not llama_batch_free's to free
        self._lib.llama_batch_free(self.raw)
        self.raw = None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# The most a prompt checkpoint may take (see DecodeContext.checkpoint): a copy of the prompt's cache state in RAM,
# also never more than a quarter of the RAM available at the time (the plan does not count it).
MAX_CHECKPOINT = 4 * 1024**3


class DecodeContext:
    """Sequence 0 of one llama_context, with the list of tokens its KV cache holds.

    Caches with compressed or recurrent state (DeepSeek-V4's) cannot drop a tail longer than their rollback
    snapshots, and a chat's next prompt leaves the cache where the last reply began (past reasoning is not part of
    the history): without help, every turn would read the whole conversation again. So once the memory is known to
    be like that (`limited_rollback`: set by the engine for such architectures, or learnt from the first refused
    removal), `checkpoint` keeps a copy of the sequence's state after each prompt, and `truncate` goes back to it
    when it cannot drop the tail, as llama-server's context checkpoints do."""

    def __init__(self, ctx: object, model: object) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.ctx = ctx
        self.model = model
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(ctx))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
        self.tokens: list[int] = []
        self.batch = Batch(self.n_batch)
        self.observers: list[DecodeObserver] = []
        self.pacer: Pacer | None = None
        self.limited_rollback = False
        self._checkpoint: tuple[tuple[int, ...], ctypes.Array] | None = None
        self.restored = 0  # checkpoints gone back to (for tests and stats)

    def clear(self) -> None:
        self._lib.llama_memory_clear(self.mem, True)
        self.tokens.clear()

    def truncate(self, n: int, *, replay: bool = False) -> None:
        """Forget every cached token from position n on. Memory that cannot drop that tail goes back to the last
        checkpoint inside the first n tokens, else starts again from nothing: callers read `len(self.tokens)`, or
        pass `replay` to have the tokens it went back over decoded again (no logits), so that it holds the first n."""
        if n >= len(self.tokens):
            return
        if self._lib.llama_memory_seq_rm(self.mem, 0, n, -1):
            del self.tokens[n:]
            return
        self.limited_rollback = True
        kept = self.tokens[:n] if replay else None  # copied only here, off the usual path
        if not self._restore(n):
            self.clear()
        if kept is not None:
            self.decode(kept[len(self.tokens):], logits="none")

    def checkpoint(self) -> None:
        """Keep a copy of the sequence's state now (after a prompt), where the memory needs it and it is not too
        large; the previous one is replaced."""
        if not self.limited_rollback or not self.tokens:
            return
        lib = self._lib
        size = int(lib.llama_state_seq_get_size_ext(self.ctx, 0, lib.LLAMA_STATE_SEQ_FLAGS_NONE))
        held = self._checkpoint[1] if self._checkpoint is not None else None
        if not 0 < size <= min(MAX_CHECKPOINT, (memory().available + (len(held) if held else 0)) // 4):
            self._checkpoint = None
            return
        buf = held if held is not None and len(held) == size else (ctypes.c_uint8 * size)()
        if int(lib.llama_state_seq_get_data_ext(self.ctx, buf, size, 0, lib.LLAMA_STATE_SEQ_FLAGS_NONE)) != size:
            self._checkpoint = None
            return
        self._checkpoint = (tuple(self.tokens), buf)

    def _restore(self, n: int) -> bool:
        if self._checkpoint is None:
            return False
        tokens, buf = self._checkpoint
        if len(tokens) > n or list(tokens) != self.tokens[: len(tokens)]:
            return False
        if int(self._lib.llama_state_seq_set_data_ext(self.ctx, buf, len(buf), 0,
                                                      self._lib.LLAMA_STATE_SEQ_FLAGS_NONE)) != len(buf):
            return False
        self.tokens[:] = tokens
        self.restored += 1
        return True

    def decode(self, tokens: Sequence[int], *, logits: str = "last") -> None:
        """Append tokens to the cache. logits: "last" (only the final token), "all" (every token; at most n_batch)
        or "none". After it, row i of the logits is `logits_row(i)` (i counts within the last chunk decoded)."""
        if not tokens:
            return
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise EngineError(f"The context is full ({self.n_ctx} tokens); start a new chat or raise --ctx.")
        if logits == "all" and len(tokens) > self.n_batch:
            raise EngineError(f"internal: {len(tokens)} tokens with logits exceed the batch size {self.n_batch}")
        lib, batch = self._lib, self.batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            last_chunk = start + len(chunk) == len(tokens)
            batch.clear()
            pos0 = len(self.tokens)
            for k, tok in enumerate(chunk):
                want = logits == "all" or (logits == "last" and last_chunk and k == len(chunk) - 1)
                batch.add(tok, pos0 + k, want)
            pacer = self.pacer
            if pacer is not None:
                pacer.before(len(chunk))
                t0 = time.perf_counter()
            rc = lib.llama_decode(self.ctx, batch.raw)
            if pacer is not None and rc == 0:
                if pacer.sync:
                    lib.llama_synchronize(self.ctx)
                pacer.after(len(chunk), time.perf_counter() - t0)
            if rc != 0:
                raise EngineError(
                    f"llama.cpp could not decode {len(chunk)} tokens (code {rc}); the context may be full or the "
                    "machine out of memory: shorten the prompt or lower --ctx."
                )
            self.tokens.extend(chunk)
            for observe in self.observers:
                observe(chunk, pos0)

    def logits_row(self, i: int) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise EngineError(f"internal: no logits for batch row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def close(self) -> None:
        self.batch.close()


PENALTY_LAST_N = 64  # tokens the repeat penalty looks back over (llama.cpp's default)


class Sampler:
    """A native llama.cpp sampler chain, in the order `Llama` builds it (penalties, top-k, top-p, min-p, temperature,
    random draw; greedy when temperature is 0).

    With `settings.grammar` a second chain puts llama.cpp's grammar sampler in front of the same samplers, and is used
    only for the answer: `think` (the ids of `<think>` and `</think>`) tells where the reasoning is. The phase starts
    from the prompt (`accept`): a block the prompt left open is reasoning (free); a block it just closed means the
    answer starts now (constrained); otherwise the model may open a block first, so its first token is either
    `<think>` or the grammar's. A `</think>` sampled later starts the grammar afresh."""

    def __init__(self, settings: Sampling, n_vocab: int, *, vocab: object = None,
                 think: tuple[int, int] | None = None) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.settings = settings
        self.n_vocab = n_vocab
        self.penalized = (settings.repeat_penalty != 1.0 or settings.frequency_penalty != 0.0
                          or settings.presence_penalty != 0.0)
        self.chain = self._chain(None)
        self.free_chain = self.chain
        self._vocab = vocab
        self._think = think
        self.phase = "free"  # free (no grammar) | start | thinking | answer
        if settings.grammar is not None:
            if vocab is None:
                raise EngineError("internal: a grammar needs the model's vocabulary")
            self.phase = "start" if think else "answer"
            self.chain = self._grammar_chain(gate=think is not None)

    def _chain(self, grammar: object) -> object:
        lib, settings = self._lib, self.settings
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        add = lambda s: lib.llama_sampler_chain_add(chain, s)
        if grammar is not None:
            add(grammar)
        if self.penalized:
            add(lib.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, settings.repeat_penalty,
                                                 settings.frequency_penalty, settings.presence_penalty))
        if settings.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(settings.top_k))
            add(lib.llama_sampler_init_top_p(settings.top_p, 1))
            add(lib.llama_sampler_init_min_p(settings.min_p, 1))
            add(lib.llama_sampler_init_temp(settings.temperature))
            seed = settings.seed if settings.seed is not None else lib.LLAMA_DEFAULT_SEED
            add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _grammar_chain(self, *, gate: bool) -> object:
        """A chain led by the grammar; with `gate` its root also allows `<think>` as the whole first token."""
        grammar = self.settings.grammar
        assert grammar is not None
        text, root = grammar.gbnf, grammar.root
        if gate:
            text, root = f'{text}\nthink-or-answer ::= "<think>" | {root}\n', "think-or-answer"
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, text.encode(), root.encode())
        if not sampler:
            raise EngineError("The grammar does not parse (llama.cpp refused it).")
        return self._chain(sampler)

    def _switch(self, phase: str) -> None:
        if phase == self.phase:
            return
        if self.chain is not self.free_chain:
            self._lib.llama_sampler_free(self.chain)
        self.phase = phase
        self.chain = self._grammar_chain(gate=False) if phase == "answer" else self.free_chain

    def sample(self, ctx: object, i: int) -> int:
        """Sample from logits row i of the last decode (and record the token for the penalties)."""
        token = int(self._lib.llama_sampler_sample(self.chain, ctx, i))
        if self._think is not None and self.phase in ("start", "thinking"):
            if token == self._think[0]:
                self._switch("thinking")
            elif token == self._think[1]:
                self._switch("answer")
            elif self.phase == "start":
                self.phase = "answer"  # no think block: the grammar chain is already the answer's
        return token

    def accept(self, tokens: Sequence[int]) -> None:
        """The tokens before the first sample (the prompt): for the penalties, and where the grammar starts."""
        if self.penalized:
            for tok in tokens[-PENALTY_LAST_N:]:
                self._lib.llama_sampler_accept(self.free_chain, tok)
        if self._think is not None and self.phase == "start":
            phase = prompt_phase(tokens, self._think)
            if phase != "start":
                self._switch(phase)
        if self.penalized and self.chain is not self.free_chain:
            for tok in tokens[-PENALTY_LAST_N:]:
                self._lib.llama_sampler_accept(self.chain, tok)

    def close(self) -> None:
        if self.chain is not None and self.chain is not self.free_chain:
            self._lib.llama_sampler_free(self.chain)
        if self.free_chain is not None:
            self._lib.llama_sampler_free(self.free_chain)
        self.chain = self.free_chain = None


def prompt_phase(tokens: Sequence[int], think: tuple[int, int]) -> str:
    """Where a prompt leaves the reply: "thinking" (a block is open), "answer" (a block closed at its very end: a
    template that skips reasoning, or a budget that closed it) or "start" (the model may open one)."""
    opened = closed = -1
    for i in range(len(tokens) - 1, -1, -1):
        if opened < 0 and tokens[i] == think[0]:
            opened = i
        if closed < 0 and tokens[i] == think[1]:
            closed = i
        if opened >= 0 and closed >= 0:
            break
    if opened > closed:
        return "thinking"
    if closed >= 0 and closed >= len(tokens) - 4:  # "</think>" and at most the newlines after it
        return "answer"
    return "start"


def prefill(dc: DecodeContext, prompt: Sequence[int], keep: int | None = None) -> int:
    """Bring the cache to `prompt`, reusing the longest cached prefix, with logits for the last prompt token.
    Returns how many prompt tokens were decoded."""
    if not prompt:
        raise EngineError("The prompt is empty.")
    if keep is None:
        keep = reusable_prefix(dc, prompt)
    dc.truncate(keep)
    keep = len(dc.tokens)
    dc.decode(prompt[keep:], logits="last")
    dc.checkpoint()
    return len(prompt) - keep


def reusable_prefix(dc: DecodeContext, prompt: Sequence[int]) -> int:
    # At least the last prompt token is decoded again: its logits are what the first sample needs.
    return min(common_prefix(dc.tokens, prompt), len(prompt) - 1)


def plain_tokens(dc: DecodeContext, sampler: Sampler, prompt: Sequence[int]) -> Iterator[int]:
    """One token per decode: prefill, then sample → decode → sample … until the context is full."""
    prefill(dc, prompt)
    sampler.accept(prompt)
    while True:
        token = sampler.sample(dc.ctx, -1)
        yield token
        if len(dc.tokens) >= dc.n_ctx:
            return
        dc.decode((token,))
