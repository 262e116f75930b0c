"""Plan before you download (issue 18): a catalog model's or Hub GGUF's header is read with HTTP range requests from
a Hub on 127.0.0.1 (tests/hub_server.py), all parts of a split model, cached under LOCALSEEK_HOME, and planned
exactly as the same file on disk would be; `models` uses cached headers; `pull` shows the plan and asks before a
download that will not fit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from factory import TinyConfig, write_qwen2_gguf
from hub_server import FakeHub, make_repo
from ptyio import plain, read_until, spawn

LOCALSEEK = [sys.executable, "-m", "localseek"]
MiB = 1024 * 1024
R7_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF"  # the catalog's second source for deepseek-r1:7b
R7_FILE = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"
R15_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R15_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("remote-plan")
    # a header of ~3 MiB (DeepSeek's vocabulary makes theirs several MB): more than the first read
    big_header = write_qwen2_gguf(d / R7_FILE, TinyConfig(header_padding=3 * MiB))
    # 20 MiB of weights behind a small header: the plan must not need them
    (d / "heavy").mkdir()
    heavy = write_qwen2_gguf(d / "heavy" / R15_FILE, TinyConfig(weights="random", n_layer=5, n_embd=256, n_ff=1024,
                                                               seed=3))
    split_dir = d / "split"
    split_dir.mkdir()
    first = write_qwen2_gguf(split_dir / "DeepSeek-R1-UD-IQ1_S.gguf", TinyConfig(split_max_tensors=10))
    out = {"big_header": big_header, "heavy": heavy, "tiny": tiny_gguf}
    out.update({f"part{i + 1}": p for i, p in enumerate(sorted(first.parent.glob("DeepSeek-R1-UD-IQ1_S-*.gguf")))})
    return out


@pytest.fixture
def hub(files: dict[str, Path]) -> Iterator[FakeHub]:
    h = FakeHub()
    h.add(make_repo(R7_REPO, {R7_FILE: files["big_header"]}))
    h.add(make_repo(R15_REPO, {R15_FILE: files["heavy"]}))
    h.add(make_repo("unsloth/DeepSeek-R1-GGUF", {f"DeepSeek-R1-UD-IQ1_S/{files[k].name}": files[k]
                                                 for k in ("part1", "part2", "part3")}))
    yield h
    h.stop()


@pytest.fixture
def env(hub: FakeHub) -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
             HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", COLUMNS="200")
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "HF_TOKEN"):
        e.pop(k, None)
    return e


def cli(env: dict[str, str], *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LOCALSEEK, *args], env=dict(env, **extra), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def ranges(hub: FakeHub) -> list[tuple[int, int]]:
    """(first, last) of every CDN request; an unbounded one (a download) fails the test."""
    out = []
    for req in hub.requests("cdn"):
        rng = req["range"] or ""
        first, _, last = rng.removeprefix("bytes=").partition("-")
        assert first.isdigit() and last.isdigit(), f"not a bounded range read: {req}"
        out.append((int(first), int(last)))
    return out


def comparable(data: dict) -> tuple[dict, dict]:
    return data["model"], data["plan"]


def test_plan_before_a_download_is_the_plan_of_the_file(hub: FakeHub, env: dict, files: dict[str, Path],
                                                         isolated_home: Path) -> None:
    remote = cli(env, "plan", "deepseek-r1:7b", "--json", "--ram", "16GiB", "--vram", "0")
    assert remote.returncode == 0, remote.stderr
    assert "Read the header of " + R7_FILE + " from the Hub" in remote.stderr
    data = json.loads(remote.stdout)
    assert data["source"] == {"installed": False, "repo": R7_REPO, "commit": hub.repos[R7_REPO].commit,
                              "files": [R7_FILE], "header_cached": False}
    local = json.loads(cli(env, "plan", str(files["big_header"]), "--json", "--ram", "16GiB", "--vram", "0").stdout)
    assert comparable(data) == comparable(local)  # planned exactly as the file on disk
    assert data["model"]["file_bytes"] == files["big_header"].stat().st_size
    read = ranges(hub)
    assert len(read) >= 2 and read[0] == (0, MiB - 1)  # the header outgrew the first read: more was fetched
    assert sum(b - a + 1 for a, b in read) >= 3 * MiB
    assert not list(Path(os.environ["HF_HOME"]).rglob("*.gguf"))  # nothing downloaded
    assert not (isolated_home / "registry.json").exists()

    # cached: offline, with the Hub gone, the same plan
    hub.stop()
    again = cli(env, "plan", "deepseek-r1:7b", "--json", "--ram", "16GiB", "--vram", "0", HF_HUB_OFFLINE="1")
    assert again.returncode == 0, again.stderr
    cached = json.loads(again.stdout)
    assert comparable(cached) == comparable(data) and cached["source"]["header_cached"]
    table = cli(env, "plan", "deepseek-r1:7b", HF_HUB_OFFLINE="1")
    assert table.stdout.splitlines()[0].startswith("r1-distill-qwen-7b:Q4_K_M · qwen2")
    assert "Not downloaded yet: `localseek pull deepseek-r1:7b` fetches it" in table.stdout


def test_a_few_bytes_of_a_large_file(hub: FakeHub, env: dict, files: dict[str, Path]) -> None:
    r = cli(env, "plan", f"hf.co/{R15_REPO}:Q4_K_M", "--json")
    assert r.returncode == 0, r.stderr
    read = ranges(hub)
    size = files["heavy"].stat().st_size
    assert size > 15 * MiB and sum(b - a + 1 for a, b in read) <= MiB
    assert json.loads(r.stdout)["model"]["file_bytes"] == size


def test_every_part_of_a_split_model(hub: FakeHub, env: dict, files: dict[str, Path]) -> None:
    r = cli(env, "plan", "r1", "--json", "--ram", "16GiB", "--vram", "0")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    parts = [files[k] for k in ("part1", "part2", "part3")]
    assert data["source"]["files"] == [f"DeepSeek-R1-UD-IQ1_S/{p.name}" for p in parts]
    assert data["model"]["file_bytes"] == sum(p.stat().st_size for p in parts)
    local = json.loads(cli(env, "plan", str(parts[1]), "--json", "--ram", "16GiB", "--vram", "0").stdout)
    assert comparable(data) == comparable(local)
    assert len({req["path"].split("?")[0] for req in hub.requests("cdn")}) == 3  # each part's header was read


def test_models_plans_from_cached_headers_and_says_so(hub: FakeHub, env: dict, files: dict[str, Path]) -> None:
    before = {m["id"]: m for m in json.loads(cli(env, "models", "--json").stdout)["models"]}
    assert before["r1-distill-qwen-7b"]["planned_from"] == "catalog"
    assert cli(env, "plan", "deepseek-r1:7b").returncode == 0
    after = {m["id"]: m for m in json.loads(cli(env, "models", "--json", HF_HUB_OFFLINE="1").stdout)["models"]}
    row = after["r1-distill-qwen-7b"]
    assert row["planned_from"] == "header" and row["size"] == files["big_header"].stat().st_size
    assert row["memory_needed"] != before["r1-distill-qwen-7b"]["memory_needed"]
    assert after["r1-distill-qwen-14b"]["planned_from"] == "catalog"
    table = cli(env, "models", HF_HUB_OFFLINE="1").stdout
    line = next(ln for ln in table.splitlines() if ln.lstrip().startswith("r1-distill-qwen-7b "))
    assert " header " in line


def test_offline_with_nothing_cached_says_what_to_do(env: dict) -> None:
    r = cli(env, "plan", "deepseek-r1:7b", HF_HUB_OFFLINE="1")
    assert r.returncode == 2 and "HF_HUB_OFFLINE" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_pull_shows_the_plan_and_refuses_what_will_not_fit(hub: FakeHub, env: dict, isolated_home: Path) -> None:
    small = {"LOCALSEEK_RAM_BYTES": "100000"}
    r = cli(env, "pull", "deepseek-r1:1.5b", **small)
    assert r.returncode == 2, r.stderr
    assert "will not fit this machine" in r.stderr and "--force" in r.stderr.strip().splitlines()[-1]
    ranges(hub)  # only header reads: nothing was downloaded
    assert not (isolated_home / "registry.json").exists()
    ran = cli(env, "run", "deepseek-r1:1.5b", "hi", "--yes", **small)
    assert ran.returncode == 2 and "will not fit" in ran.stderr
    ranges(hub)
    forced = cli(env, "pull", "deepseek-r1:1.5b", "--force", **small)
    assert forced.returncode == 0, forced.stderr
    assert "Downloading it anyway" in forced.stderr and "Pulled r1-distill-qwen-1.5b:Q4_K_M" in forced.stderr


def test_pull_says_it_fits_before_downloading(hub: FakeHub, env: dict) -> None:
    r = cli(env, "pull", "deepseek-r1:1.5b")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    fits = next(i for i, ln in enumerate(lines) if "fits this machine: ctx " in ln)
    pulled = next(i for i, ln in enumerate(lines) if ln.startswith("Pulled "))
    assert fits < pulled and "planned from its header on the Hub" in lines[fits]


def test_pull_asks_on_a_terminal_before_a_download_that_will_not_fit(hub: FakeHub, env: dict,
                                                                       isolated_home: Path) -> None:
    proc, master = spawn(["pull", "deepseek-r1:1.5b"], dict(env, LOCALSEEK_RAM_BYTES="100000"))
    try:
        asked = read_until(master, "[y/N]", timeout=90)
        if "[y/N]" in asked:
            os.write(master, b"n\n")
        rest = read_until(master, "\0never shown\0", timeout=60)
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = plain(asked + rest)
    assert "will not fit this machine" in text and "anyway? [y/N]" in text, text
    assert code == 2 and "Not downloaded" in text
    assert not (isolated_home / "registry.json").exists()
    shutil.rmtree(isolated_home / "headers")  # the header cache is all that was written
