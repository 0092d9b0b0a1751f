"""The one exception type for mistakes a user can fix (bad path, value, or file)."""


class UserError(Exception):
    """An error caused by user input; the CLI prints its message as one sentence, no traceback."""
