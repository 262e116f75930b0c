"""Sampling defaults: flag > catalog > GGUF `general.sampling.*` > DeepSeek's R1 advice."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from localseek.models.catalog import SamplingDefaults, load_catalog
from localseek.models.gguf_info import GGUFInfo, read_gguf
from localseek.models.resolve import resolve
from localseek.runtime.defaults import resolve_sampling

NONE = {"temperature": None, "top_p": None, "top_k": None, "min_p": None, "repeat_penalty": None,
        "max_tokens": None, "seed": None}


def info(**metadata: object) -> GGUFInfo:
    return GGUFInfo(path=Path("m.gguf"), metadata=dict(metadata))


def test_builtin_defaults_follow_deepseek_r1_advice() -> None:
    sampling, sources = resolve_sampling(None, info(), NONE)
    assert (sampling.temperature, sampling.top_p) == (0.6, 0.95)
    assert set(sources.values()) == {"default"}


def test_precedence_flag_over_catalog_over_gguf() -> None:
    gguf = info(**{"general.sampling.temp": 0.9, "general.sampling.top_p": 0.8, "general.sampling.top_k": 20,
                   "general.sampling.min_p": float("nan")})
    spec = replace(load_catalog().get("deepseek-r1:7b"), sampling=SamplingDefaults(0.5, 0.7))  # type: ignore[arg-type]
    flags = {**NONE, "top_k": 5, "seed": 3}
    sampling, sources = resolve_sampling(spec, gguf, flags)
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (0.5, 0.7, 5, 3)
    assert sampling.min_p == 0.05  # a NaN in the file is not taken
    assert sources == {"temperature": "catalog", "top_p": "catalog", "top_k": "flag", "max_tokens": "default",
                       "min_p": "default", "repeat_penalty": "default"}
    sampling, sources = resolve_sampling(replace(spec, sampling=None), gguf, flags)
    assert (sampling.temperature, sampling.top_p) == (0.9, 0.8) and sources["top_p"] == "gguf"


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
    sampling, sources = resolve_sampling(None, read_gguf(out), NONE)
    assert (sampling.temperature, sampling.top_k) == (0.0, 1) and sources["temperature"] == "gguf"


def test_installed_models_get_their_catalog_entry(tiny_gguf: Path, tmp_path: Path) -> None:
    """The catalog entry travels with the resolved reference: a catalog name, an installed model pulled from the
    catalog, the installed model's own file given as a path, and a bare file (no entry: the GGUF and the built-in
    defaults decide)."""
    from localseek.models import store

    spec = load_catalog().get("deepseek-r1:7b")
    assert spec is not None and spec.sampling is not None
    store.register(store.InstalledModel(
        name="r1-distill-qwen-7b:Q4_K_M", kind="gguf", source="hub", catalog_id=spec.id, quant="Q4_K_M",
        files=(store.StoredFile(path=str(tiny_gguf), blob=str(tiny_gguf), size=tiny_gguf.stat().st_size),)))
    for ref in ("deepseek-r1:7b", "r1-distill-qwen-7b:Q4_K_M", "deepseek-r1:7b-q4_k_m"):
        model = resolve(ref)
        sampling, sources = resolve_sampling(model.spec, read_gguf(model.path), NONE)
        assert model.spec == spec and sources["temperature"] == "catalog", ref
        assert (sampling.temperature, sampling.top_p) == (spec.sampling.temperature, spec.sampling.top_p)
    by_path = resolve(str(tiny_gguf))  # the installed model's file: that model, by its name
    assert by_path.spec == spec and by_path.name == "r1-distill-qwen-7b:Q4_K_M"
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_gguf.read_bytes())
    bare = resolve(str(other))
    assert bare.spec is None and resolve_sampling(bare.spec, read_gguf(bare.path), NONE)[0].temperature == 0.6
