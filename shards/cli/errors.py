"""User errors: one line on stderr naming the thing and the fix, exit status 2, no traceback.

A :class:`UserError` is raised where the cause is known to be the input (a missing file, a file of the wrong kind, an
unknown model or key, an offline hub id, an empty shard folder, a malformed data set). Every command's entry point
runs through :func:`run_command`, which prints it as ``PROG: error: MESSAGE`` and returns 2; anything else is a bug
and keeps its traceback. ``DEPTH_DISTILL_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: Set to 1 to see the traceback of a user error as well.
DEBUG_VARIABLE = "DEPTH_DISTILL_DEBUG"
#: The exit status of a user error (argparse's, and jsonargparse's, for a bad command line).
USER_ERROR_STATUS = 2


class UserError(Exception):
    """A mistake in what the user gave, with the fix in the message; never a bug in the code."""


def one_line(message: object) -> str:
    """A message as one line: inner newlines and indentation become single spaces."""
    return " ".join(str(message).split())


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def run_command(main: Callable[[list[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """``main(argv)``, with a :class:`UserError` (and a missing or taken file) reported as one line, status 2."""
    try:
        return main(None if argv is None else list(argv))
    except (UserError, FileNotFoundError, FileExistsError) as error:
        if debugging():
            raise
        report_user_error(prog, error)
        return USER_ERROR_STATUS


def report_user_error(prog: str, error: BaseException | str) -> None:
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)


def refuse_filled_folder(folder: str | Path, flag: str, fix: str) -> None:
    """Stop before a command writes into a folder that already holds something, listing what is there.

    ``flag`` is the option that named the folder (``--out``), ``fix`` what the user can do instead (``pass
    --overwrite true to replace it``). An absent or empty folder passes. Called before any work, so a refused run
    has lost nothing and written nothing."""
    path = Path(folder)
    if path.is_file():
        raise UserError(f"{flag} {path} is a file; it must be a folder")
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir()) if path.is_dir() else []
    if entries:
        shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise UserError(f"{flag} {path} already holds {shown}: choose an empty folder, or {fix}")


#: Seconds the one check of the Hugging Face hub waits for an answer.
HUB_CHECK_TIMEOUT = 5.0


def hub_unreachable(timeout: float = HUB_CHECK_TIMEOUT) -> str | None:
    """Why the Hugging Face hub cannot be reached, from one request without retries; None when it answers, or when
    ``HF_HUB_OFFLINE`` is set (the libraries then read the local cache without trying the hub).

    huggingface_hub retries a refused or timed-out request with backoff, some 25-70 s of warnings per file before it
    gives up; a command that is about to read a name that could be a hub id checks once, here, instead."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.is_offline_mode():
        return None
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - refused, no DNS, timed out, TLS: any of them means no answer
        return f"{constants.ENDPOINT}: {one_line(error) or type(error).__name__}"
    return None


def read_hub_cache_only() -> None:
    """From now on the Hugging Face libraries of this process read their local cache only, as with
    ``HF_HUB_OFFLINE=1``: once the hub did not answer, a hub id already downloaded still loads, and nothing retries."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:  # it copies the setting when imported
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
