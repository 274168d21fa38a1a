"""The one exception type for bad input: its message is a single line the CLI and app show as is."""


class InputError(Exception):
    """Bad user input (file, CSV, image, option): the message says what is wrong and what to do."""


def reason(exc: BaseException) -> str:
    """The first line of a library exception's message (or its type name), to quote inside an `InputError`."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
