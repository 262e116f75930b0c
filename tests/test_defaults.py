"""Sampling defaults: flag > catalog > GGUF `general.sampling.*` > DeepSeek's R1 advice."""

from __future__ import annotations

import sys
from pathlib import Path

from localseek.defaults import resolve_sampling
from localseek.ggufinfo import GGUFInfo, read_gguf

NONE = {"temperature": None, "top_p": None, "top_k": None, "min_p": None, "repeat_penalty": None,
        "max_tokens": None, "seed": None}


def info(**metadata: object) -> GGUFInfo:
    return GGUFInfo(path=Path("m.gguf"), metadata=dict(metadata))


def test_builtin_defaults_follow_deepseek_r1_advice() -> None:
    sampling, sources = resolve_sampling("m.gguf", info(), NONE, catalog=lambda ref, i: None)
    assert (sampling.temperature, sampling.top_p) == (0.6, 0.95)
    assert set(sources.values()) == {"default"}


def test_precedence_flag_over_catalog_over_gguf() -> None:
    gguf = info(**{"general.sampling.temp": 0.9, "general.sampling.top_p": 0.8, "general.sampling.top_k": 20})
    seen = []

    def catalog(ref: str, i: GGUFInfo) -> dict[str, float]:
        seen.append(ref)
        return {"temperature": 0.5, "max_tokens": 300}

    flags = {**NONE, "top_k": 5, "seed": 3}
    sampling, sources = resolve_sampling("r1:7b", gguf, flags, catalog=catalog)
    assert seen == ["r1:7b"]
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_tokens, sampling.seed) == (
        0.5, 0.8, 5, 300, 3)
    assert sources == {"temperature": "catalog", "top_p": "gguf", "top_k": "flag", "max_tokens": "catalog",
                       "min_p": "default", "repeat_penalty": "default"}


def test_gguf_sampling_keys_are_read(tiny_gguf: Path, tmp_path: Path) -> None:
    """A GGUF that carries general.sampling.* keys (as llama.cpp names them): read from its header."""
    import gguf

    src = read_gguf(tiny_gguf)
    assert "general.sampling.top_k" not in src.metadata
    # Rewrite the tiny model with sampling keys (same keys and tensors otherwise).
    reader = gguf.GGUFReader(str(tiny_gguf))
    out = tmp_path / "with-sampling.gguf"
    writer = gguf.GGUFWriter(str(out), "qwen2")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = src.metadata.get(field.name)
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            value = [bytes(field.parts[i]).decode() if sub == gguf.GGUFValueType.STRING else field.parts[i].tolist()[0]
                     for i in field.data]
            writer.add_array(field.name, value)
        else:
            writer.add_key_value(field.name, value, vtype)
    writer.add_float32("general.sampling.temp", 0.0)
    writer.add_int32("general.sampling.top_k", 1)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.shape[::-1].tolist(), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    sampling, sources = resolve_sampling(str(out), read_gguf(out), NONE, catalog=lambda r, i: None)
    assert (sampling.temperature, sampling.top_k) == (0.0, 1) and sources["temperature"] == "gguf"


def test_catalog_module_is_used_when_present(monkeypatch, tmp_path: Path) -> None:
    """The adapter for the catalog of the `pull` work: load_catalog().resolve(ref).spec.sampling, and installed
    models through pull.find_installed(ref).catalog_id. Stand-in modules with that interface."""
    import types
    from dataclasses import dataclass

    from localseek import defaults

    @dataclass(frozen=True)
    class SamplingDefaults:
        temperature: float
        top_p: float

    @dataclass(frozen=True)
    class Spec:
        id: str
        sampling: SamplingDefaults | None

    specs = {"deepseek-v3": Spec("deepseek-v3", SamplingDefaults(0.3, 0.9)), "bare": Spec("bare", None)}

    class Catalog:
        def resolve(self, ref: str):
            spec = specs.get(ref.split(":")[0])
            return types.SimpleNamespace(spec=spec, quant=None) if spec else None

        def get(self, name: str):
            return specs.get(name)

    catalog = types.ModuleType("localseek.catalog")
    catalog.load_catalog = Catalog  # type: ignore[attr-defined]
    pull = types.ModuleType("localseek.pull")
    pull.find_installed = lambda ref: (  # type: ignore[attr-defined]
        types.SimpleNamespace(catalog_id="deepseek-v3") if ref == "unsloth/DeepSeek-V3-GGUF" else None)
    monkeypatch.setitem(sys.modules, "localseek.catalog", catalog)
    monkeypatch.setitem(sys.modules, "localseek.pull", pull)
    lookup = defaults._catalog_lookup()
    assert lookup is not None
    for ref in ("deepseek-v3:q4_k_m", "unsloth/DeepSeek-V3-GGUF"):
        sampling, sources = resolve_sampling(ref, info(), NONE)
        assert (sampling.temperature, sampling.top_p) == (0.3, 0.9) and sources["temperature"] == "catalog"
    assert resolve_sampling("bare", info(), NONE)[1]["temperature"] == "default"
    assert resolve_sampling(str(tmp_path / "x.gguf"), info(), NONE)[0].temperature == 0.6
