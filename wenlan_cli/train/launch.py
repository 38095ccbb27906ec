"""`wenlan pretrain --nproc N`: re-launch the same command under torchrun."""

from __future__ import annotations

import subprocess
import sys


def strip_option(args: list[str], name: str) -> list[str]:
    """`args` without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def launch_torchrun(nproc: int, argv: list[str] | None = None) -> int:
    """Run `torchrun --standalone --nproc-per-node N -m wenlan_cli <same arguments>`."""
    args = strip_option(list(sys.argv[1:] if argv is None else argv), "--nproc")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "wenlan_cli", *args]
    print("launching: torchrun " + " ".join(command[3:]), file=sys.stderr)
    return subprocess.call(command)
