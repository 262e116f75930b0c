"""Several machines for real: `localseek worker` processes (llama.cpp's RPC server) on loopback and in network
namespaces, a main process that splits a tiny model across them. Greedy output must be token-for-token the same as
on one machine (MTP drafting too); a worker killed or cut off mid-generation must end the main process with one line
and exit code 2 within the timeout; an unreachable worker must be reported before any timeout runs out."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf
from factory import TinyConfig, write_qwen2_gguf
from rpcworkers import cut, free_port, namespaces, netns_works, require_rpc, worker

from localseek.errors import WorkerError
from localseek.models.gguf_info import read_gguf
from localseek.planning import cluster, hardware
from localseek.planning import rpc as plan_rpc
from localseek.planning.footprint import from_gguf
from localseek.planning.plan import Plan, Request
from localseek.runtime import rpc, speculative
from localseek.runtime.engine import Engine, captured_log
from localseek.runtime.open import load_options
from localseek.runtime.options import LoadOptions, Sampling, SpecStats
from localseek.sizes import MiB

pytestmark = pytest.mark.timeout(240)
GREEDY = Sampling(temperature=0.0)
PROMPT = "<｜User｜>hello<｜Assistant｜>"
# This machine as the plan sees it: about as much room for layers as each worker offers (--mem 512M), so a
# six-layer model is shared out in thirds.
HERE = hardware.simulated(ram=1216 * MiB, cores=1)


@pytest.fixture(scope="module", autouse=True)
def _rpc() -> None:
    require_rpc()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rpc-models")
    return {
        "ds-random": write_deepseek2_gguf(d / "ds-random.gguf", TinyDeepseekConfig(n_layer=6, weights="random", seed=3)),
        "ds-scripted": write_deepseek2_gguf(d / "ds-scripted.gguf", TinyDeepseekConfig(n_layer=6)),
        "qw-loop": write_qwen2_gguf(d / "qw-loop.gguf", TinyConfig(n_layer=6, loop_reasoning=True)),
    }


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    """Two workers on loopback, shared by the tests that leave them running."""
    with worker("--mem", "512M") as a, worker("--mem", "512M") as b:
        yield a.endpoint, b.endpoint


def cluster_plan(path: Path, endpoints: tuple[str, ...], *, mtp: bool = False) -> Plan:
    hw = replace(HERE, workers=plan_rpc.probe_all(endpoints))
    plan = cluster.plan(from_gguf(read_gguf(path)), hw, Request(n_ctx=512, threads=1, load_mtp=mtp))
    assert plan.fits, plan.problem
    return plan


def tokens(engine: Engine, n: int = 40, spec: SpecStats | None = None) -> list[int]:
    out: list[int] = []
    for tok in engine.generate_tokens(engine.tokenize(PROMPT), GREEDY, spec_stats=spec):
        out.append(tok)
        if len(out) >= n or engine.is_eog(tok):
            break
    return out


def local(path: Path, plan: Plan, *, mtp: bool = False) -> list[int]:
    """The same model with the plan's settings (flash attention, batch sizes, threads), all on this machine."""
    options = replace(load_options(plan), n_gpu_layers=0, rpc_devices=(), tensor_split=(), tensor_overrides=(),
                      load_mtp=mtp)
    engine = Engine.load(path, options, drafter=speculative.mtp_drafter(3, fixed=True) if mtp else None)
    try:
        return tokens(engine)
    finally:
        engine.close()


def test_worker_speaks_the_pinned_protocol_and_offers_what_it_has(pair: tuple[str, str]) -> None:
    w = plan_rpc.probe(pair[0])
    assert w.version == plan_rpc.PROTOCOL  # the constant localseek compares against is this build's
    (dev,) = w.devices
    assert dev.free == 512 * MiB and dev.honest  # --mem, not ggml's "all of RAM is free"
    assert dev.total == hardware.memory().total


@pytest.mark.parametrize("name", ["ds-random", "ds-scripted"])
def test_split_across_two_workers_gives_the_same_tokens(models: dict[str, Path], pair: tuple[str, str],
                                                         name: str) -> None:
    path = models[name]
    plan = cluster_plan(path, pair)
    want = local(path, plan)
    here = min(s.layers[0] for s in plan.remote)
    assert [s.endpoint for s in plan.remote] == list(pair) and here >= 1  # this machine and both workers compute
    engine = Engine.load(path, load_options(plan))
    try:
        log = captured_log()
        for i, share in enumerate(plan.remote):  # llama.cpp put the layers where the plan said
            assert re.search(rf"RPC\d+\[{re.escape(share.endpoint)}\] model buffer size", log) or \
                f"RPC{i}" in log, log[-3000:]
        assert "tensor output.weight" in log and "overridden to CPU" in log  # the output head stayed here
        got = tokens(engine)
        sent = rpc.traffic(pair)
    finally:
        engine.close()
    assert got == want and len(got) >= 10
    assert set(sent) == set(pair) and all(s > 0 and r > 0 for s, r in sent.values())


def test_mtp_drafting_across_workers_is_still_identical(models: dict[str, Path], pair: tuple[str, str]) -> None:
    path = models["ds-scripted"]
    plan = cluster_plan(path, pair, mtp=True)
    want = local(path, plan)
    assert plan.remote[-1].layers[-1] == 6  # the MTP block is on the last worker
    engine = Engine.load(path, load_options(plan), drafter=speculative.mtp_drafter(3, fixed=True))
    try:
        spec = SpecStats()
        got = tokens(engine, spec=spec)
    finally:
        engine.close()
    assert got == want and spec.drafted > 0 and spec.accepted / spec.drafted > 0.8


def test_a_model_after_workers_stays_on_this_machine(models: dict[str, Path], pair: tuple[str, str]) -> None:
    """Once workers are registered llama.cpp would use them for every model: a local load names no worker."""
    assert set(pair) <= set(rpc.attached())
    engine = Engine.load(models["ds-random"], LoadOptions(n_ctx=512, n_threads=1))
    try:
        assert "RPC" not in captured_log().split("load_tensors:", 1)[-1][:4000]
    finally:
        engine.close()


def cli(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "localseek", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, **env))


def generating(proc: subprocess.Popen, timeout: float = 60) -> bytes:
    """Wait until the main process streams reasoning (to stderr with --show-thinking); what it wrote so far."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            seen += os.read(fd, 65536)
        if seen.count(b"Hmm") >= 3:
            return seen
    proc.kill()
    raise AssertionError(f"no generation: {seen[-2000:]!r}")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    """Wait for the main process to end by itself; (exit code, stderr, seconds waited)."""
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the main process hung: {err[-2000:]!r}") from None
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - start


RUN = ("run", "--temperature", "0", "--max-tokens", "100000", "--show-thinking", "--ctx", "4096")


@pytest.mark.parametrize("how", ["kill -9", "kill -STOP"])
def test_a_worker_that_dies_mid_generation_ends_the_run_with_one_line(models: dict[str, Path], how: str) -> None:
    with worker("--mem", "512M") as a, worker("--mem", "512M") as b:
        proc = cli(*RUN, str(models["qw-loop"]), "hello", "--rpc", f"{a.endpoint},{b.endpoint}",
                   LOCALSEEK_RAM_BYTES=str(1216 * MiB), LOCALSEEK_RPC_TIMEOUT="2")
        generating(proc)
        b.kill(signal.SIGKILL if how == "kill -9" else signal.SIGSTOP)
        rc, err, took = finish(proc, 30)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err and "core dumped" not in err, err[-2000:]
    assert last.startswith(f"error: worker {b.endpoint} ")
    if how == "kill -9":  # the kernel closes the dead worker's socket: noticed at once
        assert "dropped the connection" in last and took < 3
    else:  # a stopped worker says nothing: the read timeout ends the wait
        assert "sent nothing for 2s" in last and took < 2 + 5


def test_unreachable_and_wrong_workers_are_one_line_errors(models: dict[str, Path]) -> None:
    port = free_port()
    start = time.monotonic()
    proc = cli("run", str(models["ds-random"]), "hi", "--rpc", f"127.0.0.1:{port}")
    rc, err, _ = finish(proc, 60)
    assert rc == 2 and err.strip() == (
        f"error: worker 127.0.0.1:{port}: connection refused: nothing listens on port {port} there; start "
        f"`localseek worker --port {port}` on that machine (with --host for a LAN address).")
    assert time.monotonic() - start < 30  # no timeout involved, only the interpreter's start
    for bad in ("nohost:1:2", "a:b"):
        rc, err, _ = finish(cli("run", str(models["ds-random"]), "hi", "--rpc", bad), 60)
        assert rc == 2 and err.count("\n") == 1 and "HOST:PORT" in err


def test_worker_command_line(tmp_path: Path) -> None:
    with worker("--cache", str(tmp_path / "cache"), host="127.0.0.1") as w:
        assert any("offers" in line for line in w.log) and any(line.startswith("listening on") for line in w.log)
        assert not any("warning" in line for line in w.log)  # loopback: no warning
        assert (tmp_path / "cache").is_dir()
        busy = subprocess.run([sys.executable, "-m", "localseek", "worker", "--port", w.endpoint.split(":")[1]],
                              capture_output=True, text=True, timeout=60, check=False)
        assert busy.returncode == 2 and busy.stderr.startswith("error: cannot listen on 127.0.0.1:")
        w.proc.send_signal(signal.SIGINT)
        assert w.proc.wait(10) == 0
        assert w.proc.stdout is not None and b"worker stopped" in w.proc.stdout.read()
    for args, words in ((["--host", "my-box"], "IPv4 address"), (["--mem", "1M"], "--mem below 256M")):
        r = subprocess.run([sys.executable, "-m", "localseek", "worker", *args], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1


def test_tcp_info_counts_bytes() -> None:
    """The byte counters `rpc.traffic` reads (struct tcp_info offsets) are the kernel's."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"x" * 100_000)
    got = 0
    while got < 100_000:
        got += len(conn.recv(65536))
    conn.sendall(b"y" * 777)
    client.recv(777, socket.MSG_WAITALL)
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    assert rpc.traffic((endpoint,)) == {endpoint: (100_000, 777)}
    for s in (client, conn, server):
        s.close()


needs_netns = pytest.mark.skipif(not netns_works(), reason="needs root and `ip netns` (network namespaces)")


@needs_netns
def test_workers_on_their_own_addresses_and_a_cut_link(models: dict[str, Path]) -> None:
    """Each worker in its own network namespace behind a veth pair: the model is split over a real network path,
    gives the same tokens; then one link goes down (no FIN, no RST) and the read timeout ends the run."""
    path = models["ds-random"]
    with namespaces(2) as (na, nb), ExitStack() as stack:
        a = stack.enter_context(worker("--mem", "512M", host=na.address, port=50052, netns=na.name))
        b = stack.enter_context(worker("--mem", "512M", host=nb.address, port=50052, netns=nb.name))
        assert any("warning: the RPC protocol has no authentication" in line and "ssh -N -L 50052:127.0.0.1:50052"
                   in line for line in a.log)
        sent = subprocess.run(
            [sys.executable, "-m", "localseek", "run", str(path), "hello", "--temperature", "0", "--max-tokens", "12",
             "--json", "--rpc", f"{a.endpoint},{b.endpoint}", "--verbose"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, LOCALSEEK_RAM_BYTES=str(1216 * MiB)),
            check=False)
        assert sent.returncode == 0, sent.stderr[-3000:]
        assert f"on {a.endpoint}" in sent.stderr and f"on {b.endpoint}" in sent.stderr  # the plan line
        got_plan = cluster_plan(path, (a.endpoint, b.endpoint))
        want = local(path, got_plan)
        engine = Engine.load(path, load_options(got_plan))
        try:
            assert tokens(engine) == want
        finally:
            engine.close()
        proc = cli(*RUN, str(models["qw-loop"]), "hello", "--rpc", f"{a.endpoint},{b.endpoint}",
                   LOCALSEEK_RAM_BYTES=str(1216 * MiB), LOCALSEEK_RPC_TIMEOUT="2")
        generating(proc)
        cut(nb)
        rc, err, took = finish(proc, 30)
        assert rc == 2 and err.strip().splitlines()[-1].startswith(f"error: worker {b.endpoint} sent nothing for 2s")
        assert took < 2 + 5


@needs_netns
def test_an_address_where_nobody_answers_fails_within_the_connect_timeout(models: dict[str, Path]) -> None:
    with namespaces(1) as (ns,):
        # on the link, but no host has them: connects go unanswered (until ARP gives up, after 3 s)
        nobody, nobody_else = (ns.address.rsplit(".", 1)[0] + f".{n}" for n in (99, 98))
        start = time.monotonic()
        with pytest.raises(WorkerError) as err:
            plan_rpc.probe(f"{nobody}:50052", connect_s=1.5)
        assert time.monotonic() - start < 1.5 + 0.5
        assert "no answer to a connection within 1.5s" in str(err.value)
        proc = cli("run", str(models["ds-random"]), "hi", "--rpc", f"{nobody_else}:50052", LOCALSEEK_RPC_TIMEOUT="2")
        rc, err_text, _ = finish(proc, 60)
        assert rc == 2 and "no answer to a connection within 2s" in err_text and err_text.count("\n") == 1


def test_plan_shows_live_workers(models: dict[str, Path], pair: tuple[str, str]) -> None:
    """LOCALSEEK_RPC stands for --rpc."""
    r = subprocess.run([sys.executable, "-m", "localseek", "plan", str(models["ds-random"])],
                       capture_output=True, text=True, timeout=120, check=False,
                       env=dict(os.environ, COLUMNS="200", LOCALSEEK_RAM_BYTES=str(1216 * MiB),
                                LOCALSEEK_RPC=",".join(pair)))
    assert r.returncode == 0, r.stderr
    assert f"worker {pair[0]}" in r.stdout and "round trip" in r.stdout and "output head" in r.stdout
    assert f"--rpc {pair[0]},{pair[1]}" in r.stdout

