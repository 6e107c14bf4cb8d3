#!/usr/bin/env python3
"""An independent ESP (RFC 4303) AES-GCM (RFC 4106) peer with 64-bit ESN,
written from the RFCs on top of Python `cryptography`'s AESGCM. braid's
interop test drives it over stdin/stdout, one hex case per line.

  esp_peer.py verify   line: key salt spi seq esp inner   -> "ok" per line
  esp_peer.py seal     line: key salt spi seq iv extra_pad inner -> esp hex

key, salt, esp, inner, iv are hex; spi, seq, extra_pad are decimal.
Any failed check prints "FAIL line N: why" and exits 1.
"""
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NEXT_HEADER = {4: 4, 6: 41}  # inner IP version -> ESP next header


def aad(spi, seq):
    # RFC 4106 section 5 with ESN: SPI, seq high 32, seq low 32.
    return struct.pack(">III", spi, seq >> 32, seq & 0xFFFFFFFF)


def verify(n, key, salt, spi, seq, esp, inner):
    if len(esp) < 8 + 8 + 2 + 16:
        return "truncated"
    w_spi, w_seq_low = struct.unpack(">II", esp[:8])
    if w_spi != spi:
        return f"spi {w_spi:#x} != {spi:#x}"
    if w_seq_low != seq & 0xFFFFFFFF:
        return f"seq low {w_seq_low:#x} != {seq & 0xFFFFFFFF:#x}"
    iv = esp[8:16]
    if iv != struct.pack(">Q", seq):
        return "IV is not the 64-bit sequence number"
    body, tag = esp[16:-16], esp[-16:]
    if len(body) % 4 != 0:
        return f"encrypted part {len(body)} not 4-byte aligned (RFC 4303 2.4)"
    try:
        plain = AESGCM(key).decrypt(salt + iv, body + tag, aad(spi, seq))
    except Exception as e:  # InvalidTag
        return f"decrypt failed: {e!r}"
    pad_len, nh = plain[-2], plain[-1]
    if pad_len + 2 > len(plain):
        return "pad length beyond payload"
    payload = plain[: len(plain) - 2 - pad_len]
    pad = plain[len(payload) : len(plain) - 2]
    if pad != bytes(range(1, pad_len + 1)):
        return f"pad bytes {pad.hex()} are not 1,2,3,.."
    if pad_len > 3:
        return f"pad length {pad_len}: more than 4-byte alignment needs"
    if payload != inner:
        return "inner packet differs"
    want = NEXT_HEADER.get(inner[0] >> 4)
    if nh != want:
        return f"next header {nh} != {want}"
    return None


def seal(key, salt, spi, seq, iv, extra_pad, inner):
    nh = NEXT_HEADER[inner[0] >> 4]
    pad_len = (4 - (len(inner) + 2) % 4) % 4 + extra_pad
    plain = inner + bytes(range(1, pad_len + 1)) + bytes([pad_len, nh])
    sealed = AESGCM(key).encrypt(salt + iv, plain, aad(spi, seq))
    return struct.pack(">II", spi, seq & 0xFFFFFFFF) + iv + sealed


def main():
    mode = sys.argv[1]
    count = 0
    for n, line in enumerate(sys.stdin, 1):
        f = line.split()
        if not f:
            continue
        key, salt = bytes.fromhex(f[0]), bytes.fromhex(f[1])
        spi, seq = int(f[2]), int(f[3])
        if mode == "verify":
            why = verify(n, key, salt, spi, seq, bytes.fromhex(f[4]), bytes.fromhex(f[5]))
            if why:
                print(f"FAIL line {n}: {why}")
                return 1
            print("ok")
        elif mode == "seal":
            iv, extra = bytes.fromhex(f[4]), int(f[5])
            print(seal(key, salt, spi, seq, iv, extra, bytes.fromhex(f[6])).hex())
        else:
            print(f"FAIL unknown mode {mode}")
            return 1
        count += 1
    print(f"done {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
