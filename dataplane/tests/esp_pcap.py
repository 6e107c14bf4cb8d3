#!/usr/bin/env python3
"""Decrypts the ESP-in-UDP frames of a pcap with Python's `cryptography`
(AES-GCM per RFC 4106, ESN AAD per RFC 4303 2.2.1), independently of braid.

usage: esp_pcap.py CAPTURE.pcap KEYS.json   (KEYS: {"spi": ["keyhex", "salthex"]})
Prints a JSON summary; exits 1 if any frame fails to decrypt or parse.
"""
import json
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = 0xB7A1D000


def frames(path):
    data = open(path, "rb").read()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4, "not a pcap"
    off = 24
    while off < len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        off += 16
        yield data[off:off + incl]
        off += incl


def checksum(data):
    """Ones' complement sum of 16-bit words (RFC 1071), not complemented."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def inner_tag(ip):
    if ip[0] >> 4 == 4:
        hl, proto = (ip[0] & 15) * 4, ip[9]
    elif ip[0] >> 4 == 6:
        hl, proto = 40, ip[6]
    else:
        return None
    l4 = {17: 8, 6: 20}.get(proto)
    if l4 is None:
        return None
    pay = ip[hl + l4:]
    if len(pay) < 12 or struct.unpack(">I", pay[:4])[0] != MAGIC:
        return None
    return struct.unpack(">II", pay[4:12])


def main():
    keys = {int(k): (bytes.fromhex(v[0]), bytes.fromhex(v[1])) for k, v in json.load(open(sys.argv[2])).items()}
    s = {"frames": 0, "decrypted": 0, "failed": 0, "next_header_253": 0, "next_header_4": 0,
         "next_header_41": 0, "inner_test_packets": 0, "outer_ipv6": 0, "errors": []}
    for f in frames(sys.argv[1]):
        s["frames"] += 1
        try:
            ip = f[14:]
            if f[12:14] == b"\x86\xdd":
                # Outer IPv6: no extension headers; the UDP checksum (which
                # IPv6 requires) must verify.
                assert ip[0] >> 4 == 6 and ip[6] == 17, "not IPv6/UDP"
                udp = ip[40:40 + struct.unpack(">H", ip[4:6])[0]]
                ulen = struct.unpack(">H", udp[4:6])[0]
                assert udp[6:8] != b"\0\0", "zero UDP checksum over IPv6"
                pseudo = ip[8:40] + struct.pack(">IxxxB", ulen, 17)
                assert checksum(pseudo + udp[:ulen]) == 0xFFFF, "bad UDP checksum"
                s["outer_ipv6"] += 1
            else:
                assert f[12:14] == b"\x08\x00", "not IPv4"
                ihl = (f[14] & 15) * 4
                total = struct.unpack(">H", ip[2:4])[0]
                assert checksum(ip[:ihl]) == 0xFFFF, "bad IPv4 header checksum"
                assert ip[9] == 17, "not UDP"
                udp = ip[ihl:total]
                ulen = struct.unpack(">H", udp[4:6])[0]
            esp = udp[8:ulen]
            spi, seq_lo = struct.unpack(">II", esp[:8])
            iv = esp[8:16]
            key, salt = keys[spi]
            # ESN: the receiver infers the high 32 bits; with fewer than 2^32
            # packets per SA they are 0 (RFC 4303 appendix A).
            seq_hi = 0
            aad = struct.pack(">III", spi, seq_hi, seq_lo)
            plain = AESGCM(key).decrypt(salt + iv, esp[16:], aad)
            pad_len, nh = plain[-2], plain[-1]
            pad = plain[-2 - pad_len:-2]
            assert pad == bytes(range(1, pad_len + 1)), "bad pad"
            assert (len(plain)) % 4 == 0, "not 4-byte aligned"
            payload = plain[:-2 - pad_len]
            s["decrypted"] += 1
            s["next_header_%d" % nh] = s.get("next_header_%d" % nh, 0) + 1
            if nh in (4, 41):
                if inner_tag(payload) is not None:
                    s["inner_test_packets"] += 1
            elif nh == 253:
                assert payload[0] >> 4 == 1, "bundle frame version"
                # Records after the 12-byte frame header: type, flags,
                # length; a data record's own header is 12 bytes in all.
                # A whole inner packet must be one of the test's.
                at = 12
                while at < len(payload) and payload[at] != 0:
                    ty, flags, length = payload[at], payload[at + 1], struct.unpack(">H", payload[at + 2:at + 4])[0]
                    rec = payload[at:at + 4 + length]
                    assert len(rec) == 4 + length, "record past the frame"
                    if ty == 1:
                        if flags & 0xC0 == 0xC0:
                            assert inner_tag(rec[12:]) is not None, "a whole inner packet not of the test"
                            s["inner_test_packets"] += 1
                        else:
                            s["inner_fragments"] = s.get("inner_fragments", 0) + 1
                    else:
                        assert ty in (2, 3), "record type %d" % ty
                    at += 4 + length
        except Exception as e:  # noqa: BLE001 - report every failure
            s["failed"] += 1
            if len(s["errors"]) < 5:
                s["errors"].append(repr(e))
    print(json.dumps(s))
    sys.exit(1 if s["failed"] else 0)


if __name__ == "__main__":
    main()
