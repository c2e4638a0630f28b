#!/usr/bin/env python3
"""check_man.py - the manual pages render cleanly and seerfs.1 names every
option `seerfs --help` prints (run by meson test as `man`).

Usage: check_man.py SEERFS_BINARY SEERFS_1 [OTHER_PAGE...]
Each page must render with `man --warnings -l` without a word on stderr
(groff's warnings: a bad macro, a line that cannot be broken, ...), and each
option of the help text (`-o state`, `-f`, `--version`, `-o allow_other`, ...)
must appear in the rendered seerfs.1, so a new option cannot ship without
its description there."""

import os
import re
import subprocess
import sys


def render(page, width):
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8")
    env.pop("MAN_KEEP_FORMATTING", None)   # plain text, no overstrikes
    return subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True, env=env)


def help_options(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    opts = []
    for line in out.splitlines():
        # "    -o state=DIR   ...", "    -d, -o debug   ...", "    -V, --version   ..."
        m = re.match(r"^\s+((?:-o [a-z_]+|--?[A-Za-z][\w-]*)(?:=\S+)?(?:, (?:-o [a-z_]+|--?[A-Za-z][\w-]*)(?:=\S+)?)*)(?:\s|$)", line)
        if not m:
            continue
        for part in m.group(1).split(", "):
            opts.append(part.split("=", 1)[0])
    return out, opts


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    binary, pages = sys.argv[1], sys.argv[2:]
    bad = 0
    for page in pages:
        r = render(page, 80)
        if r.returncode != 0 or r.stderr.strip() or not r.stdout.strip():
            print(f"FAIL {page}: man --warnings -l exited {r.returncode}; stderr:\n{r.stderr}")
            bad += 1
        else:
            print(f"ok   {page}: renders without warnings ({len(r.stdout.splitlines())} lines)")
    # Wide, so that no option is hyphenated across two lines.
    text = render(pages[0], 400).stdout
    help_text, opts = help_options(binary)
    if len(opts) < 10:
        print(f"FAIL: found only {opts} in {binary} --help:\n{help_text}")
        return 1
    for opt in opts:
        if re.search(r"(^|[\s,\[(])" + re.escape(opt) + r"($|[\s,=\])])", text, re.M):
            print(f"ok   {opt} is in {os.path.basename(pages[0])}")
        else:
            print(f"FAIL {opt}: printed by seerfs --help, missing from {pages[0]}; describe it there")
            bad += 1
    print(f"{len(pages) + len(opts) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
