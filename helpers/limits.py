"""The limits a graded kernel runs under, and how the trusted driver measures them.

Nothing here believes what the kernel says about itself. Memory and processes
are read from the operating system: the memory of every process the kernel
started (its proportional share, so that forks of one kernel count its pages
once), what its sandbox's ``/tmp`` and ``/dev/shm`` hold (tmpfs: memory that
is in no process's RSS), seen from outside through ``/proc/PID/root``, the
files in its scratch folder, and the memory files (``memfd``) and deleted
files its processes hold open. Output is counted in the raw bytes of the kernel's iopub messages
before any is decoded (:class:`CappedKernelClient`), a display update as many
times as the outputs it rewrites, so a kernel can make the driver neither
decode nor store more than the cap.

A limit that was hit is a :class:`LimitHit`: its :class:`Limit` kind for code,
its message for people.
"""
from __future__ import annotations

import enum
import os
from collections import Counter
from stat import S_ISREG
from dataclasses import dataclass
from pathlib import Path

import psutil
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

# Processes one sandbox may run at once (a kernel needs one; a DataLoader with workers a few more), and
# threads in all of them (a kernel with one torch thread runs about a dozen).
MAX_PROCESSES = 64
MAX_THREADS = 2048


class Limit(enum.Enum):
    MEMORY = "memory"
    TIME = "time"
    PROCESSES = "processes"
    OUTPUT = "output"


@dataclass(frozen=True)
class LimitHit:
    kind: Limit
    message: str


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def memory_held(tree: list[psutil.Process], scratch: Path | None, proportional: bool = False) -> dict[str, int]:
    """Bytes the sandbox holds, by where: its processes, its tmpfs, its scratch folder, files it holds open.

    ``tree`` starts with the sandbox's first process (bubblewrap, outside); ``scratch`` is the sandbox's
    scratch folder, None for a kernel without a sandbox (whose ``/tmp`` is the machine's, not its own).
    Processes count by their resident memory, or with ``proportional`` by their share of it (PSS; slower).
    """
    held = {"processes": 0, "/tmp": 0, "/dev/shm": 0, "scratch folder": 0, "open files": 0}
    running = []
    for process in tree:
        try:
            held["processes"] += _proportional_memory(process) if proportional else process.memory_info().rss
            running.append(process.pid)
        except psutil.Error:
            continue
    tmpfs: set[int] = set()
    for pid in running[1:] if scratch is not None else []:  # inside, each shows the sandbox's mounts
        devices = _read_tmpfs(pid, held)
        if devices is not None:
            tmpfs = devices
            break
    seen: set[tuple[int, int]] = set()
    for pid in running:
        held["open files"] += _open_file_bytes(pid, seen, tmpfs)
    if scratch is not None:
        held["scratch folder"] = _folder_bytes(scratch, seen)
    return held


def _proportional_memory(process: psutil.Process) -> int:
    """The process's share of the memory it uses (PSS): the pages a fork shares with its parent count once."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return process.memory_info().rss  # no smaps_rollup (Linux < 4.14, or not allowed to read it)


def _read_tmpfs(pid: int, held: dict[str, int]) -> set[int] | None:
    """Fill in what the sandbox's /tmp and /dev/shm hold, seen through ``pid``; their devices (None: unreadable)."""
    devices = set()
    for mount in ("/tmp", "/dev/shm"):
        path = f"/proc/{pid}/root{mount}"
        try:
            device, usage = os.stat(path).st_dev, os.statvfs(path)
        except OSError:
            return None
        if device not in devices:  # /dev/shm inside /dev's tmpfs where it is not a mount of its own
            held[mount] = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
            devices.add(device)
    return devices


def _open_file_bytes(pid: int, seen: set[tuple[int, int]], tmpfs: set[int]) -> int:
    """Memory files (memfd) and deleted files the process holds open: in no folder, yet held (the sandbox's
    tmpfs counts its own deleted files)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
            if not (target.startswith("/memfd:") or target.endswith(" (deleted)")):
                continue
            stat = os.stat(link)
        except OSError:
            continue
        if not S_ISREG(stat.st_mode) or stat.st_dev in tmpfs or (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        total += stat.st_blocks * 512
    return total


def _folder_bytes(folder: Path, seen: set[tuple[int, int]]) -> int:
    total, stack = 0, [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:  # a hard link is the same bytes
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def memory_hit(tree: list[psutil.Process], scratch: Path | None, limit: int) -> LimitHit | None:
    """The memory limit, if the sandbox holds more: by resident memory first (cheap, never less than the
    proportional share), then, to be sure, by the processes' proportional share."""
    if sum(memory_held(tree, scratch).values()) <= limit:
        return None
    held = memory_held(tree, scratch, proportional=True)
    total = sum(held.values())
    if total <= limit:
        return None
    parts = ", ".join(f"{where} {_gib(n)}" for where, n in held.items() if n >= 2**26)  # the parts of 64 MiB or more
    return LimitHit(Limit.MEMORY, f"memory limit: the kernel held {_gib(total)} ({parts}; limit {_gib(limit)})")


def processes_hit(tree: list[psutil.Process], limit: int = MAX_PROCESSES) -> LimitHit | None:
    """The process limit, if the sandbox runs more processes, or more threads, than allowed."""
    threads = 0
    for process in tree:
        try:
            threads += process.num_threads()
        except psutil.Error:
            pass
    if len(tree) <= limit and threads <= MAX_THREADS:
        return None
    return LimitHit(Limit.PROCESSES, f"process limit: the kernel ran {len(tree)} processes, {threads} threads at once "
                                     f"(limit {limit} processes, {MAX_THREADS} threads)")


# The key of a message the driver made in place of one it dropped: a kernel sets only the message's fields.
DROPPED = "grading_dropped"
OUTPUT_NOTICE = "[output limit reached: the rest of this notebook's output was dropped by the grader]\n"
# A message whose header, parent header or metadata is larger than this is no honest kernel's.
HEADER_MAX = 1 << 16
TYPES_WITH_DISPLAY_ID = ("display_data", "execute_result", "update_display_data")


class OutputBudget:
    """The bytes of output a kernel may send; ``hit`` once it sent more (the rest is dropped undecoded)."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.spent = 0
        self.hit: LimitHit | None = None
        self.shown: Counter[str] = Counter()  # display id -> outputs that an update of it rewrites
        self.errors_kept: set[str] = set()  # cells whose error was kept (its name only) after the cap

    def admit(self, session, frames: list[bytes]) -> dict:
        """The message ``frames`` (signature, header, parent, metadata, content, buffers...) decoded, or a stand-in."""
        size = sum(len(f) for f in frames)
        if len(frames) < 5 or any(len(f) > HEADER_MAX for f in frames[1:4]):
            return _unrouted()
        try:
            msg = session.deserialize(frames, content=False)  # the signature, header, parent and metadata
        except (ValueError, TypeError, KeyError):
            return _unrouted()
        if msg["msg_type"] == "status":  # free: the driver needs them to know that a cell ended
            msg["content"] = _decode(session, frames[4], HEADER_MAX)
            return msg if msg["content"] is not None else _unrouted()
        if self.hit or (self.limit is not None and self.spent + size > self.limit):  # past the cap: everything
            if msg["msg_type"] == "error":
                msg["content"] = _decode(session, frames[4], HEADER_MAX)
            return self._drop(msg)
        msg["content"] = content = _decode(session, frames[4], size)
        if content is None:
            return _unrouted()
        transient = content.get("transient")
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        if isinstance(display_id, str) and msg["msg_type"] in TYPES_WITH_DISPLAY_ID:
            size *= 1 + self.shown[display_id]  # nbclient writes it into every output shown with this id
            if msg["msg_type"] != "update_display_data":
                self.shown[display_id] += 1
            if self.limit is not None and self.spent + size > self.limit:
                return self._drop(msg)
        self.spent += size
        return msg

    def _drop(self, msg: dict) -> dict:
        if self.hit is None:
            self.hit = LimitHit(Limit.OUTPUT, f"output limit: the kernel sent more than {self.limit / 2**20:g} MiB of "
                                              "output; the rest was dropped")
        parent = msg.get("parent_header")
        parent = parent if isinstance(parent, dict) else {}
        stand_in = {"header": {"msg_id": "", "msg_type": "stream"}, "msg_id": "", "msg_type": "stream",
                    "parent_header": parent, "metadata": {}, "buffers": [], DROPPED: self.hit,
                    "content": {"name": "stderr", "text": OUTPUT_NOTICE}}
        cell, content = parent.get("msg_id"), msg.get("content")
        if msg.get("msg_type") == "error" and isinstance(cell, str) and cell not in self.errors_kept:
            # A cell that failed after the cap still shows that it failed (by the error's name only), so
            # that the driver does not take the missing traceback for a hidden one.
            self.errors_kept.add(cell)
            ename = str(content.get("ename", "Error"))[:200] if isinstance(content, dict) else "Error"
            stand_in.update(msg_type="error", header={"msg_id": "", "msg_type": "error"}, content={
                "ename": ename, "evalue": "", "traceback": [f"{ename}: (traceback dropped: output limit reached)"]})
        return stand_in


def _decode(session, frame: bytes, most: int) -> dict | None:
    """A message's content, or None when it is larger than ``most`` bytes or not a JSON object."""
    if len(frame) > most:
        return None
    try:
        content = session.unpack(frame)
    except ValueError:
        return None
    return content if isinstance(content, dict) else None


def _unrouted() -> dict:
    """In place of a malformed message: one that belongs to no cell, which the driver ignores."""
    return {"header": {"msg_id": "", "msg_type": "execute_input"}, "msg_id": "", "msg_type": "execute_input",
            "parent_header": {}, "metadata": {}, "content": {}, "buffers": []}


class CappedIOPubChannel(AsyncZMQSocketChannel):
    """The iopub channel, each message counted against ``budget`` before it is decoded."""

    def __init__(self, socket, session, loop=None):
        super().__init__(socket, session, loop)
        self.budget = OutputBudget()  # uncapped until the driver sets its limit

    async def _recv(self, **kwargs) -> dict:
        frames = await self.socket.recv_multipart(**kwargs)
        _identities, frames = self.session.feed_identities(frames)
        return self.budget.admit(self.session, frames)


class CappedKernelClient(AsyncKernelClient):
    iopub_channel_class = Type(CappedIOPubChannel)
