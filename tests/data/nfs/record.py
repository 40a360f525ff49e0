"""Record real Ganesha replies as fixtures for tests/test_nfs_codec.py.

Run as root from the repository root:  .venv/bin/python tests/data/nfs/record.py

Each ``<name>.bin`` is one whole RPC reply message (record marking removed) as Ganesha sent
it. ``manifest.json`` holds what the files looked like on disk at recording time, measured
with os.stat/open (not with the decoder), so the unit tests check the decoder against
independent facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nfsconf.exporters.ganesha import Ganesha  # noqa: E402
from nfsconf.nfs import nfs4  # noqa: E402
from nfsconf.nfs.mount3 import Mount3Client  # noqa: E402
from nfsconf.nfs.nfs3 import Nfs3Client  # noqa: E402
from nfsconf.nfs.nfs4 import Attr, Nfs4Client  # noqa: E402
from nfsconf.nfs.rpc import RpcClient  # noqa: E402

OUT = Path(__file__).resolve().parent
CONTENT = b"hello from nfsconf\n"


class Recorder:
    """Hook for RpcClient.on_exchange: saves the next reply under the name set before."""

    def __init__(self) -> None:
        self.name: str | None = None

    def __call__(self, proc: int, call: bytes, reply: bytes) -> None:
        if self.name is not None:
            (OUT / f"{self.name}.bin").write_bytes(reply)
            self.name = None

    def attach(self, client: RpcClient) -> None:
        client.on_exchange = self


def main() -> None:
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="nfsconf-rec-") as root:
        base = Path(root)
        (base / "hello.txt").write_bytes(CONTENT)
        (base / "sub").mkdir()
        for n in ("one", "two", "three"):
            (base / "sub" / n).write_text(n)
        # Several fragments of TCP data: a read reply larger than one segment.
        big = bytes(range(256)) * 280  # 70 KiB
        (base / "big.bin").write_bytes(big)

        def ino(rel: str) -> int:
            return os.stat(base / rel).st_ino

        manifest = {
            "content": CONTENT.decode(),
            "ino": {rel: ino(rel) for rel in (".", "hello.txt", "sub", "sub/one", "big.bin")},
            "sub_names": sorted(os.listdir(base / "sub")),
            "big_size": len(big),
            "ganesha": subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "nfs-ganesha"],
                                      capture_output=True, text=True).stdout,
        }
        with Ganesha(root, pseudo="/rec") as g:
            manifest["export_path"] = g.mount_path
            with Mount3Client(port=g.mnt_port) as m:
                rec.attach(m.rpc)
                rec.name = "mnt_ok"
                root_fh = m.mnt(g.mount_path).fh
                rec.name = "mnt_noent"
                m.mnt("/nonexistent/export")
                rec.name = "export"
                m.export()
            with Nfs3Client(port=g.port) as c:
                rec.attach(c.rpc)
                rec.name = "v3_getattr_root"
                c.getattr(root_fh)
                rec.name = "v3_lookup_file"
                fh = c.lookup(root_fh, "hello.txt").fh
                rec.name = "v3_lookup_noent"
                c.lookup(root_fh, "missing")
                rec.name = "v3_read_file"
                c.read(fh)
                big_fh = c.lookup(root_fh, "big.bin").fh
                rec.name = "v3_read_big"
                c.read(big_fh, 0, len(big))
                sub = c.lookup(root_fh, "sub").fh
                rec.name = "v3_readdirplus_sub"
                c.readdirplus(sub)
                rec.name = "v3_lookup_dotdot"
                c.lookup(sub, "..")
                rec.name = "v3_getattr_badhandle"
                c.getattr(fh[:8])
                rec.name = "v3_getattr_stale"
                c.getattr(fh[:-8] + bytes(b ^ 0xFF for b in fh[-8:-4]) + fh[-4:])
                rec.name = "v3_create"
                c.create(root_fh, "made.txt", 0o640)
                rec.name = "v3_remove"
                c.remove(root_fh, "made.txt")
                rec.name = "v3_remove_noent"
                c.remove(root_fh, "made.txt")
            with Nfs4Client(port=g.port) as v4:
                rec.attach(v4.rpc)
                rec.name = "v4_exchange_id"
                res = v4.compound_raw([nfs4.exchange_id(b"nfsconf-recorder", bytes(8))])
                eid = res.results[0].value
                rec.name = "v4_create_session"
                v4.compound_raw([nfs4.create_session(eid.clientid, eid.sequenceid)])
                v4.establish()
                rec.name = "v4_lookup_file"
                fh4 = v4.lookup_path("rec/hello.txt").fh
                assert fh4 is not None
                rec.name = "v4_getattr_many"
                v4.getattr_fh(fh4, *Attr)
                rec.name = "v4_read"
                v4.read_fh(fh4)
                rec.name = "v4_lookupp"
                v4.compound([nfs4.putrootfh(), nfs4.lookup("rec"), nfs4.lookup("sub"),
                             nfs4.lookupp(), nfs4.getfh(), nfs4.getattr()])
                rec.name = "v4_lookupp_notdir"
                v4.compound([nfs4.putfh(fh4), nfs4.lookupp()])
                rec.name = "v4_lookup_noent"
                v4.lookup_path("rec/missing")
                rec.name = "v4_putfh_badhandle"
                v4.getattr_fh(fh4[:8])
                rec.name = "v4_badsession"
                v4.compound_raw([nfs4.sequence(bytes(16), 1), nfs4.putrootfh()])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(list(OUT.glob('*.bin')))} replies into {OUT}")


if __name__ == "__main__":
    main()
