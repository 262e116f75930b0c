"""The one adapter that owns llama-cpp-python: load a GGUF, stream tokens, report stats.

llama.cpp's C log is captured (kept for `--verbose` and for error messages) instead of being
printed over the user's terminal.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import sys
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
            sys.stderr.write(line)

    llama_cpp.llama_log_set(_capture, ctypes.c_void_p(0))
    _install_log_capture.callback = _capture  # type: ignore[attr-defined]  # keep alive for C


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
    # Speculative decoding (localseek/speculative.py): a drafter, and its counters for the last generation.
    drafter: object = field(default=None, repr=False)
    spec_stats: object = field(default=None, repr=False)
    _decoder: object = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> Engine:
        global _ECHO_LOG
        _ECHO_LOG = options.verbose
        # Importing llama_cpp prints nothing, but loading does: capture before the first call.
        import llama_cpp

        _install_log_capture()
        threads = options.n_threads or _default_threads()
        _LOG.clear()
        try:
            with _model_params(load_mtp=options.load_mtp):
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
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            reason = _last_error_line() or str(exc)
            raise EngineError(
                f"llama.cpp could not load {path.name}: {reason}. "
                "Upgrade localseek if the architecture is new, or re-convert the model."
            ) from exc
        return cls(path=path, options=options, llm=llm)

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
    def stream(self, prompt_tokens: list[int], sampling: Sampling) -> Iterator[str]:
        """Yield decoded text pieces; `last_stats` is filled in as it goes (and final when it ends).

        Stops at end-of-generation, at max_tokens, or when the context is full. KeyboardInterrupt
        propagates to the caller with stats marked "interrupted".
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
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)  # type: ignore[attr-defined]
        limit = n_ctx - len(prompt_tokens)
        if sampling.max_tokens is not None:
            limit = min(limit, sampling.max_tokens)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        start = time.perf_counter()
        first_at = 0.0
        stats.stop_reason = "context"
        try:
            if limit <= 0:
                stats.stop_reason = "length"
                return
            for token in self.generate_tokens(prompt_tokens, sampling):
                now = time.perf_counter()
                if not first_at:
                    first_at = now
                    stats.time_to_first_token = stats.prompt_seconds = now - start
                if self.is_eog(token):
                    stats.stop_reason = "eos"
                    break
                stats.generated_tokens += 1
                stats.generation_seconds = now - first_at
                piece = decoder.decode(llm.detokenize([token]))  # type: ignore[attr-defined]
                if piece:
                    yield piece
                if stats.generated_tokens >= limit:
                    stats.stop_reason = "length" if sampling.max_tokens is not None and \
                        stats.generated_tokens >= sampling.max_tokens else "context"
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
        from localseek.decode import Sampler, SamplerSettings, plain_tokens

        dc = self.decoder
        settings = SamplerSettings(
            temperature=max(0.0, sampling.temperature), top_k=sampling.top_k, top_p=sampling.top_p,
            min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty, seed=sampling.seed,
        )
        sampler = Sampler(settings, dc.n_vocab)
        try:
            if self.drafter is None:
                yield from plain_tokens(dc, sampler, prompt_tokens)
            else:
                from localseek.speculative import SpecStats, speculative_tokens

                self.spec_stats = SpecStats()
                yield from speculative_tokens(dc, sampler, self.drafter, prompt_tokens, self.spec_stats)
        finally:
            sampler.close()

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
