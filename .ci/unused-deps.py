#!/usr/bin/env python3
"""Fails when a Cargo.toml declares a dependency its crate never names.

For each workspace member (and fuzz/), every entry of [dependencies], [dev-dependencies] and
[build-dependencies] must be named in the crate's Rust sources (src/, tests/, benches/, examples/,
build.rs) as `name::`, `use name` or `extern crate name` (dashes read as underscores). Every entry
of the root [workspace.dependencies] must be used by some member. Run from the repository root:
`python3 .ci/unused-deps.py`; prints each unused one and exits 1, or prints nothing and exits 0.
"""
import pathlib
import re
import sys
import tomllib

root = pathlib.Path(__file__).resolve().parent.parent
workspace = tomllib.loads((root / "Cargo.toml").read_text())
members = workspace["workspace"]["members"] + ["fuzz"]
SECTIONS = ("dependencies", "dev-dependencies", "build-dependencies")


def sources(crate: pathlib.Path) -> str:
    parts = []
    for sub in ("src", "tests", "benches", "examples", "fuzz_targets"):
        for f in sorted((crate / sub).rglob("*.rs")):
            parts.append(f.read_text(errors="replace"))
    if (crate / "build.rs").is_file():
        parts.append((crate / "build.rs").read_text())
    return "\n".join(parts)


def named(text: str, dep: str) -> bool:
    ident = re.escape(dep.replace("-", "_"))
    return re.search(rf"(\b{ident}::|\buse\s+{ident}\b|\bextern\s+crate\s+{ident}\b)", text) is not None


unused = []
used_anywhere = set()
for m in members:
    crate = root / m
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    text = sources(crate)
    for section in SECTIONS:
        for dep, spec in manifest.get(section, {}).items():
            used_anywhere.add(dep)
            # `package = "..."` renames: the code names the key.
            if not named(text, dep):
                unused.append(f"{m}/Cargo.toml [{section}] {dep}: never named in {m}'s sources")
for dep in workspace["workspace"].get("dependencies", {}):
    if dep not in used_anywhere:
        unused.append(f"Cargo.toml [workspace.dependencies] {dep}: no member depends on it")
for line in unused:
    print(line)
sys.exit(1 if unused else 0)
