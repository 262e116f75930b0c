"""Planning across machines (planning/cluster.py) with simulated workers, and asking workers what they offer
(planning/rpc.py) against small fake servers on loopback. No llama.cpp RPC build needed."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from localseek.errors import UsageError, WorkerError
from localseek.models.gguf_info import read_gguf
from localseek.planning import cluster, hardware
from localseek.planning import rpc as plan_rpc
from localseek.planning.footprint import Footprint, from_gguf
from localseek.planning.plan import Plan, Request
from localseek.runtime.open import load_options, plan_beside
from localseek.sizes import GiB, MiB

MAIN = hardware.simulated(ram=64 * GiB, cores=16)


def cluster_of(ram: int, workers: str) -> hardware.Hardware:
    return replace(hardware.simulated(ram=ram, cores=16), workers=plan_rpc.simulated(workers), simulated=True)


@pytest.fixture(scope="module")
def r1_q2k(inventories) -> Footprint:
    return from_gguf(read_gguf(inventories["DeepSeek-R1-Q2_K"]))  # 244 GB: more than any one of these machines


def llama_cpp_assignment(n_layer_all: int, ngl: int, split: tuple[float, ...]) -> list[int]:
    """llama.cpp's `load_tensors` (src/llama-model.cpp), in its float arithmetic: the device index of every layer
    slot (n_layer_all = the output head), -1 for this machine's CPU."""
    splits = np.zeros(len(split), dtype=np.float32)
    acc = np.float32(0)
    for i, s in enumerate(split):
        acc = np.float32(acc + np.float32(s))
        splits[i] = acc
    splits = (splits / acc).astype(np.float32)
    start, act = max(n_layer_all + 1 - ngl, 0), min(ngl, n_layer_all + 1)
    out = []
    for il in range(n_layer_all + 1):
        if il < start or il - start >= act:
            out.append(-1)
        else:
            x = np.float32(il - start) / np.float32(act)
            out.append(int(np.searchsorted(splits, x, side="right")))
    return out


def check_consistent(fp: Footprint, plan: Plan) -> None:
    """What llama.cpp will do with the plan's n_gpu_layers and tensor_split is exactly the plan's placement."""
    placed = llama_cpp_assignment(fp.n_layer_all, plan.n_gpu_layers, plan.tensor_split)
    for device, share in enumerate(plan.remote):
        assert [il for il, d in enumerate(placed) if d == device and il < fp.n_layer_all] == list(share.layers)
    here = [il for il, d in enumerate(placed) if d == -1]
    first = min(s.layers[0] for s in plan.remote)
    assert here == list(range(first))
    assert placed[fp.n_layer_all] == len(plan.remote) - 1  # the output slot goes with the last device …
    assert plan.overrides == (cluster.OUTPUT_OVERRIDE,)  # … and its tensors come back here by override


def test_r1_across_four_machines(r1_q2k: Footprint, inventories) -> None:
    hw = cluster_of(64 * GiB, "192.168.1.20=128GiB,192.168.1.21=128GiB,192.168.1.22=64GiB")
    plan = cluster.plan(r1_q2k, hw, Request(n_ctx=8192))
    assert plan.fits and plan.n_ctx == 8192, plan.problem
    assert r1_q2k.weights() > 128 * GiB  # no single machine could hold it
    assert [s.endpoint for s in plan.remote] == ["192.168.1.20:50052", "192.168.1.21:50052", "192.168.1.22:50052"]
    layers = [i for s in plan.remote for i in s.layers]
    first = plan.remote[0].layers[0]
    assert 0 < first and layers == list(range(first, r1_q2k.n_layer_all))  # contiguous, every layer placed once
    for use in (plan.ram, *(s.use for s in plan.remote)):
        assert use.fits and use.total > 0.5 * use.budget  # in proportion: everyone is used, nobody overflows
    free = [1 - u.total / u.budget for u in (plan.ram, *(s.use for s in plan.remote))]
    assert max(free) - min(free) < 0.08  # each keeps about the same share free (within a layer's rounding)
    assert plan.ram.weights >= r1_q2k.totals["embeddings"] + r1_q2k.totals["output"]
    check_consistent(r1_q2k, plan)
    names = [t.name for t in read_gguf(inventories["DeepSeek-R1-Q2_K"]).tensors]
    import re

    assert {n for n in names if re.search(cluster.OUTPUT_OVERRIDE, n)} == {"output.weight", "output_norm.weight"}
    opts = load_options(plan)
    assert opts.rpc_devices == tuple((s.endpoint, 0) for s in plan.remote)
    assert opts.tensor_split == plan.tensor_split and opts.tensor_overrides == ((cluster.OUTPUT_OVERRIDE, "CPU"),)
    reasons = {r.setting: r for r in plan.reasons}
    assert reasons["split"].value == "4 machines" and "output head" in reasons
    assert "network" in reasons and "what-if" in reasons["network"].why
    assert "planned for a simulated machine (what-if), not this one" in plan.warnings
    assert not any("fits on this machine alone" in w for w in plan.warnings)


def test_refused_when_the_sum_does_not_fit(r1_q2k: Footprint) -> None:
    hw = cluster_of(64 * GiB, "192.168.1.20=64GiB,192.168.1.21=64GiB,192.168.1.22=32GiB")
    plan = cluster.plan(r1_q2k, hw, Request(n_ctx=8192))
    assert not plan.fits
    assert "this machine and 3 workers offer" in plan.problem and "another worker" in plan.problem
    assert "192.168.1.22:50052" in plan.problem and "--force" in plan.problem
    assert plan.n_ctx == 8192  # not even the smallest context fits: the refusal speaks of what was asked
    forced = cluster.plan(r1_q2k, hw, Request(n_ctx=8192, force=True))
    assert forced.forced and forced.remote  # --force keeps a proportional split to try


def test_context_shrinks_to_what_the_cluster_holds(r1_q2k: Footprint) -> None:
    hw = cluster_of(64 * GiB, "192.168.1.20=114GiB,192.168.1.21=64GiB")
    plan = cluster.plan(r1_q2k, hw, Request(n_ctx=163840))
    assert plan.fits and 1024 <= plan.n_ctx < 163840
    assert any("context reduced" in w for w in plan.warnings)
    check_consistent(r1_q2k, plan)


def test_a_worker_that_cannot_tell_free_memory_keeps_headroom(r1_q2k: Footprint) -> None:
    honest = plan_rpc.Worker("10.0.0.2:50052", (plan_rpc.RemoteDevice(0, 100 * GiB, 128 * GiB),))
    blind = plan_rpc.Worker("10.0.0.3:50052", (plan_rpc.RemoteDevice(0, 128 * GiB, 128 * GiB),))
    plan = cluster.plan(r1_q2k, replace(MAIN, workers=(honest, blind)))
    budgets = {s.endpoint: s.use.budget for s in plan.remote}
    assert budgets["10.0.0.2:50052"] == 100 * GiB  # a localseek worker already kept its headroom
    assert budgets["10.0.0.3:50052"] == 126 * GiB  # ggml's CPU device says all RAM is free: 2 GiB kept back
    why = {r.setting: r.why for r in plan.reasons}
    assert "kept back" in why["10.0.0.3:50052"] and "kept back" not in why["10.0.0.2:50052"]


def test_small_model_still_splits_and_mtp_slot_follows(tmp_path: Path) -> None:
    from deepseek_factory import TinyDeepseekConfig, write_deepseek2_gguf

    fp = from_gguf(read_gguf(write_deepseek2_gguf(tmp_path / "ds.gguf", TinyDeepseekConfig(n_layer=6))))
    hw = replace(hardware.simulated(ram=int(0.7 * GiB), cores=2), workers=(
        plan_rpc.Worker("127.0.0.1:1", (plan_rpc.RemoteDevice(0, 600 * MiB, 900 * MiB),)),
        plan_rpc.Worker("127.0.0.1:2", (plan_rpc.RemoteDevice(0, 600 * MiB, 900 * MiB),)),
    ))
    for mtp in (False, True):
        plan = cluster.plan(fp, hw, Request(n_ctx=512, load_mtp=mtp))
        assert plan.fits and len(plan.remote) == 2
        check_consistent(fp, plan)
        assert plan.remote[-1].layers[-1] == fp.n_layer_all - 1  # the MTP slot rides with the last worker
        assert any("fits on this machine alone" in w for w in plan.warnings)


def test_draft_model_is_planned_on_this_machine_only(r1_q2k: Footprint, tmp_path: Path) -> None:
    from factory import TinyConfig, write_qwen2_gguf

    hw = cluster_of(64 * GiB, "192.168.1.20=128GiB,192.168.1.21=128GiB,192.168.1.22=64GiB")
    main = cluster.plan(r1_q2k, hw, Request(n_ctx=4096))
    draft = plan_beside(main, read_gguf(write_qwen2_gguf(tmp_path / "d.gguf", TinyConfig())), hw)
    assert draft.fits and not draft.remote and not draft.tensor_split


def test_parsing_what_the_user_typed() -> None:
    assert plan_rpc.parse_endpoints("192.168.1.20:50052, box2") == ("192.168.1.20:50052", "box2:50052")
    for bad in ("a:b", "a:0", "a:70000", "[::1]:5", "a:1,a:1", ":5"):
        with pytest.raises(UsageError):
            plan_rpc.parse_endpoints(bad)
    workers = plan_rpc.simulated("192.168.1.20=128GiB,box:1234=64G")
    assert [(w.endpoint, w.free, w.simulated) for w in workers] == [
        ("192.168.1.20:50052", 128 * GiB, True), ("box:1234", 64 * GiB, True)]
    for bad in ("192.168.1.20", "a=1M", "a=1G,a=2G", "a=lots"):
        with pytest.raises(UsageError):
            plan_rpc.simulated(bad)


def test_plan_cli_what_if_makes_no_connection(inventories) -> None:
    # 192.0.2.0/24 is TEST-NET: were a connection attempted, the plan would fail or hang, not print
    r = subprocess.run(
        [sys.executable, "-m", "localseek", "plan", str(inventories["DeepSeek-R1-Q2_K"]), "--ram", "64GiB",
         "--rpc-mem", "192.0.2.20=128GiB,192.0.2.21=128GiB,192.0.2.22=64GiB", "--json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="160"), check=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["plan"]["fits"] and [s["endpoint"] for s in data["plan"]["remote"]] == [
        "192.0.2.20:50052", "192.0.2.21:50052", "192.0.2.22:50052"]
    assert [w["endpoint"] for w in data["hardware"]["workers"]] == [s["endpoint"] for s in data["plan"]["remote"]]
    table = subprocess.run(
        [sys.executable, "-m", "localseek", "plan", str(inventories["DeepSeek-R1-Q2_K"]), "--ram", "64GiB",
         "--rpc-mem", "192.0.2.20=64GiB"], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, COLUMNS="200"), check=False)
    assert table.returncode == 2 and "192.0.2.20:50052" in table.stdout
    assert len(table.stderr.strip().splitlines()) == 1 and "another worker" in table.stderr


# -- asking workers: fake servers on loopback --------------------------------------------------------------------


@contextmanager
def fake_worker(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on a free loopback port that runs `answer` on each connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                answer(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def hello_reply(version: tuple[int, int, int]) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.recv(1 + 8 + plan_rpc.CONN_CAPS, socket.MSG_WAITALL)
        conn.sendall(struct.pack("<Q", 4 + plan_rpc.CONN_CAPS) + bytes(version) + bytes(1 + plan_rpc.CONN_CAPS))
        for cmd, reply in ((plan_rpc.CMD_DEVICE_COUNT, struct.pack("<I", 1)),
                           (plan_rpc.CMD_GET_DEVICE_MEMORY, struct.pack("<QQ", 3 * GiB, 8 * GiB))):
            head = conn.recv(9, socket.MSG_WAITALL)
            if len(head) < 9 or head[0] != cmd:
                return
            conn.recv(struct.unpack("<Q", head[1:])[0], socket.MSG_WAITALL) if head[1:] != bytes(8) else None
            conn.sendall(struct.pack("<Q", len(reply)) + reply)

    return answer


def test_probe_reads_version_devices_and_memory() -> None:
    with fake_worker(hello_reply(plan_rpc.PROTOCOL)) as ep:
        w = plan_rpc.probe(ep)
    assert w.devices == (plan_rpc.RemoteDevice(0, 3 * GiB, 8 * GiB),) and w.devices[0].honest and 0 < w.rtt < 1


def test_probe_refuses_another_protocol_version() -> None:
    with fake_worker(hello_reply((6, 1, 0))) as ep, pytest.raises(WorkerError) as err:
        plan_rpc.probe(ep)
    assert "speaks RPC protocol 6.1.0" in str(err.value) and "same localseek" in str(err.value)


def test_probe_of_a_busy_worker_times_out_with_a_reason() -> None:
    with fake_worker(lambda conn: time.sleep(1.5)) as ep:
        start = time.monotonic()
        with pytest.raises(WorkerError) as err:
            plan_rpc.probe(ep, read_s=0.5)
        assert time.monotonic() - start < 1.4
    assert "did not answer the RPC handshake within 0.5s" in str(err.value) and "one main process" in str(err.value)


def test_probe_of_a_closed_port_fails_at_once() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.monotonic()
    with pytest.raises(WorkerError, match="connection refused: nothing listens"):
        plan_rpc.probe_all((f"127.0.0.1:{port}",))
    assert time.monotonic() - start < 1


def test_probe_of_a_silent_peer() -> None:
    with fake_worker(lambda conn: None) as ep, pytest.raises(WorkerError, match="broke during the RPC handshake"):
        plan_rpc.probe(ep)


def test_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan_rpc.read_timeout() == plan_rpc.READ_TIMEOUT and plan_rpc.connect_timeout() == 5
    monkeypatch.setenv("LOCALSEEK_RPC_TIMEOUT", "2.5")
    assert plan_rpc.read_timeout() == 2.5 and plan_rpc.connect_timeout() == 2.5
    monkeypatch.setenv("LOCALSEEK_RPC_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="LOCALSEEK_RPC_TIMEOUT"):
        plan_rpc.read_timeout()


def test_install_command_keeps_the_gpu_backend() -> None:
    cmd = plan_rpc.install_command(("CUDA", "CPU", "RPC"), python="/venv/bin/python")
    assert cmd.startswith('CMAKE_ARGS="-DGGML_CUDA=on -DGGML_RPC=on" /venv/bin/python -m pip install')
    assert "--no-cache-dir" in cmd and "--no-binary llama-cpp-python" in cmd and "llama-cpp-python==" in cmd


def test_without_the_rpc_backend_workers_are_refused_with_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from localseek.errors import NoRpcSupport
    from localseek.planning import backends
    from localseek.runtime import rpc

    monkeypatch.setattr(backends, "rpc_registry", lambda: None)
    assert not rpc.available()
    with pytest.raises(NoRpcSupport) as err:
        rpc.require("localseek worker")
    text = str(err.value)
    assert text.startswith("localseek worker needs llama.cpp's RPC backend") and "\n" not in text
    assert 'CMAKE_ARGS="-DGGML_RPC=on"' in text and "--no-cache-dir" in text and sys.executable in text


def test_doctor_reports_rpc() -> None:
    from localseek.runtime import rpc

    r = subprocess.run([sys.executable, "-m", "localseek", "doctor", "--json"], capture_output=True, text=True,
                       timeout=120, check=False)
    data = json.loads(r.stdout)["rpc"]
    assert data["available"] == rpc.available() and data["protocol"] == "7.0.0"
    assert (data["install_command"] is None) == data["available"]
