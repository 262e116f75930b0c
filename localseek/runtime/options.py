"""The values every layer passes: how to load a model, how to sample, what a generation measured.

A leaf module: it imports nothing of localseek's, so the planner can build `LoadOptions`, the engine can fill
`Stats`, and the chat layer can carry them in its events, without any of them importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    # Workers (--rpc): the (HOST:PORT, device index) pairs that take layers, in llama.cpp's device order, and the
    # layer slots per device (llama_model_params.tensor_split: these devices, then this machine's GPUs).
    rpc_devices: tuple[tuple[str, int], ...] = ()
    tensor_split: tuple[float, ...] = ()
    # Sequences the context serves at once (runtime/parallel.py). Above 1 the KV cache is unified: every sequence
    # draws on the same n_ctx cells, so memory is what the plan counted for n_ctx, whatever the number.
    n_seq_max: int = 1
    adapt_threads: bool = False  # choose thread counts as it runs, up to n_threads (runtime/threads.py); else fixed


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar the reply must follow (llama.cpp's grammar sampler). The reasoning stays free: the grammar
    applies from the first token after `</think>`, or from the start when the model does not open a think block."""

    gbnf: str
    root: str = "root"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0  # OpenAI's: minus this × how often a token occurred (last 64 tokens), 0 = off
    presence_penalty: float = 0.0  # minus this once a token occurred at all, 0 = off
    max_tokens: int | None = None
    seed: int | None = None
    grammar: Grammar | None = None


@dataclass
class SpecStats:
    """Speculative decoding counters of one generation."""

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


@dataclass
class Stats:
    """What one generation measured; filled in by the engine as it streams."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    time_to_first_token: float = 0.0
    stop_reason: str = ""  # "eos", "length", "context", "interrupted"
    n_ctx: int = 0
    spec: SpecStats | None = None  # speculative decoding: drafts proposed and kept (None: no drafter ran)

    @property
    def drafted(self) -> int:
        return self.spec.drafted if self.spec else 0

    @property
    def draft_accepted(self) -> int:
        return self.spec.accepted if self.spec else 0

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
