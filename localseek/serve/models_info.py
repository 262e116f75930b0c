"""`GET /localseek/models`: what the chat page's model picker shows of each model a request may name (the names
`/v1/models` lists, whose OpenAI shape stays as it is): loaded or not, what its plan needs on this machine (RAM,
VRAM, context), whether it fits alone and beside the models loaded now, and whether it reasons.

A model that is not loaded is planned exactly as a request for it would be (`runtime.open.prepare` with the server's
flags), on the machine measured at start; its header is read once per file version (path, size, mtime)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localseek.errors import LocalseekError
from localseek.planning import hardware
from localseek.planning.plan import Plan, make_plan
from localseek.runtime.open import Prepared, prepare, remaining
from localseek.serve.errors import HTTPError
from localseek.serve.manager import Loaded, ModelManager

_CACHE_SIZE = 64
_prepared: OrderedDict[tuple[str, int, int], Prepared] = OrderedDict()
_lock = threading.Lock()  # requests plan in worker threads


def _plan_fields(plan: Plan) -> dict[str, Any]:
    return {"ram_bytes": plan.ram.total, "vram_bytes": plan.gpu.total if plan.gpu else 0, "n_ctx": plan.n_ctx}


def _prepare_cached(manager: ModelManager, name: str) -> Prepared:
    ref = manager.resolve(name)
    stat = os.stat(ref.path)
    key = (str(ref.path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        prep = _prepared.get(key)
    if prep is None:
        prep = prepare(ref, manager.request, speculation=manager.speculation, hw=manager.hw)
        with _lock:
            _prepared[key] = prep
            while len(_prepared) > _CACHE_SIZE:
                _prepared.popitem(last=False)
    return prep


def _not_loaded(manager: ModelManager, name: str, left: hardware.Hardware) -> dict[str, Any]:
    """Planned alone on the machine (`fits`) and in what the loaded models leave of it (`fits_beside_loaded`: no
    eviction needed)."""
    try:
        prep = _prepare_cached(manager, name)
    except (LocalseekError, HTTPError, OSError) as exc:
        return {"loaded": False, "fits": False, "fits_beside_loaded": False, "problem": str(exc)}
    force = manager.request.force
    request = replace(manager.request, load_mtp=prep.use_mtp)
    beside = make_plan(prep.footprint, left, request)
    return {"loaded": False, **_plan_fields(prep.plan), "fits": prep.plan.fits or force,
            "fits_beside_loaded": beside.fits or force, "problem": "" if prep.plan.fits else prep.plan.problem}


def _loaded(model: Loaded) -> dict[str, Any]:
    return {"loaded": True, **_plan_fields(model.plan), "fits": True, "fits_beside_loaded": True, "problem": ""}


def describe_all(manager: ModelManager, names: list[str], loaded_now: list[Loaded],
                 describe: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The picker's data; runs in a worker thread (headers are read from disk), on a snapshot of what is loaded."""
    hw = manager.hw
    left = hw
    for model in loaded_now:
        left = remaining(left, model.plan)
    out = []
    for name in names:
        loaded = next((m for m in loaded_now if name in (m.name, m.ref.text, m.ref.path.name)), None)
        entry: dict[str, Any] = {"id": name}
        entry.update(_loaded(loaded) if loaded is not None else _not_loaded(manager, name, left))
        try:
            facts = describe(name)
        except (LocalseekError, HTTPError, OSError):
            facts = {}
        entry["size_bytes"] = facts.get("size", 0)
        entry["quant"] = facts.get("quant", "")
        entry["thinking"] = "thinking" in facts.get("capabilities", ())
        out.append(entry)
    return {"object": "list", "data": out,
            "machine": {"ram_bytes": hw.memory.available, "vram_bytes": hw.vram_free,
                        "gpus": [g.name for g in hw.usable_gpus]}}


async def models(request: Request) -> Response:
    state = request.app.state
    names = [name for name, _ in state.catalog()]
    loaded_now = list(state.manager.models.values())
    return JSONResponse(await asyncio.to_thread(describe_all, state.manager, names, loaded_now, state.describe))
