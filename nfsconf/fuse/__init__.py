"""nfsconf's reference FUSE server: speaks the /dev/fuse wire protocol itself (no libfuse).

Modules: ``abi`` (fuse.h 7.45 as structs), ``lookup_handle`` (FUSE_LOOKUP_HANDLE RFC v2/v3
wire dialects), ``server`` (protocol engine + /dev/fuse loop), ``nodes`` (nodeid policies),
``handle_ops`` (server side of LOOKUP_HANDLE), ``holder`` (keeps the fd across restarts),
``control`` (``RefServer``: start / live_restart / kill_and_takeover / stop), ``bench``
(cold decode rate), ``sysutil`` (mount(2), *_handle_at, mountinfo, fusectl via ctypes).

Run one by hand: ``python -m nfsconf.fuse SOURCE MOUNTPOINT [--nodeid stable|volatile] ...``.
"""
