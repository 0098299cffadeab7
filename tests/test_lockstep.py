"""tools/lockstep.py: the GDB remote client and decoders without QEMU, then real lockstep runs against QEMU."""

import gzip
import socket
import struct
import threading

import pytest
from test_qemu_differential import qemu_binary  # tests/ is on sys.path under pytest's default import mode
from tool_modules import load_tool

from qppsuite.images.bundle import ImageBundle
from qppsuite.images.initramfs import read_cpio_newc

lockstep = load_tool("lockstep")


# --- without QEMU --------------------------------------------------------------------------------


def fake_stub(sock: socket.socket, replies: dict[str, str], seen: list[str]) -> None:
    """Answers packets like QEMU's gdbstub: ack, then ``$reply#checksum``."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        while (start := buf.find(b"$")) >= 0 and (end := buf.find(b"#", start)) >= 0 and len(buf) >= end + 3:
            body = buf[start + 1 : end].decode()
            assert int(buf[end + 1 : end + 3], 16) == sum(body.encode()) & 0xFF, body
            buf = buf[end + 3 :]
            seen.append(body)
            reply = next((r for prefix, r in replies.items() if body.startswith(prefix)), "")
            sock.sendall(b"+$%s#%02x" % (reply.encode(), sum(reply.encode()) & 0xFF))


def test_gdb_client_reads_and_writes_registers_over_the_protocol() -> None:
    ours, theirs = socket.socketpair()
    regs = [*range(0x100, 0x110), 0x600001D3]
    replies = {"g": struct.pack("<17I", *regs).hex(), "P": "OK", "m": "d00dfeed", "qXfer": "l<target/>"}
    seen: list[str] = []
    server = threading.Thread(target=fake_stub, args=(theirs, replies, seen), daemon=True)
    server.start()
    gdb = lockstep.GdbRemote(ours)
    assert gdb.registers() == regs
    gdb.write_register(16, 0x1D3)
    gdb.write_register(15, 0x40208000)
    assert gdb.read_memory(0x40000000, 4) == bytes.fromhex("d00dfeed")
    ours.close()
    server.join(timeout=5)
    # QEMU refuses 'P' unless the target description was read first; CPSR is gdb register 25 (0x19).
    assert seen.index("qXfer:features:read:target.xml:0,ffb") < seen.index("P19=d3010000")
    assert "Pf=00802040" in seen and "m40000000,4" in seen


def test_gdb_client_turns_an_error_reply_into_a_lockstep_error() -> None:
    ours, theirs = socket.socketpair()
    threading.Thread(target=fake_stub, args=(theirs, {"m": "E14", "qXfer": "l"}, []), daemon=True).start()
    gdb = lockstep.GdbRemote(ours)
    with pytest.raises(lockstep.LockstepError, match="E14"):
        gdb.read_memory(0xC0000000, 4)
    ours.close()


@pytest.mark.parametrize(
    ("insn", "thumb", "rt"),
    [
        (0xEE109F10, False, 9),  # mrc p15, 0, r9, c0, c0, 0  (MIDR)
        (0xEE300F10, False, 0),  # mrc p15, 1, r0, c0, c0, 0  (CCSIDR)
        (0xEE100FD0, False, 0),  # mrc p15, 0, r0, c0, c0, 6  (REVIDR)
        (0xEE113F10, False, None),  # mrc p15, 0, r3, c1, c0, 0  (SCTLR: not an ID register)
        (0xEE109E10, False, None),  # mrc p14 (debug), not CP15
        (0xEE103F10, True, 3),  # Thumb-2 mrc p15, 0, r3, c0, c0, 0
        (0xE3A00000, False, None),  # mov r0, #0
    ],
)
def test_id_register_reads_are_recognised(insn: int, thumb: bool, rt: int | None) -> None:
    assert lockstep.is_id_register_read(insn, thumb) == rt


def test_qemu_return_address_follows_the_vector() -> None:
    regs = [0] * 17
    regs[14] = 0x1008
    for vector, expected in ((0x08, 0x1008), (0x0C, 0x1004), (0x10, 0x1000), (0x04, 0x1004)):
        regs[15] = 0xFFFF0000 + vector
        assert lockstep.qemu_return_pc(regs, False) == expected
    regs[15] = 0xFFFF0004
    assert lockstep.qemu_return_pc(regs, True) == 0x1006


# --- against QEMU ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qemu() -> str:
    """qemu-system-arm, installed through apt when missing, as the differential test does."""
    return qemu_binary()


@pytest.mark.boot
@pytest.mark.qemu
@pytest.mark.usefixtures("qemu")
def test_kernel_entry_runs_in_lockstep(default_image: ImageBundle) -> None:
    report = lockstep.lockstep_from_entry(default_image, 400)
    assert report.steps == 400 and report.divergences == [], report.format()
    assert any("ID register differs" in note for note in report.notes)  # MIDR: r2p1 here, r4p0 in QEMU


@pytest.mark.boot
@pytest.mark.qemu
@pytest.mark.usefixtures("qemu")
def test_a_register_difference_is_reported_at_its_step(default_image: ImageBundle) -> None:
    with lockstep.entry_machines(default_image, 256) as (qpp, qemu):
        report = lockstep.compare_steps(qpp, qemu, 20)
        assert report.divergences == []
        qemu.gdb.write_register(5, 0xDEADBEEF)
        report = lockstep.compare_steps(qpp, qemu, 20)
    assert len(report.divergences) == 1, report.format()
    divergence = report.divergences[0]
    assert divergence.step == 1 and "r5" in divergence.differing and "0xdeadbeef" in divergence.format()


def busybox_entry(image: ImageBundle) -> int:
    assert image.initrd_path is not None
    entries = read_cpio_newc(gzip.decompress(image.initrd_path.read_bytes()))
    elf = next(e.data for e in entries if e.path == "bin/busybox")
    return int.from_bytes(elf[0x18:0x1C], "little") & ~1  # e_entry, without the Thumb bit


HWCAP_EVTSTRM = 1 << 21


@pytest.mark.qemu
@pytest.mark.boot
@pytest.mark.usefixtures("qemu")
def test_a_process_runs_in_lockstep_until_the_first_board_difference(default_image: ImageBundle) -> None:
    """One exec'd busybox from its entry point, through its page faults and IT blocks.

    ``/bin/busybox`` with a slash is really exec'd by the shell (an applet name
    would run inside the shell), so the process is found by its comm in both
    machines.  The first difference is C start-up reading AT_HWCAP from the
    auxiliary vector: QEMU's board has the arch timer's event stream.
    """
    report = lockstep.lockstep_user(
        default_image, "/bin/busybox echo lockstep", busybox_entry(default_image), 400, comm="busybox"
    )
    assert report.notes and report.notes[0].startswith("synchronised at"), report.format()
    assert len(report.divergences) == 1, report.format()
    first = report.divergences[0]
    assert first.step > 200, report.format()
    assert len(first.differing) == 1, report.format()
    reg = lockstep.REG_NAMES.index(first.differing[0])
    assert first.qemu[reg] == first.qpp[reg] | HWCAP_EVTSTRM, report.format()
