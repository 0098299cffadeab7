"""Does the profile's task_struct layout fit the kernel actually running?  Checked on init_task and init.

A profile whose banner matches can still carry wrong offsets (edited, or built
from another configuration of the same release); read through them, every
answer is silently empty.  Facts that hold in every Linux, read through the
profile's offsets, tell a wrong layout from a right one:

* ``init_task`` (init/init_task.c) is the idle task: pid and tgid 0, its own
  group leader and real parent, comm ``"swapper"`` (``INIT_TASK_COMM``,
  include/linux/init_task.h; ``init_idle`` later makes it ``"swapper/0"``).
  All of this is static data, so it holds in the kernel image before it runs.
* ``init_task.tasks`` heads the ring of every task, so following ``next``
  comes back to it (statically, it points at itself).
* The first task on that ring is the oldest one, init (``rest_init`` creates
  it first, init/main.c): pid and tgid 1, its own group leader, parent
  ``init_task``, and a comm that is a NUL-terminated name.
"""

from qppsuite.plugins.osi_linux.tasks import TaskReader

INIT_TASK_COMM = b"swapper"


def task_list_mismatch(tasks: TaskReader) -> tuple[str | None, bool]:
    """(what contradicts the profile, naming the task_struct field, or None; whether init was there to check).

    ``(None, False)``: nothing wrong so far, but init does not exist yet (or
    init_task is not readable yet); check again later.
    """
    layout, mem = tasks.layout, tasks.mem
    idle = layout.init_task
    if mem.u32(idle + layout.task_tasks) is None:
        return None, False
    problem = _task_mismatch(tasks, idle, "init_task", pid=0, parent=idle, comm=INIT_TASK_COMM)
    if problem is not None:
        return problem, False
    leaders, closed = tasks.leaders()
    if not closed:
        return (
            f"task_struct.tasks (offset {layout.task_tasks}): the task list from init_task does not lead back "
            f"to it (broken after {len(leaders)} tasks)"
        ), False
    if not leaders:
        return None, False
    return _task_mismatch(tasks, leaders[0], "init (the first task after init_task)", pid=1, parent=idle), True


def _task_mismatch(tasks: TaskReader, task: int, who: str, pid: int, parent: int, comm: bytes = b"") -> str | None:
    """The first of pid, tgid, group_leader, real_parent, comm of ``task`` that is not what Linux puts there.

    The comm must be a non-empty NUL-terminated name starting with ``comm``.
    """
    layout, mem = tasks.layout, tasks.mem
    expected = (
        ("pid", layout.task_pid, pid),
        ("tgid", layout.task_tgid, pid),
        ("group_leader", layout.task_group_leader, task),
        ("real_parent", layout.task_real_parent, parent),
    )
    for field, offset, want in expected:
        value = mem.u32(task + offset)
        if value != want:
            got = "nothing readable" if value is None else f"{value:#x}"
            return f"task_struct.{field} (offset {offset}) of {who} reads {got}, not {want:#x}"
    raw = mem.read(task + layout.task_comm, layout.comm_len)
    if raw is None or raw[:1] == b"\0" or b"\0" not in raw or not raw.startswith(comm):
        wanted = f"a name starting {comm.decode()!r}" if comm else "a NUL-terminated name"
        return f"task_struct.comm (offset {layout.task_comm}) of {who} reads {raw!r}, not {wanted}"
    return None
