"""The one error type for bad user input: the CLI turns it into exit code 2."""


class BadInput(ValueError):
    """Input the user can fix: a wrong key, file, name or value. The message says which and what is valid."""
