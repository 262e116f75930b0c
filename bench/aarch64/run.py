"""localseek on an emulated Raspberry Pi 5 CPU (Cortex-A76), compared with this x86 machine. One command:

    .venv/bin/python bench/aarch64/run.py            # --json FILE for the numbers, --keep to keep the work dir

Builds (cached, see build.py) llama.cpp for aarch64 and an arm64 Python, then under `qemu-aarch64-static
-cpu cortex-a76` runs localseek's own CLI — `doctor`, `plan nano`, `run nano "What is 387 + 512?"` — and greedy
decoding of the test factory's tiny qwen2 models at Q4_0 and Q4_K_M (scripted and random weights), whose tokens
and logits are compared with the same runs on x86. Exit code 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import build
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = build.REPO
QUESTION = "What is 387 + 512?"
PROMPT = "<｜User｜>hello<｜Assistant｜>"  # the scripted models answer it with a fixed reasoning + answer
MODELS = [f"{w}-{q}" for w in ("scripted", "random") for q in ("Q4_0", "Q4_K_M")]
N_TOKENS = 48
# Relative logit tolerance (max |ARM − x86| over a row ÷ max |x86 logit| in that row), per kind of weights, set
# from measurement with margin (docs/PI.md). "scripted" is well-conditioned (like a trained model); "random" is the
# factory's default random model, whose activations grow layer to layer and amplify rounding. Both machines quantize
# activations to 8 bits, but with different kernels (ARM dotprod 4x4/8x4 repacked vs x86 AVX-512 8x8 repacked) and,
# on ARM, F16 dot products of the KV cache in half precision (FP16 vector arithmetic), so logits agree closely
# but not bit for bit.
REL_TOL = {"scripted": 0.01, "random": 0.2}
EXPECTED_REPACK = {"Q4_0": {"q4_0_4x4"}, "Q4_K_M": {"q4_K_8x4", "q6_K_8x4"}}
ARM_FEATURES = {"NEON", "DOTPROD", "REPACK"}
ABSENT_FEATURES = {"SVE", "MATMUL_INT8", "SME"}  # Cortex-A76 has none of them


PI5_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    "CPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for i in range(4)) + "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n"


def fake_pi5(root: Path, ram_kib: int = 8_245_288) -> Path:
    """/proc and the device tree of a Pi 5 (8 GB) for localseek.planning.hardware.ROOT: what `doctor` says on the board."""
    files = {"proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0\0", "proc/cpuinfo": PI5_CPUINFO,
             "proc/meminfo": f"MemTotal: {ram_kib} kB\nMemFree: {ram_kib - 400_000} kB\n"
                             f"MemAvailable: {ram_kib - 300_000} kB\nSwapTotal: 524284 kB\nSwapFree: 524284 kB\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


DOCTOR_ON = "import sys; from pathlib import Path; import localseek.planning.hardware as h; h.ROOT = Path(sys.argv.pop(1)); " \
            "from localseek.cli import main; sys.argv[0] = 'localseek'; main()"


def make_models(work: Path) -> None:
    """The factory's tiny qwen2 (n_embd 256 so that K-quants apply), F32 → Q4_0 / Q4_K_M by llama.cpp (on x86)."""
    code = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
import gguf
from tests.factory import TinyConfig, write_qwen2_gguf
from quantize import native
for w in ("scripted", "random"):
    f32 = write_qwen2_gguf(Path({str(work)!r}) / f"{{w}}-F32.gguf",
                           TinyConfig(n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_layer=2, weights=w))
    for q in ("Q4_0", "Q4_K_M"):
        native.requantize_gguf(f32, f32.with_name(f"{{w}}-{{q}}.gguf"), int(getattr(gguf.LlamaFileType, "MOSTLY_" + q)),
                               threads=1)
"""
    with open(work / "models.log", "w") as log:
        subprocess.run([sys.executable, "-c", code], check=True, stdout=log, stderr=subprocess.STDOUT)


class Runner:
    """The same command on x86 (this Python) or on the emulated Pi; each side with its own LOCALSEEK_HOME."""

    def __init__(self, rt: build.Runtime, work: Path) -> None:
        self.rt, self.work, self.seconds = rt, work, {}

    def env(self, side: str) -> dict[str, str]:
        base = {**os.environ, "LOCALSEEK_HOME": str(self.work / f"home-{side}"), "HF_HOME": str(self.work / "hf"),
                "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "110"}
        if side == "arm":
            return self.rt.env(base)
        return {**base, "PYTHONPATH": str(REPO)}

    def __call__(self, side: str, *args: str, name: str) -> subprocess.CompletedProcess:
        cmd = self.rt.command(*args) if side == "arm" else [sys.executable, *args]
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=self.env(side), capture_output=True, text=True, cwd=self.work, check=False)
        self.seconds[f"{side} {name}"] = round(time.perf_counter() - t, 1)
        (self.work / f"{side}-{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{side} `{' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        return proc


def logit_diff(a: Path, b: Path) -> dict:
    """How far b's logits are from a's (both along the same token path), one-token decodes and the batch."""
    out = {}
    for kind in ("step", "batch"):
        la, lb = np.load(a / f"{kind}.npy"), np.load(b / f"{kind}.npy")
        diff = np.abs(la - lb)
        top2 = np.sort(la, axis=1)[:, -2:]
        out[kind] = {
            "max_abs": float(diff.max()),
            "max_rel": float((diff.max(axis=1) / np.abs(la).max(axis=1)).max()),  # ÷ the row's largest |logit|
            "mean_abs": float(diff.mean()),
            "top1_agree": int((la.argmax(1) == lb.argmax(1)).sum()),
            "rows": len(la),
            "min_top1_margin": float((top2[:, 1] - top2[:, 0]).min()),
        }
    return out


def compare(work: Path, m: str) -> dict:
    """Greedy tokens of x86 and ARM, and logit differences along x86's path: ARM vs x86 (both repacking, as run
    uses them), and for scale each machine's repacked vs plain kernels (llama.cpp's extra buffer types off)."""
    d = {k: work / f"{k}-{m}" for k in ("x86", "arm", "x86-plain", "arm-plain")}
    rx, ra = (json.loads((d[k] / "result.json").read_text()) for k in ("x86", "arm"))
    same = 0
    for a, b in zip(rx["greedy"], ra["greedy"]):
        if a != b:
            break
        same += 1
    split = {}
    if same < len(rx["greedy"]):  # where greedy decoding parted: how close x86's own top two were there
        x, a = np.load(d["x86"] / "step.npy")[same], np.load(d["arm"] / "step.npy")[same]
        top2 = np.sort(x)[-2:]
        split = {"x86_top1_margin_at_split": float(top2[1] - top2[0]),
                 "arm_vs_x86_max_abs_at_split": float(np.abs(x - a).max())}
    return {
        "tokens": len(rx["greedy"]), "same_prefix": same, "identical": rx["greedy"] == ra["greedy"], **split,
        "arm_repacked": sorted({kind for _, kind in ra["repacked"]}), "n_arm_repacked": len(ra["repacked"]),
        "x86_repacked": sorted({kind for _, kind in rx["repacked"]}), "arm_buffers": ra["buffers"],
        "arm_vs_x86": logit_diff(d["x86"], d["arm"]),
        "x86_repacked_vs_plain": logit_diff(d["x86"], d["x86-plain"]),
        "arm_repacked_vs_plain": logit_diff(d["arm"], d["arm-plain"]),
        "arm_plain_vs_x86_plain": logit_diff(d["x86-plain"], d["arm-plain"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=build.DEFAULT_ARCH, help="-march for the cross build (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the summary here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (models, logs, logits)")
    args = ap.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("run this with the project's Python (.venv/bin/python): the x86 side needs llama-cpp-python")

    t0 = time.perf_counter()
    rt = build.build_all(build.pinned_version(), args.arch, args.jobs)
    t_build = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="localseek-aarch64-"))
    checks: list[tuple[str, bool, str]] = []
    summary: dict = {"arch": args.arch, "qemu_cpu": rt.cpu, "work": str(work)}
    try:
        run = Runner(rt, work)
        t = time.perf_counter()
        make_models(work)
        run.seconds["x86 make models"] = round(time.perf_counter() - t, 1)

        doctor = json.loads(run("arm", "-m", "localseek", "doctor", "--json", name="doctor").stdout)
        feats = set(doctor["hardware"]["cpu"]["build_features"])
        summary["doctor"] = {"arch": doctor["hardware"]["cpu"]["arch"], "build_features": sorted(feats)}
        checks.append(("doctor: llama.cpp built with NEON, DOTPROD, REPACK; no SVE/i8mm/SME",
                       ARM_FEATURES <= feats and not (ABSENT_FEATURES & feats), " ".join(sorted(feats))))
        run("arm", "-m", "localseek", "doctor", name="doctor-text")
        pi = run("arm", "-c", DOCTOR_ON, str(fake_pi5(work / "pi5")), "doctor", name="doctor-simulated-pi5").stdout
        summary["doctor_simulated_pi5"] = pi
        checks.append(("doctor with a Pi 5's /proc and device tree names the board",
                       "Raspberry Pi 5" in pi, pi.splitlines()[0] if pi else ""))
        plan = json.loads(run("arm", "-m", "localseek", "plan", "nano", "--json", name="plan-nano").stdout)["plan"]
        summary["plan_nano"] = {k: plan.get(k) for k in ("fits", "threads", "n_ctx", "n_gpu_layers", "file_type") if k in plan}
        checks.append(("plan nano: fits", bool(plan.get("fits")), json.dumps(summary["plan_nano"])))

        answers = {}
        for side in ("x86", "arm"):
            out = run(side, "-m", "localseek", "run", "nano", QUESTION, "--json", name="run-nano").stdout
            answers[side] = json.loads(out)
        summary["nano"] = {s: {"answer": a["answer"], "tokens": a["stats"]["generated_tokens"],
                               "drafted": a["stats"].get("drafted"), "accepted": a["stats"].get("draft_accepted")}
                           for s, a in answers.items()}
        checks.append((f'run nano "{QUESTION}" on ARM answers 899', "899" in answers["arm"]["answer"],
                       answers["arm"]["answer"]))
        checks.append(("run nano: ARM reasoning and answer identical to x86",
                       (answers["arm"]["reasoning"], answers["arm"]["answer"])
                       == (answers["x86"]["reasoning"], answers["x86"]["answer"]), ""))

        summary["models"] = {}
        for m in MODELS:
            gguf = work / f"{m}.gguf"
            x86, arm = work / f"x86-{m}", work / f"arm-{m}"
            probe = str(HERE / "probe.py")
            common = (probe, str(gguf), "--prompt", PROMPT, "-n", str(N_TOKENS))
            run("x86", *common, "--out", str(x86), name=f"probe-{m}")
            along = ("--path", str(x86 / "result.json"))
            run("arm", *common, "--out", str(arm), *along, name=f"probe-{m}")
            for side in ("x86", "arm"):
                run(side, *common, "--out", str(work / f"{side}-plain-{m}"), *along, "--no-repack",
                    name=f"probe-plain-{m}")
            if m.startswith("scripted"):  # the CLI path end to end: same reply text on both machines
                cli = {s: json.loads(run(s, "-m", "localseek", "run", str(gguf), "hello", "--json", "--temperature",
                                         "0", "-n", "64", name=f"run-{m}").stdout) for s in ("x86", "arm")}
                checks.append((f"run {m}.gguf: ARM reply identical to x86",
                               (cli["arm"]["reasoning"], cli["arm"]["answer"]) == (cli["x86"]["reasoning"],
                                                                                   cli["x86"]["answer"]),
                               repr(cli["arm"]["answer"])))
            c = summary["models"][m] = compare(work, m)
            quant = m.split("-", 1)[1]
            checks.append((f"{m}: repacked at load ({', '.join(sorted(EXPECTED_REPACK[quant]))})",
                           set(c["arm_repacked"]) == EXPECTED_REPACK[quant] and any("CPU_REPACK" in b for b in
                                                                                  c["arm_buffers"]),
                           f"{c['n_arm_repacked']} tensors: {', '.join(c['arm_repacked'])}"))
            diff = c["arm_vs_x86"]
            worst = max(diff["step"]["max_rel"], diff["batch"]["max_rel"])
            max_abs = max(diff["step"]["max_abs"], diff["batch"]["max_abs"])
            tol = REL_TOL[m.split("-")[0]]
            checks.append((f"{m}: logits within {tol:.0%} of x86 (relative to the row's largest)",
                           worst <= tol, f"max rel {worst:.2e}, max abs {max_abs:.2e}"))
            if m.startswith("scripted"):  # well-conditioned: no near-ties, so the tokens must be the same
                checks.append((f"{m}: greedy tokens identical to x86 ({c['tokens']})", c["identical"],
                               f"same first {c['same_prefix']}"))
    finally:
        summary["seconds"] = {"build (cached or not)": round(t_build, 1), **getattr(locals().get("run"), "seconds", {}),
                              "total": round(time.perf_counter() - t0, 1)}
        summary["checks"] = [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(summary)
    return 0 if checks and all(ok for _, ok, _ in checks) else 1


def print_summary(s: dict) -> None:
    print(f"\nlocalseek under qemu-aarch64 -cpu {s['qemu_cpu']} (llama.cpp -march={s['arch']}) vs x86")
    for c in s["checks"]:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}" + (f"  [{c['detail']}]" if c["detail"] else ""))
    if s.get("models"):
        print("\n  logits along x86's greedy path: max |Δ| / max |Δ| ÷ row's max |logit|, one-token decodes (batch)")
        print(f"  {'model':<16} {'tokens same':>11}  {'ARM vs x86':<34} {'x86 repacked vs plain':<34} "
              f"{'ARM repacked vs plain':<34}")
        for m, c in s["models"].items():
            cells = []
            for key in ("arm_vs_x86", "x86_repacked_vs_plain", "arm_repacked_vs_plain"):
                st, bt = c[key]["step"], c[key]["batch"]
                cells.append(f"{st['max_abs']:.3f}/{st['max_rel']:.2%} ({bt['max_abs']:.3f}/{bt['max_rel']:.2%})")
            print(f"  {m:<16} {c['same_prefix']:>4}/{c['tokens']:<6}  " + " ".join(f"{x:<34}" for x in cells))
        for m, c in s["models"].items():
            if "x86_top1_margin_at_split" in c:
                print(f"  {m}: greedy tokens part at token {c['same_prefix']}, where x86's top two logits are "
                      f"{c['x86_top1_margin_at_split']:.4f} apart and ARM's logits differ from x86's by up to "
                      f"{c['arm_vs_x86_max_abs_at_split']:.4f}")
    print("\n  seconds: " + ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
    # Not pytest's "N passed, N failed" form: in .ci/run this follows the test suite's own closing line.
    print(f"  aarch64: {sum(c['ok'] for c in s['checks'])} of {len(s['checks'])} checks passed")


if __name__ == "__main__":
    sys.exit(main())
