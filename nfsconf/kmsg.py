"""The kernel log around a scenario: a WARN, BUG or oops while it ran fails it."""

from __future__ import annotations

import contextlib
import os
import re

# What the kernel prints when something went wrong inside it, not merely a message.
BAD = re.compile(r"WARNING:|BUG:|Oops|general protection fault|Call Trace:|KASAN|"
                 r"use-after-free|refcount_t:|list_del corruption|hung_task|blocked for more")


class KmsgWatch:
    """Reads /dev/kmsg from the point of creation on; non-blocking, one record per read."""

    def __init__(self) -> None:
        self.fd: int | None = None
        with contextlib.suppress(OSError):
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self, limit: int = 10000) -> list[str]:
        lines: list[str] = []
        while self.fd is not None and len(lines) < limit:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records were overwritten while we read: go on
                continue
            _, _, text = record.decode(errors="replace").partition(";")
            lines.append(text.rstrip("\n"))
        return lines

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def kernel_trouble(lines: list[str]) -> list[str]:
    return [line for line in lines if BAD.search(line)]
