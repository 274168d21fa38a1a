"""The one exception type for bad input: its message is a single line the CLI and app show as is."""


class InputError(Exception):
    """Bad user input (file, CSV, image, option): the message says what is wrong and what to do."""
