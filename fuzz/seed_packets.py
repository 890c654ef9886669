#!/usr/bin/env python3
"""Turn pcap/pcapng captures into seed inputs for the packet_decode fuzz target.

Usage: seed_packets.py OUT_DIR CAPTURE...

Each seed is a run of up to 8 consecutive packets of one capture in the layout
fuzz_targets/packet_decode.rs reads: link-type index, config byte, then per packet
u16 LE captured length, u8 bytes lost to snaplen, u8 time delta (100 ms units), frame.
At most 16 seeds per capture, spread over the file, so a large capture does not drown
the corpus. Captures of a link type the target does not know are skipped.
"""

import hashlib
import os
import struct
import sys

# DLT -> index into LINKS in packet_decode.rs (same mapping as LinkType::from_dlt).
LINKS = {1: 0, 12: 1, 14: 1, 101: 1, 228: 2, 229: 3, 0: 4, 108: 5, 113: 6, 276: 7, 239: 8,
         9: 9, 50: 10, 105: 11, 127: 12}
PER_SEED = 8
SEEDS_PER_FILE = 16
MAX_FRAME = 0xFFFF


def read_pcap(data):
    """(dlt, [(ts_ns, frame, wire_len)]) of a classic pcap file."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        return None
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    dlt = struct.unpack(end + "I", data[20:24])[0] & 0x0FFFFFFF
    packets, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(end + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        if len(frame) < incl:
            break
        packets.append((sec * 10**9 + (frac if nano else frac * 1000), frame, orig))
        off += 16 + incl
    return dlt, packets


def read_pcapng(data):
    """(dlt, packets) of a pcapng file: the first interface's link type, its packets."""
    if data[:4] != b"\x0a\x0d\x0d\x0a" or len(data) < 12:
        return None
    end = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    links, packets, off = [], [], 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack(end + "II", data[off : off + 8])
        if blen < 12 or off + blen > len(data):
            break
        body = data[off + 8 : off + blen - 4]
        if btype == 1 and len(body) >= 4:  # interface description
            links.append(struct.unpack(end + "H", body[:2])[0])
        elif btype == 6 and len(body) >= 20:  # enhanced packet
            iface, hi, lo, incl, orig = struct.unpack(end + "IIIII", body[:20])
            if iface == 0:
                packets.append((((hi << 32) | lo) * 1000, body[20 : 20 + incl], orig))
        elif btype == 3 and len(body) >= 4:  # simple packet
            orig = struct.unpack(end + "I", body[:4])[0]
            packets.append((0, body[4 : 4 + orig], orig))
        off += blen
    return (links[0], packets) if links else None


def encode(link, packets):
    out = bytearray([link, 1])  # verify checksums, VLAN not in key, tunnels on, no timeout
    prev = packets[0][0]
    for ts, frame, orig in packets:
        frame = frame[:MAX_FRAME]
        dt = min(max(ts - prev, 0) // 100_000_000, 255)
        prev = ts
        lost = min(max(orig - len(frame), 0), 255)
        out += struct.pack("<HBB", len(frame), lost, dt) + frame
    return bytes(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            data = f.read()
        parsed = read_pcap(data) or read_pcapng(data)
        if not parsed or parsed[0] not in LINKS or not parsed[1]:
            continue
        dlt, packets = parsed
        runs = [packets[i : i + PER_SEED] for i in range(0, len(packets), PER_SEED)]
        step = max(1, len(runs) // SEEDS_PER_FILE)
        for run in runs[::step][:SEEDS_PER_FILE]:
            seed = encode(LINKS[dlt], run)
            name = hashlib.sha1(seed).hexdigest()
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(seed)
            written += 1
    print(f"wrote {written} packet_decode seeds to {out_dir}")


if __name__ == "__main__":
    main()
