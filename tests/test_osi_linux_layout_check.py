"""The profile-vs-kernel check of osi_linux on real kernel pages (the dump of tests/test_osi_linux_proc.py).

A profile with one task_struct offset moved, or the real memory with one fact
broken, is told apart from the real thing, and the message names the field.
"""

import dataclasses

import pytest
from test_osi_linux_proc import replay

from qppsuite.plugins.osi_linux.layout_check import task_list_mismatch
from qppsuite.plugins.osi_linux.tasks import TaskReader


def test_the_real_profile_fits_the_real_kernel() -> None:
    r = replay()
    assert task_list_mismatch(TaskReader(r.mem, r.layout)) == (None, True)


@pytest.mark.parametrize(
    ("field", "shift", "named"),
    [
        ("task_tasks", 8, "task_struct.tasks"),
        ("task_pid", -8, "task_struct.pid"),
        ("task_tgid", 4, "task_struct.tgid"),
        ("task_group_leader", 4, "task_struct.group_leader"),
        ("task_comm", 16, "task_struct.comm"),
    ],
)
def test_a_moved_offset_is_refused_naming_the_field(field: str, shift: int, named: str) -> None:
    r = replay()
    layout = dataclasses.replace(r.layout, **{field: getattr(r.layout, field) + shift})
    problem, _ = task_list_mismatch(TaskReader(r.mem, layout))
    assert problem is not None and problem.startswith(named) and "\n" not in problem


def test_a_task_list_that_does_not_close_names_the_tasks_field() -> None:
    r = replay()
    tasks = TaskReader(r.mem, r.layout)
    third = tasks.processes()[2].task
    r.write_u32(third + r.layout.task_tasks, 0x1234)  # not a kernel pointer
    problem, _ = task_list_mismatch(TaskReader(r.mem, r.layout))
    assert problem is not None and problem.startswith("task_struct.tasks") and "after 3 tasks" in problem


def test_init_renamed_to_hostile_bytes_is_not_mistaken_for_a_wrong_layout() -> None:
    """Root in the guest may write /proc/1/comm: any non-empty NUL-terminated name is init's own business."""
    r = replay()
    init = TaskReader(r.mem, r.layout).processes()[0]
    assert init.pid == 1
    hostile = b"\x1b[31m[/]\xff\x01"
    for at in range(0, 16, 4):
        word = (hostile + b"\0" * 16)[at : at + 4]
        r.write_u32(init.task + r.layout.task_comm + at, int.from_bytes(word, "little"))
    assert task_list_mismatch(TaskReader(r.mem, r.layout)) == (None, True)


def test_before_init_exists_the_check_waits() -> None:
    """With the task list empty (as in the kernel image before it runs), only init_task is checked."""
    r = replay()
    head = r.layout.init_task + r.layout.task_tasks
    r.write_u32(head, head)
    assert task_list_mismatch(TaskReader(r.mem, r.layout)) == (None, False)
