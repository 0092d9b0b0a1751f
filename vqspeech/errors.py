"""The one exception type for mistakes a user can fix (bad path, value, or file)."""


class UserError(Exception):
    """An error caused by user input; the CLI prints its message as one sentence, no traceback.

    Messages speak of values and of the library's parameters, never of command-line flags: a
    parameter is named in backquotes (```overwrite=True```, ```num```), and the CLI shows each
    one that is also a flag of the verb as that flag (``--overwrite``, ``--num``).
    """


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
