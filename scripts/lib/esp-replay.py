#!/usr/bin/env python3
"""Captures ESP-in-UDP frames arriving at a gateway's WAN interface, and
sends them again later from the other end of the link: an attacker's
replay, for the lab tests.

    esp-replay.py capture IFACE FILE SECONDS   # frames IFACE receives
    esp-replay.py inject IFACE FILE            # sends them on IFACE

Only IPv4 UDP frames to or from port 4500 and up whose payload is an ESP
packet (a non-zero SPI, longer than a NAT-keepalive) are kept. FILE holds
one frame per line, in hex. Run it inside the namespace that holds IFACE.
"""
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def is_esp(frame):
    if len(frame) < 14 + 20 + 8 + 16 or frame[12:14] != b"\x08\x00":
        return False
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != 17:
        return False
    udp = 14 + ihl
    dport = int.from_bytes(frame[udp + 2:udp + 4], "big")
    payload = frame[udp + 8:]
    return dport >= 4500 and len(payload) >= 16 and payload[:4] != b"\0\0\0\0"


def capture(iface, path, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.1)
    end = time.monotonic() + seconds
    frames = []
    while time.monotonic() < end:
        try:
            frame, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] != PACKET_OUTGOING and is_esp(frame):
            frames.append(frame)
    with open(path, "w") as f:
        for frame in frames:
            f.write(frame.hex() + "\n")
    print(len(frames))


def inject(iface, path):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    n = 0
    with open(path) as f:
        for line in f:
            s.send(bytes.fromhex(line.strip()))
            n += 1
    print(n)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "inject":
        inject(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
