"""Models other tools already keep on this machine are found and run in place, never downloaded again, moved or
deleted (issue 18). The folders are laid out exactly as those tools lay them out:

- Ollama: `manifests/HOST/NAMESPACE/MODEL/TAG` (OCI manifest v2 JSON, layers by media type) + `blobs/sha256-HEX`;
- LM Studio: `~/.lmstudio/models/PUBLISHER/REPO/FILE.gguf`;
- llama.cpp's legacy `-hf` cache: `OWNER_REPO_FILE.gguf` + `.etag` + `manifest=OWNER=REPO=TAG.json` (the Hub's
  `/v2/OWNER/REPO/manifests/TAG` answer);
- the Hugging Face cache (llama.cpp's `-hf` since 2026, `hf download`): `models--OWNER--REPO/{blobs,refs,snapshots}`;
- LOCALSEEK_MODELS_PATH: plain folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER

from localseek.models.refs import canonical

LOCALSEEK = [sys.executable, "-m", "localseek"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ollama_model(root: Path, name: str, tag: str, gguf: Path, *, host: str = "registry.ollama.ai",
                 namespace: str = "library", file_type: str = "Q4_K_M") -> Path:
    """What `ollama pull` leaves: the GGUF and its config, template, params as blobs, a manifest naming them."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{digest}").write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    model_digest = sha256(gguf)
    shutil.copyfile(gguf, blobs / f"sha256-{model_digest}")
    config = blob(json.dumps({"model_format": "gguf", "model_family": "qwen2", "model_families": ["qwen2"],
                              "model_type": "7.6B", "file_type": file_type, "architecture": "amd64", "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{model_digest}"]}}).encode())
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{model_digest}",
         "size": gguf.stat().st_size},
        {"mediaType": "application/vnd.ollama.image.template", **blob(b"{{ .Prompt }}")},
        {"mediaType": "application/vnd.ollama.image.license", **blob(b"MIT License")},
        {"mediaType": "application/vnd.ollama.image.params", **blob(b'{"stop":["<|end|>"]}')},
    ]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
                "layers": layers}
    path = root / "manifests" / host / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def hf_cache_file(cache: Path, repo: str, file: str, gguf: Path) -> Path:
    """A file as huggingface_hub (and llama.cpp since 2026) keeps it: blob by sha256, snapshot symlink, refs/main."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / sha256(gguf)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, blob)
    pointer = folder / "snapshots" / COMMIT / file
    pointer.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return pointer


@pytest.fixture
def tools(tmp_path: Path, tiny_gguf: Path, model_dir: Path) -> dict[str, Path]:
    """One machine with models from every tool, under the test's own home directory."""
    home = Path(os.environ["HOME"])
    ollama = Path(os.environ["OLLAMA_MODELS"])
    ollama_model(ollama, "deepseek-r1", "7b", tiny_gguf)
    ollama_model(ollama, "qwen2.5", "latest", tiny_gguf, file_type="Q8_0")  # a model the catalog does not know
    ollama_model(ollama, "DeepSeek-R1-Distill-Qwen-1.5B-GGUF", "Q4_K_M", tiny_gguf, host="hf.co",
                 namespace="bartowski")
    # Ollama's new-engine models have no GGUF layer; a hostile manifest points outside blobs/: both are skipped
    odd = ollama / "manifests" / "registry.ollama.ai" / "library"
    (odd / "safetensors-only").mkdir(parents=True)
    (odd / "safetensors-only" / "latest").write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.tensor; name=w; dtype=BF16; shape=2,2",
         "digest": "sha256:" + "c" * 64, "size": 8}]}))
    (odd / "sneaky").mkdir(parents=True)
    (odd / "sneaky" / "latest").write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": "../../../../etc/passwd", "size": 1}]}))

    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "DeepSeek-Coder-V2-Lite-Instruct-GGUF"
    lms.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, lms / "DeepSeek-Coder-V2-Lite-Instruct-Q4_K_M.gguf")
    (lms / "mmproj-model-f16.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # a vision projector, not a model
    (lms / "mtp-DeepSeek-Coder-V2-Lite-Instruct-Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # an MTP file, neither

    llama = Path(os.environ["LLAMA_CACHE"])
    llama.mkdir(parents=True)
    flat = llama / "bartowski_DeepSeek-R1-Distill-Qwen-14B-GGUF_DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf"
    shutil.copyfile(tiny_gguf, flat)
    Path(f"{flat}.etag").write_text('"abc123"')
    (llama / "manifest=bartowski=DeepSeek-R1-Distill-Qwen-14B-GGUF=latest.json").write_text(json.dumps({
        "ggufFile": {"rfilename": "DeepSeek-R1-Distill-Qwen-14B-Q4_K_M.gguf", "blobId": "x" * 40,
                     "size": flat.stat().st_size, "lfs": {"sha256": sha256(flat), "size": flat.stat().st_size}}}))

    hf = Path(os.environ["HF_HOME"]) / "hub"
    hf_cache_file(hf, "unsloth/DeepSeek-R1-Distill-Llama-8B-GGUF", "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf",
                  tiny_gguf)

    folder = tmp_path / "my-models"
    (folder / "nested").mkdir(parents=True)
    shutil.copyfile(tiny_gguf, folder / "nested" / "My-Tiny-Q8_0.gguf")
    split = model_dir / "split-for-elsewhere"
    if not split.exists():
        from factory import TinyConfig, write_qwen2_gguf

        split.mkdir()
        write_qwen2_gguf(split / "Parted.gguf", TinyConfig(split_max_tensors=10))
    for part in sorted(split.glob("Parted-*.gguf")):
        shutil.copyfile(part, folder / part.name)
    (folder / "Broken-00001-of-00002.gguf").write_bytes(tiny_gguf.read_bytes())  # its part 2 is missing
    shutil.copyfile(tiny_gguf, folder / "DeepSeek-V4-Flash-MTP-Q8_0.gguf")  # `quantize --mtp-only` names: not a model
    return {"ollama": ollama, "lmstudio": home / ".lmstudio", "llama": llama, "hf": hf, "folder": folder}


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    return subprocess.run([*LOCALSEEK, *args], env=e, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under the roots with its kind, size, mode, mtime and content hash (links: their target)."""
    out: dict[str, tuple] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                out[str(path)] = ("file", st.st_size, st.st_mode, st.st_mtime_ns, sha256(path))
            else:
                out[str(path)] = ("dir", st.st_mode)
    return out


def test_canonical_references() -> None:
    assert canonical("hf.co/bartowski/X-GGUF:Q4_K_M") == "bartowski/X-GGUF:Q4_K_M"
    assert canonical("huggingface.co/bartowski/X-GGUF") == "bartowski/X-GGUF"
    assert canonical("https://huggingface.co/bartowski/X-GGUF/blob/main/X-Q8_0.gguf") == "bartowski/X-GGUF:X-Q8_0.gguf"
    assert canonical("deepseek-r1:latest") == "deepseek-r1" and canonical("hf.co/a/b:latest") == "a/b"
    assert canonical("deepseek-r1:7b") == "deepseek-r1:7b" and canonical("./x.gguf") == "./x.gguf"


def test_list_all_shows_every_tools_models_with_their_source(tools: dict[str, Path]) -> None:
    plain = cli("list", "--json")
    assert plain.returncode == 0 and json.loads(plain.stdout) == []
    r = cli("list", "--all", "--json", env={"LOCALSEEK_MODELS_PATH": str(tools["folder"])})
    assert r.returncode == 0, r.stderr
    found = {m["name"]: m["source"] for m in json.loads(r.stdout)}
    assert found == {
        "deepseek-r1:7b": "ollama",
        "qwen2.5:latest": "ollama",
        "hf.co/bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:Q4_K_M": "ollama",
        "lmstudio-community/DeepSeek-Coder-V2-Lite-Instruct-GGUF:Q4_K_M": "lm-studio",
        "bartowski/DeepSeek-R1-Distill-Qwen-14B-GGUF:Q4_K_M": "llama.cpp",
        "unsloth/DeepSeek-R1-Distill-Llama-8B-GGUF:Q4_K_M": "hf-cache",
        "My-Tiny-Q8_0": "folder",
        "Parted": "folder",
    }, found
    table = cli("ls", "--all", env={"LOCALSEEK_MODELS_PATH": str(tools["folder"]), "COLUMNS": "250"})
    assert table.returncode == 0
    assert "Ollama" in table.stdout and "LM Studio" in table.stdout and "llama.cpp cache" in table.stdout
    assert "Hugging Face cache" in table.stdout and "LOCALSEEK_MODELS_PATH" in table.stdout


@pytest.mark.parametrize(("ref", "source"), [
    ("deepseek-r1:7b", "Ollama"),  # a catalog name Ollama has under the same tag
    ("qwen2.5", "Ollama"),  # Ollama's own name, :latest implied
    ("hf.co/bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:Q4_K_M", "Ollama"),
    ("deepseek-coder-v2:16b", "LM Studio"),  # a catalog name whose source repo LM Studio downloaded
    ("deepseek-r1:14b", "llama.cpp cache"),
    ("deepseek-r1:8b-llama:latest", "Hugging Face cache"),
    ("My-Tiny-Q8_0", "LOCALSEEK_MODELS_PATH"),
    ("Parted", "LOCALSEEK_MODELS_PATH"),
])
def test_run_uses_them_in_place_without_downloading(tools: dict[str, Path], ref: str, source: str) -> None:
    roots = list(tools.values())
    before = snapshot(*roots)
    # An unreachable Hub: any download attempt would fail loudly.
    r = cli("run", ref, "hello", "--temperature", "0",
            env={"LOCALSEEK_MODELS_PATH": str(tools["folder"]), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT_ANSWER + "\n"
    assert f"from {source} in place" in r.stderr
    assert snapshot(*roots) == before  # read-only: nothing written, moved, touched or deleted


def test_rm_and_pull_leave_other_tools_models_alone(tools: dict[str, Path]) -> None:
    before = snapshot(tools["ollama"])
    r = cli("rm", "deepseek-r1:7b", "--yes")
    assert r.returncode == 2 and "belongs to Ollama" in r.stderr and "`ollama rm deepseek-r1:7b`" in r.stderr
    pulled = cli("pull", "deepseek-r1:7b", env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert pulled.returncode == 0, pulled.stderr
    assert "already on this machine (Ollama" in pulled.stderr and "nothing to download" in pulled.stderr
    assert snapshot(tools["ollama"]) == before


def test_show_reads_them_in_place(tools: dict[str, Path]) -> None:
    r = cli("show", "hf.co/bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:latest", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "hf.co/bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF:Q4_K_M"
    assert data["architecture"] == "qwen2" and data["path"].startswith(str(tools["ollama"]))


def test_names_that_could_drive_the_terminal_are_not_models(tmp_path: Path, tiny_gguf: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copyfile(tiny_gguf, folder / "clear\x1b[2J.gguf")
    ollama_model(Path(os.environ["OLLAMA_MODELS"]), "bad\x1b]0;title\x07", "latest", tiny_gguf)
    r = cli("list", "--all", "--json", env={"LOCALSEEK_MODELS_PATH": str(folder)})
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout
