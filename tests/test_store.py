"""The registry of installed models, `rm` safety, and the pull lock: real files, real locks, other processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localseek.models import store


def _blob(tmp_path: Path, repo: str, name: str, data: bytes, commit: str = "a" * 40) -> tuple[Path, Path]:
    """A file in the HF cache layout: blobs/<sha256> and snapshots/<commit>/<name> → ../../blobs/<sha256>."""
    folder = store.repo_folder(repo)
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = folder / "snapshots" / commit / name
    pointer.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    return pointer, blob


def _model(name: str, *files: tuple[Path, Path], preexisting: bool = False, repo: str = "o/r") -> store.InstalledModel:
    return store.InstalledModel(
        name=name, kind="gguf", source="hub", repo=repo, quant="Q4_K_M", pulled_at=time.time(),
        files=tuple(store.StoredFile(path=str(p), blob=str(b), size=b.stat().st_size, repo_path=p.name,
                                     sha256="0" * 64, preexisting=preexisting, checked="sha256") for p, b in files),
    )


def test_home_and_cache_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert store.home() == tmp_path / "localseek-home"  # LOCALSEEK_HOME (conftest)
    monkeypatch.delenv("LOCALSEEK_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.home() == tmp_path / "xdg" / "localseek"  # platformdirs' user data dir
    assert store.hf_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert store.repo_folder("a/b") == tmp_path / "elsewhere" / "models--a--b"


def test_registry_round_trip_and_atomic_file(tmp_path: Path) -> None:
    p, b = _blob(tmp_path, "o/r", "m-Q4_K_M.gguf", b"x" * 100)
    store.register(_model("m:Q4_K_M", (p, b)))
    got = store.get("m:Q4_K_M")
    assert got is not None and got.size == 100 and got.primary == p and got.missing() == []
    raw = json.loads((store.home() / "registry.json").read_text())
    assert raw["version"] == 1 and list(raw["models"]) == ["m:Q4_K_M"]
    assert not list(store.home().glob(".registry.json.*.tmp"))
    store.touch("m:Q4_K_M")
    assert store.get("m:Q4_K_M").last_used is not None
    b.write_bytes(b"short")
    assert store.get("m:Q4_K_M").missing() == [str(p)]


def test_unreadable_registry_is_one_clear_error(tmp_path: Path) -> None:
    store.home().mkdir(parents=True)
    (store.home() / "registry.json").write_text("{not json")
    with pytest.raises(store.StoreError, match="registry.json is unreadable"):
        store.installed()


def test_rm_keeps_what_others_use_and_deletes_the_rest(tmp_path: Path) -> None:
    shared = _blob(tmp_path, "o/r", "shared-Q4_K_M.gguf", b"s" * 10)
    own = _blob(tmp_path, "o/r", "own-Q8_0.gguf", b"o" * 20)
    theirs = _blob(tmp_path, "o/other", "theirs.gguf", b"t" * 30)  # was in the cache before localseek
    store.register(_model("a", shared, own))
    store.register(_model("b", shared))
    store.register(_model("c", theirs, preexisting=True, repo="o/other"))
    # another tool's snapshot (an older commit) links the same blob as `own`
    foreign = store.repo_folder("o/r") / "snapshots" / ("b" * 40) / "own-Q8_0.gguf"
    foreign.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(own[1], foreign.parent), foreign)

    removal = store.remove("a")
    kept = dict(removal.kept)
    assert "also used by b" in kept[str(shared[0])]
    assert "another Hugging Face cache snapshot" in kept[str(own[0])]
    assert shared[1].exists() and shared[0].exists() and own[1].exists() and removal.freed == 0
    assert not own[0].exists()  # our own snapshot entry goes; the blob stays for the other snapshot

    foreign.unlink()
    removal = store.remove("b")
    assert removal.deleted == [str(shared[1])] and removal.freed == 10
    assert not shared[1].exists() and not shared[0].exists()

    removal = store.remove("c")
    assert removal.deleted == [] and theirs[1].exists() and theirs[0].exists()
    assert "before localseek pulled it" in removal.kept[0][1]
    assert store.installed() == {}
    with pytest.raises(store.StoreError, match="not installed"):
        store.remove("c")


def test_verified_copy_is_forgotten_when_the_file_changes(tmp_path: Path) -> None:
    p, b = _blob(tmp_path, "o/r", "m.gguf", b"x" * 10)
    m = _model("m", (p, b))
    f = m.files[0]
    m = store.InstalledModel(**{**m.__dict__, "files": (store.StoredFile(**{**f.__dict__,
                                                                             "mtime_ns": b.stat().st_mtime_ns}),)})
    store.register(m)
    assert store.verified_copy(b) is not None and store.owners(b) == ["m"]
    time.sleep(0.01)
    b.write_bytes(b"y" * 10)
    assert store.verified_copy(b) is None


HOLDER = """
import sys, time
from localseek.models import store
with store.pull_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_pull_lock_makes_a_second_process_wait(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "m:Q4_K_M"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert holder.stdout.readline().strip() == "held"
        waits: list[str] = []
        busy = rf"Another pull of m:Q4_K_M is still running \(process {holder.pid}"
        with pytest.raises(store.StoreError, match=busy), store.pull_lock("m:Q4_K_M", on_wait=waits.append,
                                                                          timeout=0.3):
            pass
        assert waits and f"process {holder.pid}" in waits[0]
        holder.stdin.write("\n")
        holder.stdin.flush()
        t0 = time.monotonic()
        with store.pull_lock("m:Q4_K_M", timeout=20):
            assert time.monotonic() - t0 < 20
        with store.pull_lock("another:model", timeout=0):
            pass  # other models are not blocked
    finally:
        holder.kill()
        holder.wait(timeout=10)
