"""Pointing an executable at another program interpreter: the kernel's own exec proves it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nfsconf.vm.elfinterp import ElfError, interp_of, set_interp

TRUE = Path(shutil.which("true") or "/bin/true")


def test_exec_uses_the_new_interpreter(tmp_path):
    prog = tmp_path / "true"
    shutil.copy2(TRUE, prog)
    before = interp_of(prog)
    # the same loader under another name: exec must still work, and name the new one
    alias = tmp_path / "my-loader.so"
    alias.symlink_to(Path(before).resolve())
    set_interp(prog, str(alias))
    assert interp_of(prog) == str(alias)
    assert subprocess.run([str(prog)]).returncode == 0
    size = prog.stat().st_size
    set_interp(prog, str(alias))  # pointed again: the name is replaced, the file no longer
    assert prog.stat().st_size == size and interp_of(prog) == str(alias)
    # a loader that does not exist: the kernel fails the exec, so it read the new name
    set_interp(prog, str(tmp_path / "absent.so"))
    with pytest.raises(FileNotFoundError):
        subprocess.run([str(prog)])


def test_not_an_elf_is_a_clear_error(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ElfError, match="not a 64-bit"):
        set_interp(script, "/x")
