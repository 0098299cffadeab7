#!/usr/bin/env python3
"""Generate qppsuite/plugins/syscalls/arm_syscalls.tsv from the Linux 6.1 sources.

Where the inputs come from
--------------------------
The guest is Debian bookworm's ``linux-image-6.1.0-*-armmp``, so the sources are Debian's
``linux-source-6.1`` package, version 6.1.176-1 (upstream 6.1.176 plus Debian's patches,
none of which touch the syscall ABI).  Get and unpack them with::

    apt-get download linux-source-6.1=6.1.176-1
    dpkg-deb --fsys-tarfile linux-source-6.1_6.1.176-1_all.deb | tar -x ./usr/src/linux-source-6.1.tar.xz
    tar -xJf usr/src/linux-source-6.1.tar.xz    # -> linux-source-6.1/

and run ``python3 tools/gen_syscall_table.py --linux-src linux-source-6.1``.

(The brief suggested reading torvalds/linux through the code-search index.  The index holds
only scattered versions of that repository, none at a v6.1 tag: its syscall.tbl is either a
pre-5.1 one (ends at 401) or the one at commit cdd5b5a9761f (ends at 451 cachestat, which
arrived in 6.5), and its include/linux/syscalls.h is a 4.x one without the *_time32
prototypes ARM's 6.1 table points at.  The Debian package is the exact 6.1 tree the guest
kernel is built from; upstream, it is linux-stable tag v6.1.176.)

Files read from that tree:

* ``arch/arm/tools/syscall.tbl`` - numbers, names and entry points.  A copy is kept in
  ``tools/data/`` (it is GPL-2.0 WITH Linux-syscall-note data, not code).
* ``include/linux/syscalls.h`` - argument types and names of the entry points, evaluated
  with ARM's configuration (CONFIG_CLONE_BACKWARDS, CONFIG_OLD_SIGSUSPEND3, ...).
* ``arch/arm/kernel/entry-common.S`` - where the ``*_wrapper`` and ``sys_mmap2`` entries
  branch to.
* ``arch/arm/kernel/sys_arm.c``, ``arch/arm/kernel/signal.c`` - ARM-only prototypes
  (``sys_arm_fadvise64_64``, ``sys_sigreturn``).
* ``net/socket.c``, ``kernel/fork.c``, ``kernel/signal.c``, ``fs/select.c``, ``fs/aio.c`` -
  ``SYSCALL_DEFINEn`` argument names where syscalls.h leaves them out (``sys_socket(int, int,
  int)``).
* ``arch/arm/include/uapi/asm/unistd.h``, ``arch/arm/kernel/traps.c`` - the ARM private
  calls at ``__ARM_NR_BASE`` (0x0f0000) and how ``arm_syscall()`` reads their registers.
* uapi headers - to check every flag, signal and errno name in
  ``qppsuite/plugins/syscalls/arm_linux_abi.py`` against the kernel's values.

Only the OABI-only rows of syscall.tbl are left out; an EABI kernel answers them with
ENOSYS.  C types become the decoder's vocabulary by the rules in ``classify``; what a C
prototype cannot say (is this ``char *`` a path? which ``int`` is a flag set? is this
struct read or written?) is written down in ``OVERRIDES``, one line per fact.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qppsuite.plugins.syscalls.arm_linux_abi import ERRNO_NAMES, FLAGSETS  # noqa: E402

SOURCE_DESCRIPTION = (
    "Debian bookworm source package linux-source-6.1, version 6.1.176-1 (linux-stable v6.1.176 with Debian's patches)"
)
OUT_TSV = REPO / "qppsuite" / "plugins" / "syscalls" / "arm_syscalls.tsv"
TBL_COPY = REPO / "tools" / "data" / "linux-6.1.176-arch-arm-tools-syscall.tbl"

TBL = "arch/arm/tools/syscall.tbl"
SYSCALLS_H = "include/linux/syscalls.h"
ENTRY_COMMON = "arch/arm/kernel/entry-common.S"
ARCH_C_FILES = ("arch/arm/kernel/sys_arm.c", "arch/arm/kernel/signal.c")
DEFINE_FILES = ("net/socket.c", "kernel/fork.c", "kernel/signal.c", "fs/select.c", "fs/aio.c")
ARM_UNISTD = "arch/arm/include/uapi/asm/unistd.h"
TRAPS_C = "arch/arm/kernel/traps.c"

# Truth values of every preprocessor condition met in the files above, for an ARM EABI
# kernel as Debian configures it.  Unknown conditions stop the generator: a new #if in a
# future kernel must be decided here, not guessed.
CONDITIONS: dict[str, bool] = {
    "CONFIG_ARCH_HAS_SYSCALL_WRAPPER": False,
    "CONFIG_FTRACE_SYSCALLS": True,
    "SYSCALL_DEFINE0": False,
    "__SYSCALL_DEFINEx": False,
    "__LITTLE_ENDIAN": True,
    "CONFIG_COMPAT": False,
    "TIF_FSCHECK": False,
    "BITS_PER_LONG == 32": True,
    "CONFIG_ODD_RT_SIGACTION": False,
    "CONFIG_CLONE_BACKWARDS": True,
    "CONFIG_CLONE_BACKWARDS3": False,
    "defined(CONFIG_ARCH_SPLIT_ARG64)": False,
    "defined(__ARCH_WANT_STAT64) || defined(__ARCH_WANT_COMPAT_STAT64)": True,
    "__ARCH_WANT_SYS_UTIME": False,
    "CONFIG_OLD_SIGSUSPEND": False,
    "CONFIG_OLD_SIGSUSPEND3": True,
    "CONFIG_OLD_SIGACTION": True,
    "CONFIG_HAVE_UID16": True,
    "__ARCH_WANT_SYS_OLD_GETRLIMIT": False,
    "CONFIG_ADVISE_SYSCALLS": True,
    # uapi headers, as user space sees them
    "__KERNEL__": False,
    "__BITS_PER_LONG == 32 || defined(__KERNEL__)": True,
    "defined(__s390x__)": False,
    "__BITS_PER_LONG != 64": True,
    "!defined(__KERNEL__)": True,
    "defined(__KERNEL__)": False,
    "__BITS_PER_LONG == 64 && !defined(__s390x__)": False,
}

FD_NAMES = {
    "fd",
    "dfd",
    "olddfd",
    "newdfd",
    "oldfd",
    "newfd",
    "fildes",
    "epfd",
    "ufd",
    "fd_in",
    "fd_out",
    "in_fd",
    "out_fd",
    "fdin",
    "fdout",
    "group_fd",
    "kernel_fd",
    "initrd_fd",
    "ruleset_fd",
    "fs_fd",
    "from_dfd",
    "to_dfd",
    "pidfd",
    "mountdirfd",
    "fanotify_fd",
    "mqdes",
}
PATH_NAMES = {
    "filename",
    "pathname",
    "path",
    "oldname",
    "newname",
    "old",
    "new",
    "dir_name",
    "specialfile",
    "library",
    "new_root",
    "put_old",
    "from_path",
    "to_path",
}
LENGTH_NAMES = {"count", "len", "size", "bufsiz", "optlen", "msg_len", "msgsz", "plen"}
INT_TYPES = {"int", "pid_t", "key_t", "key_serial_t", "timer_t", "rwf_t", "__s32", "enum landlock_rule_type"}
UNSIGNED_TYPES = {
    "unsigned int",
    "unsigned",
    "u32",
    "__u32",
    "uint32_t",
    "uid_t",
    "gid_t",
    "old_uid_t",
    "old_gid_t",
    "qid_t",
}
ULONG_TYPES = {"unsigned long", "aio_context_t", "old_sigset_t"}
LONG_TYPES = {"long", "off_t"}
U64_TYPES = {"loff_t", "u64", "__u64"}
POINTER_TYPEDEFS = {"cap_user_header_t", "cap_user_data_t", "const cap_user_data_t", "__sighandler_t"}


def _ts(name: str) -> str:
    return f"struct[{name},in]"


# What the prototypes cannot say.  Keyed by the table name of the call, then the argument.
OVERRIDES: dict[str, dict[str, str]] = {
    "open": {"flags": "flags[open_flags]"},
    "openat": {"flags": "flags[open_flags]"},
    "openat2": {"how": _ts("open_how")},
    "mq_open": {"oflag": "flags[open_flags]", "attr": _ts("mq_attr")},
    "open_by_handle_at": {"handle": _ts("file_handle"), "flags": "flags[open_flags]"},
    "umask": {"mask": "mode"},
    "access": {"mode": "flags[access_mode]"},
    "faccessat": {"mode": "flags[access_mode]"},
    "faccessat2": {"mode": "flags[access_mode]", "flags": "flags[faccessat_flags]"},
    "fstatat64": {"flag": "flags[at_flags]"},
    "fchownat": {"flag": "flags[at_flags]"},
    "linkat": {"flags": "flags[at_flags]"},
    "unlinkat": {"flag": "flags[unlinkat_flags]"},
    "renameat2": {"flags": "flags[rename_flags]"},
    "execveat": {"flags": "flags[at_flags]"},
    "statx": {"flags": "flags[statx_flags]", "mask": "flags[statx_mask]"},
    "name_to_handle_at": {"name": "path", "flag": "flags[at_flags]"},
    "mount_setattr": {"flags": "flags[at_flags]", "uattr": _ts("mount_attr")},
    "utimensat": {"flags": "flags[at_flags]", "t": "struct[old_timespec32,in,n=2]"},
    "utimensat_time64": {"flags": "flags[at_flags]", "utimes": "struct[__kernel_timespec,in,n=2]"},
    "utimes": {"t": "struct[old_timeval32,in,n=2]"},
    "futimesat": {"t": "struct[old_timeval32,in,n=2]"},
    "mount": {"dev_name": "cstring", "type": "cstring", "data": "ptr"},
    "umount2": {"name": "path"},
    "acct": {"name": "path"},
    "quotactl": {"special": "path"},
    "sethostname": {"name": "buf[in,len=len]"},
    "setdomainname": {"name": "buf[in,len=len]"},
    "init_module": {"umod": "buf[in,len=len]"},
    "ioctl": {"cmd": "flags[ioctl_request]"},
    "prctl": {"option": "flags[prctl_option]"},
    "ptrace": {"request": "flags[ptrace_request]", "pid": "int"},
    "fcntl": {"cmd": "flags[fcntl_cmd]"},
    "fcntl64": {"cmd": "flags[fcntl_cmd]"},
    "lseek": {"whence": "flags[seek_whence]"},
    "reboot": {"magic1": "flags[reboot_magic1]", "magic2": "flags[reboot_magic2]", "cmd": "flags[reboot_cmd]"},
    "_llseek": {"whence": "flags[seek_whence]", "result": "struct[loff_t,out]"},
    "mmap2": {"addr": "ptr", "len": "size", "prot": "flags[mmap_prot]", "flags": "flags[mmap_flags]"},
    "munmap": {"addr": "ptr"},
    "mprotect": {"start": "ptr", "prot": "flags[mmap_prot]"},
    "pkey_mprotect": {"start": "ptr", "prot": "flags[mmap_prot]"},
    "madvise": {"start": "ptr", "behavior": "flags[madvise_advice]"},
    "process_madvise": {"vec": "ptr", "behavior": "flags[madvise_advice]"},
    "msync": {"start": "ptr", "flags": "flags[msync_flags]"},
    "mlock": {"start": "ptr"},
    "munlock": {"start": "ptr"},
    "mlock2": {"start": "ptr"},
    "mlockall": {"flags": "flags[mlockall_flags]"},
    "mremap": {"addr": "ptr", "old_len": "size", "new_len": "size", "flags": "flags[mremap_flags]", "new_addr": "ptr"},
    "remap_file_pages": {"start": "ptr"},
    "mincore": {"start": "ptr"},
    "mbind": {"start": "ptr"},
    "set_mempolicy_home_node": {"start": "ptr"},
    "brk": {"brk": "ptr"},
    "shmat": {"shmaddr": "ptr"},
    "shmdt": {"shmaddr": "ptr"},
    "arm_fadvise64_64": {"advice": "flags[fadvise_advice]"},
    "clone": {"clone_flags": "flags[clone_flags]", "newsp": "ptr", "tls": "ptr"},
    "clone3": {"uargs": _ts("clone_args")},
    "unshare": {"unshare_flags": "flags[unshare_flags]"},
    "setns": {"nstype": "flags[unshare_flags]"},
    "wait4": {"stat_addr": "struct[wait_status,out]", "options": "flags[wait_options]"},
    "waitid": {"options": "flags[wait_options]"},
    "kill": {"sig": "flags[signal]"},
    "tkill": {"sig": "flags[signal]"},
    "tgkill": {"sig": "flags[signal]"},
    "rt_sigqueueinfo": {"sig": "flags[signal]"},
    "rt_tgsigqueueinfo": {"sig": "flags[signal]"},
    "pidfd_send_signal": {"sig": "flags[signal]"},
    "sigaction": {"sig": "flags[signal]"},
    "rt_sigaction": {"sig": "flags[signal]"},
    "sigprocmask": {"how": "flags[sigprocmask_how]"},
    "rt_sigprocmask": {"how": "flags[sigprocmask_how]", "set": "struct[sigset,in]", "oset": "struct[sigset,out]"},
    "rt_sigpending": {"set": "struct[sigset,out]"},
    "rt_sigsuspend": {"unewset": "struct[sigset,in]"},
    "timer_create": {"timer_event_spec": _ts("sigevent")},
    "timer_settime": {"new": _ts("old_itimerspec32"), "flags": "flags[timer_flags]"},
    "timerfd_settime": {"flags": "flags[timerfd_settime_flags]"},
    "setitimer": {"value": _ts("__kernel_old_itimerval")},
    "nanosleep": {"rqtp": _ts("old_timespec32")},
    "clock_settime": {"tp": _ts("old_timespec32")},
    "clock_nanosleep": {"rqtp": _ts("old_timespec32"), "flags": "flags[timer_flags]"},
    "settimeofday": {"tv": _ts("__kernel_old_timeval"), "tz": _ts("timezone")},
    "_newselect": {"tvp": _ts("__kernel_old_timeval")},
    "pselect6": {"tsp": _ts("old_timespec32")},
    "pselect6_time64": {"tsp": _ts("__kernel_timespec")},
    "ppoll": {"ufds": "struct[pollfd,in,count=nfds]", "tsp": _ts("old_timespec32"), "sigmask": _ts("sigset")},
    "ppoll_time64": {
        "ufds": "struct[pollfd,in,count=nfds]",
        "tsp": _ts("__kernel_timespec"),
        "sigmask": _ts("sigset"),
    },
    "poll": {"ufds": "struct[pollfd,in,count=nfds]"},
    "io_getevents": {"timeout": _ts("old_timespec32")},
    "io_pgetevents": {"timeout": _ts("old_timespec32")},
    "io_pgetevents_time64": {"timeout": _ts("__kernel_timespec")},
    "recvmmsg": {"flags": "flags[msg_flags]", "timeout": _ts("old_timespec32")},
    "recvmmsg_time64": {"flags": "flags[msg_flags]", "timeout": _ts("__kernel_timespec")},
    "sendmmsg": {"flags": "flags[msg_flags]", "msg": _ts("mmsghdr")},
    "futex_waitv": {"waiters": _ts("futex_waitv"), "timeout": _ts("__kernel_timespec")},
    "futex": {"op": "flags[futex_op]"},
    "futex_time64": {"op": "flags[futex_op]"},
    "timerfd_create": {"clockid": "flags[clockid]", "flags": "flags[fd_flags]"},
    "socket": {"family": "flags[socket_family]", "type": "flags[socket_type]"},
    "socketpair": {"family": "flags[socket_family]", "type": "flags[socket_type]", "usockvec": "struct[fd_pair,out]"},
    "bind": {"umyaddr": "struct[sockaddr,in,len=addrlen]"},
    "connect": {"uservaddr": "struct[sockaddr,in,len=addrlen]"},
    "accept": {"upeer_sockaddr": "struct[sockaddr,out,len=upeer_addrlen]"},
    "accept4": {"upeer_sockaddr": "struct[sockaddr,out,len=upeer_addrlen]", "flags": "flags[fd_flags]"},
    "getsockname": {"usockaddr": "struct[sockaddr,out,len=usockaddr_len]"},
    "getpeername": {"usockaddr": "struct[sockaddr,out,len=usockaddr_len]"},
    "send": {"buff": "buf[in,len=len]", "flags": "flags[msg_flags]"},
    "sendto": {"buff": "buf[in,len=len]", "flags": "flags[msg_flags]", "addr": "struct[sockaddr,in,len=addr_len]"},
    "recv": {"flags": "flags[msg_flags]"},
    "recvfrom": {"flags": "flags[msg_flags]", "addr": "struct[sockaddr,out,len=addr_len]"},
    "sendmsg": {"msg": _ts("user_msghdr"), "flags": "flags[msg_flags]"},
    "recvmsg": {"flags": "flags[msg_flags]"},
    "setsockopt": {"level": "flags[socket_level]", "optval": "buf[in,len=optlen]"},
    "getsockopt": {"level": "flags[socket_level]"},
    "shutdown": {"how": "flags[shutdown_how]"},
    "pipe": {"fildes": "struct[fd_pair,out]"},
    "pipe2": {"fildes": "struct[fd_pair,out]", "flags": "flags[fd_flags]"},
    "dup3": {"flags": "flags[fd_flags]"},
    "epoll_create1": {"flags": "flags[epoll_create_flags]"},
    "getrandom": {"flags": "flags[getrandom_flags]"},
    "clock_nanosleep_time64": {"flags": "flags[timer_flags]"},
    "timer_settime64": {"flags": "flags[timer_flags]"},
    "timerfd_settime64": {"flags": "flags[timerfd_settime_flags]"},
    "inotify_init1": {"flags": "flags[fd_flags]"},
    "eventfd2": {"flags": "flags[fd_flags]"},
    "signalfd4": {"flags": "flags[fd_flags]"},
    "userfaultfd": {"flags": "flags[fd_flags]"},
    "memfd_create": {"flags": "flags[memfd_flags]"},
    "epoll_ctl": {"op": "flags[epoll_op]", "event": _ts("epoll_event")},
    "epoll_pwait": {"sigmask": _ts("sigset")},
    "epoll_pwait2": {"sigmask": _ts("sigset")},
    "getdents64": {"dirent": "struct[linux_dirent64,out,len=count]"},
    "close_range": {"max_fd": "unsigned"},
    "readv": {"vec": "iov[out,count=vlen]"},
    "preadv": {"vec": "iov[out,count=vlen]"},
    "preadv2": {"vec": "iov[out,count=vlen]"},
    "process_vm_readv": {"lvec": "iov[out,count=liovcnt]", "rvec": "ptr"},
    "process_vm_writev": {"rvec": "ptr"},
    "sched_setaffinity": {"user_mask_ptr": "buf[in,len=len]"},
    "sched_getaffinity": {"user_mask_ptr": "buf[out,len=len]"},
    "sched_setparam": {"param": _ts("sched_param")},
    "sched_setscheduler": {"param": _ts("sched_param")},
    "sched_setattr": {"attr": _ts("sched_attr")},
    "setrlimit": {"resource": "flags[rlimit_resource]", "rlim": _ts("rlimit")},
    "ugetrlimit": {"resource": "flags[rlimit_resource]"},
    "prlimit64": {"resource": "flags[rlimit_resource]"},
    "msgsnd": {"msgp": _ts("msgbuf")},
    "semop": {"sops": _ts("sembuf")},
    "semtimedop": {"sops": _ts("sembuf")},
    "semtimedop_time64": {"sops": _ts("sembuf")},
    "adjtimex": {"txc_p": _ts("old_timex32")},
    "clock_adjtime": {"tx": _ts("old_timex32")},
    "clock_adjtime64": {"tx": _ts("__kernel_timex")},
    "perf_event_open": {"attr_uptr": _ts("perf_event_attr")},
    "bpf": {"attr": _ts("bpf_attr")},
    "set_robust_list": {"head": _ts("robust_list_head")},
    "kexec_load": {"segments": _ts("kexec_segment")},
    "io_uring_setup": {"p": _ts("io_uring_params")},
    "rseq": {"rseq": _ts("rseq")},
    "io_cancel": {"iocb": _ts("iocb")},
}

# Return kinds (see qppsuite/plugins/syscalls/table.py RETURN_TYPES); the rest return "long".
FD_RETURNING = {
    "open",
    "openat",
    "openat2",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "socket",
    "accept",
    "accept4",
    "epoll_create",
    "epoll_create1",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "inotify_init",
    "inotify_init1",
    "fanotify_init",
    "memfd_create",
    "userfaultfd",
    "perf_event_open",
    "pidfd_open",
    "pidfd_getfd",
    "open_by_handle_at",
    "fsopen",
    "fsmount",
    "fspick",
    "open_tree",
    "io_uring_setup",
    "mq_open",
    "landlock_create_ruleset",
}
SSIZE_RETURNING = {
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "sendfile",
    "sendfile64",
    "recv",
    "recvfrom",
    "send",
    "sendto",
    "recvmsg",
    "sendmsg",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "getrandom",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "process_vm_readv",
    "process_vm_writev",
    "getcwd",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "msgrcv",
    "lookup_dcookie",
    "syslog",
    "sched_getaffinity",
}
PTR_RETURNING = {"mmap2", "mremap", "shmat"}
RAW_RETURNING = {"brk", "get_tls"}
NORETURN = {"exit", "exit_group", "sigreturn", "rt_sigreturn"}
NORETURN_ON_SUCCESS = {"execve", "execveat"}

# ARM private calls: arch/arm/kernel/traps.c arm_syscall() reads them straight from the
# saved registers (cacheflush: do_cache_op(r0, r1, r2); set_tls: set_tls(r0)).
ARM_PRIVATE_ARGS: dict[str, list[tuple[str, str]]] = {
    "breakpoint": [],
    "cacheflush": [("start", "ptr"), ("end", "ptr"), ("flags", "int")],
    "usr26": [],
    "usr32": [],
    "set_tls": [("tls", "ptr")],
    "get_tls": [],
}
ARM_PRIVATE_TRAPS_EVIDENCE = {
    "cacheflush": "do_cache_op(regs->ARM_r0, regs->ARM_r1, regs->ARM_r2)",
    "set_tls": "set_tls(regs->ARM_r0)",
}

# Which headers define each flag set's names, in the order the compiler would see them
# (ARM's own header first, so its values win over asm-generic's #ifndef defaults).
FLAG_HEADERS: dict[str, tuple[str, ...]] = {
    "open_flags": ("arch/arm/include/uapi/asm/fcntl.h", "include/uapi/asm-generic/fcntl.h"),
    "fd_flags": ("arch/arm/include/uapi/asm/fcntl.h", "include/uapi/asm-generic/fcntl.h"),
    "fcntl_cmd": (
        "arch/arm/include/uapi/asm/fcntl.h",
        "include/uapi/asm-generic/fcntl.h",
        "include/uapi/linux/fcntl.h",
    ),
    "mmap_prot": ("include/uapi/asm-generic/mman-common.h",),
    "mmap_flags": (
        "include/uapi/linux/mman.h",
        "include/uapi/asm-generic/mman.h",
        "include/uapi/asm-generic/mman-common.h",
    ),
    "msync_flags": ("include/uapi/asm-generic/mman-common.h",),
    "madvise_advice": ("include/uapi/asm-generic/mman-common.h",),
    "mlockall_flags": ("include/uapi/asm-generic/mman.h",),
    "mremap_flags": ("include/uapi/linux/mman.h",),
    "clone_flags": ("include/uapi/linux/sched.h", "arch/arm/include/uapi/asm/signal.h"),
    "unshare_flags": ("include/uapi/linux/sched.h",),
    "at_flags": ("include/uapi/linux/fcntl.h",),
    "unlinkat_flags": ("include/uapi/linux/fcntl.h",),
    "faccessat_flags": ("include/uapi/linux/fcntl.h",),
    "wait_options": ("include/uapi/linux/wait.h",),
    "signal": ("arch/arm/include/uapi/asm/signal.h",),
    "sigprocmask_how": ("include/uapi/asm-generic/signal-defs.h",),
    "socket_family": ("include/linux/socket.h",),
    "socket_type": ("include/linux/net.h", "arch/arm/include/uapi/asm/fcntl.h", "include/uapi/asm-generic/fcntl.h"),
    "msg_flags": ("include/linux/socket.h",),
    "shutdown_how": ("include/linux/net.h",),
    "rename_flags": ("include/uapi/linux/fs.h",),
    "seek_whence": ("include/uapi/linux/fs.h",),
    "reboot_magic1": ("include/uapi/linux/reboot.h",),
    "reboot_magic2": ("include/uapi/linux/reboot.h",),
    "reboot_cmd": ("include/uapi/linux/reboot.h",),
    "clockid": ("include/uapi/linux/time.h",),
    "futex_op": ("include/uapi/linux/futex.h",),
    "epoll_op": ("include/uapi/linux/eventpoll.h",),
    "fadvise_advice": ("include/uapi/linux/fadvise.h",),
    "memfd_flags": ("include/uapi/linux/memfd.h",),
    "access_mode": (),
    "prctl_option": ("include/uapi/linux/prctl.h",),
    "ptrace_request": ("include/uapi/linux/ptrace.h", "arch/arm/include/uapi/asm/ptrace.h"),
    "ptrace_options": ("include/uapi/linux/ptrace.h",),
    "ioctl_request": (
        "include/uapi/asm-generic/ioctls.h",
        "include/uapi/asm-generic/sockios.h",
        "include/uapi/linux/sockios.h",
    ),
    "socket_level": ("include/linux/socket.h", "include/uapi/asm-generic/socket.h"),
    "suid_dump": ("include/linux/sched/coredump.h",),
    "getrandom_flags": ("include/uapi/linux/random.h",),
    "timer_flags": ("include/uapi/linux/time.h",),
    "timerfd_settime_flags": ("include/uapi/linux/timerfd.h",),
    "epoll_create_flags": (
        "include/uapi/linux/eventpoll.h",
        "arch/arm/include/uapi/asm/fcntl.h",
        "include/uapi/asm-generic/fcntl.h",
    ),
    "sockopt_socket": ("include/uapi/asm-generic/socket.h",),
    "sockopt_tcp": ("include/uapi/linux/tcp.h",),
    "sockopt_ip": ("include/uapi/linux/in.h",),
    "sockopt_ipv6": ("include/uapi/linux/in6.h",),
    "rlimit_resource": ("include/uapi/asm-generic/resource.h",),
    "sa_flags": ("arch/arm/include/uapi/asm/signal.h", "include/uapi/asm-generic/signal-defs.h"),
    "poll_events": ("include/uapi/asm-generic/poll.h",),
    "epoll_events": ("include/uapi/linux/eventpoll.h",),
    "statx_mask": ("include/uapi/linux/stat.h",),
    "statx_attributes": ("include/uapi/linux/stat.h",),
    "statx_flags": ("include/uapi/linux/fcntl.h",),
    "fd_cloexec": ("include/uapi/asm-generic/fcntl.h",),
}
# Names printed that are not macros of the kernel headers, and why.
NOT_IN_HEADERS: dict[str, str] = {
    "R_OK": "POSIX <unistd.h>; the kernel spells these MAY_* internally",
    "W_OK": "POSIX <unistd.h>",
    "X_OK": "POSIX <unistd.h>",
    "F_OK": "POSIX <unistd.h>",
}
ERRNO_HEADERS = ("include/uapi/asm-generic/errno-base.h", "include/uapi/asm-generic/errno.h", "include/linux/errno.h")


class GenError(Exception):
    """The kernel sources say something this generator has no rule for."""


# --- a small C preprocessor: conditionals and object-like #defines -----------------------


def active_lines(text: str, path: str, defined: dict[str, str] | None = None, *, strict: bool = True) -> Iterator[str]:
    """The lines the compiler would see, with #if decided by CONDITIONS and earlier #defines.

    ``strict`` stops on a condition CONDITIONS does not decide.  Header scans for constants
    are not strict (kernel-internal headers test many CONFIG_ options irrelevant to the
    values checked): they take such a branch as active, and a wrong choice surfaces as a
    value mismatch in verify_constants.
    """
    defined = {} if defined is None else defined

    def unknown(kind: str, expr: str) -> bool:
        if strict:
            raise GenError(f"{path}: no truth value for #{kind} {expr}; add it to CONDITIONS")
        return True

    lines = text.replace("\\\n", " ").splitlines()
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch already taken)

    def active() -> bool:
        return all(a for a, _ in stack)

    def decide(kind: str, expr: str) -> bool:
        expr = " ".join(expr.split("/*")[0].split())
        if kind in ("ifdef", "ifndef"):
            if expr in defined:
                value = True
            elif expr in CONDITIONS:
                value = CONDITIONS[expr]
            elif expr.startswith(("CONFIG_", "__ARCH_WANT", "__KERNEL__")):
                return unknown(kind, expr)
            else:
                value = False
            return value if kind == "ifdef" else not value
        if expr in CONDITIONS:
            return CONDITIONS[expr]
        m = re.fullmatch(r"!?defined\s*\(?\s*(\w+)\s*\)?", expr)
        if m and m.group(1) in defined:
            return not expr.startswith("!")
        return unknown(kind, expr)

    for line in lines:
        m = re.match(r"\s*#\s*(\w+)\s*(.*)", line)
        if m:
            kind, rest = m.group(1), m.group(2)
            if kind in ("if", "ifdef", "ifndef"):
                value = decide(kind, rest) if active() else False
                stack.append((value, value))
                continue
            if kind == "elif":
                _, taken = stack.pop()
                value = (not taken) and active() and decide("elif", rest)
                stack.append((value, taken or value))
                continue
            if kind == "else":
                _, taken = stack.pop()
                stack.append((not taken, True))
                continue
            if kind == "endif":
                stack.pop()
                continue
            if kind == "define" and active():
                dm = re.match(r"(\w+)(?!\()\s*(.*)", rest)
                if dm and not re.match(r"\w+\(", rest):
                    defined.setdefault(dm.group(1), dm.group(2).split("/*")[0].strip())
                continue
            if kind == "undef" and active():
                defined.pop(rest.strip(), None)
            continue
        if active():
            yield line
    if stack:
        raise GenError(f"{path}: unbalanced #if")


# --- prototypes --------------------------------------------------------------------------


@dataclass
class Param:
    ctype: str
    name: str | None


def norm_type(ctype: str) -> str:
    """One spelling per C type, so syscalls.h and SYSCALL_DEFINE can be compared."""
    tokens = re.findall(r"\w+|\*", ctype)
    spelled = " ".join(tokens)
    return re.sub(r"\bunsigned(?! (int|long|char|short)\b)", "unsigned int", spelled)


def split_params(text: str) -> list[Param]:
    text = " ".join(text.split())
    if text in ("", "void"):
        return []
    params = []
    for raw in text.split(","):
        raw = raw.strip()
        tokens = re.findall(r"\w+|\*", raw)
        last = tokens[-1]
        unnamed = (
            last == "*"
            or len(tokens) == 1
            or last in ("int", "long", "unsigned", "char", "short")
            or (raw.endswith("*"))
        )
        if unnamed:
            params.append(Param(norm_type(raw), None))
        else:
            params.append(Param(norm_type(raw[: raw.rfind(last)]), last))
    return params


def header_prototypes(text: str, path: str) -> dict[str, list[Param]]:
    active = "\n".join(active_lines(text, path))
    protos: dict[str, list[Param]] = {}
    for m in re.finditer(r"asmlinkage\s+long\s+(sys_\w+)\s*\(([^;{]*?)\)\s*;", active):
        if m.group(1) in protos:
            raise GenError(f"{path}: two active prototypes for {m.group(1)}")
        protos[m.group(1)] = split_params(m.group(2))
    return protos


def arch_definitions(text: str) -> dict[str, list[Param]]:
    out = {}
    for m in re.finditer(r"asmlinkage\s+(?:long|int)\s+(sys_\w+)\s*\(([^)]*)\)\s*\{", text):
        out[m.group(1)] = split_params(m.group(2))
    return out


def syscall_defines(text: str) -> dict[str, list[list[Param]]]:
    out: dict[str, list[list[Param]]] = {}
    for m in re.finditer(r"(?<!COMPAT_)\bSYSCALL_DEFINE(\d)\(\s*(\w+)\s*([^()]*)\)", text):
        items = [x.strip() for x in " ".join(m.group(3).split()).lstrip(",").split(",") if x.strip()]
        if len(items) != 2 * int(m.group(1)):
            continue
        pairs = [Param(norm_type(items[i]), items[i + 1]) for i in range(0, len(items), 2)]
        out.setdefault("sys_" + m.group(2), []).append(pairs)
    return out


def asm_tail_calls(text: str) -> dict[str, str]:
    """entry-common.S labels like ``sys_mmap2:`` and the ``b sys_x`` they end in."""
    out = {}
    for m in re.finditer(r"^(sys_\w+):\s*$(.*?)^ENDPROC\(\1\)", text, re.M | re.S):
        targets = re.findall(r"^\s*b\s+(sys_\w+)", m.group(2), re.M)
        if targets:
            out[m.group(1)] = targets[-1]
    return out


# --- classification ----------------------------------------------------------------------


def classify(call: str, index: int, params: list[Param], used: set[tuple[str, str]]) -> str:
    p = params[index]
    name = p.name or ""
    override = OVERRIDES.get(call, {}).get(name)
    if override:
        used.add((call, name))
        return override
    t = p.ctype
    nxt = params[index + 1] if index + 1 < len(params) else None
    length = nxt.name if nxt is not None and nxt.name in LENGTH_NAMES else None
    const = t.startswith("const ")
    if t in U64_TYPES:
        return "u64"
    if "*" in t:
        base = t.replace("__user", "").replace("const", "").replace("*", "").strip()
        base = " ".join(base.split())
        if t.count("*") > 1:
            return "argv" if base == "char" and t.count("const") == 2 else "ptr"
        if base == "char":
            if name in PATH_NAMES:
                return "path"
            if length:
                return f"buf[{'in' if const else 'out'},len={length}]"
            return "cstring"
        if base == "void":
            return f"buf[{'in' if const else 'out'},len={length}]" if length else "ptr"
        if base == "struct iovec":
            if nxt is None or nxt.name is None:
                raise GenError(f"{call}: iovec argument {name} has no count after it")
            return f"iov[in,count={nxt.name}]"
        if base.startswith(("struct ", "union ")):
            return f"struct[{base.split()[1]},{'in' if const else 'out'}]"
        return "ptr"
    if name in FD_NAMES and (t in INT_TYPES or t in UNSIGNED_TYPES or t in ULONG_TYPES or t == "mqd_t"):
        return "fd"
    if t == "umode_t":
        return "mode"
    if t == "size_t":
        return "size"
    if t == "clockid_t":
        return "flags[clockid]"
    if t in LONG_TYPES:
        return "long"
    if t in ULONG_TYPES:
        return "ulong"
    if t in INT_TYPES:
        return "int"
    if t in UNSIGNED_TYPES:
        return "unsigned"
    if t in POINTER_TYPEDEFS:
        return "ptr"
    raise GenError(f"{call}: no rule for argument {name or '?'} of C type {t!r}")


def layout(call: str, params: list[Param], types: list[str]) -> list[str]:
    """Place arguments in r0-r6 with EABI's even-register rule for 64-bit values, then join
    explicit lo/hi halves (preadv's pos_l/pos_h, _llseek's offset_low/offset_high)."""
    placed: list[tuple[str, str, list[int]]] = []
    reg = 0
    for p, typ in zip(params, types, strict=True):
        if typ == "u64":
            reg += reg % 2
            placed.append((p.name or "", typ, [reg, reg + 1]))
            reg += 2
        else:
            placed.append((p.name or "", typ, [reg]))
            reg += 1
    if reg > 7:
        raise GenError(f"{call}: needs {reg} registers, EABI has r0-r6")
    by_name = {n: i for i, (n, _, _) in enumerate(placed)}
    for lo_s, hi_s in (("_l", "_h"), ("_low", "_high")):
        for n, _, _ in list(placed):
            if n.endswith(lo_s):
                stem = n[: -len(lo_s)]
                hi = stem + hi_s
                if hi in by_name:
                    lo_reg = placed[by_name[n]][2][0]
                    hi_reg = placed[by_name[hi]][2][0]
                    placed[by_name[n]] = (stem, "u64", [lo_reg, hi_reg])
                    placed = [x for x in placed if x[0] != hi]
                    by_name = {nn: i for i, (nn, _, _) in enumerate(placed)}
    out = []
    for n, typ, regs in placed:
        where = "@" + ":".join(f"r{r}" for r in regs)
        out.append(f"{n}:{typ}{where}")
    return out


# --- header constants --------------------------------------------------------------------


def header_defines(root: Path, headers: tuple[str, ...]) -> dict[str, int]:
    """Integer values of the object-like macros and enum members of ``headers``."""
    raw: dict[str, str] = {}
    for h in headers:
        text = (root / h).read_text(encoding="utf-8", errors="replace")
        lines = list(active_lines(text, h, raw, strict=False))
        for m in re.finditer(r"^\s*(\w+)\s*=\s*([^,/\n]+)\s*,?", "\n".join(lines), re.M):
            raw.setdefault(m.group(1), m.group(2).strip())
        enum_body = re.findall(r"enum\s*\w*\s*\{([^}]*)\}", "\n".join(lines), re.S)
        for body in enum_body:
            value: int | None = -1
            for item in body.split(","):
                item = re.sub(r"/\*.*?\*/", "", item, flags=re.S).strip()
                if not item or not re.match(r"\w+", item):
                    continue
                key, _, expr = item.partition("=")
                try:  # tcp.h's TCP_FLAG_* = __constant_cpu_to_be32(...) have no value here
                    value = evaluate(expr.strip(), raw) if expr.strip() else None if value is None else value + 1
                except GenError:
                    value = None
                if value is not None:
                    raw.setdefault(key.strip(), str(value))
    values = {}
    for k in raw:
        try:
            values[k] = evaluate(raw[k], raw)
        except (GenError, RecursionError, SyntaxError):  # SyntaxError: a multi-line macro's first line
            continue
    return values


def evaluate(expr: str, macros: dict[str, str], depth: int = 0) -> int:
    if depth > 20:
        raise GenError(f"macro expansion too deep at {expr!r}")
    expr = re.sub(r"/\*.*?\*/", "", expr).strip()
    expr = re.sub(r"\(__force\s+\w+\)", "", expr)  # eventpoll.h: (__force __poll_t)0x00000001

    def sub_name(m: re.Match[str]) -> str:
        word = m.group(0)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+[uUlL]*", word):
            return str(int(re.sub(r"[uUlL]+$", "", word), 16))
        if re.fullmatch(r"\d+[uUlL]*", word):
            digits = re.sub(r"[uUlL]+$", "", word)
            return str(int(digits, 8) if len(digits) > 1 and digits.startswith("0") else int(digits))
        if word in macros:
            return f"({evaluate(macros[word], macros, depth + 1)})"
        raise GenError(f"unknown name {word!r}")

    py = re.sub(r"\b\w+\b", sub_name, expr)
    if not re.fullmatch(r"[\d\s()|&~+\-<>*]+", py):
        raise GenError(f"not a constant expression: {expr!r}")
    return int(eval(py, {"__builtins__": {}}))  # only digits and operators reach here


def verify_constants(root: Path) -> list[str]:
    problems = []
    for name, fs in FLAGSETS.items():
        headers = FLAG_HEADERS.get(name)
        if headers is None:
            problems.append(f"flag set {name}: no headers listed in FLAG_HEADERS")
            continue
        values = header_defines(root, headers)
        for sym, val in fs.symbols().items():
            if sym.startswith("SIGRT_") and 33 <= val <= 64 and int(sym[6:]) == val - 32:
                continue
            if sym in NOT_IN_HEADERS:
                continue
            if sym not in values:
                problems.append(f"{name}: {sym} is not defined in {', '.join(headers)}")
            elif values[sym] & 0xFFFFFFFF != val & 0xFFFFFFFF:
                problems.append(
                    f"{name}: {sym} is {val:#o}/{val:#x} here, {values[sym]:#o}/{values[sym]:#x} in the kernel"
                )
    errnos = header_defines(root, ERRNO_HEADERS)
    numbered = {v: k for k, v in reversed(list(errnos.items())) if k.startswith("E") and 0 < v < 4096}
    for number, sym in ERRNO_NAMES.items():
        if errnos.get(sym) != number:
            problems.append(f"errno {sym}: {number} here, {errnos.get(sym)} in the kernel")
    for number, sym in numbered.items():
        if number not in ERRNO_NAMES:
            problems.append(f"errno {sym} ({number}) is missing from ERRNO_NAMES")
    return problems


# --- the table ---------------------------------------------------------------------------


def build_rows(root: Path) -> tuple[list[str], list[str]]:
    tbl = (root / TBL).read_text(encoding="utf-8")
    protos = header_prototypes((root / SYSCALLS_H).read_text(encoding="utf-8"), SYSCALLS_H)
    arch: dict[str, list[Param]] = {}
    for f in ARCH_C_FILES:
        arch.update(arch_definitions((root / f).read_text(encoding="utf-8")))
    defines: dict[str, list[list[Param]]] = {}
    for f in DEFINE_FILES:
        for k, v in syscall_defines((root / f).read_text(encoding="utf-8")).items():
            defines.setdefault(k, []).extend(v)
    tails = asm_tail_calls((root / ENTRY_COMMON).read_text(encoding="utf-8"))

    rows: list[str] = []
    skipped: list[str] = []
    used: set[tuple[str, str]] = set()
    for line in tbl.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split()
        number, abi, name = int(cols[0]), cols[1], cols[2]
        entry = cols[3] if len(cols) > 3 else None
        if abi == "oabi":
            skipped.append(f"{number} {name}")
            continue
        if abi not in ("common", "eabi"):
            raise GenError(f"{TBL}: unknown ABI {abi!r} for {name}")
        if entry is None or entry == "sys_ni_syscall":
            params: list[Param] = []
            entry_col = entry or "sys_ni_syscall"
        else:
            target = tails.get(entry, entry)
            found = protos.get(target, arch.get(target))
            if found is None:
                raise GenError(f"no prototype for {entry} (-> {target}) of {name}")
            params = [p for p in found if p.ctype != "struct pt_regs *"]
            if any(p.name is None for p in params):
                types = [p.ctype for p in params]
                matches = [d for d in defines.get(target, []) if [p.ctype for p in d] == types]
                if len(matches) != 1:
                    raise GenError(f"{target}: {len(matches)} SYSCALL_DEFINEs match types {types}")
                params = matches[0]
            entry_col = entry if target == entry else f"{entry}->{target}"
        types = [classify(name, i, params, used) for i in range(len(params))]
        rows.append(make_row(number, name, entry_col, layout(name, params, types)))
    unused = {(c, a) for c, args in OVERRIDES.items() for a in args} - used
    if unused:
        raise GenError(f"OVERRIDES entries that match no argument: {sorted(unused)}")
    rows.extend(arm_private_rows(root))
    return rows, skipped


def make_row(number: int, name: str, entry: str, args: list[str]) -> str:
    returns = (
        "fd"
        if name in FD_RETURNING
        else "ssize"
        if name in SSIZE_RETURNING
        else "ptr"
        if name in PTR_RETURNING
        else "ulong"
        if name in RAW_RETURNING
        else "long"
    )
    exit_kind = "noreturn" if name in NORETURN else "noreturn_on_success" if name in NORETURN_ON_SUCCESS else "-"
    num = f"{number:#x}" if number >= 0x0F0000 else str(number)
    return "\t".join((num, name, entry, returns, exit_kind, " ".join(args)))


def arm_private_rows(root: Path) -> list[str]:
    unistd = (root / ARM_UNISTD).read_text(encoding="utf-8")
    traps = (root / TRAPS_C).read_text(encoding="utf-8")
    base_m = re.search(r"#define __ARM_NR_BASE\s+\(__NR_SYSCALL_BASE\s*\+\s*(0x[0-9a-f]+)\)", unistd)
    if base_m is None:
        raise GenError(f"{ARM_UNISTD}: no __ARM_NR_BASE")
    base = int(base_m.group(1), 16)  # __NR_SYSCALL_BASE is 0 for EABI
    found = dict(re.findall(r"#define __ARM_NR_(\w+)\s+\(__ARM_NR_BASE\s*\+\s*(\d+)\)", unistd))
    found.pop("BASE", None)
    if set(found) != set(ARM_PRIVATE_ARGS):
        raise GenError(f"{ARM_UNISTD}: private calls {sorted(found)} differ from {sorted(ARM_PRIVATE_ARGS)}")
    for name in found:
        if f"case NR({name}):" not in traps:
            raise GenError(f"{TRAPS_C}: arm_syscall() has no case for {name}")
    for name, evidence in ARM_PRIVATE_TRAPS_EVIDENCE.items():
        if evidence not in traps:
            raise GenError(f"{TRAPS_C}: {name} no longer reads its registers as {evidence}")
    rows = []
    for name, offset in sorted(found.items(), key=lambda kv: int(kv[1])):
        args = [f"{n}:{t}@r{i}" for i, (n, t) in enumerate(ARM_PRIVATE_ARGS[name])]
        rows.append(make_row(base + int(offset), name, "arm_syscall", args))
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(root: Path, rows: list[str], skipped: list[str]) -> str:
    inputs = [TBL, SYSCALLS_H, ENTRY_COMMON, *ARCH_C_FILES, *DEFINE_FILES, ARM_UNISTD, TRAPS_C]
    lines = [
        "# ARM EABI Linux system calls: number, name, kernel entry, return kind, exit kind, arguments.",
        "# GENERATED by tools/gen_syscall_table.py - do not edit; change the generator and rerun it.",
        f"# Source: {SOURCE_DESCRIPTION}, obtained with `apt-get download linux-source-6.1=6.1.176-1`.",
        "# Inputs (path in the kernel tree, sha256):",
        *[f"#   {p}  {sha256(root / p)}" for p in dict.fromkeys(inputs)],
        f"# A copy of {TBL} is kept as {TBL_COPY.relative_to(REPO)}.",
        "# Rows: the 'common' and 'eabi' rows of syscall.tbl, then the ARM private calls at",
        "# __ARM_NR_BASE (0x0f0000, arch/arm/include/uapi/asm/unistd.h; arm_syscall() in traps.c).",
        f"# Left out (OABI-only, ENOSYS on an EABI kernel): {', '.join(skipped)}.",
        "# Entry 'a->b': the table's entry a is an assembler stub that branches to b (entry-common.S).",
        "# Return kinds: long | fd | ssize | ptr (errors are -4095..-1) | ulong (raw value, no errors).",
        "# Exit kinds: - | noreturn | noreturn_on_success.",
        "# Arguments: name:type[options]@rN, or @rLO:rHI for a 64-bit value (EABI puts it in an",
        "#   even/odd pair, so a skipped register is padding).  Options: in|out, len=ARG, count=ARG,",
        "#   a struct or flag-set name, n=K for a fixed array of K structs.",
        "#number\tname\tentry\treturns\texit\targs",
    ]
    return "\n".join(lines) + "\n" + "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--linux-src", type=Path, required=True, help="unpacked linux-source-6.1 tree")
    ap.add_argument("--out", type=Path, default=OUT_TSV)
    args = ap.parse_args()
    root: Path = args.linux_src
    try:
        problems = verify_constants(root)
        if problems:
            for p in problems:
                print(f"constant mismatch: {p}", file=sys.stderr)
            return 1
        rows, skipped = build_rows(root)
    except (GenError, OSError) as exc:
        print(f"gen_syscall_table: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(header(root, rows, skipped), encoding="utf-8")
    TBL_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / TBL, TBL_COPY)
    print(f"wrote {len(rows)} calls to {args.out} and copied {TBL} to {TBL_COPY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
