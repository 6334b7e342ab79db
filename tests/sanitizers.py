"""C extensions rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer, for the tests
that drive them with mutated input in a child process: any out-of-bounds access, use after
free or undefined behaviour aborts the child, which the test sees as a failed run."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path


def _runtime_library(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert os.path.isabs(path), f"{name} not found: gcc is installed without it"
    return path


def build_sanitized(sources: Sequence[Path], out: Path) -> Path:
    """``sources`` compiled and linked into the extension ``out`` (its name without the
    interpreter's suffix, which is added), warnings as errors."""
    target = out.with_name(out.name + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        ["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
         "-fno-sanitize-recover=undefined", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
         "-Wno-missing-field-initializers", f"-I{sysconfig.get_paths()['include']}",
         *map(str, sources), "-o", str(target)], check=True)
    return target


def sanitizer_env() -> dict[str, str]:
    """The environment of a child that loads a sanitized extension into the interpreter."""
    return {**os.environ, "PYTHONMALLOC": "malloc",
            "LD_PRELOAD": f"{_runtime_library('libasan.so')}:{_runtime_library('libubsan.so')}",
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


#: Bytes that matter to SIP's grammar (separators, line ends, digits, scheme letters) and
#: two that never belong (NUL, 0xff): what mutations insert.
ALPHABET = b' \t\r\n:;,<>"@=?%\\[]/.0123456789abcSIPsip\x00\xff*-'


def mutated(rnd: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One of ``seeds`` with up to four random edits: a byte replaced, inserted or deleted
    (up to five), or the message cut short."""
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.randint(0, 4)):
        pos = rnd.randrange(len(data) + 1)
        op = rnd.random()
        if op < 0.4 and data:
            data[min(pos, len(data) - 1)] = rnd.choice(ALPHABET)
        elif op < 0.7:
            data[pos:pos] = bytes([rnd.choice(ALPHABET)])
        elif op < 0.85:
            del data[pos:pos + rnd.randint(1, 5)]
        else:
            data = data[:pos]
    return bytes(data)


def run_sanitized(script: str, build: Path, repo: Path, seeds: object, count: int
                  ) -> list[int]:
    """``script`` run in a child with the sanitizers loaded, given (build, repo, seeds file,
    count) as its arguments; the child must exit 0 and print ``name value`` pairs, whose
    values are returned."""
    seeds_file = build / "seeds.pickle"
    seeds_file.write_bytes(pickle.dumps(seeds))
    run = subprocess.run([sys.executable, "-c", script, str(build), str(repo), str(seeds_file),
                          str(count)], env=sanitizer_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return [int(v) for v in run.stdout.split()[1::2]]
