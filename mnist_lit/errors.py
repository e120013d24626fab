"""The one exception type for bad input from the user (arguments, files, data)."""


class UserError(ValueError):
    """Bad input, not a bug: the CLI prints the one-line message, exits with status 2 and writes nothing."""
