"""`localseek pull` end to end against a Hub on 127.0.0.1 (tests/hub_server.py): real HTTP, real huggingface_hub,
real HF cache layout, real llama.cpp loading what was pulled. Faults are injected on the server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from factory import SCRIPT_ANSWER, TinyConfig, write_qwen2_gguf
from hub_server import FakeHub, make_repo
from ptyio import plain, read_until, spawn

LOCALSEEK = [sys.executable, "-m", "localseek"]
TOKEN = "hf_test_SECRET_token_value_1234"
R15_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R15_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
MiB = 1024 * 1024


# ───────────────────────────── fixtures ─────────────────────────────

@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> dict[str, Path]:
    """Files the fake Hub serves, built once: a scripted single GGUF, a scripted split GGUF, a 20 MiB one."""
    d = tmp_path_factory.mktemp("served")
    single = d / R15_FILE
    shutil.copyfile(tiny_gguf, single)
    split_dir = d / "split"
    split_dir.mkdir()
    first = write_qwen2_gguf(split_dir / "DeepSeek-R1-UD-IQ1_S.gguf", TinyConfig(split_max_tensors=10))
    parts = sorted(first.parent.glob("DeepSeek-R1-UD-IQ1_S-0000*-of-*.gguf"))
    big = write_qwen2_gguf(d / "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
                           TinyConfig(weights="random", n_layer=5, n_embd=256, n_ff=1024, seed=3))
    config = d / "config.json"
    config.write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}))
    weights = d / "model.safetensors"
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header)
    out = {"single": single, "big": big, "config": config, "weights": weights}
    out.update({f"part{i + 1}": p for i, p in enumerate(parts)})
    return out


@pytest.fixture
def hub(served: dict[str, Path]) -> Iterator[FakeHub]:
    h = FakeHub(tokens={TOKEN})
    h.add(make_repo(R15_REPO, {R15_FILE: served["single"]}))
    yield h
    h.stop()


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
             HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", COLUMNS="200")
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "HF_TOKEN"):
        e.pop(k, None)
    return e


def cli(env: dict[str, str], *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LOCALSEEK, *args], env=dict(env, **extra), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def registry(home: Path) -> dict:
    path = home / "registry.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-home" / "hub"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def downloads(hub: FakeHub) -> list[dict]:
    """CDN requests that transfer a file: all but the header reads a pull plans with first (bytes=FIRST-LAST)."""
    return [q for q in hub.requests("cdn") if not re.fullmatch(r"bytes=\d+-\d+", q["range"] or "")]


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The failure is exactly one line on stderr, exit code 2, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


# ───────────────────────────── the happy path ─────────────────────────────

def test_pull_by_catalog_name_then_run_offline(hub: FakeHub, env: dict, tmp_path: Path, isolated_home: Path,
                                               served: dict[str, Path]) -> None:
    r = cli(env, "pull", "deepseek-r1:1.5b", "--json", HF_TOKEN=TOKEN)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "r1-distill-qwen-1.5b:Q4_K_M" and data["quant"] == "Q4_K_M"
    assert data["verified"] and data["downloaded"] == served["single"].stat().st_size
    assert data["checked"] == "sha256" and data["files"][0]["checked"] == "sha256"
    # the standard HF cache layout: blob named by sha256, snapshot symlink, refs/main → commit
    repo_dir = cache(tmp_path) / "models--bartowski--DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
    commit = (repo_dir / "refs" / "main").read_text()
    pointer = repo_dir / "snapshots" / commit / R15_FILE
    assert pointer.is_symlink() and Path(data["path"]) == pointer
    assert Path(os.path.realpath(pointer)) == repo_dir / "blobs" / sha256(served["single"])
    assert sha256(pointer) == data["files"][0]["sha256"]
    # the token went to the Hub, never to the CDN, and never into the output
    assert all(req["auth"] == f"Bearer {TOKEN}" for req in hub.requests("hub", "/resolve/"))
    assert hub.requests("cdn") and all(req["auth"] is None for req in hub.requests("cdn"))
    assert TOKEN not in r.stdout + r.stderr
    assert not list(repo_dir.glob("blobs/*.incomplete"))

    # show: what the GGUF header says, plus the catalog's facts
    info = json.loads(cli(env, "show", "deepseek-r1:1.5b", "--json").stdout)
    assert info["architecture"] == "qwen2" and info["quant"] == "F32" and info["context_length"] == 2048
    assert info["layers"] == 2 and info["parameters"] > 100_000
    assert "<｜Assistant｜>" in info["chat_template"]
    assert info["tensors"]["count"] == 27 and info["tensors"]["types"]["F32"]["count"] == 27
    assert info["catalog"]["reasoning"] is True and info["catalog"]["sampling"] == {"temperature": 0.6, "top_p": 0.95}

    # a second pull is a no-op that needs no network
    hub.stop()
    again = cli(env, "pull", "r1-distill-qwen-1.5b", HF_HUB_OFFLINE="1")
    assert again.returncode == 0 and "already installed" in again.stderr

    # run by name: no network (the Hub is down and HF_HUB_OFFLINE is set), real llama.cpp
    ran = cli(env, "run", "deepseek-r1:1.5b", "hello", "--temperature", "0", HF_HUB_OFFLINE="1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == SCRIPT_ANSWER + "\n"
    listed = json.loads(cli(env, "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["r1-distill-qwen-1.5b:Q4_K_M"] and listed[0]["last_used"]
    text = cli(env, "show", "r1-distill-qwen-1.5b:Q4_K_M")
    assert text.returncode == 0 and "architecture qwen2" in text.stdout and "F32 ×27" in text.stdout


def test_any_hub_repo_and_shared_files_survive_rm(hub: FakeHub, env: dict, tmp_path: Path) -> None:
    assert cli(env, "pull", "deepseek-r1:1.5b").returncode == 0
    r = cli(env, "pull", f"{R15_REPO}:q4_k_m", "--json")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["name"] == f"{R15_REPO}:Q4_K_M" and second["catalog_id"] == "r1-distill-qwen-1.5b"
    assert second["downloaded"] == 0 and len(downloads(hub)) == 1  # same blob: fetched once
    blob = Path(second["files"][0]["blob"])
    assert "--yes" in one_error_line(cli(env, "rm", "deepseek-r1:1.5b"))  # no terminal to ask on
    rm1 = cli(env, "rm", "deepseek-r1:1.5b", "--yes", "--json")
    assert rm1.returncode == 0, rm1.stderr
    out = json.loads(rm1.stdout)
    assert out["deleted"] == [] and "also used by" in out["kept"][0]["why"]
    assert blob.exists()
    ran = cli(env, "run", f"{R15_REPO}:Q4_K_M", "hello", "--temperature", "0")
    assert ran.returncode == 0 and ran.stdout == SCRIPT_ANSWER + "\n", ran.stderr
    rm2 = cli(env, "rm", f"{R15_REPO}:Q4_K_M", "--yes")
    assert rm2.returncode == 0 and "freed" in rm2.stderr
    assert not blob.exists() and not Path(second["path"]).exists()
    assert cli(env, "list", "--json").stdout.strip() == "[]"
    assert "not installed" in one_error_line(cli(env, "rm", "deepseek-r1:1.5b", "--yes"))


# ───────────────────────────── split models ─────────────────────────────

def test_split_gguf_is_fetched_whole_registered_once_and_runs(hub: FakeHub, env: dict, served: dict[str, Path]) -> None:
    parts = {f"DeepSeek-R1-UD-IQ1_S/{served[k].name}": served[k] for k in ("part1", "part2", "part3")}
    parts["DeepSeek-R1-Q2_K_XS/DeepSeek-R1-Q2_K_XS-00001-of-00002.gguf"] = served["part1"]  # an incomplete upload
    parts["README.md"] = served["config"]
    hub.add(make_repo("unsloth/DeepSeek-R1-GGUF", parts))
    r = cli(env, "pull", "r1", "--json")  # the catalog default for R1 is UD-IQ1_S, three parts
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "r1:UD-IQ1_S" and len(data["files"]) == 3
    assert [f["repo_path"].rsplit("-", 3)[-3] for f in data["files"]] == ["00001", "00002", "00003"]
    assert data["size"] == sum(served[k].stat().st_size for k in ("part1", "part2", "part3"))
    assert data["path"].endswith("-00001-of-00003.gguf")
    assert len(json.loads(cli(env, "list", "--json").stdout)) == 1
    show = json.loads(cli(env, "show", "r1", "--json").stdout)
    assert len(show["parts"]) == 3 and show["tensors"]["count"] == 27
    ran = cli(env, "run", "r1", "hello", "--temperature", "0")  # llama.cpp loads it from part 1
    assert ran.returncode == 0 and ran.stdout == SCRIPT_ANSWER + "\n", ran.stderr
    incomplete = one_error_line(cli(env, "pull", "r1:Q2_K_XS"))
    assert "only 1 of the 2 parts" in incomplete and "incomplete" in incomplete


# ───────────────────────────── sources, quants, names ─────────────────────────────

def test_missing_first_source_falls_back_and_quants_are_listed(served: dict[str, Path], env: dict,
                                                               tmp_path: Path) -> None:
    hub = FakeHub()
    try:
        env = dict(env, HF_ENDPOINT=hub.url)
        # bartowski's repo (the first source) does not exist here; unsloth's has Q8_0 and Q6_K but no Q4_K_M
        hub.add(make_repo("unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF", {
            "DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf": served["single"],
            "DeepSeek-R1-Distill-Qwen-1.5B-Q6_K.gguf": served["single"],
        }))
        explicit = one_error_line(cli(env, "pull", "deepseek-r1:1.5b:Q4_K_M"))
        assert "has no Q4_K_M" in explicit and "Q8_0" in explicit and "Q6_K" in explicit
        r = cli(env, "pull", "deepseek-r1:1.5b", "--json")  # default quant missing: the closest one is taken
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["name"] == "r1-distill-qwen-1.5b:Q6_K" or data["name"] == "r1-distill-qwen-1.5b:Q8_0"
        assert data["repo"] == "unsloth/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
        assert any("Q4_K_M is not published" in n for n in data["notes"])
    finally:
        hub.stop()


def test_unknown_names_suggest(env: dict) -> None:
    line = one_error_line(cli(env, "run", "deepseek-r1:3b", "hi"))
    assert "Did you mean" in line and "deepseek-r1:32b" in line


def test_convert_only_models_and_bad_quants_say_what_to_do() -> None:
    from localseek.errors import NotInstalledError
    from localseek.models.catalog import UnknownModelError
    from localseek.models.pull import pull

    with pytest.raises(NotInstalledError, match="--original --quantize"):
        pull("v3.2")
    with pytest.raises(UnknownModelError, match="not a quantization type"):
        pull("deepseek-r1:7b:q9_x")


# ───────────────────────────── faults ─────────────────────────────

def _big_repo(hub: FakeHub, served: dict[str, Path]) -> str:
    repo = hub.add(make_repo("unsloth/DeepSeek-R1-Distill-Qwen-7B-GGUF", {served["big"].name: served["big"]}))
    return repo.files[served["big"].name].sha256


def test_killed_pull_resumes_where_it_stopped(hub: FakeHub, env: dict, served: dict[str, Path],
                                              tmp_path: Path, isolated_home: Path) -> None:
    sha = _big_repo(hub, served)
    hub.faults.stall_after[sha] = 12 * MiB  # past huggingface_hub's first 10 MiB write
    part = cache(tmp_path) / "models--unsloth--DeepSeek-R1-Distill-Qwen-7B-GGUF" / "blobs" / f"{sha}.incomplete"
    proc = subprocess.Popen([*LOCALSEEK, "pull", "deepseek-r1:7b"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 10 * MiB):
            time.sleep(0.05)
        assert part.stat().st_size == 10 * MiB
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: a crash, a power cut
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert registry(isolated_home) == {}  # nothing half-downloaded is installed
    hub.faults.stall_after.clear()
    hub.release.set()
    r = cli(env, "pull", "deepseek-r1:7b", "--json")
    assert r.returncode == 0, r.stderr
    assert "Resuming" in r.stderr
    assert hub.requests("cdn")[-1]["range"] == f"bytes={10 * MiB}-"
    data = json.loads(r.stdout)
    assert data["downloaded"] == served["big"].stat().st_size - 10 * MiB
    assert sha256(Path(data["path"])) == sha and not part.exists()


def test_ctrl_c_keeps_what_arrived_and_says_so(hub: FakeHub, env: dict, served: dict[str, Path],
                                               tmp_path: Path, isolated_home: Path) -> None:
    sha = _big_repo(hub, served)
    hub.faults.stall_after[sha] = 12 * MiB
    part = cache(tmp_path) / "models--unsloth--DeepSeek-R1-Distill-Qwen-7B-GGUF" / "blobs" / f"{sha}.incomplete"
    proc = subprocess.Popen([*LOCALSEEK, "pull", "deepseek-r1:7b"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert hub.stalled.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= 10 * MiB):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        hub.release.set()
    assert proc.returncode == 130, err
    assert "Pull interrupted; what arrived is kept — run the same command again to resume." in err
    assert "Traceback" not in err and part.stat().st_size == 10 * MiB
    assert registry(isolated_home) == {}
    assert "is a file path" in one_error_line(cli(env, "pull", "./some/model.gguf"))


@pytest.mark.slow  # huggingface_hub sleeps 1 s between its 5 retries before giving up
def test_dropped_connection_then_next_pull_resumes(hub: FakeHub, env: dict, served: dict[str, Path],
                                                   tmp_path: Path, isolated_home: Path) -> None:
    sha = _big_repo(hub, served)
    hub.faults.drop_after[sha] = (12 * MiB, 100)  # every attempt dies after 12 MiB
    r = cli(env, "pull", "deepseek-r1:7b")
    line = one_error_line(r)
    assert "stopped at 10.0 MiB of 19.6 MiB" in line and "run the same pull again to resume" in line
    ranges = [q["range"] for q in downloads(hub)]
    assert ranges[0] is None and f"bytes={10 * MiB}-" in ranges[1:]  # huggingface_hub retried within the run
    assert registry(isolated_home) == {}
    hub.faults.drop_after.clear()
    r = cli(env, "pull", "deepseek-r1:7b", "--json")
    assert r.returncode == 0, r.stderr
    assert hub.requests("cdn")[-1]["range"] == f"bytes={10 * MiB}-"
    assert sha256(Path(json.loads(r.stdout)["path"])) == sha


def test_server_ignoring_range_still_gives_a_correct_file(hub: FakeHub, env: dict, served: dict[str, Path]) -> None:
    sha = _big_repo(hub, served)
    hub.faults.drop_after[sha] = (12 * MiB, 1)
    hub.faults.ignore_range = True  # the retry gets a 200 with the whole file: huggingface_hub rewinds
    r = cli(env, "pull", "deepseek-r1:7b", "--json")
    assert r.returncode == 0, r.stderr
    assert sha256(Path(json.loads(r.stdout)["path"])) == sha


def test_corrupted_byte_is_detected_and_the_file_removed(hub: FakeHub, env: dict, served: dict[str, Path],
                                                         tmp_path: Path, isolated_home: Path) -> None:
    sha = _big_repo(hub, served)
    hub.faults.corrupt[sha] = 11 * MiB + 5
    line = one_error_line(cli(env, "pull", "deepseek-r1:7b"))
    assert "does not match the sha256" in line and "deleted" in line
    blobs = cache(tmp_path) / "models--unsloth--DeepSeek-R1-Distill-Qwen-7B-GGUF" / "blobs"
    assert list(blobs.iterdir()) == []
    assert registry(isolated_home) == {}
    hub.faults.corrupt.clear()
    assert cli(env, "pull", "deepseek-r1:7b").returncode == 0


def test_corrupt_file_already_in_the_hf_cache_is_fetched_again(hub: FakeHub, env: dict,
                                                               served: dict[str, Path]) -> None:
    other = Path(_download_with_huggingface_hub(env, R15_REPO, R15_FILE))  # another tool put it there
    blob = Path(os.path.realpath(other))
    data = bytearray(blob.read_bytes())
    data[100] ^= 1  # bit rot: same size, wrong content
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    cdn_before = len(downloads(hub))
    r = cli(env, "pull", "deepseek-r1:1.5b", "--json")
    assert r.returncode == 0, r.stderr
    assert "was corrupt" in r.stderr and "downloading it again" in r.stderr
    assert len(downloads(hub)) == cdn_before + 1
    assert sha256(Path(json.loads(r.stdout)["path"])) == sha256(served["single"])


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, check=False)
    return r.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user+mount namespaces for a private tmpfs")
def test_too_small_disk_is_refused_with_numbers(hub: FakeHub, env: dict, served: dict[str, Path],
                                                tmp_path: Path, isolated_home: Path) -> None:
    """A real 4 MiB tmpfs mounted (in a private mount namespace) where the HF cache lives."""
    _big_repo(hub, served)
    hf_home = tmp_path / "small-disk"
    hf_home.mkdir()
    script = (f'mount -t tmpfs -o size=4m tmpfs "{hf_home}" && exec "{sys.executable}" -m localseek '
              "pull deepseek-r1:7b")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                       env=dict(env, HF_HOME=str(hf_home)), capture_output=True, text=True, timeout=120, check=False)
    line = one_error_line(r)
    assert "Not enough disk space" in line and "needs 19.6 MiB more and 4.0 MiB is free" in line
    assert not downloads(hub)  # refused before any byte was fetched
    assert registry(isolated_home) == {}


def test_disk_check_counts_what_is_already_here(hub: FakeHub, env: dict, served: dict[str, Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process variant with the free-space probe pinned: a resumed download needs only the missing bytes."""
    from localseek.errors import DiskSpaceError
    from localseek.models.hub import Hub
    from localseek.models.listing import RemoteFile

    sha = _big_repo(hub, served)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    size = served["big"].stat().st_size
    rf = RemoteFile(path=served["big"].name, size=size, sha256=sha)
    blobs = cache(tmp_path) / "models--unsloth--DeepSeek-R1-Distill-Qwen-7B-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    monkeypatch.setattr("localseek.models.hub.free_space", lambda p: 15 * MiB)
    h = Hub(endpoint=hub.url)
    with pytest.raises(DiskSpaceError, match=r"needs 19\.6 MiB more and 15\.0 MiB is free"):
        h.check_disk("unsloth/DeepSeek-R1-Distill-Qwen-7B-GGUF", "c" * 40, [rf])
    (blobs / f"{sha}.incomplete").write_bytes(served["big"].read_bytes()[: 10 * MiB])
    assert h.check_disk("unsloth/DeepSeek-R1-Distill-Qwen-7B-GGUF", "c" * 40, [rf]) == size - 10 * MiB


def test_two_concurrent_pulls_do_not_collide(hub: FakeHub, env: dict, served: dict[str, Path],
                                             isolated_home: Path) -> None:
    import select

    sha = hub.repos[R15_REPO].files[R15_FILE].sha256
    hub.faults.stall_after[sha] = 100_000  # hold the first transfer until the second pull is waiting
    procs = []
    try:
        first = subprocess.Popen([*LOCALSEEK, "pull", "deepseek-r1:1.5b"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        procs.append(first)
        assert hub.stalled.wait(timeout=60), "the first pull never started downloading"
        second = subprocess.Popen([*LOCALSEEK, "pull", "deepseek-r1:1.5b"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        procs.append(second)
        said = b""
        deadline = time.monotonic() + 60
        while b"waiting" not in said and time.monotonic() < deadline and second.poll() is None:
            ready, _, _ = select.select([second.stderr], [], [], 0.2)
            if ready:
                said += os.read(second.stderr.fileno(), 4096)
        hub.release.set()
        _o1, err1 = first.communicate(timeout=120)
        _o2, err2 = second.communicate(timeout=120)
    finally:
        hub.release.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
    err2 = said + err2
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert b"Another pull of r1-distill-qwen-1.5b:Q4_K_M is running (process " in err2
    assert b"already installed" in err2
    assert len(downloads(hub)) == 1  # the bytes were fetched once
    model = registry(isolated_home)["r1-distill-qwen-1.5b:Q4_K_M"]
    assert sha256(Path(model["files"][0]["path"])) == sha256(served["single"])


# ───────────────────────────── errors from the Hub ─────────────────────────────

def test_gated_repo_asks_to_log_in_and_works_with_a_token(served: dict[str, Path], env: dict) -> None:
    hub = FakeHub(tokens={TOKEN})
    try:
        env = dict(env, HF_ENDPOINT=hub.url)
        hub.add(make_repo("someone/Gated-GGUF", {"m-Q4_K_M.gguf": served["single"]}, gated=True))
        line = one_error_line(cli(env, "pull", "someone/Gated-GGUF"))
        assert f"is gated: accept its terms at {hub.url}/someone/Gated-GGUF" in line and "hf auth login" in line
        line = one_error_line(cli(env, "pull", "someone/Gated-GGUF", HF_TOKEN="hf_not_accepted_yet"))
        assert "your Hugging Face token has no access yet" in line and "hf_not_accepted_yet" not in line
        token_file = Path(env["HF_HOME"]) / "token"  # what `hf auth login` stores
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(TOKEN)
        ok = cli(env, "pull", "someone/Gated-GGUF")
        assert ok.returncode == 0, ok.stderr
        assert TOKEN not in ok.stdout + ok.stderr
        assert all(q["auth"] is None for q in hub.requests("cdn"))
    finally:
        hub.stop()


@pytest.mark.parametrize("case", ["404", "429", "500", "offline", "unreachable"])
def test_hub_errors_are_one_clear_line(case: str, hub: FakeHub, env: dict, isolated_home: Path) -> None:
    ref = "deepseek-r1:1.5b"
    extra: dict[str, str] = {}
    if case == "404":
        ref, want = "nobody/No-Such-GGUF", "No repository nobody/No-Such-GGUF on"
    elif case == "429":
        hub.faults.status["/api/models/"] = (429, {"Retry-After": "7"})
        want = "rate-limiting this machine (HTTP 429)"
    elif case == "500":
        hub.faults.status["/api/models/"] = (500, {})
        want = "HTTP 500"
    elif case == "offline":
        extra["HF_HUB_OFFLINE"] = "1"
        want = "HF_HUB_OFFLINE=1 is set and r1-distill-qwen-1.5b:Q4_K_M is not in the Hugging Face cache"
    else:
        hub.stop()
        want = f"Cannot reach the Hugging Face Hub at {hub.url}: offline? behind a proxy? Set HF_ENDPOINT"
    t0 = time.monotonic()
    line = one_error_line(cli(env, "pull", ref, **extra))
    assert want in line, line
    if case == "429":
        assert "try again in 7 s" in line
    assert time.monotonic() - t0 < 30  # no long stack of retries
    assert registry(isolated_home) == {}


def test_token_is_never_printed_even_with_debug(served: dict[str, Path], env: dict) -> None:
    hub = FakeHub(tokens={"hf_other"})
    try:
        hub.add(make_repo("someone/Gated-GGUF", {"m-Q4_K_M.gguf": served["single"]}, gated=True))
        r = cli(dict(env, HF_ENDPOINT=hub.url), "--debug", "pull", "someone/Gated-GGUF", HF_TOKEN=TOKEN)
        assert r.returncode != 0
        assert TOKEN not in r.stdout + r.stderr
    finally:
        hub.stop()


# ───────────────────────────── the HF cache shared with other tools ─────────────────────────────

def _download_with_huggingface_hub(env: dict, repo: str, filename: str) -> str:
    code = ("import sys; from huggingface_hub import hf_hub_download; "
            f"print(hf_hub_download({repo!r}, {filename!r}))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_files_another_tool_fetched_are_reused_verified_and_kept(hub: FakeHub, env: dict,
                                                                 served: dict[str, Path]) -> None:
    other = _download_with_huggingface_hub(env, R15_REPO, R15_FILE)
    cdn_before = len(hub.requests("cdn"))
    r = cli(env, "pull", "deepseek-r1:1.5b", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(hub.requests("cdn")) == cdn_before  # nothing fetched again, not even the header (read locally)
    assert data["downloaded"] == 0 and data["path"] == other
    assert data["files"][0]["preexisting"] and data["files"][0]["sha256"] == sha256(served["single"])
    rm = json.loads(cli(env, "rm", "deepseek-r1:1.5b", "--yes", "--json").stdout)
    assert rm["deleted"] == [] and "before localseek pulled it" in rm["kept"][0]["why"]
    assert Path(other).exists()


def test_offline_pull_registers_what_the_cache_already_has(hub: FakeHub, env: dict) -> None:
    other = _download_with_huggingface_hub(env, R15_REPO, R15_FILE)
    hub.stop()
    refused = one_error_line(cli(env, "pull", "deepseek-r1:1.5b", HF_HUB_OFFLINE="1"))
    assert "cannot be checked against the Hub: pass --no-verify" in refused
    r = cli(env, "pull", "deepseek-r1:1.5b", "--json", "--no-verify", HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["path"] == other and data["source"] == "hf-cache" and data["verified"] is False
    assert data["checked"] == "none" and data["files"][0]["checked"] == "none"
    assert any("not verified" in n for n in data["notes"])
    listed = cli(env, "list")
    assert "nothing (HF cache, offline)" in listed.stdout, listed.stdout


# ───────────────────────────── run pulls on first use ─────────────────────────────

def test_run_pulls_on_first_use_with_yes(hub: FakeHub, env: dict) -> None:
    refused = one_error_line(cli(env, "run", "deepseek-r1:1.5b", "hello"))
    assert "not installed" in refused and "--yes" in refused
    assert not hub.requests("cdn")
    r = cli(env, "run", "deepseek-r1:1.5b", "hello", "--temperature", "0", "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout == SCRIPT_ANSWER + "\n" and "Pulled r1-distill-qwen-1.5b:Q4_K_M" in r.stderr


def test_run_asks_on_a_terminal(hub: FakeHub, env: dict) -> None:
    proc, master = spawn(["run", "deepseek-r1:1.5b", "hello", "--temperature", "0"], env)
    try:
        asked = read_until(master, "[Y/n]", timeout=90)
        answered = "Download it" in asked and "[Y/n]" in asked
        if answered:
            os.write(master, b"y\n")
        rest = read_until(master, "\0never shown\0", timeout=90)  # to the end of its output
        assert proc.wait(timeout=30) == 0, asked + rest
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = plain(asked + rest)
    assert answered and "about 1.0 GiB" in text and SCRIPT_ANSWER in text


# ───────────────────────────── original weights ─────────────────────────────

def test_pull_original_verifies_small_files_by_git_hash(hub: FakeHub, env: dict, served: dict[str, Path]) -> None:
    hub.add(make_repo("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", {
        "config.json": served["config"], "model.safetensors": served["weights"], "README.md": served["config"],
        "figures/benchmark.json": served["config"],
    }))
    r = cli(env, "pull", "deepseek-r1:1.5b", "--original", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "r1-distill-qwen-1.5b:original" and data["kind"] == "original"
    by_path = {f["repo_path"]: f for f in data["files"]}
    assert set(by_path) == {"config.json", "model.safetensors"}  # top-level weights and configs only
    assert by_path["config.json"]["git_oid"] and by_path["model.safetensors"]["sha256"]
    assert by_path["config.json"]["checked"] == "git-sha1" and by_path["model.safetensors"]["checked"] == "sha256"
    assert data["verified"] and data["checked"] == "sha256+git-sha1"
    assert Path(data["path"]).is_dir() and (Path(data["path"]) / "config.json").exists()
    line = one_error_line(cli(env, "run", "r1-distill-qwen-1.5b:original", "hi"))
    assert "original safetensors weights" in line


def test_pull_original_and_quantize_registers_a_runnable_gguf(hub: FakeHub, env: dict, tmp_path: Path,
                                                               isolated_home: Path) -> None:
    from hf_factory import write_qwen2

    src = write_qwen2(tmp_path / "hf-src")
    hub.add(make_repo("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", {p.name: p for p in src.iterdir()}))
    r = cli(env, "pull", "deepseek-r1:1.5b", "--quantize", "q8_0", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["name"] == "r1-distill-qwen-1.5b:Q8_0-converted" and data["source"] == "converted"
    out = Path(data["path"])
    assert out.parent == isolated_home / "models" and out.suffix == ".gguf"
    names = {m["name"] for m in json.loads(cli(env, "list", "--json").stdout)}
    assert names == {"r1-distill-qwen-1.5b:original", "r1-distill-qwen-1.5b:Q8_0-converted"}
    info = json.loads(cli(env, "show", "r1-distill-qwen-1.5b:Q8_0-converted", "--json").stdout)
    assert info["architecture"] == "qwen2" and info["quant"] == "Q8_0"
    ran = cli(env, "run", "r1-distill-qwen-1.5b:Q8_0-converted", "hello", "-n", "4", "--temperature", "0", "--json")
    # Random weights are still reasoning after 4 tokens: no answer (exit 3), but loaded and generating.
    assert ran.returncode in (0, 3) and json.loads(ran.stdout)["stats"]["generated_tokens"] == 4, ran.stderr
    bad = one_error_line(cli(env, "pull", "deepseek-r1:1.5b", "--quantize", "Q9_Z"))
    assert "Q9_Z" in bad and "original weights stay installed" in bad


def test_pull_takes_v4_s_mtp_file_and_run_drafts_with_it(hub: FakeHub, env: dict, tmp_path: Path,
                                                        isolated_home: Path) -> None:
    """A DeepSeek-V4 GGUF repo with an `mtp-` file beside the model (llama.cpp's layout): one model to pull, the MTP
    file comes with it (and counts in the plan's download), and `run` drafts with it."""
    import hf_factory

    from quantize import convert

    src = hf_factory.write_deepseek_v4(tmp_path / "hf")
    made = tmp_path / "made"
    main, mtp = made / "DeepSeek-V4-Tiny-MXFP4_MOE.gguf", made / "mtp-DeepSeek-V4-Tiny-MXFP4_MOE.gguf"
    convert(src, main, qtype="MXFP4_MOE")
    convert(src, mtp, qtype="MXFP4_MOE", mtp_only=True)
    repo = "ggml-org/DeepSeek-V4-Tiny-GGUF"
    hub.add(make_repo(repo, {main.name: main, mtp.name: mtp}))

    planned = cli(env, "plan", repo, "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["source"]["files"] == [main.name, mtp.name]
    r = cli(env, "pull", repo, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [Path(f["path"]).name for f in data["files"]] == [main.name, mtp.name]
    assert Path(data["path"]).name == main.name
    assert data["downloaded"] == main.stat().st_size + mtp.stat().st_size
    ran = cli(env, "run", repo, "hello", "-n", "8", "--json", "--threads", "1", "--ctx", "64")
    assert ran.returncode in (0, 3), ran.stderr  # 3: the tiny model is still reasoning after 8 tokens
    assert json.loads(ran.stdout)["stats"]["drafted"] > 0
    off = cli(env, "run", repo, "hello", "-n", "8", "--json", "--threads", "1", "--ctx", "64", "--no-mtp")
    assert "drafted" not in json.loads(off.stdout)["stats"]


def test_pull_original_v4_and_quantize_writes_its_mtp_file(hub: FakeHub, env: dict, tmp_path: Path,
                                                          isolated_home: Path) -> None:
    """Converting V4's originals also writes the MTP file (the model file has no room for the block), registers it
    with the model, and `run` drafts with it."""
    import hf_factory

    src = hf_factory.write_deepseek_v4(tmp_path / "hf-v4")
    repo = "someone/DeepSeek-V4-Tiny"
    hub.add(make_repo(repo, {p.name: p for p in src.iterdir()}))
    r = cli(env, "pull", repo, "--original", "--quantize", "MXFP4_MOE", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    names = [Path(f["path"]).name for f in data["files"]]
    assert names == ["someone--DeepSeek-V4-Tiny-MXFP4_MOE.gguf", "someone--DeepSeek-V4-Tiny-MTP-MXFP4_MOE.gguf"]
    assert all(Path(f["path"]).parent == isolated_home / "models" for f in data["files"])
    ran = cli(env, "run", data["name"], "hello", "-n", "8", "--json", "--threads", "1", "--ctx", "64")
    assert ran.returncode in (0, 3), ran.stderr
    assert json.loads(ran.stdout)["stats"]["drafted"] > 0
