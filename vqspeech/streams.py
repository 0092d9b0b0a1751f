"""The process's standard streams, for the CLI and the tools: what a shell user's `>&-`, `2>/dev/full`
or `| head` does to a verb.

:func:`process_streams` (in the main thread; a thread's caller owns them) opens descriptors 0-2
that the shell closed on the null device, watches standard output (the error a write to it gave is
kept, so a verb's error can name it rather than the verb's files) and makes standard error lossy
(what cannot be written is dropped: progress bars and warnings are not worth a training, and the
exit status still says how the verb ended), and makes SIGTERM end the work as Ctrl-C does
(:class:`Terminated`). :func:`run_tool` is the same for a script of tools/, with the endings a
verb has.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from .errors import first_line


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a batch system's time limit) ends a verb as Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


class StandardStream:
    """Standard output or error, watched (see the module); ``lossy`` for standard error."""

    def __init__(self, stream, lossy: bool) -> None:
        self._stream, self.lossy = stream, lossy
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc
        if not self.lossy:
            raise exc

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def open_standard_descriptors() -> None:
    """Descriptors 0-2 the shell closed (`2>&-`) are opened on the null device before the verb opens
    anything: a file it writes would otherwise get one of them, and a message a library or the C
    compiler meant for the terminal would land in that file. Python's streams on them exist again."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def silence_stdout() -> None:
    """Nothing more is written to standard output, not even what Python flushes at exit."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def stdout_error() -> OSError | None:
    """The error a write to standard output gave under :func:`process_streams`, or None."""
    return getattr(sys.stdout, "error", None)


@contextlib.contextmanager
def process_streams() -> Iterator[None]:
    """The streams and SIGTERM handling of the module's docstring, for as long as the context lasts."""
    own_process = threading.current_thread() is threading.main_thread()
    if own_process:
        open_standard_descriptors()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed with backslash escapes
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    if not own_process:
        yield
        return
    streams, previous = (sys.stdout, sys.stderr), signal.signal(signal.SIGTERM, _raise_terminated)
    sys.stdout, sys.stderr = StandardStream(sys.stdout, lossy=False), StandardStream(sys.stderr, lossy=True)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        signal.signal(signal.SIGTERM, previous)


def run_tool(name: str, main: Callable[[], int]) -> int:
    """``main()`` of a script in tools/ (which reports its own UserErrors) under :func:`process_streams`:
    Ctrl-C or SIGTERM, a closed pipe and a failing standard output end it in one line, as a verb."""
    with process_streams():
        try:
            status = main()
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            silence_stdout()
            return 141
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            print(f"{name}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            return 143 if terminated else 130
        except OSError:
            failed = stdout_error()
            if failed is None:
                raise
            silence_stdout()
            print(
                f"{name}: error: could not write to standard output ({failed.strerror or first_line(failed)}); "
                "send it to a file or device that takes it.",
                file=sys.stderr,
            )
            return 2
