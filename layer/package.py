#!/usr/bin/env python3
"""Packages the layer zips and reports their sizes.

    package.py zip --arch x86_64 --binary PATH --wrapper PATH --out ZIP
    package.py report ARCH=BINARY=ZIP ...

A zip is what Lambda unpacks under /opt: `extensions/xray-extension` (started by Lambda as an
external extension) and `xray-extension-wrapper` at the root (for AWS_LAMBDA_EXEC_WRAPPER).
Both entries carry mode 0755 in the zip's Unix attributes; Lambda keeps them. Entries have a
fixed timestamp so the same binary gives the same zip.

Before packaging, the binary is checked to be an ELF executable for the right machine with no
program interpreter (that is, statically linked): a dynamically linked binary would fail to
start on runtimes whose libc differs, with nothing in the function's logs but an exit code.
It is also checked to hold none of the test-only fault injection (the extension's cargo feature
`fault-injection`, extension/src/fault.rs), which can make the extension's tasks panic on demand.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zipfile

BINARY_ENTRY = "extensions/xray-extension"
WRAPPER_ENTRY = "xray-extension-wrapper"
# 1980-01-01, the earliest time a zip entry can carry.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
EXECUTABLE = 0o100755
DIRECTORY = 0o040755

# ELF e_machine values.
MACHINES = {"x86_64": 62, "arm64": 183}
PT_INTERP = 3


# What only a build with the `fault-injection` feature holds (extension/src/fault.rs): the
# variable that arms it and the marker that sets it off.
FAULT_INJECTION = (b"XRAY_EXTENSION_FAULT", b"xray-extension-fault-injection-panic")


class PackageError(Exception):
    pass


def check_no_fault_injection(path: str) -> None:
    """Raises PackageError if `path` was built with the test-only `fault-injection` feature."""
    with open(path, "rb") as f:
        data = f.read()
    for needle in FAULT_INJECTION:
        if needle in data:
            raise PackageError(
                f"{path}: built with the test-only fault-injection feature (holds {needle.decode()!r})"
            )


def check_static_elf(path: str, arch: str) -> None:
    """Raises PackageError unless `path` is a static little-endian ELF64 executable for `arch`."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise PackageError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise PackageError(f"{path}: not a little-endian 64-bit ELF file")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != MACHINES[arch]:
        raise PackageError(f"{path}: ELF machine {e_machine}, expected {MACHINES[arch]} ({arch})")
    # ET_EXEC or ET_DYN (static-pie); a dynamic one is told apart by its interpreter.
    if e_type not in (2, 3):
        raise PackageError(f"{path}: ELF type {e_type} is not an executable")
    e_phoff = struct.unpack_from("<Q", data, 32)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    for i in range(e_phnum):
        (p_type,) = struct.unpack_from("<I", data, e_phoff + i * e_phentsize)
        if p_type == PT_INTERP:
            raise PackageError(f"{path}: dynamically linked (has a program interpreter)")


def entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so that external_attr holds the mode
    info.external_attr = mode << 16
    if mode & 0o040000:
        info.external_attr |= 0x10  # MS-DOS directory flag
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def make_zip(arch: str, binary: str, wrapper: str, out: str) -> None:
    check_no_fault_injection(binary)
    check_static_elf(binary, arch)
    with open(wrapper, "rb") as f:
        wrapper_data = f.read()
    if not wrapper_data.startswith(b"#!/bin/sh\n"):
        raise PackageError(f"{wrapper}: expected a /bin/sh script")
    with open(binary, "rb") as f:
        binary_data = f.read()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", compresslevel=9) as z:
        z.writestr(entry("extensions/", DIRECTORY), b"")
        z.writestr(entry(BINARY_ENTRY, EXECUTABLE), binary_data)
        z.writestr(entry(WRAPPER_ENTRY, EXECUTABLE), wrapper_data)
    os.replace(tmp, out)
    verify_zip(out)


def verify_zip(path: str) -> None:
    """Reads the zip back: both entries present, executable, intact."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        if bad is not None:
            raise PackageError(f"{path}: corrupt entry {bad}")
        for name in (BINARY_ENTRY, WRAPPER_ENTRY):
            mode = z.getinfo(name).external_attr >> 16
            if mode & 0o777 != 0o755:
                raise PackageError(f"{path}: {name} has mode {oct(mode & 0o777)}, expected 0o755")


def report(rows: list[str]) -> None:
    print(f"{'architecture':<14}{'binary (stripped)':>26}{'zip':>26}")
    for row in rows:
        arch, binary, zip_path = row.split("=", 2)
        b = os.path.getsize(binary)
        z = os.path.getsize(zip_path)
        print(f"{arch:<14}{human(b):>26}{human(z):>26}")


def human(n: int) -> str:
    return f"{n:,} B ({n / (1024 * 1024):.2f} MiB)" if n >= 1024 * 1024 else f"{n:,} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zip", help="package one architecture's layer zip")
    z.add_argument("--arch", choices=sorted(MACHINES), required=True)
    z.add_argument("--binary", required=True)
    z.add_argument("--wrapper", required=True)
    z.add_argument("--out", required=True)
    c = sub.add_parser(
        "check-binary",
        help="check that a binary is static ELF for an architecture, without fault injection",
    )
    c.add_argument("--arch", choices=sorted(MACHINES), required=True)
    c.add_argument("binary")
    r = sub.add_parser("report", help="print binary and zip sizes")
    r.add_argument("rows", nargs="+", metavar="ARCH=BINARY=ZIP")
    args = parser.parse_args()
    try:
        if args.command == "zip":
            make_zip(args.arch, args.binary, args.wrapper, args.out)
        elif args.command == "check-binary":
            check_no_fault_injection(args.binary)
            check_static_elf(args.binary, args.arch)
            print(f"{args.binary}: static ELF for {args.arch}, no fault injection")
        else:
            report(args.rows)
    except (PackageError, OSError) as e:
        print(f"package.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
