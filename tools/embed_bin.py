#!/usr/bin/env python3
"""embed_bin.py - turns a binary file into a C header holding its bytes.

Used by core/providers/docker/meson.build for the static seerfs-agent that
the docker provider puts into every container (the host's build may be
sanitized or linked against a newer libc than the image's: the static
build runs in any image).

usage: embed_bin.py NAME INPUT OUTPUT
"""
import sys


def main():
    name, src, dst = sys.argv[1:4]
    data = open(src, "rb").read()
    with open(dst, "w") as f:
        f.write("/* made by tools/embed_bin.py from %s: do not edit */\n" % src.split("/")[-1])
        f.write("#include <stddef.h>\n")
        f.write("static const unsigned char %s[] = {\n" % name)
        for i in range(0, len(data), 24):
            f.write(",".join(str(b) for b in data[i:i + 24]) + ",\n")
        f.write("};\n")
        f.write("static const size_t %s_len = %d;\n" % (name, len(data)))


if __name__ == "__main__":
    main()
