"""Checks of the benchmarks' arguments: a bad value is `BadInput` (exit 2) naming its flag."""

from encoding.errors import BadInput


def require_positive(args, names: tuple[str, ...]) -> None:
    """Every `args.<name>` that is set (not None) is an integer >= 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BadInput(f"--{name.replace('_', '-')} {value}: must be a positive integer")


def positive_list(flag: str, text: str, example: str, allow_empty: bool = False) -> list[int]:
    """`'64,256'` → [64, 256]: comma-separated positive integers (`''` → [] when `allow_empty`)."""
    if allow_empty and not text:
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BadInput(f"{flag} {text!r}: expected comma-separated positive integers, e.g. {example}")
    return values
