"""User-facing errors: one line, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn, TypeVar

EXIT_USAGE = 2
# what only the "tune" extra installs (an edge node has none of it)
TUNE_MODULES = {"torch", "torch_pruning", "nncf", "sklearn", "bayes_opt", "wandb", "onnxscript"}
T = TypeVar("T")


class UserError(Exception):
    """Bad input from the user (config, params, paths, devices); printed as one line."""


def unknown(key: str, value: str, valid: Iterable[str]) -> UserError:
    """Error for a name that is not one of ``valid``, with a "did you mean" when close."""
    names = sorted(valid)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"{key}: unknown {value!r}{hint}; valid: {', '.join(names)}")


def lookup(registry: dict[str, T], key: str, value: str) -> T:
    """``registry[value]`` or a UserError listing the valid names."""
    if value not in registry:
        raise unknown(key, value, registry)
    return registry[value]


_STARTED: list[bool] = []  # set once a command made its output: no fast exit after that


def work_started() -> None:
    """Say that this command has begun its work (made its output directory)."""
    _STARTED.append(True)


def fail(message: str) -> NoReturn:
    """Print ``edge_tune: error: message`` to stderr and exit with code 2.

    A refusal before any work (no output made, no Ray held) leaves at once (``os._exit``):
    the interpreter's own teardown of torch and Ray Tune's modules took 2.3 s of a 9.8 s
    refusal on 2 cores, and there is nothing to clean up yet. Later errors exit normally
    (exit hooks, temporary folders)."""
    print(f"edge_tune: error: {message}", file=sys.stderr)
    ray = sys.modules.get("ray")
    if not _STARTED and (ray is None or not ray.is_initialized()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_USAGE)
    raise SystemExit(EXIT_USAGE)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def last_line(error: BaseException) -> str:
    """The last non-empty line of an exception's message ("" if it has none)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Run a command's ``main``; UserError becomes a one-line message and exit code 2."""
    try:
        code = main()
    except UserError as err:
        fail(str(err))
    except ModuleNotFoundError as err:
        if err.name not in TUNE_MODULES:
            raise
        fail(f"no module {err.name!r}: this is an edge (benchmark-only) install; the training "
             "side needs pip install 'edge_tune[tune]'")
    except KeyboardInterrupt:
        print("edge_tune: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)
