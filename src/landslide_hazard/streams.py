"""Where the command line writes: results on stdout, everything else on stderr, never wrapped.

Results are what a script reads: the paths written, tables, ``--json`` output. Progress bars,
logs, warnings and next-step hints go to stderr, so ``path=$(landslide-hazard predict RUN)``
captures a path and nothing else. Rich wraps at 80 columns when it is not writing to a terminal,
which splits printed paths and commands in two: messages are printed with soft wrapping (the
terminal wraps, the text keeps its lines) and tables get a wide console.
"""

from __future__ import annotations

from rich.console import Console

#: Width of a table printed to a pipe or a file (a terminal's own width is used on a terminal).
PIPE_WIDTH = 240


def log_console() -> Console:
    """Progress, logs, warnings and hints: stderr, lines not wrapped by rich."""
    console = Console(stderr=True, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=True, soft_wrap=True, width=PIPE_WIDTH)
    return console


def result_console() -> Console:
    """Results (tables): stdout; wide when not a terminal, so columns are not squeezed."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=PIPE_WIDTH)
    return console
