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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from localseek.errors import EngineError

_LOG: deque[str] = deque(maxlen=4000)
_ECHO_LOG = False


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
    _install_log_capture.callback = _capture  # type: ignore[attr-defined]  # keep alive for C


_ECHO_FD: list[int] = []


def _echo_fd() -> int:
    if not _ECHO_FD:
        _ECHO_FD.append(os.dup(2))
    return _ECHO_FD[0]


def captured_log() -> str:
    return "".join(_LOG)


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 4096
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    n_batch: int = 512
    n_ubatch: int = 512
    use_mmap: bool = True
    use_mlock: bool = False
    flash_attn: bool = False
    verbose: bool = False
    # (regex, buffer type) pairs: tensors whose names match go to that buffer ("CPU" keeps MoE experts in RAM).
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    op_offload: bool | None = None  # None: llama.cpp's default (GPU runs big-batch ops on RAM-resident weights)
    load_mtp: bool = False  # also load a deepseek2 GGUF's MTP block (blk.<n_layer>.nextn.*) for speculative drafting


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None


@dataclass
class Stats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    time_to_first_token: float = 0.0
    stop_reason: str = ""  # "eos", "length", "context", "interrupted"
    n_ctx: int = 0
    drafted: int = 0  # speculative decoding: tokens proposed by the drafter (MTP or draft model) …
    draft_accepted: int = 0  # … and how many of them the model kept

    @property
    def tokens_per_second(self) -> float:
        gen = self.generated_tokens - 1
        return gen / self.generation_seconds if gen > 0 and self.generation_seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "time_to_first_token_s": round(self.time_to_first_token, 4),
            "prompt_tokens_per_s": round(self.prompt_tokens_per_second, 2),
            "tokens_per_s": round(self.tokens_per_second, 2),
            "stop_reason": self.stop_reason,
            "n_ctx": self.n_ctx,
            **({"drafted": self.drafted, "draft_accepted": self.draft_accepted} if self.drafted else {}),
        }


@dataclass
class Engine:
    """A loaded model with one context. Not thread-safe; one generation at a time."""

    path: Path
    options: LoadOptions
    llm: object = field(repr=False)
    last_stats: Stats = field(default_factory=Stats)
    plan: object = field(default=None, repr=False)  # the localseek.plan.Plan this engine was loaded with, if any
    _keepalive: object = field(default=None, repr=False)  # C arrays llama.cpp keeps pointers into
    _pending: list[int] = field(default_factory=list, repr=False)  # tokens queued by `inject`
    # Speculative decoding (localseek/speculative.py): a drafter, and its counters for the last generation.
    drafter: object = field(default=None, repr=False)
    spec_stats: object = field(default=None, repr=False)
    _decoder: object = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> Engine:
        global _ECHO_LOG
        _ECHO_LOG = options.verbose
        if options.verbose:
            _echo_fd()  # duplicate stderr now, before llama-cpp-python redirects it
        # Importing llama_cpp prints nothing, but loading does: capture before the first call.
        import llama_cpp

        _install_log_capture()
        threads = options.n_threads or _default_threads()
        _LOG.clear()
        overrides = _override_array(options.tensor_overrides)
        try:
            with _tensor_overrides(overrides), _model_params(load_mtp=options.load_mtp):
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
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            reason = _last_error_line() or str(exc)
            raise EngineError(
                f"llama.cpp could not load {path.name}: {reason}. "
                "Upgrade localseek if the architecture is new, or re-convert the model."
            ) from exc
        return cls(path=path, options=options, llm=llm, _keepalive=overrides)

    def overridden_tensors(self) -> list[tuple[str, str]]:
        """(tensor, buffer type) for every tensor llama.cpp placed by an override, read from its own load log."""
        return overridden_tensors(captured_log())

    # -- model facts --------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)  # type: ignore[attr-defined]

    @property
    def n_ctx(self) -> int:
        return int(self.llm.n_ctx())  # type: ignore[attr-defined]

    def token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace")  # type: ignore[attr-defined]

    @property
    def bos_text(self) -> str:
        bos = self.llm.token_bos()  # type: ignore[attr-defined]
        return self.token_text(bos) if bos >= 0 else ""

    @property
    def eos_text(self) -> str:
        eos = self.llm.token_eos()  # type: ignore[attr-defined]
        return self.token_text(eos) if eos >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        """Tokenize a rendered prompt: special tokens are parsed; BOS added only if the model wants it
        and the template did not already write it."""
        llm = self.llm
        add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true"  # type: ignore[attr-defined]
        bos = self.bos_text
        if bos and text.startswith(bos):
            add_bos = False
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))  # type: ignore[attr-defined]

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))  # type: ignore[attr-defined]

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
        self._pending = list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))  # type: ignore[attr-defined]

    def _generate(self, tokens: list[int], sampling: Sampling) -> Iterator[int]:
        return self.generate_tokens(tokens, sampling)

    # -- low-level token loop (localseek/decode.py) ----------------------------------------------
    @property
    def decoder(self):  # -> localseek.decode.DecodeContext
        """The main context's KV bookkeeping; created on first use. `Llama`'s own cache record is reset so that
        its high-level calls, if anyone makes them, never trust a cache this loop has changed."""
        if self._decoder is None:
            from localseek.decode import DecodeContext

            self._decoder = DecodeContext(self.llm._ctx.ctx, self.llm._model.model)  # type: ignore[attr-defined]
            self.llm.n_tokens = 0  # type: ignore[attr-defined]
        return self._decoder

    def generate_tokens(self, prompt_tokens: list[int], sampling: Sampling) -> Iterator[int]:
        """Token ids after the prompt, reusing the cached prefix; speculative when a drafter is attached.
        Unbounded: the caller stops it (end of generation, length); it ends when the context is full."""
        from localseek.decode import Sampler, plain_tokens

        dc = self.decoder
        sampler = Sampler(sampling, dc.n_vocab)
        try:
            if self.drafter is None:
                yield from plain_tokens(dc, sampler, prompt_tokens)
            else:
                from localseek.speculative import SpecStats, speculative_tokens

                self.spec_stats = SpecStats()
                yield from speculative_tokens(dc, sampler, self.drafter, prompt_tokens, self.spec_stats)
        finally:
            sampler.close()

    def stream(self, prompt_tokens: list[int], sampling: Sampling) -> Iterator[str]:
        """Yield decoded text pieces; `last_stats` is filled in as it goes (and final when it ends).

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
        stats = Stats(prompt_tokens=len(prompt_tokens), n_ctx=n_ctx)
        self.last_stats = stats
        self._pending = []
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)  # type: ignore[attr-defined]
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

        try:
            if limit <= 0:
                stats.stop_reason = "length"
                return
            tokens = self._generate(context, sampling)
            while tokens is not None:
                source, tokens = tokens, None
                for token in source:
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
                    piece = decoder.decode(llm.detokenize([token]))  # type: ignore[attr-defined]
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
                            piece = decoder.decode(llm.detokenize([forced_token]))  # type: ignore[attr-defined]
                            if piece:
                                yield piece
                        if at_limit():
                            break
                        # llama-cpp-python's generator treats tokens sent into it as draft tokens to
                        # verify, not as forced ones: restart it instead. Its prefix matching keeps the
                        # KV cache, so only the last sampled token and the forced ones are evaluated.
                        source.close()  # type: ignore[attr-defined]
                        tokens = self._generate(context, sampling)
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
            if self.drafter is not None and self.spec_stats is not None:
                stats.drafted = self.spec_stats.drafted  # type: ignore[attr-defined]
                stats.draft_accepted = self.spec_stats.accepted  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.drafter is not None:
            self.drafter.close()  # type: ignore[attr-defined]
            self.drafter = None
        if self._decoder is not None:
            self._decoder.close()  # type: ignore[attr-defined]
            self._decoder = None
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

    from localseek import backends

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
def _tensor_overrides(overrides: tuple[ctypes.Array, list[bytes]] | None) -> Iterator[None]:
    """Pass `tensor_buft_overrides` to llama.cpp. llama-cpp-python's `Llama` builds `llama_model_params` itself and
    leaves this field NULL, so the model constructor it calls is wrapped for the duration of one load."""
    if overrides is None:
        yield
        return
    import llama_cpp._internals as internals

    original = internals.LlamaModel
    array = overrides[0]

    class _WithOverrides(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, path_model: str, params, verbose: bool = True) -> None:
            params.tensor_buft_overrides = ctypes.cast(array, ctypes.c_void_p)
            super().__init__(path_model=path_model, params=params, verbose=verbose)

    internals.LlamaModel = _WithOverrides
    try:
        yield
    finally:
        internals.LlamaModel = original


@contextmanager
def _model_params(*, load_mtp: bool) -> Iterator[None]:
    """Set `llama_model_params` fields that llama-cpp-python's `Llama` does not expose, for one load."""
    if not load_mtp:
        yield
        return
    import llama_cpp._internals as internals

    original = internals.LlamaModel

    class _WithParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, path_model: str, params, verbose: bool = True) -> None:
            params.load_mtp = True
            super().__init__(path_model=path_model, params=params, verbose=verbose)

    internals.LlamaModel = _WithParams
    try:
        yield
    finally:
        internals.LlamaModel = original


def _default_threads() -> int:
    from localseek.hardware import physical_cores

    env = os.environ.get("LOCALSEEK_THREADS")
    return int(env) if env else physical_cores()


def _last_error_line() -> str:
    for line in reversed(_LOG):
        text = line.strip()
        if text and ("error" in text.lower() or "failed" in text.lower()):
            return text.split(": ", 1)[-1][:300]
    return ""
