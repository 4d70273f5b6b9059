"""Convert pipeline and experiment YAML from the old stage list to stages keyed by name.

Old:  stages: [{name: X, run: {_target_: ..., p: 1}}, ...]
New:  order: [X, ...]
      stages: {X: {_target_: ..., p: 1}, ...}

Comments above and inside a stage are kept (the file is rewritten line by line, not re-dumped).
Usage: python tools/convert_pipelines.py pipelines/*.yaml conf/experiment/*.yaml
A file without an old-style stage list is left untouched; a layout it cannot convert is an error.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ITEM = re.compile(r"^(?P<indent>\s*)- name: (?P<name>\S+)\s*$")


def convert(text: str) -> str | None:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    changed = False
    while i < len(lines):
        line = lines[i]
        if line.strip() == "stages:" and i + 1 < len(lines) and ITEM.match(lines[i + 1]):
            key_indent = line[: len(line) - len(line.lstrip())]
            names, body, i = _stage_block(lines, i + 1, key_indent)
            out.append(f"{key_indent}order: [{', '.join(names)}]")
            out.append(line)
            out.extend(body)
            changed = True
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n" if changed else None


def _stage_block(lines: list[str], i: int, key_indent: str) -> tuple[list[str], list[str], int]:
    names: list[str] = []
    body: list[str] = []
    item_indent = ITEM.match(lines[i]).group("indent")  # type: ignore[union-attr]
    run_indent = None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        m = ITEM.match(line)
        if m and m.group("indent") == item_indent:
            names.append(m.group("name"))
            body.append(f"{key_indent}  {m.group('name')}:")
            run_indent = None
            i += 1
            continue
        if stripped and indent <= len(key_indent) and not stripped.startswith("#"):
            break  # the next key of the enclosing mapping
        if stripped == "run:":
            run_indent = indent
            i += 1
            continue
        if stripped and run_indent is not None and indent > run_indent:
            # params under run: re-indent to sit directly under the stage name
            body.append(f"{key_indent}    " + line[run_indent + 2 :])
        elif stripped and not stripped.startswith("#"):
            raise ValueError(f"cannot convert line {i + 1}: {line!r} (only 'name' and 'run' per stage)")
        else:
            body.append(line)
        i += 1
    return names, body, i


def main(paths: list[str]) -> int:
    for p in paths:
        path = Path(p)
        new = convert(path.read_text())
        if new is not None:
            path.write_text(new)
            print(f"converted {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
