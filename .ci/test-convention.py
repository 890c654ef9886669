#!/usr/bin/env python3
"""Fails on the old way of failing on errors in tests: `.unwrap_or_else(|e| panic!(..))`.

The convention (integration-tests/src/lib.rs's module doc): a fallible call that must succeed
ends in `.expect("what was being done")`; a runtime value needed to understand the failure is
shown by an assertion before it. This lists file:line of every `unwrap_or_else` whose closure
(`|e|`, `|_|`, `||`, any parameter name, with or without a block) goes straight to `panic!`, in
the repository's Rust files outside build output (`target/`, `fuzz/target/`); comments are skipped.
Run from anywhere: `python3 .ci/test-convention.py`; exits 1 if any is found.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
SKIP = {"target", ".git"}
PATTERN = re.compile(
    r"unwrap_or_else\(\s*\|\s*(?:[A-Za-z_][A-Za-z0-9_]*)?\s*\|\s*\{?\s*panic!", re.S
)


def rust_files():
    for f in sorted(root.rglob("*.rs")):
        rel = f.relative_to(root)
        if not SKIP.intersection(rel.parts):
            yield f, rel


def main() -> int:
    found = []
    for f, rel in rust_files():
        text = f.read_text(errors="replace")
        for m in PATTERN.finditer(text):
            start = text.rfind("\n", 0, m.start()) + 1
            if text[start : m.start()].lstrip().startswith("//"):
                continue
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{rel}:{line}: {text[start:].splitlines()[0].strip()}")
    for f in found:
        print(f)
    if found:
        print(
            f"{len(found)} unwrap_or_else(.. panic!(..)) in Rust files: "
            'use .expect("what was being done") (see integration-tests/src/lib.rs)',
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
