"""Typed, user-facing errors. Each message says what went wrong and what to do next.

The CLI turns any `LocalseekError` into one line on stderr and exits with `exit_code`;
`--debug` (or LOCALSEEK_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations


class LocalseekError(Exception):
    """Base class for every error a user may see."""

    exit_code = 2


class UsageError(LocalseekError):
    """Bad arguments or input on the command line."""


class ModelFileError(LocalseekError):
    """A model file is missing, unreadable, not a GGUF, or damaged."""


class InsufficientMemoryError(LocalseekError):
    """The model (plus its context) will not fit in this machine's memory."""


class EngineError(LocalseekError):
    """llama.cpp refused to load or run the model."""


class Interrupted(LocalseekError):
    """The user pressed Ctrl-C."""

    exit_code = 130


class NoAnswerError(LocalseekError):
    """A one-shot reply has no answer: a cap (--max-tokens, the context) cut it while the model was still reasoning,
    or the model ended it there."""

    exit_code = 3


class HubError(LocalseekError):
    """The Hugging Face Hub (or the HF_ENDPOINT mirror) refused, could not be reached, or sent something wrong."""


class DownloadError(HubError):
    """A download stopped part-way; what arrived is kept so the next pull resumes."""


class IntegrityError(HubError):
    """A downloaded file does not match the sha256 the Hub lists; it was deleted."""


class DiskSpaceError(LocalseekError):
    """Not enough free disk space for what has to be written."""


class NotInstalledError(LocalseekError):
    """A catalog name or Hub repo that is not on this machine yet."""


class WorkerError(LocalseekError):
    """An RPC worker (`localseek worker`) could not be reached, speaks another protocol version, or failed."""


class NoRpcSupport(LocalseekError):
    """This llama.cpp build has no RPC backend (compile-time: CMAKE_ARGS="-DGGML_RPC=on")."""
