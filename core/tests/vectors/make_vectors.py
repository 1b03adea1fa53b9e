#!/usr/bin/env python3
"""Writes the hand-built VRRP vectors in this folder (*.vec).

An implementation independent of the Rust codec: the layout follows RFC 9568 §5 / RFC 3768
§5 field by field and the sums are plain RFC 1071 arithmetic. tshark then checks the result
(scenarios/tests/tshark.rs). Run: python3 core/tests/vectors/make_vectors.py
"""
import ipaddress
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def vrrp_message(version, vrid, prio, interval, addrs, auth=None):
    count = len(addrs)
    if version == 2:
        auth_type = 1 if auth is not None else 0
        head = struct.pack("!BBBBBBH", 0x21, vrid, prio, count, auth_type, interval // 100, 0)
    else:
        head = struct.pack("!BBBBHH", 0x31, vrid, prio, count, interval & 0x0FFF, 0)
    body = b"".join(ipaddress.ip_address(a).packed for a in addrs)
    tail = (auth or "").encode().ljust(8, b"\0") if version == 2 else b""
    return head + body + tail


def with_checksum(msg, form, src, dst):
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if form in ("v2", "rfc9568"):
        pseudo = b""
    elif form == "pseudo-header":  # IPv4 pseudo-header: src, dst, zero, protocol, length
        pseudo = s + d + struct.pack("!BBH", 0, 112, len(msg))
    else:  # ipv6, RFC 8200 §8.1: src, dst, 32-bit length, 3 zero bytes, next header
        pseudo = s + d + struct.pack("!I3xB", len(msg), 112)
    c = rfc1071(pseudo + msg)
    return msg[:6] + struct.pack("!H", c) + msg[8:]


def ip_packet(src, dst, msg, ident=0):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(msg), ident, 0, 255, 112, 0, s.packed, d.packed)
        h = h[:10] + struct.pack("!H", rfc1071(h)) + h[12:]
    else:  # version 6, traffic class 0xc0, flow 0
        h = struct.pack("!IHBB16s16s", (6 << 28) | (0xC0 << 20), len(msg), 112, 255, s.packed, d.packed)
    return h + msg


VECTORS = [
    dict(name="v3-ipv4-rfc9568", desc="VRRPv3 over IPv4, RFC 9568 message-only checksum (k0s-like: VRID 51, priority 200, 1 s)",
         version=3, src="10.200.0.11", dst="224.0.0.18", vrid=51, prio=200, interval=100,
         addrs=["10.200.0.200"], form="rfc9568"),
    dict(name="v3-ipv4-pseudo-header", desc="VRRPv3 over IPv4 with the IPv4 pseudo-header checksum (keepalived's and FRR's default), two VIPs, 50 cs",
         version=3, src="10.200.0.12", dst="224.0.0.18", vrid=52, prio=150, interval=50,
         addrs=["10.200.0.201", "10.200.0.202"], form="pseudo-header"),
    dict(name="v3-ipv4-unicast-pseudo-header", desc="VRRPv3 over IPv4 sent unicast to a peer (keepalived unicast_peer), pseudo-header over the real destination, priority 0 (resigning)",
         version=3, src="10.200.0.10", dst="10.200.0.12", vrid=53, prio=0, interval=100,
         addrs=["10.200.0.203"], form="pseudo-header", args=["--peer", "10.200.0.12"]),
    dict(name="v3-ipv6", desc="VRRPv3 over IPv6: link-local source, ff02::12, the VR's link-local address first, then a ULA VIP",
         version=3, src="fe80::a8c8:ff:fe00:b", dst="ff02::12", vrid=51, prio=200, interval=100,
         addrs=["fe80::200", "fd00:200::200"], form="ipv6"),
    dict(name="v3-ipv6-max-interval", desc="VRRPv3 over IPv6, owner priority 255, the largest interval (4095 cs)",
         version=3, src="fe80::a8c8:ff:fe00:c", dst="ff02::12", vrid=255, prio=255, interval=4095,
         addrs=["fe80::1"], form="ipv6"),
    dict(name="v2-no-auth", desc="VRRPv2 without authentication (auth type 0, zero auth data), 3 s interval",
         version=2, src="10.200.0.11", dst="224.0.0.18", vrid=1, prio=100, interval=300,
         addrs=["10.200.0.200"], form="v2"),
]


def main():
    for v in VECTORS:
        msg = vrrp_message(v["version"], v["vrid"], v["prio"], v["interval"], v["addrs"], v.get("auth"))
        msg = with_checksum(msg, v["form"], v["src"], v["dst"])
        pkt = ip_packet(v["src"], v["dst"], msg)
        expect = dict(
            ip_version=ipaddress.ip_address(v["src"]).version, src=v["src"], dst=v["dst"], ttl=255,
            version=v["version"], type=1, vrid=v["vrid"], priority=v["prio"], count=len(v["addrs"]),
            advert_interval_cs=v["interval"], auth_type="simple" if v.get("auth") else "none",
            # v2 always carries 8 auth bytes (shown as text, NULs trimmed); v3 has none.
            auth_data=(v.get("auth") or "") if v["version"] == 2 else None, checksum_ok=True, checksum_form=v["form"], addresses=v["addrs"],
        )
        hexlines = [pkt[i:i + 16].hex(" ", 2) for i in range(0, len(pkt), 16)]
        with open(os.path.join(HERE, v["name"] + ".vec"), "w") as f:
            f.write(f"# {v['desc']}\n")
            f.write("# Built by hand from RFC 9568 §5 / RFC 3768 §5 with make_vectors.py (own RFC 1071 sums);\n")
            f.write("# checked by tshark's VRRP dissector in scenarios/tests/tshark.rs.\n")
            if v.get("args"):
                f.write(f"# args: {' '.join(v['args'])}\n")
            f.write(f"# expect: {json.dumps(expect)}\n")
            f.write("\n".join(hexlines) + "\n")


if __name__ == "__main__":
    main()
