"""nfsconf's reference FUSE server: speaks the /dev/fuse wire protocol itself (no libfuse).

Modules: ``abi`` (fuse.h 7.45 as structs, the ``Op`` opcodes), ``lookup_handle``
(FUSE_LOOKUP_HANDLE RFC v2/v3 wire dialects), ``server`` (``Server``: the parts below wired
together), ``config`` (its knobs, what INIT settled), ``engine`` (one request in, one reply
out), ``ops`` (the passthrough operations), ``dirs`` (directory handles), ``hostile`` (the
hostile "." lookups), ``handles`` and ``handle_ops`` (server side of LOOKUP_HANDLE),
``session`` (mount, INIT, takeover, the /dev/fuse loop), ``trace`` (the JSONL trace, written
and read), ``nodes`` (nodeid policies), ``holder`` (keeps the fd across restarts),
``control`` (``RefServer``: start / live_restart / kill_and_takeover / stop), ``initflags``
(INIT flag names by protocol minor), ``sysutil`` (mount(2), *_handle_at, mountinfo, fusectl
via ctypes).

Run one by hand: ``python -m nfsconf.fuse SOURCE MOUNTPOINT [--nodeid stable|volatile] ...``.
"""
