"""models.toml and the name/quant/file logic around it: no network, no model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from localseek.models.catalog import DEFAULT_CTX, CatalogError, load_catalog, parse_catalog
from localseek.models.listing import RemoteFile, RepoListing, available_quants, gguf_sets, select_files, select_quant
from localseek.models.quants import is_quant, quant_of_path

# Every family MODELS.md lists, by its deepseek-ai repo name.
EXPECTED_REPOS = {
    "DeepSeek-R1", "DeepSeek-R1-0528", "DeepSeek-V3", "DeepSeek-V3-0324", "DeepSeek-V3.1", "DeepSeek-V3.1-Terminus",
    "DeepSeek-V3.2-Exp", "DeepSeek-V3.2", "DeepSeek-V4-Flash", "DeepSeek-V4-Pro", "DeepSeek-V2-Lite",
    "DeepSeek-V2-Lite-Chat", "DeepSeek-Coder-V2-Lite-Instruct", "DeepSeek-Coder-V2-Lite-Base",
    "DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-14B",
    "DeepSeek-R1-Distill-Qwen-32B", "DeepSeek-R1-Distill-Llama-8B", "DeepSeek-R1-Distill-Llama-70B",
    "DeepSeek-R1-0528-Qwen3-8B",
}
ARCHS = {  # HF architecture → llama.cpp GGUF architecture (MODELS.md)
    "DeepseekV3ForCausalLM": "deepseek2", "DeepseekV32ForCausalLM": "deepseek32", "DeepseekV4ForCausalLM": "deepseek4",
    "DeepseekV2ForCausalLM": "deepseek2", "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama",
    "Qwen3ForCausalLM": "qwen3",
}


def test_catalog_covers_every_family_with_real_repos() -> None:
    cat = load_catalog()
    assert {s.repo for s in cat.models if s.status != "bundled"} == {f"deepseek-ai/{r}" for r in EXPECTED_REPOS}
    for spec in cat.models:
        assert ARCHS[spec.hf_arch] == spec.gguf_arch, spec.id
        if spec.status == "ready":
            assert spec.gguf and spec.default_quant, spec.id
        for src in spec.gguf:
            assert src.repo.endswith("GGUF"), src.repo
    r1 = cat.get("r1")
    assert (r1.params, r1.active, r1.context, r1.reasoning) == (671e9, 37e9, 163840, True)
    assert r1.sampling.temperature == 0.6 and r1.sampling.top_p == 0.95
    assert cat.get("v2-lite-chat").active == 2.4e9 and cat.get("v2-lite-chat").is_moe


def test_memory_needs_derive_from_sizes_and_kv_shape() -> None:
    cat = load_catalog()
    r1 = cat.get("r1")
    # MLA caches the compressed latent: 61 layers × (512 + 64) × 2 bytes (F16)
    assert r1.kv.bytes_per_token() == 61 * 576 * 2
    assert r1.memory_need() == r1.size_of("UD-IQ1_S") + 61 * 576 * 2 * DEFAULT_CTX
    q7 = cat.get("deepseek-r1:7b")
    # GQA: 28 layers × K and V × 4 kv heads × 128 × 2 bytes
    assert q7.memory_need("Q8_0") == q7.size_of("Q8_0") + 28 * 2 * 4 * 128 * 2 * DEFAULT_CTX
    assert q7.size_of() == 4_680_000_000  # Q4_K_M as the Hub lists it
    for spec in cat.models:
        if spec.status == "ready" and spec.size_of() is not None:
            assert spec.memory_need() > spec.size_of()


def test_v32_and_v4_entries() -> None:
    """V3.2 caches the indexer's key beside MLA's latent; V4's cache is per layer kind (tests/test_footprint_dsv.py
    checks both against llama.cpp). V4-Flash has a llama.cpp GGUF source with the sizes its publisher gives."""
    cat = load_catalog()
    for name in ("v3.2", "v3.2-exp", "deepseek-v3.2"):
        spec = cat.get(name)
        assert spec is not None and spec.gguf_arch == "deepseek32" and spec.status == "convert"
        assert spec.kv is not None and spec.kv.bytes_per_token() == 61 * (512 + 64 + 128) * 2
        assert spec.original_bytes and spec.reasoning
    flash = cat.get("deepseek-v4:flash")
    assert flash is not None and flash.id == "v4-flash" and flash.status == "ready" and flash.is_moe
    assert (flash.params, flash.active, flash.context) == (284e9, 13e9, 1 << 20)
    assert [src.repo for src in flash.gguf] == ["unsloth/DeepSeek-V4-Flash-GGUF"]
    assert flash.size_of() == flash.size_of("UD-Q4_K_XL") == 155 * 10**9 and flash.size_of("ud-q8_k_xl") == 162e9
    assert flash.kv is not None and flash.kv.compressed
    # 43 layers' raw K (512), + per 4 tokens 21 CSA layers' K and indexer key, + per 128 tokens 20 HCA layers' K
    assert flash.kv.bytes_per_token() == (43 * 512 + 21 * (512 + 128) // 4 + 20 * 512 // 128) * 2
    assert flash.memory_need() == flash.size_of() + flash.kv.bytes_per_token() * DEFAULT_CTX
    resolved = cat.resolve("deepseek-v4-flash:UD-Q8_K_XL")
    assert resolved is not None and resolved.spec is flash and resolved.quant == "UD-Q8_K_XL"
    pro = cat.get("deepseek-v4:pro")
    assert pro is not None and pro.status == "convert" and pro.kv is not None
    assert pro.kv.bytes_per_token() == (61 * 512 + 30 * (512 + 128) // 4 + 31 * 512 // 128) * 2


@pytest.mark.parametrize(("ref", "model", "quant"), [
    ("deepseek-r1:7b", "r1-distill-qwen-7b", None),
    ("r1-distill-qwen-7b", "r1-distill-qwen-7b", None),
    ("DeepSeek-R1-Distill-Qwen-7B", "r1-distill-qwen-7b", None),
    ("r1-distill-qwen-7b:q8_0", "r1-distill-qwen-7b", "Q8_0"),
    ("deepseek-r1:7b:Q6_K", "r1-distill-qwen-7b", "Q6_K"),
    ("deepseek-r1:7b-q8_0", "r1-distill-qwen-7b", "Q8_0"),  # Ollama's tag style
    ("deepseek-r1", "r1-0528-qwen3-8b", None),  # what Ollama's deepseek-r1 means today
    ("deepseek-r1:8b-llama", "r1-distill-llama-8b", None),
    ("r1:ud-iq1_s", "r1", "UD-IQ1_S"),
    ("deepseek-r1:671b", "r1-0528", None),
    ("deepseek-coder-v2:16b", "coder-v2-lite-instruct", None),
])
def test_names_aliases_and_quants(ref: str, model: str, quant: str | None) -> None:
    resolved = load_catalog().resolve(ref)
    assert resolved is not None and resolved.spec.id == model and resolved.quant == quant


def test_did_you_mean() -> None:
    cat = load_catalog()
    assert cat.resolve("deepseek-r1:3b") is None
    msg = str(cat.unknown("deepseek-r1:3b"))
    assert "Did you mean" in msg and "'deepseek-r1:32b'" in msg
    assert "'r1-distill-qwen-7b'" in str(cat.unknown("r1-distil-qwen-7b"))
    assert "Did you mean" not in str(cat.unknown("completely-different"))


GOOD = """
schema = 1
[[models]]
id = "m"
title = "M"
family = "f"
repo = "o/m"
hf_arch = "Qwen2ForCausalLM"
gguf_arch = "qwen2"
params = 1e9
active = 1e9
context = 4096
license = "mit"
reasoning = true
status = "ready"
default_quant = "Q4_K_M"
kv = { layers = 2, kv_heads = 2, head_dim = 64 }
[[models.gguf]]
repo = "o/m-GGUF"
sizes_gb = { Q4_K_M = 0.5 }
"""


@pytest.mark.parametrize(("change", "message"), [
    (("context = 4096", "contxt = 4096"), "models[0] (m): unknown key 'contxt'"),
    (("context = 4096", "context = \"big\""), "'context' has the wrong type"),
    (("reasoning = true\n", ""), "missing key 'reasoning'"),
    (("status = \"ready\"", "status = \"soon\""), "'status' must be one of"),
    (("repo = \"o/m\"", "repo = \"just-a-name\""), "'repo' must be OWNER/NAME"),
    (("default_quant = \"Q4_K_M\"", "default_quant = \"Q4KM\""), "is not a quantization type"),
    (("sizes_gb = { Q4_K_M = 0.5 }", "sizes_gb = { Q4_K_M = -1 }"), "must be a positive number"),
    (("kv = { layers = 2, kv_heads = 2, head_dim = 64 }", "kv = { layers = 2, kv_heads = 2 }"), "'kv' needs"),
    # an indexer key only beside MLA's latent (V3.2) or in V4's compressed form
    (("kv = { layers = 2, kv_heads = 2, head_dim = 64 }",
      "kv = { layers = 2, kv_heads = 2, head_dim = 64, indexer_dim = 8 }"), "'kv' needs"),
    (("kv = { layers = 2, kv_heads = 2, head_dim = 64 }", "kv = { layers = 2, head_dim = 64, csa_layers = 1 }"),
     "'kv' needs"),
    (("kv = { layers = 2, kv_heads = 2, head_dim = 64 }",
      "kv = { layers = 2, head_dim = 64, indexer_dim = 8, csa_layers = 2, hca_layers = 1 }"),
     "more compressed layers than layers"),
    (("kv = { layers = 2, kv_heads = 2, head_dim = 64 }",
      "kv = { layers = 2, kv_lora_rank = 8, rope_dim = 4, indexer_dim = 0 }"), "positive integers"),
    (("active = 1e9", "active = 2e9"), "0 < active <= params"),
    (("schema = 1", "schema = 2"), "'schema' must be 1"),
    (("[[models.gguf]]", "[[models.gguff]]"), "unknown key 'gguff'"),
])
def test_bad_catalogs_name_the_bad_key(change: tuple[str, str], message: str) -> None:
    parse_catalog(GOOD, "test.toml")
    with pytest.raises(CatalogError) as err:
        parse_catalog(GOOD.replace(*change), "test.toml")
    assert message in str(err.value)


def test_duplicate_names_are_rejected() -> None:
    two = GOOD + GOOD.split("\n", 2)[2].replace('id = "m"', 'id = "n"\naliases = ["m"]')
    with pytest.raises(CatalogError, match="'m' is used by both m and n"):
        parse_catalog(two)


def test_catalog_override_with_localseek_catalog(tmp_path, monkeypatch) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    monkeypatch.setenv("LOCALSEEK_CATALOG", str(path))
    assert [s.id for s in load_catalog().models] == ["m"]
    path.write_text(GOOD.replace("context = 4096", "context = \"x\""))
    r = subprocess.run([sys.executable, "-m", "localseek", "models"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "'context' has the wrong type" in r.stderr and "Traceback" not in r.stderr


def test_models_command_reports_fit_against_ram() -> None:
    env = {**os.environ, "LOCALSEEK_RAM_BYTES": str(8 * 10**9)}
    r = subprocess.run([sys.executable, "-m", "localseek", "models", "--json"], capture_output=True, text=True,
                       env=env, check=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["memory"]["total"] == 8 * 10**9
    rows = {m["id"]: m for m in data["models"]}
    assert rows["r1-distill-qwen-1.5b"]["fits"] is True and rows["r1"]["fits"] is False
    assert rows["v3.2"]["fits"] is None and rows["v3.2"]["status"] == "convert"
    assert rows["v4-flash"]["fits"] is False and rows["v4-flash"]["size"] == 155 * 10**9
    assert rows["v4-flash"]["kv_bytes_per_token"] == 50912
    # "fits" and "needs" come from the planner `run` uses (same margins), fed by the catalog's sizes
    from localseek.planning import hardware
    from localseek.planning.footprint import from_catalog
    from localseek.planning.plan import Request, make_plan

    machine = hardware.simulated(ram=8 * 10**9, cores=2)
    for name in ("r1-distill-qwen-1.5b", "r1-distill-qwen-14b", "r1"):
        plan = make_plan(from_catalog(load_catalog().get(name)), machine, Request())  # type: ignore[arg-type]
        assert rows[name]["fits"] is plan.fits, name
        assert rows[name]["memory_needed"] >= rows[name]["size"] + rows[name]["kv_bytes_per_token"] * 1024
    q15 = rows["r1-distill-qwen-1.5b"]
    assert q15["memory_needed"] > q15["size"] + q15["kv_bytes_per_token"] * q15["memory_ctx"]  # + buffers, runtime
    text = subprocess.run([sys.executable, "-m", "localseek", "models"], capture_output=True, text=True, env=env,
                          check=False)
    assert "r1-distill-qwen-1.5b" in text.stdout and "7.5 GiB RAM" in text.stdout


# ───────────────────────────── quants and files in a listing ─────────────────────────────

@pytest.mark.parametrize(("path", "quant"), [
    ("DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf", "Q4_K_M"),
    ("DeepSeek-R1-Distill-Qwen-1.5B.Q4_K_M.gguf", "Q4_K_M"),
    ("deepseek-v2-lite-chat-q4_k_m.gguf", "Q4_K_M"),
    ("DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf", "Q4_K_M"),
    ("DeepSeek-R1-0528-Qwen3-8B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("DeepSeek-R1-Q8_0/DeepSeek-R1-BF16-256x20B-Q8_0-00001-of-00016.gguf", "Q8_0"),
    ("DeepSeek-R1-Q8_0/DeepSeek-R1.Q8_0-00001-of-00015.gguf", "Q8_0"),
    ("UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00001-of-00004.gguf", "UD-IQ1_S"),
    ("UD-IQ1_M/DeepSeek-V4-Flash-UD-IQ1_M-00001-of-00003.gguf", "UD-IQ1_M"),  # unsloth/DeepSeek-V4-Flash-GGUF
    ("DeepSeek-V3-0324-Q4_K_M-V2.gguf", "Q4_K_M"),
    ("DeepSeek-Coder-V2-Instruct-Q4_K_M.gguf/DeepSeek-Coder-V2-Instruct-Q4_K_M-00001-of-00004.gguf", "Q4_K_M"),
    ("DeepSeek-R1-Distill-Qwen-14B-f16.gguf", "F16"),
    ("BF16/DeepSeek-V3-0324-BF16-00001-of-00030.gguf", "BF16"),
    ("Q4_K_M/model-00001-of-00002.gguf", "Q4_K_M"),
    ("DeepSeek-V3.gguf", None),
])
def test_quant_of_real_file_names(path: str, quant: str | None) -> None:
    assert quant_of_path(path) == quant


def test_is_quant() -> None:
    assert all(is_quant(q) for q in ("Q4_K_M", "q8_0", "IQ1_S", "UD-IQ1_S", "TQ1_0", "BF16", "F16"))
    assert not any(is_quant(q) for q in ("7b", "Qwen3", "V3", "latest", "8b-llama"))


def _listing(paths: dict[str, int]) -> RepoListing:
    return RepoListing("o/r-GGUF", "c" * 40, tuple(RemoteFile(p, s, sha256=f"{i:064x}") for i, (p, s) in
                                                   enumerate(paths.items())))


def test_split_sets_are_grouped_in_order_and_incomplete_leftovers_ignored() -> None:
    listing = _listing({
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00002-of-00005.gguf": 20,
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00001-of-00005.gguf": 10,
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00003-of-00005.gguf": 30,
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00004-of-00005.gguf": 40,
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00005-of-00005.gguf": 50,
        "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00004-of-00004.gguf": 99,  # left over from an older upload
        "Q4_K_M/DeepSeek-V3-0324-Q4_K_M-00001-of-00002.gguf": 7,
        "mmproj-F16.gguf": 1,
        "README.md": 1,
    })
    fs = select_quant(listing, "ud-iq2_xxs")
    assert fs and fs.complete and [f.size for f in fs.files] == [10, 20, 30, 40, 50] and fs.size == 150
    assert available_quants(listing) == {"UD-IQ2_XXS": 150}
    with pytest.raises(Exception, match="only 1 of the 2 parts"):
        select_quant(listing, "Q4_K_M")
    assert select_quant(listing, "Q8_0") is None
    assert all(not s.primary.path.startswith("mmproj") for s in gguf_sets(listing))
    part3 = select_files(listing, "UD-IQ2_XXS/DeepSeek-V3-0324-UD-IQ2_XXS-00003-of-00005.gguf")
    assert part3 is not None and len(part3.files) == 5  # any part brings the whole model


def test_mtp_files_go_with_a_model_and_are_not_one() -> None:
    """DeepSeek-V4 repos publish the MTP block as `mtp-….gguf`: never a model of its own, and the one a model takes
    is chosen as llama.cpp's downloader chooses it (same folder or above, deepest first, same quant, nearest bits)."""
    from localseek.models.listing import is_mtp_file, mtp_sibling

    listing = _listing({
        "DeepSeek-V4-Flash-Q8_0.gguf": 100,
        "DeepSeek-V4-Flash-Q4_K_M.gguf": 60,
        "mtp-DeepSeek-V4-Flash-Q8_0.gguf": 5,
        "mtp-DeepSeek-V4-Flash-Q4_0.gguf": 3,
        "UD-Q2_K_XL/DeepSeek-V4-Flash-UD-Q2_K_XL-00001-of-00002.gguf": 20,
        "UD-Q2_K_XL/DeepSeek-V4-Flash-UD-Q2_K_XL-00002-of-00002.gguf": 20,
        "UD-Q2_K_XL/mtp-DeepSeek-V4-Flash-Q2_K.gguf": 2,
        "other/mtp-DeepSeek-V4-Flash-Q4_K_M.gguf": 4,
    })
    assert available_quants(listing) == {"Q8_0": 100, "Q4_K_M": 60, "UD-Q2_K_XL": 40}
    assert all(not is_mtp_file(s.primary.name) for s in gguf_sets(listing))
    pick = lambda q: mtp_sibling(listing, select_quant(listing, q)).path  # noqa: E731
    assert pick("Q8_0") == "mtp-DeepSeek-V4-Flash-Q8_0.gguf"  # the same quant
    assert pick("Q4_K_M") == "mtp-DeepSeek-V4-Flash-Q4_0.gguf"  # nearest bits here (other/ is not above it)
    assert pick("UD-Q2_K_XL") == "UD-Q2_K_XL/mtp-DeepSeek-V4-Flash-Q2_K.gguf"  # its own folder first
    assert mtp_sibling(_listing({"m-Q8_0.gguf": 1}), select_quant(_listing({"m-Q8_0.gguf": 1}), "Q8_0")) is None
    assert is_mtp_file("DeepSeek-V4-Flash-MTP-MXFP4_MOE.gguf")  # what `quantize --mtp-only` writes


def test_select_files_by_name_and_glob() -> None:
    listing = _listing({"a-Q4_K_M.gguf": 1, "a-Q8_0.gguf": 2, "sub/b-Q4_K_M.gguf": 3})
    assert select_files(listing, "a-Q8_0.gguf").primary.path == "a-Q8_0.gguf"
    assert select_files(listing, "b-Q4_K_M.gguf").primary.path == "sub/b-Q4_K_M.gguf"
    with pytest.raises(Exception, match="matches 2 models"):
        select_files(listing, "*Q4_K_M*")
    assert select_files(listing, "*Q8*").size == 2
    assert select_files(listing, "nothing.gguf") is None
