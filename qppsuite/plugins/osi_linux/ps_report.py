"""The ``dump=ps`` report: the guest's process tree when it stopped, for a user without a plugin."""

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qppsuite.plugins.osi_linux.model import OsiProcess


def tree_order(processes: list[OsiProcess]) -> list[tuple[int, OsiProcess]]:
    """(depth, process) pairs, each parent followed by its children in pid order, like ``ps -H``.

    Processes whose parent is not listed (pid 1 and kthreadd, whose parent is
    the idle task, or orphans seen mid-exit) are roots.  Bounded by the list
    itself, so a parent cycle in guest memory cannot loop.
    """
    by_pid = {p.pid: p for p in processes}
    children: dict[int, list[OsiProcess]] = {}
    roots: list[OsiProcess] = []
    for process in sorted(processes, key=lambda p: p.pid):
        if process.ppid in by_pid and process.ppid != process.pid:
            children.setdefault(process.ppid, []).append(process)
        else:
            roots.append(process)
    out: list[tuple[int, OsiProcess]] = []
    placed: set[int] = set()
    stack = [(0, p) for p in reversed(roots)]
    while stack:
        depth, process = stack.pop()
        if process.pid in placed:
            continue
        placed.add(process.pid)
        out.append((depth, process))
        stack.extend((depth + 1, child) for child in reversed(children.get(process.pid, [])))
    out.extend((0, p) for p in processes if p.pid not in placed)  # members of a parent cycle
    return out


def print_process_tree(processes: list[OsiProcess], threads: dict[int, int], console: Console, title: str) -> None:
    """Print the tree as a table: PID, PPID, S (state, as ps shows it), THREADS, NAME (indented by depth).

    A zombie's name is followed by its exit status (``exited 3``) or killing signal (``killed by 9``).
    """
    table = Table(box=None, pad_edge=False)
    table.add_column("PID", justify="right")
    table.add_column("PPID", justify="right")
    table.add_column("S")
    table.add_column("THREADS", justify="right")
    table.add_column("NAME", no_wrap=True)
    for depth, process in tree_order(processes):
        name = ("  " * depth) + (f"[{process.name}]" if process.is_kernel_thread else process.name)
        if process.partial:
            name += " (partial)"
        code = process.exit_code
        if code is not None:
            name += f" (killed by {code & 0x7F})" if code & 0x7F else f" (exited {(code >> 8) & 0xFF})"
        cells = (str(process.pid), str(process.ppid), process.state, str(threads.get(process.pid, 0)), name)
        table.add_row(*(Text(cell) for cell in cells))  # Text: guest names are not rich markup
    console.print(title, highlight=False, markup=False)
    console.print(table, highlight=False)
