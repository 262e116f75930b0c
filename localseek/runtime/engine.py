"""The one adapter that owns llama-cpp-python: load a GGUF, stream tokens, report stats.

llama.cpp's C log is captured (kept for `--verbose` and for error messages) instead of being
printed over the user's terminal.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import re
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gguf import Keys

from localseek.errors import EngineError
from localseek.planning import backends
from localseek.planning.hardware import default_threads
from localseek.runtime import rpc
from localseek.runtime.decode import DecodeContext, Sampler, plain_tokens
from localseek.runtime.options import LoadOptions, Sampling, SpecStats, Stats
from localseek.runtime.speculative import Drafter, DrafterFactory, speculative_tokens
from localseek.runtime.threads import CpuSample, ThreadPolicy, cpu_sample, spare_cpus

if TYPE_CHECKING:
    from llama_cpp import Llama

_LOG: deque[str] = deque(maxlen=4000)
_ECHO_LOG = False
_CALLBACK: list[object] = []


def _install_log_capture() -> None:
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace")
        _LOG.append(line)
        if _ECHO_LOG:
            # llama-cpp-python points fd 2 at /dev/null while it loads a model; echo to the real stderr
            os.write(_echo_fd(), text)

    llama_cpp.llama_log_set(_capture, ctypes.c_void_p(0))
    _CALLBACK[:] = [_capture]  # keep alive for C


_ECHO_FD: list[int] = []


def _echo_fd() -> int:
    if not _ECHO_FD:
        _ECHO_FD.append(os.dup(2))
    return _ECHO_FD[0]


def captured_log() -> str:
    return "".join(_LOG)


LIMITED_ROLLBACK_ARCHS = ("deepseek4",)  # compressed-attention cache: llama-kv-cache-dsv4.cpp


class Engine:
    """A loaded model with one context, and the drafter it was built with (if any). Not thread-safe; one generation
    at a time. `Llama` loads the model and owns the context; tokens run through our own loop (`decode.py`)."""

    def __init__(self, path: Path, options: LoadOptions, llm: Llama, *, keepalive: object = None,
                 drafter: DrafterFactory | None = None, load_started: CpuSample | None = None) -> None:
        self.path = path
        self.options = options
        self.llm = llm
        self._keepalive = keepalive  # C arrays llama.cpp keeps pointers into
        self._pending: list[int] = []  # tokens queued by `inject`
        # The main context's KV bookkeeping. `Llama`'s own cache record is reset so that its high-level calls, if
        # anyone makes them, never trust a cache this loop changes.
        self.decoder = DecodeContext(llm._ctx.ctx, llm._model.model)
        # Known not to drop long tails: checkpoint prompts from the first turn (others are found out at the first
        # refused removal; see DecodeContext).
        self.decoder.limited_rollback = llm.metadata.get(Keys.General.ARCHITECTURE) in LIMITED_ROLLBACK_ARCHS
        llm.n_tokens = 0
        self.drafter: Drafter | None = None
        if drafter is not None:
            try:
                self.drafter = drafter(self.decoder)
            except BaseException:
                self.close()
                raise
        self.threads: ThreadPolicy | None = None  # None: thread counts fixed (at load, or by set_threads)
        if options.adapt_threads:
            self.adapt_threads(since=load_started)

    @classmethod
    def load(cls, path: Path, options: LoadOptions, *, drafter: DrafterFactory | None = None) -> Engine:
        """Load `path` with `options`; `drafter` (given the main context) builds the speculative drafter."""
        global _ECHO_LOG
        _ECHO_LOG = options.verbose
        if options.verbose:
            _echo_fd()  # duplicate stderr now, before llama-cpp-python redirects it
        # Importing llama_cpp prints nothing, but loading does: capture before the first call.
        import llama_cpp

        _install_log_capture()
        started = cpu_sample()  # how busy the machine was while it loaded: where adaptive threads start
        threads = options.n_threads or default_threads()
        _LOG.clear()
        overrides = _override_array(options.tensor_overrides)
        devices = rpc.model_devices(options.rpc_devices)  # registers the workers (None: no worker in this process)
        workers = tuple(dict.fromkeys(ep for ep, _ in options.rpc_devices))
        try:
            with _model_params(overrides, load_mtp=options.load_mtp, devices=devices), rpc.guarding(workers), \
                    _context_params(options.n_seq_max, drafter.n_max if drafter is not None else 0):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=options.n_ctx,
                    n_threads=threads,
                    n_threads_batch=options.n_threads_batch or threads,
                    n_gpu_layers=options.n_gpu_layers,
                    n_batch=options.n_batch,
                    n_ubatch=options.n_ubatch,
                    use_mmap=options.use_mmap,
                    use_mlock=options.use_mlock,
                    flash_attn=options.flash_attn,
                    op_offload=options.op_offload,
                    tensor_split=list(options.tensor_split) or None,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            reason = _last_error_line() or str(exc)
            raise EngineError(
                f"llama.cpp could not load {path.name}: {reason}. "
                "Upgrade localseek if the architecture is new, or re-convert the model."
            ) from exc
        return cls(path, options, llm, keepalive=(overrides, devices), drafter=drafter, load_started=started)

    def overridden_tensors(self) -> list[tuple[str, str]]:
        """(tensor, buffer type) for every tensor llama.cpp placed by an override, read from its own load log."""
        return overridden_tensors(captured_log())

    # -- model facts --------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    @property
    def n_ctx(self) -> int:
        return int(self.llm.n_ctx())

    @property
    def n_threads(self) -> int:
        import llama_cpp

        return int(llama_cpp.llama_n_threads(self.llm._ctx.ctx))

    def token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace")

    @property
    def bos_text(self) -> str:
        bos = self.llm.token_bos()
        return self.token_text(bos) if bos >= 0 else ""

    @property
    def eos_text(self) -> str:
        eos = self.llm.token_eos()
        return self.token_text(eos) if eos >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        """Tokenize a rendered prompt: special tokens are parsed; BOS added only if the model wants it
        and the template did not already write it."""
        llm = self.llm
        add_bos = llm.metadata.get(Keys.Tokenizer.ADD_BOS, "true") == "true"
        bos = self.bos_text
        if bos and text.startswith(bos):
            add_bos = False
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def set_threads(self, n: int, n_batch: int | None = None) -> None:
        """Fix the threads for generation (and prompt processing), on the main context and the drafter's: no
        adapting from now on."""
        self.threads = self.decoder.pacer = None
        self._apply_threads(n, n_batch or n)

    def adapt_threads(self, n_max: int | None = None, *, since: CpuSample | None = None) -> ThreadPolicy:
        """Choose the thread counts as it runs, from how fast each count decodes, up to `n_max` (default: the count
        it was loaded with), starting from the CPUs no other program used now (and, with `since`, on average since
        then); from a fresh start each call. The drafter's context follows the main one's best counts."""
        n_max = n_max or self.options.n_threads or default_threads()
        policy = ThreadPolicy(n_max, self._apply_main, start=spare_cpus(n_max, since),
                              sync=self.options.n_gpu_layers != 0, follow=self._apply_drafter)
        self.threads = self.decoder.pacer = policy
        return policy

    def _apply_threads(self, n: int, n_batch: int) -> None:
        self._apply_main(n, n_batch)
        self._apply_drafter(n, n_batch)

    def _apply_main(self, n: int, n_batch: int) -> None:
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, n, n_batch)

    def _apply_drafter(self, n: int, n_batch: int) -> None:
        if self.drafter is not None:
            self.drafter.set_threads(n, n_batch)

    # -- generation ---------------------------------------------------------------------------
    def inject(self, text: str) -> None:
        """Force `text` into the generation that is running now, as if the model had written it.

        Call it from the loop that consumes `stream` (between two pieces). The text is tokenized
        (special tokens parsed) and, after the token just yielded, fed to the model instead of
        sampling; its pieces are yielded like generated ones and count as generated tokens; then
        sampling resumes after it. This is how a reasoning budget closes `</think>` (as llama.cpp's
        server does with --reasoning-budget). If the token just yielded ends inside a UTF-8
        character, the injection waits for the character to complete.
        """
        self._pending = list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate_tokens(self, prompt_tokens: list[int], sampling: Sampling, *, speculate: bool = True,
                        spec_stats: SpecStats | None = None) -> Generator[int, None, None]:
        """Token ids after the prompt, reusing the cached prefix; speculative when the engine has a drafter (and
        `speculate`), counting into `spec_stats`. Unbounded: the caller stops it (end of generation, length); it
        ends when the context is full."""
        dc = self.decoder
        sampler = self.sampler(sampling)
        try:
            if self.drafter is None:
                yield from plain_tokens(dc, sampler, prompt_tokens)
            elif not speculate or sampling.grammar is not None:  # a grammar's state cannot follow rejected drafts
                with self.drafter.suspended(dc):
                    yield from plain_tokens(dc, sampler, prompt_tokens)
            else:
                yield from speculative_tokens(dc, sampler, self.drafter, prompt_tokens, spec_stats or SpecStats())
        finally:
            sampler.close()

    def sampler(self, sampling: Sampling) -> Sampler:
        """A sampler chain for `sampling` on this model (with its grammar, if any, gated by the think tags)."""
        return Sampler(sampling, self.n_vocab, vocab=self.llm._model.vocab, think=self.think_tokens)

    @property
    def n_vocab(self) -> int:
        return int(self.llm.n_vocab())

    @property
    def think_tokens(self) -> tuple[int, int] | None:
        """The ids of `<think>` and `</think>` when each is one token of this vocabulary."""
        if not hasattr(self, "_think_tokens"):
            ids = [self.llm.tokenize(tag.encode(), add_bos=False, special=True) for tag in ("<think>", "</think>")]
            self._think_tokens = (ids[0][0], ids[1][0]) if all(len(i) == 1 for i in ids) else None
        return self._think_tokens

    def stream(self, prompt_tokens: list[int], sampling: Sampling, stats: Stats | None = None) -> Iterator[str]:
        """Yield decoded text pieces; `stats` (the caller's) is filled in as it goes, and final when it ends.

        Stops at end-of-generation, at max_tokens, or when the context is full. KeyboardInterrupt
        propagates to the caller with stats marked "interrupted". Text queued with `inject` while
        streaming is fed to the model at the next step.
        """
        llm = self.llm
        n_ctx = self.n_ctx
        if len(prompt_tokens) >= n_ctx:
            raise EngineError(
                f"The prompt is {len(prompt_tokens)} tokens but the context holds {n_ctx}; "
                "shorten it or raise --ctx."
            )
        stats = stats if stats is not None else Stats()
        stats.prompt_tokens, stats.n_ctx = len(prompt_tokens), n_ctx
        stats.spec = SpecStats() if self.drafter is not None else None
        self._pending = []
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)
        limit = n_ctx - len(prompt_tokens)
        if sampling.max_tokens is not None:
            limit = min(limit, sampling.max_tokens)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        start = time.perf_counter()
        first_at = 0.0
        stats.stop_reason = "context"
        context = list(prompt_tokens)  # everything the model has seen or will see, for restarts

        def at_limit() -> bool:
            if stats.generated_tokens < limit:
                return False
            stats.stop_reason = "length" if sampling.max_tokens is not None and \
                stats.generated_tokens >= sampling.max_tokens else "context"
            return True

        def tokens() -> Generator[int, None, None]:
            return self.generate_tokens(context, sampling, spec_stats=stats.spec)

        try:
            if limit <= 0:
                stats.stop_reason = "length"
                return
            source: Generator[int, None, None] | None = tokens()
            while source is not None:
                current, source = source, None
                for token in current:
                    now = time.perf_counter()
                    if not first_at:
                        first_at = now
                        stats.time_to_first_token = stats.prompt_seconds = now - start
                    if self.is_eog(token):
                        stats.stop_reason = "eos"
                        break
                    stats.generated_tokens += 1
                    stats.generation_seconds = now - first_at
                    context.append(token)
                    piece = decoder.decode(llm.detokenize([token]))
                    if piece:
                        yield piece
                    if at_limit():
                        break
                    if self._pending and not decoder.getstate()[0]:
                        forced, self._pending = self._pending, []
                        if len(context) + len(forced) >= n_ctx:
                            break  # no room left to close the block: stop as "context"
                        for forced_token in forced:
                            stats.generated_tokens += 1
                            context.append(forced_token)
                            piece = decoder.decode(llm.detokenize([forced_token]))
                            if piece:
                                yield piece
                        if at_limit():
                            break
                        # Restart the token loop on the context with the forced tokens: it reuses the cached
                        # prefix, so only the last sampled token and the forced ones are decoded.
                        current.close()
                        source = tokens()
                        break
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except KeyboardInterrupt:
            stats.stop_reason = "interrupted"
            raise
        finally:
            if first_at:
                stats.generation_seconds = time.perf_counter() - first_at

    def close(self) -> None:
        if self.drafter is not None:
            self.drafter.close()
            self.drafter = None
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()
            self.decoder = None  # type: ignore[assignment]
        close = getattr(self.llm, "close", None)
        if close:
            close()


class _BuftOverride(ctypes.Structure):
    """`struct llama_model_tensor_buft_override` (declared in llama.h; llama-cpp-python does not define it)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


_OVERRIDE_LINE = re.compile(r"tensor (\S+) \(\d+ MiB \S+\) buffer type overridden to (\S+)")


def overridden_tensors(log: str) -> list[tuple[str, str]]:
    return _OVERRIDE_LINE.findall(log)


def _override_array(pairs: tuple[tuple[str, str], ...]) -> tuple[ctypes.Array, list[bytes]] | None:
    """A NULL-terminated `llama_model_tensor_buft_override[]` for llama_model_params (kept alive by the caller)."""
    if not pairs:
        return None
    import llama_cpp

    if len(pairs) >= llama_cpp.llama_max_tensor_buft_overrides():
        raise EngineError(f"{len(pairs)} tensor overrides is more than llama.cpp accepts; use fewer, broader patterns.")
    names = {"CPU": backends.cpu_buffer_type}
    arr = (_BuftOverride * (len(pairs) + 1))()
    patterns = []
    for i, (pattern, target) in enumerate(pairs):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise EngineError(f"Tensor override {pattern!r} is not a valid regex: {exc}.") from exc
        if target not in names:
            raise EngineError(f"Unknown buffer type {target!r} for tensor overrides; use CPU.")
        patterns.append(pattern.encode())
        arr[i].pattern = patterns[-1]
        arr[i].buft = names[target]()
    arr[len(pairs)].pattern = None  # sentinel
    arr[len(pairs)].buft = None
    return arr, patterns


@contextmanager
def _constructor_hook(name: str, set_params: Callable[[Any], None]) -> Iterator[None]:
    """For one load, `llama_cpp._internals.<name>` (LlamaModel, LlamaContext) sets fields of the C params struct that
    llama-cpp-python's `Llama` builds itself and does not expose, just before the C call."""
    import llama_cpp._internals as internals

    original = getattr(internals, name)

    class _WithParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            set_params(kwargs["params"])
            super().__init__(**kwargs)

    setattr(internals, name, _WithParams)
    try:
        yield
    finally:
        setattr(internals, name, original)


@contextmanager
def _model_params(overrides: tuple[ctypes.Array, list[bytes]] | None, *, load_mtp: bool,
                  devices: ctypes.Array | None = None) -> Iterator[None]:
    """`llama_model_params` fields `Llama` does not expose: `tensor_buft_overrides`, `load_mtp`, `devices`."""
    if overrides is None and not load_mtp and devices is None:
        yield
        return

    def set_params(params: Any) -> None:
        if overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(overrides[0], ctypes.c_void_p)
        if load_mtp:
            params.load_mtp = True
        if devices is not None:
            params.devices = ctypes.cast(devices, ctypes.c_void_p)

    with _constructor_hook("LlamaModel", set_params):
        yield


@contextmanager
def _context_params(n_seq_max: int, n_rollback: int = 0) -> Iterator[None]:
    """`llama_context_params.n_seq_max`, with a unified KV cache so that every sequence may use the whole context;
    `n_rs_seq`: how many positions a speculating context must be able to take back after a rejected draft. Caches
    with compressed or recurrent state (DeepSeek-V4's, for one) keep that many snapshots; llama.cpp ignores it for
    plain KV caches, which can drop any tail."""
    if n_seq_max <= 1 and n_rollback <= 0:
        yield
        return
    import llama_cpp

    if n_seq_max > llama_cpp.llama_max_parallel_sequences():
        raise EngineError(f"llama.cpp serves at most {llama_cpp.llama_max_parallel_sequences()} sequences at once.")

    def set_params(params: Any) -> None:
        if n_seq_max > 1:
            params.n_seq_max = n_seq_max
            params.kv_unified = True
        if n_rollback > 0:
            params.n_rs_seq = n_rollback

    with _constructor_hook("LlamaContext", set_params):
        yield


def _last_error_line() -> str:
    for line in reversed(_LOG):
        text = line.strip()
        if text and ("error" in text.lower() or "failed" in text.lower()):
            return text.split(": ", 1)[-1][:300]
    return ""
