#!/usr/bin/env python3
"""Rebuilds fuzz/seeds/decode from the codec's vectors. Each seed is one selector byte (bit 0:
accept the packet's destination as a unicast peer) followed by a whole IP packet."""
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds", "decode")
VECTORS = os.path.join(ROOT, "core", "tests", "vectors")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in sorted(glob.glob(os.path.join(VECTORS, "*.vec"))):
        lines = open(f).read().splitlines()
        if any(l.strip().startswith("0x0000:") for l in lines):
            continue  # a tcpdump dump of a captured packet; the capture itself is read below
        packet = bytes.fromhex("".join(l for l in lines if not l.startswith("#")).replace(" ", ""))
        for sel in (0, 1):
            name = f"{os.path.basename(f)[:-4]}-{sel}.bin"
            open(os.path.join(OUT, name), "wb").write(bytes([sel]) + packet)
    # Distinct VRRP packets of the keepalived capture, without the 14-byte Ethernet header.
    text = open(os.path.join(VECTORS, "keepalived-v2-pass-k0s.txt")).read().splitlines()
    seen = []
    for i, line in enumerate(text):
        if "proto VRRP (112)" not in line:
            continue
        hexdump = ""
        for dump in text[i + 2:]:
            if not dump.strip().startswith("0x"):
                break
            hexdump += dump.strip().split(":", 1)[1].strip().split("  ")[0].replace(" ", "")
        ip = bytes.fromhex(hexdump)[14:]
        if ip not in seen:
            seen.append(ip)
            open(os.path.join(OUT, f"keepalived-{len(seen)}.bin"), "wb").write(b"\0" + ip)


if __name__ == "__main__":
    main()
