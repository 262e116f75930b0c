"""Shell completion of model names (Typer's completion is on: `localseek --install-completion`)."""

from __future__ import annotations

import contextlib


def complete_model(incomplete: str) -> list[str]:
    """Catalog names and aliases, installed models and models other tools keep on disk that start with what was
    typed. Never raises: a broken registry must not break the shell."""
    names: list[str] = []
    with contextlib.suppress(Exception):
        from localseek.models.catalog import load_catalog

        names += load_catalog().names()
    with contextlib.suppress(Exception):
        from localseek.models import store

        names += list(store.installed())
    with contextlib.suppress(Exception):
        from localseek.models import elsewhere

        names += [m.name for m in elsewhere.find_all()]
    low = incomplete.lower()
    return sorted({n for n in names if n.lower().startswith(low)})
