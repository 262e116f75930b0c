"""Speculative decoding (MTP self-drafting and draft models): output identical to plain decoding, and drafts accepted
when the drafter is right. Real llama.cpp on tiny GGUFs written by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf
from factory import SCRIPT_ANSWER, TinyConfig, write_qwen2_gguf

from localseek.errors import UsageError
from localseek.models.gguf_info import read_gguf
from localseek.runtime import speculative
from localseek.runtime.engine import Engine
from localseek.runtime.options import LoadOptions, Sampling, SpecStats

PROMPT = "<｜User｜>hello<｜Assistant｜>"
FOLLOW_UP = "<｜User｜>and again<｜Assistant｜>"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("spec-models")
    ds = lambda name, **kw: write_deepseek2_gguf(d / f"{name}.gguf", TinyDeepseekConfig(**kw))
    qw = lambda name, **kw: write_qwen2_gguf(d / f"{name}.gguf", TinyConfig(**kw))
    return {
        "ds-scripted": ds("ds-scripted"),
        "ds-partial": ds("ds-partial", mtp_wrong_every=3),
        "ds-random": ds("ds-random", weights="random", seed=3),
        "ds-no-mtp": ds("ds-no-mtp", mtp=False),
        "qw-scripted": qw("qw-scripted"),
        "qw-scripted-draft": qw("qw-scripted-draft", seed=5),
        "qw-random": qw("qw-random", weights="random", seed=7),
        "qw-random-draft": qw("qw-random-draft", weights="random", seed=9),
        "qw-other-vocab": qw("qw-other-vocab", vocab_merges=120),
    }


def _load(path: Path, *, mtp: bool = False, draft: Path | None = None, n_draft: int | None = None,
          n_batch: int = 512) -> Engine:
    options = LoadOptions(n_ctx=512, n_threads=1, load_mtp=mtp, n_batch=n_batch, n_ubatch=n_batch)
    # A fixed draft length keeps acceptance counts deterministic (the tuner's choices depend on timings).
    drafter = None
    if mtp:
        drafter = speculative.mtp_drafter(n_draft, fixed=True)
    elif draft:
        drafter = speculative.model_drafter(Engine.load(draft, options), n_draft, fixed=True)
    return Engine.load(path, options, drafter=drafter)


def _two_turns(engine: Engine, sampling: Sampling, n: int = 48) -> tuple[list[int], list[int], list[int]]:
    """Greedy reply, then a follow-up turn that reuses the cached prefix. Returns both replies and drafts kept/made."""
    replies, drafts = [], [0, 0]
    prompt = engine.tokenize(PROMPT)
    for turn in range(2):
        out: list[int] = []
        counted = SpecStats()
        for token in engine.generate_tokens(prompt, sampling, spec_stats=counted):
            out.append(token)
            if len(out) >= n or engine.is_eog(token):
                break
        replies.append(out)
        drafts[0] += counted.accepted
        drafts[1] += counted.drafted
        prompt = prompt + out + engine.tokenize(FOLLOW_UP)[1:]  # [1:]: no second BOS
    return replies[0], replies[1], drafts


GREEDY = Sampling(temperature=0.0)


def test_mtp_detection(models: dict[str, Path]) -> None:
    assert speculative.mtp_layers(read_gguf(models["ds-scripted"])) == 1
    assert speculative.mtp_layers(read_gguf(models["ds-no-mtp"])) == 0
    assert speculative.mtp_layers(read_gguf(models["qw-scripted"])) == 0
    assert speculative.want_mtp(read_gguf(models["ds-scripted"]), None) is True
    assert speculative.want_mtp(read_gguf(models["ds-scripted"]), False) is False
    assert speculative.want_mtp(read_gguf(models["ds-no-mtp"]), None) is False
    with pytest.raises(UsageError, match="no MTP module"):
        speculative.want_mtp(read_gguf(models["ds-no-mtp"]), True)
    with pytest.raises(UsageError, match="either --mtp or --draft"):
        speculative.resolve(read_gguf(models["ds-scripted"]), mtp=True, draft="x.gguf")


@pytest.mark.parametrize("name,n_batch", [("ds-scripted", 512), ("ds-partial", 512), ("ds-random", 512),
                                          ("ds-partial", 8)])  # 8: prompts decoded in several chunks
def test_mtp_greedy_output_identical(models: dict[str, Path], name: str, n_batch: int) -> None:
    plain = _load(models[name], n_batch=n_batch)
    try:
        want = _two_turns(plain, GREEDY)
    finally:
        plain.close()
    spec = _load(models[name], mtp=True, n_draft=3, n_batch=n_batch)
    try:
        got = _two_turns(spec, GREEDY)
    finally:
        spec.close()
    assert got[:2] == want[:2]
    accepted, drafted = got[2]
    assert drafted > 0
    if name == "ds-scripted":  # the MTP head predicts the script one step ahead: nearly every draft is kept
        assert accepted / drafted >= 0.9, got[2]
    elif name == "ds-partial":  # one chain link in three is wrong: some rounds keep part of their drafts
        assert 0.2 < accepted / drafted < 0.95, got[2]


class _ShadowCache:
    """What an MTP context's KV cache holds, position by position, as (token, hidden state) — recorded from the
    batches the drafter decodes and the removals it asks llama.cpp for."""

    def __init__(self, drafter: speculative.MTPDrafter) -> None:
        self.entries: dict[int, tuple[int, np.ndarray]] = {}
        mem, real = drafter.dc.mem, drafter._lib
        shadow = self

        class Lib:
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def llama_decode(self, ctx: object, raw: object) -> int:
                for i in range(raw.n_tokens):
                    pos = raw.pos[i]
                    assert pos == len(shadow.entries), "MTP entries must be added in order, without gaps"
                    shadow.entries[pos] = (raw.token[i], np.array(raw.embd[i * drafter.n_embd:(i + 1) * drafter.n_embd]))
                return real.llama_decode(ctx, raw)

            def llama_memory_seq_rm(self, m: object, seq: int, p0: int, p1: int) -> bool:
                if m == mem:
                    assert p1 == -1
                    shadow.entries = {p: e for p, e in shadow.entries.items() if p < p0}
                return real.llama_memory_seq_rm(m, seq, p0, p1)

            def llama_memory_clear(self, m: object, data: bool) -> None:
                if m == mem:
                    shadow.entries.clear()
                real.llama_memory_clear(m, data)

        drafter._lib = drafter.dc._lib = Lib()


class _CyclingTuner(speculative.DraftTuner):
    PATTERN = (1, 0, 0, 3, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2)

    def pick(self) -> int:
        self.rounds += 1
        return self.PATTERN[self.rounds % len(self.PATTERN)]


@pytest.mark.parametrize("n_batch", [512, 8])
def test_mtp_cache_pairs_each_token_with_the_previous_hidden_state(
        models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, n_batch: int) -> None:
    """The MTP cache is filled lazily, rolled back after rejected drafts and reused across turns: at every draft
    query it must hold, for each position p, the token at p and the main model's hidden state at p-1 (zeros at 0)."""
    queries: list[tuple[int, dict[int, tuple[int, np.ndarray]]]] = []
    add_entries = speculative.MTPDrafter._add_entries

    def spy(self: speculative.MTPDrafter, upto: int, query: int | None = None) -> None:
        add_entries(self, upto, query)
        if query is not None:
            queries.append((upto, dict(shadow.entries)))

    monkeypatch.setattr(speculative.MTPDrafter, "_add_entries", spy)
    live = _load(models["ds-random"], mtp=True, n_batch=n_batch)
    live.drafter.tuner = _CyclingTuner(3)  # rounds of 0 to 3 drafts: entries wait, pile up, get dropped
    live.drafter.FLUSH = 5
    shadow = _ShadowCache(live.drafter)
    try:
        _two_turns(live, GREEDY, n=40)
        history = list(live.decoder.tokens)
    finally:
        live.close()
    assert len(queries) > 10 and max(len(e) for _, e in queries) > 60

    from llama_cpp import llama_cpp_ext

    ref = _load(models["ds-random"], mtp=True)  # the main model's hidden states for the whole history, in one batch
    try:
        ref.decoder.decode(history)
        n_embd = ref.drafter.n_embd
        ptr = llama_cpp_ext.llama_get_embeddings_nextn(ref.decoder.ctx)
        hidden = np.ctypeslib.as_array(ptr, shape=(len(history), n_embd)).copy()
    finally:
        ref.close()
    for pos, entries in queries:
        assert sorted(entries) == list(range(pos + 1))  # entries 0 … pos: the cache and the query, nothing after
        for p, (token, h) in entries.items():
            assert token == history[p]
            want = hidden[p - 1] if p else np.zeros(n_embd, dtype=np.float32)
            np.testing.assert_allclose(h, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max() + 1e-6))


def test_mtp_sampled_output_identical_for_a_seed(models: dict[str, Path]) -> None:
    """Verification samples the main model at each position with the same sampler: same seed, same tokens."""
    sampling = Sampling(temperature=0.9, top_k=40, top_p=0.95, min_p=0.0, seed=1234)
    outs = []
    for mtp in (False, True):
        engine = _load(models["ds-random"], mtp=mtp)
        try:
            outs.append(_two_turns(engine, sampling, n=32)[:2])
        finally:
            engine.close()
    assert outs[0] == outs[1]


@pytest.mark.parametrize("target,draft,good", [
    ("qw-scripted", "qw-scripted-draft", True),
    ("qw-random", "qw-random-draft", False),
])
def test_draft_model_greedy_output_identical(models: dict[str, Path], target: str, draft: str, good: bool) -> None:
    plain = _load(models[target])
    try:
        want = _two_turns(plain, GREEDY)
    finally:
        plain.close()
    spec = _load(models[target], draft=models[draft])
    try:
        got = _two_turns(spec, GREEDY)
    finally:
        spec.close()
    assert got[:2] == want[:2]
    accepted, drafted = got[2]
    assert drafted > 0
    if good:
        assert accepted / drafted >= 0.9, got[2]


def test_draft_model_must_share_the_tokenizer(models: dict[str, Path]) -> None:
    options = LoadOptions(n_ctx=256, n_threads=1)
    draft = Engine.load(models["qw-other-vocab"], options)
    with pytest.raises(UsageError, match="does not share the main model's tokenizer"):
        Engine.load(models["qw-scripted"], options, drafter=speculative.model_drafter(draft))
    assert draft.decoder is None  # the refused draft model was closed, not leaked


def test_plain_generation_on_a_speculating_engine(models: dict[str, Path]) -> None:
    """`speculate=False` (what `bench` times as plain decoding) drafts nothing and leaves the MTP cache consistent:
    speculating afterwards still gives the plain output."""
    plain = _load(models["ds-partial"])
    try:
        want = _two_turns(plain, GREEDY)
    finally:
        plain.close()
    engine = _load(models["ds-partial"], mtp=True, n_draft=3)
    try:
        prompt = engine.tokenize(PROMPT)
        counted = SpecStats()
        out = []
        for token in engine.generate_tokens(prompt, GREEDY, speculate=False, spec_stats=counted):
            out.append(token)
            if len(out) >= 48 or engine.is_eog(token):
                break
        assert out == want[0] and counted.drafted == 0
        got = _two_turns(engine, GREEDY)
        assert got[:2] == want[:2] and got[2][1] > 0
    finally:
        engine.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localseek", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ), check=False)


def test_run_uses_mtp_by_default_and_prints_the_same(models: dict[str, Path]) -> None:
    default = _cli("run", str(models["ds-scripted"]), "hello", "--temperature", "0", "--verbose")
    off = _cli("run", str(models["ds-scripted"]), "hello", "--temperature", "0", "--no-mtp", "--verbose")
    assert default.returncode == 0 and off.returncode == 0, default.stderr[-2000:] + off.stderr[-2000:]
    assert default.stdout == off.stdout == SCRIPT_ANSWER + "\n"
    assert "set_embeddings_nextn: value = 1" in default.stderr  # llama.cpp log: the MTP hidden-state feed is on
    assert "set_embeddings_nextn: value = 1" not in off.stderr


def test_run_cli_errors(models: dict[str, Path]) -> None:
    r = _cli("run", str(models["ds-no-mtp"]), "hello", "--mtp")
    assert r.returncode == 2 and "no MTP module" in r.stderr and "Traceback" not in r.stderr
    r = _cli("run", str(models["qw-scripted"]), "hello", "--draft", str(models["qw-other-vocab"]))
    assert r.returncode == 2 and "tokenizer" in r.stderr
    r = _cli("run", str(models["qw-scripted"]), "hello", "--temperature", "0", "--draft",
             str(models["qw-scripted-draft"]))
    assert r.returncode == 0 and r.stdout == SCRIPT_ANSWER + "\n"


def test_draft_takes_an_installed_model_name(models: dict[str, Path]) -> None:
    """`--draft deepseek-r1:1.5b` finds the installed 1.5B distill like `run` finds models; not installed → how to."""
    import time

    from localseek.models import store

    r = _cli("run", str(models["qw-scripted"]), "hello", "--draft", "deepseek-r1:1.5b")
    assert r.returncode == 2 and "not installed" in r.stderr and "localseek pull deepseek-r1:1.5b" in r.stderr
    draft = models["qw-scripted-draft"]
    store.register(store.InstalledModel(
        name="r1-distill-qwen-1.5b:Q4_K_M", kind="gguf", source="converted", catalog_id="r1-distill-qwen-1.5b",
        quant="Q4_K_M", pulled_at=time.time(),
        files=(store.StoredFile(path=str(draft), blob=str(draft), size=draft.stat().st_size),)))
    r = _cli("run", str(models["qw-scripted"]), "hello", "--temperature", "0", "--draft", "deepseek-r1:1.5b",
             "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    reply = json.loads(r.stdout)
    assert reply["answer"] == SCRIPT_ANSWER
    assert reply["stats"]["drafted"] > 0 and reply["stats"]["draft_accepted"] > 0


def test_tuned_draft_length_keeps_output_identical(models: dict[str, Path]) -> None:
    plain = _load(models["ds-partial"])
    try:
        want = _two_turns(plain, GREEDY)
    finally:
        plain.close()
    engine = Engine.load(models["ds-partial"], LoadOptions(n_ctx=512, n_threads=1, load_mtp=True),
                         drafter=speculative.mtp_drafter(3))  # tuned, as `run` does
    try:
        assert _two_turns(engine, GREEDY)[:2] == want[:2]
        assert engine.drafter.tuner.rounds > 4 and set(engine.drafter.tuner.rate) == {0, 1, 2, 3}
    finally:
        engine.close()


def test_draft_tuner_picks_what_delivers() -> None:
    tuner = speculative.DraftTuner(3, explore=4)
    rates = {3: 90, 2: 120, 1: 100, 0: 60}
    order = []
    for _ in range(8):
        order.append(tuner.pick())
        tuner.update(order[-1], rates[order[-1]] / (10 if order[-1] not in order[:-1] else 1), 1.0)
    assert order == [3, 3, 2, 2, 1, 1, 0, 0]  # every length twice (the first, slow, round is not counted)
    assert tuner.rate == rates
    picks = [tuner.pick() for _ in range(8)]
    assert picks.count(2) >= 6 and set(picks) <= {1, 2, 3}  # exploits the best, now and then tries a neighbour
    for _ in range(20):
        tuner.update(2, 10, 1.0)  # length 2 stops paying …
    assert max(tuner.rate, key=tuner.rate.get) == 1  # … and the next best takes over
    assert speculative.DraftTuner(2, fixed=True).pick() == 2


def test_draft_tuner_recovers_from_an_unlucky_measurement() -> None:
    tuner = speculative.DraftTuner(1, explore=4)
    unlucky = {1: 20.0}  # length 1's first counted round was interrupted: it looks worse than plain decoding
    true = {1: 200.0, 0: 100.0}
    picks = []
    for _ in range(60):
        k = tuner.pick()
        picks.append(k)
        tuner.update(k, unlucky.pop(k, true[k]) if k in tuner._warm else 1, 1.0)
    assert picks[4] == 0  # it did fall for it …
    assert picks[-20:].count(1) >= 18, picks  # … and one deliberate retry was enough to win length 1 back


def test_draft_tuner_turns_drafting_off_when_extra_decodes_stall() -> None:
    """A busy machine: every llama_decode risks a 30 ms stall (a thread the OS paused). Drafting rounds decode
    more (the MTP query, the chained drafts), so at 60 % acceptance plain decoding delivers more on average — though
    a typical (median) drafting round is faster. The tuner goes by the average: it turns drafting off."""
    rng = np.random.default_rng(4)
    tuner = speculative.DraftTuner(3)
    picks = []
    for _ in range(3000):
        k = tuner.pick()
        picks.append(k)
        decodes = 1 + (k > 0) + max(0, k - 1)
        seconds = 200e-6 * (1 + 0.35 * k) + 100e-6 * (decodes - 1) + 0.03 * int((rng.random(decodes) < 0.1).sum())
        accepted = 0
        while accepted < k and rng.random() < 0.6:
            accepted += 1
        tuner.update(k, 1 + accepted, seconds)
    assert picks[-1000:].count(0) >= 900


def test_mtp_on_localseeks_own_conversion_of_a_v3_checkpoint(tmp_path: Path) -> None:
    """A DeepSeek-V3-layout FP8 checkpoint converted by `quantize` (MTP kept) drafts with its MTP block, and the
    greedy output is the same as without it."""
    import hf_factory

    from quantize import convert

    out = tmp_path / "v3-q8.gguf"
    convert(hf_factory.write_deepseek_v3(tmp_path / "v3"), out, qtype="Q8_0")
    info = read_gguf(out)
    assert speculative.mtp_layers(info) == 1 and speculative.want_mtp(info, None)
    replies = []
    for mtp in (False, True):
        engine = _load(out, mtp=mtp, n_draft=2)
        try:
            replies.append(_two_turns(engine, GREEDY, n=24))
        finally:
            engine.close()
    assert replies[1][:2] == replies[0][:2]
    assert replies[1][2][1] > 0  # drafts were made (random weights: few are kept)


def _greedy(engine: Engine, prompt: str, n: int = 12) -> tuple[list[int], SpecStats]:
    stats, tokens = SpecStats(), []
    for token in engine.generate_tokens(engine.tokenize(prompt), GREEDY, spec_stats=stats):
        tokens.append(token)
        if len(tokens) >= n or engine.is_eog(token):
            break
    return tokens, stats


def test_mtp_on_a_v32_conversion(tmp_path: Path) -> None:
    """V3.2 (`deepseek32`, with its indexer) keeps its MTP block through `quantize`, llama.cpp drafts with it,
    greedy output is the same as without, and `run` turns it on by default as for V3."""
    import hf_factory

    from quantize import convert

    out = tmp_path / "v32.gguf"
    convert(hf_factory.write_deepseek_v32(tmp_path / "hf"), out, qtype="Q8_0")
    info = read_gguf(out)
    assert info.arch == "deepseek32"
    assert speculative.mtp_layers(info) == 1 and speculative.want_mtp(info, None)
    replies = []
    for mtp in (False, True):
        drafter = speculative.mtp_drafter(2, fixed=True) if mtp else None
        engine = Engine.load(out, LoadOptions(n_ctx=64, n_threads=1, load_mtp=mtp), drafter=drafter)
        try:
            replies.append(_greedy(engine, "hello"))
        finally:
            engine.close()
    assert replies[1][0] == replies[0][0]
    assert replies[1][1].drafted > 0  # the MTP block drafted


@pytest.fixture(scope="module")
def v4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny V4 conversion and, beside it, its MTP block as a file of its own (`quantize --mtp-only`)."""
    import hf_factory

    from quantize import convert

    d = tmp_path_factory.mktemp("v4-mtp")
    src = hf_factory.write_deepseek_v4(d / "hf")
    made = {"main": d / "models" / "v4-MXFP4_MOE.gguf", "mtp": d / "models" / "mtp-v4-MXFP4_MOE.gguf"}
    convert(src, made["main"], qtype="MXFP4_MOE")
    convert(src, made["mtp"], qtype="MXFP4_MOE", mtp_only=True)
    return made


def test_v4_cache_takes_back_rejected_drafts(v4: dict[str, Path]) -> None:
    """V4's compressed-attention cache can only drop a tail it kept snapshots for: a speculating engine asks for as
    many as it drafts (`n_rs_seq`), and after taking back a rejected token the cache is exactly what decoding
    without the rejected token gives. Without snapshots the cache cannot take it back and starts again."""
    def after_rejection(engine: Engine) -> tuple[int, np.ndarray | None]:
        dc = engine.decoder
        prompt = engine.tokenize("hello")
        dc.decode(prompt)
        first = int(np.argmax(dc.logits_row(-1)))
        dc.decode([first, 5], logits="all")  # a draft token (5) that verification rejects
        dc.truncate(len(prompt) + 1)
        if len(dc.tokens) != len(prompt) + 1:
            return len(dc.tokens), None
        dc.decode([7])
        return len(dc.tokens), dc.logits_row(-1).copy()

    def sequential(engine: Engine) -> np.ndarray:
        dc = engine.decoder
        dc.truncate(0)
        prompt = engine.tokenize("hello")
        dc.decode(prompt)
        dc.decode([int(np.argmax(dc.logits_row(-1)))])
        dc.decode([7])
        return dc.logits_row(-1).copy()

    never_drafts = speculative.DrafterFactory(lambda target: None, 3)  # type: ignore[arg-type, return-value]
    speculating = Engine.load(v4["main"], LoadOptions(n_ctx=64, n_threads=1), drafter=never_drafts)
    try:
        n, taken_back = after_rejection(speculating)
        assert taken_back is not None, "the V4 cache could not take back one token"
        np.testing.assert_array_equal(taken_back, sequential(speculating))
    finally:
        speculating.close()
    plain = Engine.load(v4["main"], LoadOptions(n_ctx=64, n_threads=1))
    try:
        assert after_rejection(plain)[0] == 0  # cleared: `speculative_tokens` then decodes the verified tokens again
    finally:
        plain.close()


def test_v4_chat_turn_reads_only_what_is_new(v4: dict[str, Path]) -> None:
    """A chat's next prompt leaves the cache where the last reply began; V4's cache cannot drop that tail, so the
    prompt's state is checkpointed and gone back to: the next turn reads only its new tokens, and the logits are
    exactly those of reading the conversation afresh."""
    from localseek.runtime.decode import prefill

    engine = Engine.load(v4["main"], LoadOptions(n_ctx=128, n_threads=1))
    try:
        dc = engine.decoder
        assert dc.limited_rollback  # known for deepseek4: checkpoints from the first prompt on
        first = engine.tokenize("<｜User｜>hello<｜Assistant｜>")
        assert prefill(dc, first) == len(first)
        for token in (5, 6, 7, 8, 9, 10, 11, 12):  # the reply, reasoning included
            dc.decode([token])
        second = first + [5, 6, 7] + engine.tokenize("<｜User｜>and now?<｜Assistant｜>")[1:]  # history without it
        assert prefill(dc, second) == len(second) - len(first) and dc.restored == 1
        got = dc.logits_row(-1).copy()
        dc.clear()
        prefill(dc, first)
        dc.decode(second[len(first):])
        np.testing.assert_array_equal(got, dc.logits_row(-1))
    finally:
        engine.close()


def test_no_checkpoint_larger_than_a_quarter_of_free_ram(v4: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from localseek.runtime.decode import prefill

    monkeypatch.setenv("LOCALSEEK_RAM_BYTES", "64KiB")  # a quarter is less than the tiny V4's prompt state
    engine = Engine.load(v4["main"], LoadOptions(n_ctx=128, n_threads=1))
    try:
        dc = engine.decoder
        first = engine.tokenize("<｜User｜>hello<｜Assistant｜>")
        prefill(dc, first)
        dc.decode([5, 6])
        second = first + [7] + engine.tokenize("<｜User｜>and now?<｜Assistant｜>")[1:]
        assert prefill(dc, second) == len(second) and dc.restored == 0  # read again, nothing held
    finally:
        engine.close()


def test_v4_drafts_with_the_mtp_file_beside_it(v4: dict[str, Path]) -> None:
    from localseek.planning.plan import Request
    from localseek.runtime.open import Speculation, open_model

    main, mtp = read_gguf(v4["main"]), read_gguf(v4["mtp"])
    assert speculative.mtp_layers(main) == 0 and speculative.is_mtp_only(mtp) and not speculative.is_mtp_only(main)
    found = speculative.find_mtp_file(main)
    assert found is not None and found.path == v4["mtp"]
    assert speculative.mtp_file_fits(main, mtp) == ""
    assert "not an MTP-only" in speculative.mtp_file_fits(main, main)
    request = Request(n_ctx=64, threads=1)
    with open_model(str(v4["main"]), request, speculation=Speculation(n_draft=2, fixed=True)) as opened:
        assert opened.drafter == "mtp"
        tokens, stats = _greedy(opened.engine, "hello")
        assert len(tokens) == 12 and stats.drafted > 0 and stats.rounds > 0
        assert opened.engine.decoder.tokens[-len(tokens) + 1:] == tokens[:-1]  # the cache holds what was said
    planned = _cli("plan", str(v4["main"]), "--json")
    assert planned.returncode == 0 and json.loads(planned.stdout)["mtp_file"] == str(v4["mtp"]), planned.stderr
    with open_model(str(v4["main"]), request, speculation=Speculation(mtp=False)) as opened:
        assert opened.drafter == ""
    with open_model(str(v4["main"]), request, speculation=Speculation(draft=str(v4["mtp"]))) as opened:
        assert opened.drafter == "mtp"  # named by hand with --draft


def test_v4_without_its_mtp_file(v4: dict[str, Path], tmp_path: Path) -> None:
    from localseek.planning.plan import Request
    from localseek.runtime.open import Speculation, open_model

    alone = tmp_path / v4["main"].name
    alone.symlink_to(v4["main"])
    info = read_gguf(alone)
    assert speculative.find_mtp_file(info) is None and not speculative.resolve(info, mtp=None, draft=None)
    with pytest.raises(UsageError, match="file of its own"):
        speculative.resolve(info, mtp=True, draft=None)
    with open_model(str(alone), Request(n_ctx=64, threads=1)) as opened:
        assert opened.drafter == ""


def test_a_cache_that_cannot_take_drafts_back_is_rebuilt(models: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Where llama.cpp cannot drop a cache's tail (a rollback beyond its snapshots), the verified tokens are decoded
    again: the output stays what plain decoding gives."""
    import llama_cpp

    plain = _load(models["qw-random"])
    try:
        want, want_second, _ = _two_turns(plain, GREEDY, n=24)
    finally:
        plain.close()
    spec = _load(models["qw-random"], draft=models["qw-random-draft"], n_draft=3)
    target_mem = spec.decoder.mem
    real = llama_cpp.llama_memory_seq_rm
    refused = []

    def seq_rm(mem: object, seq: int, p0: int, p1: int) -> bool:
        if p0 > 0 and ctypes_value(mem) == ctypes_value(target_mem):
            refused.append(p0)
            return False
        return real(mem, seq, p0, p1)

    monkeypatch.setattr(llama_cpp, "llama_memory_seq_rm", seq_rm)
    try:
        got, second, drafts = _two_turns(spec, GREEDY, n=24)
        restored = spec.decoder.restored
    finally:
        spec.close()
    assert refused and drafts[1] > 0
    assert (got, second) == (want, want_second)
    assert restored > 0  # learnt from the first refusal: later ones go back to the prompt's checkpoint


def ctypes_value(pointer: object) -> int:
    import ctypes

    return ctypes.cast(pointer, ctypes.c_void_p).value or 0
