"""The one exception type for mistakes a user can fix (bad path, value, or file)."""


class UserError(Exception):
    """An error caused by user input; the CLI prints its message as one sentence, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
