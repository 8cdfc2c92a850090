"""Reading whitespace-separated text files (protocols, keys, score files) line by line, with
errors that name the file and line."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator


def numbered_fields(path: str | os.PathLike[str],
                    error: Callable[[str, int], Exception]) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line; a line that is not
    UTF-8 raises ``error("not UTF-8 text", line number)``."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise error("not UTF-8 text", number) from None
            if fields:
                yield number, fields
