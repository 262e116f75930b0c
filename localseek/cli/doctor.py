"""`localseek doctor`: what this machine has, what this llama.cpp build can use, and how to get GPU support."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from localseek.cli import app
from localseek.cli.output import out_console
from localseek.planning import boards, hardware
from localseek.sizes import format_size


def report() -> dict:
    import llama_cpp

    from localseek.planning import backends
    from localseek.planning import rpc as plan_rpc

    hw = hardware.detect()
    hint = hardware.gpu_install_hint(hw)
    try:
        has_rpc = backends.rpc_registry() is not None
    except OSError:
        has_rpc = False
    return {
        "hardware": hw.to_dict(),
        "llama_cpp": {
            "llama_cpp_python": llama_cpp.__version__,
            "backends": list(hw.backends),
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "mmap": bool(llama_cpp.llama_supports_mmap()),
            "mlock": bool(llama_cpp.llama_supports_mlock()),
        },
        "unused_cpu_features": hardware.unused_cpu_features(hw.cpu),
        "gpu_install_command": hint,
        "board": boards.summary(hw),
        "rpc": {  # several machines: `localseek worker` and --rpc need llama.cpp's RPC backend (compile-time)
            "available": has_rpc,
            "protocol": ".".join(map(str, plan_rpc.PROTOCOL)),
            "install_command": None if has_rpc else plan_rpc.install_command(hw.backends),
        },
    }


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """Check this machine: CPU, RAM, GPUs, the llama.cpp backends compiled in, and what could not be detected."""
    data = report()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    out = out_console()
    hw = data["hardware"]
    cpu, mem = hw["cpu"], hw["memory"]
    out.print(f"[bold]System[/]  {hw['system']} {cpu['arch']}" + (f" · {hw['board']['model']}" if hw["board"] else ""))
    perf = f", {cpu['performance_cores']} performance" if cpu["performance_cores"] else ""
    out.print(f"[bold]CPU[/]     {cpu['model']} · {cpu['physical_cores']} physical cores{perf}, "
              f"{cpu['logical_cpus']} logical CPUs usable")
    out.print(f"         features: {' '.join(cpu['features']) or 'unknown'}")
    out.print(f"         llama.cpp uses: {' '.join(cpu['build_features']) or 'unknown'}")
    if data["unused_cpu_features"]:
        out.print(f"         [notice]not used by this build:[/] {' '.join(data['unused_cpu_features'])} "
                  "(a source build with -DGGML_NATIVE=on would use them)")
    swap = f", swap {format_size(mem['swap_free'])} free of {format_size(mem['swap_total'])}" if mem["swap_total"] else ", no swap"
    limit = f", cgroup limit {format_size(mem['cgroup_limit'])}" if mem["cgroup_limit"] else ""
    out.print(f"[bold]RAM[/]     {format_size(mem['total'])} total, {format_size(mem['available'])} available"
              f"{swap}{limit} (from {mem['source']})")
    gpus = hw["gpus"]
    if not gpus:
        out.print("[bold]GPU[/]     none found")
    for g in gpus:
        state = f"via {g['backend']}" if g["usable"] else "[notice]not usable by this llama.cpp build[/]"
        size = f"{format_size(g['memory_free'])} free of {format_size(g['memory_total'])}" if g["memory_total"] \
            else "memory size unknown"
        out.print(f"[bold]GPU[/]     {g['name']} · {size}{' · unified memory' if g['unified'] else ''} · {state}")
    lc = data["llama_cpp"]
    shown = ", ".join(b for b in lc["backends"] if b != "RPC")  # RPC has its own line below
    out.print(f"[bold]llama.cpp[/] llama-cpp-python {lc['llama_cpp_python']} · backends: {shown}"
              f" · GPU offload: {'yes' if lc['gpu_offload'] else 'no'} · mmap: {'yes' if lc['mmap'] else 'no'}"
              f" · mlock: {'yes' if lc['mlock'] else 'no'}")
    if data["gpu_install_command"]:
        out.print("[notice]This build cannot use the GPU above. Reinstall llama-cpp-python with GPU support:[/]")
        out.print(f"  {data['gpu_install_command']}", soft_wrap=True)
    for line in data["board"]:
        out.print(f"[bold]Board[/]   {escape(line)}", highlight=False)
    rpc = data["rpc"]
    if rpc["available"]:
        out.print(f"[bold]RPC[/]     yes (protocol {rpc['protocol']}): `localseek worker` serves this machine, "
                  "--rpc HOST:PORT uses workers")
    else:
        out.print("[bold]RPC[/]     no: this build cannot use other machines (`localseek worker`, --rpc). Rebuild with:")
        out.print(f"  {rpc['install_command']}", soft_wrap=True)
    for note in hw["notes"]:
        out.print(f"[notice]not detected:[/] {note}")
