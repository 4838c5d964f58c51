#!/usr/bin/env python3
"""One file of the Reactor touches errno and makes raw system calls: Sources/Reactor/Syscall.swift.

Every other Swift file under Sources/Reactor must go through its typed wrappers (`Syscalls.…`,
`throws(SyscallError)` or a result enum). This check fails, printing each offending line as
FILE:LINE: CODE (what was found), when another file
  - reads errno (`errno` as a bare identifier, `cepoll_errno`, `cepoll_set_errno`), or
  - calls through `Glibc.` (`Glibc.close`, `Glibc.write`, ...), or
  - calls a CEpoll shim other than the few pure ones (`cepoll_event_data`, `cepoll_event_mask`,
    `cepoll_event_set`, `cepoll_monotonic_ns`, `cepoll_rxq_ovfl`), or
  - calls a system call that has no Swift homonym in the Reactor (fcntl, socketpair, sendmsg,
    recvmsg, setsockopt, epoll_ctl, mmap, munmap, lstat, getsockname, ...), or
  - calls close/read/write/shutdown/connect/bind/listen/accept/socket/poll on something named
    like an fd (`close(fd)`, `read(slot.pointee.fd, ...)`): the Reactor's own methods of those
    names take a label or a ConnectionID, and are reached as `sys.close(...)`, `$0.close(...)`.
Comments and string literals are ignored. `errno` as a label or a member (`errno:`,
`reason.errno`, `errno code: Errno?`) is a Swift name, not the C variable, and is allowed.

Usage: scripts/check-syscall-seam.py [--root DIR]
       --root DIR   the repository to check (default: the one holding this script)
Exits 0 when the seam holds, 1 with the offending lines when it does not, 2 on a usage error.
"""
import os
import re
import sys

SEAM = "Syscall.swift"

# Calls with no Swift method of the same name in the Reactor: always raw when called bare.
RAW_CALLS = (
    "fcntl socketpair sendmsg recvmsg sendto recvfrom sendmmsg recvmmsg setsockopt getsockopt "
    "epoll_ctl epoll_wait epoll_create1 eventfd timerfd_create timerfd_settime signalfd mmap munmap "
    "fstat lstat getsockname getpeername unlink chmod ioctl dup2 dup3 pipe2 getrlimit setrlimit "
    "sigprocmask pthread_sigmask accept4 writev readv strerror"
).split()
# Names the Reactor also uses for its own methods: raw only when the first argument is an fd.
FD_CALLS = "close read write shutdown connect bind listen accept socket poll dup".split()

# CEpoll shims that make no system call and read no errno, allowed anywhere: epoll_event field
# access (packed on x86_64), the vDSO monotonic clock, a cmsg parse, and the mmsghdr type.
PURE_SHIMS = "event_data event_mask event_set monotonic_ns rxq_ovfl mmsghdr".split()

RULES = [
    ("errno read", re.compile(r"(?<![.\w])errno(?!\s*:)(?!\s+[a-z_]\w*\s*:)\b")),
    ("errno read", re.compile(r"\bcepoll_(?:set_)?errno\b")),
    ("call through Glibc.", re.compile(r"\bGlibc\.\w+")),
    ("raw shim", re.compile(r"\bcepoll_(?!(?:%s)\b)[a-z]\w*\s*\(" % "|".join(PURE_SHIMS))),
    ("raw system call", re.compile(r"(?<![.\w])(?:%s)\s*\(" % "|".join(RAW_CALLS))),
    ("raw system call on an fd",
     re.compile(r"(?<![.\w])(?:%s)\s*\(\s*(?!\w+\s*:)[^,()]*\b\w*[fF][dD]s?\b" % "|".join(FD_CALLS))),
]

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def code_of(line, in_block):
    """The line without comments and string literals; whether a /* */ comment is still open."""
    text = STRING.sub('""', line)
    out = ""
    i = 0
    while i < len(text):
        if in_block:
            end = text.find("*/", i)
            if end < 0:
                return out, True
            i = end + 2
            in_block = False
        elif text.startswith("//", i):
            break
        elif text.startswith("/*", i):
            in_block = True
            i += 2
        else:
            out += text[i]
            i += 1
    return out, in_block


def check(root):
    folder = os.path.join(root, "Sources", "Reactor")
    if not os.path.isdir(folder):
        print(f"check-syscall-seam.py: no Sources/Reactor under {root}", file=sys.stderr)
        return 2
    found = []
    for directory, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if not name.endswith(".swift") or name == SEAM:
                continue
            path = os.path.join(directory, name)
            shown = os.path.relpath(path, root)
            in_block = False
            multiline_string = False
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.count('"""') % 2 == 1:
                        multiline_string = not multiline_string
                        continue
                    if multiline_string:
                        continue
                    code, in_block = code_of(line, in_block)
                    for what, rule in RULES:
                        if rule.search(code):
                            found.append(f"{shown}:{number}: {line.strip()}   ({what})")
                            break
    if found:
        print(f"errno and raw system calls belong in Sources/Reactor/{SEAM} only; found {len(found)}:")
        print("\n".join(found))
        return 1
    print(f"syscall seam: no errno or raw system call in Sources/Reactor outside {SEAM}")
    return 0


def main(arguments):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    i = 0
    while i < len(arguments):
        argument = arguments[i]
        if argument in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if argument == "--root" and i + 1 < len(arguments):
            root = arguments[i + 1]
            i += 2
            continue
        print(f"check-syscall-seam.py: unknown argument: {argument} (see --help)", file=sys.stderr)
        return 2
    return check(root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
