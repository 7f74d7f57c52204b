#!/usr/bin/env python3
"""png_check.py PNG WIDTH HEIGHT [MIN_INK]: exit 0 when PNG is a PNG of exactly WIDTH x HEIGHT
pixels that is not blank: at least MIN_INK (default 0.02) of its pixels differ from the most
common colour (the page background), and it has some strongly coloured pixels (the charts'
bars), not only grey text. Decodes the PNG with the standard library alone (zlib), so that a
browser's screenshot can be checked without image packages. Prints what it found."""
import struct
import sys
import zlib


def decode(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError("unsupported PNG: depth %d colour type %d interlace %d" % (depth, ctype, interlace))
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, rows, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), [], 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def main():
    path, want_w, want_h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    min_ink = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
    w, h, rows = decode(path)
    counts = {}
    for row in rows:
        for px in row:
            counts[px] = counts.get(px, 0) + 1
    bg, nbg = max(counts.items(), key=lambda kv: kv[1])
    ink = 1 - nbg / float(w * h)
    colour = sum(n for (r, g, b), n in counts.items() if max(r, g, b) - min(r, g, b) > 60)
    print("%s: %dx%d, background %s, %.1f%% ink, %d colours, %d strongly coloured pixels"
          % (path, w, h, "#%02x%02x%02x" % bg, 100 * ink, len(counts), colour))
    if (w, h) != (want_w, want_h):
        print("expected %dx%d" % (want_w, want_h))
        return 1
    if ink < min_ink or colour < 100:
        print("blank: expected at least %.1f%% ink and 100 coloured pixels" % (100 * min_ink))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
