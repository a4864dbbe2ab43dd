"""The command blocks of deploy/README.md, in document order, for the runbook test.

A block's info string says where it runs: ```` ```bash host=superlink ```` (one host),
```` ```bash hosts=site1,site2 ```` (each in turn), ```` ```bash skip=REASON ```` (not a lab step,
e.g. a measurement), ```` ```copy ```` (files that travel: `FROM → TO: path …`). Any other fence
(``` ``` ```, `text`) is not a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(\s*)```(.*)$")
COPY_LINE = re.compile(r"^(\S+)\s*→\s*(\S+):\s*(.+)$")


@dataclass(frozen=True)
class Copy:
    source: str  # host
    dest: str  # host
    paths: tuple[str, ...]  # relative to the source's /opt/fedrec


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    kind: str  # "bash", "copy", "skip"
    hosts: tuple[str, ...]
    text: str
    copies: tuple[Copy, ...] = ()

    def label(self) -> str:
        return f"deploy/README.md:{self.line} ({self.kind} {','.join(self.hosts)})"


def _info(info: str) -> tuple[str, dict[str, str]]:
    words = info.split()
    if not words:
        return "", {}
    options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
    return words[0], options


def parse_runbook(path: Path) -> list[Block]:
    """Every bash and copy block of `path`, in order. A bash block must say where it runs."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, info = match.group(1), match.group(2).strip()
        end = i + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        lang, options = _info(info)
        if lang == "bash":
            if "skip" in options:
                blocks.append(Block(i + 1, "skip", (), body))
            else:
                where = options.get("host") or options.get("hosts")
                if not where:
                    raise ValueError(f"{path}:{i + 1}: a bash block without host= or hosts=")
                blocks.append(Block(i + 1, "bash", tuple(where.split(",")), body))
        elif lang == "copy":
            copies = []
            for line in body.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                found = COPY_LINE.match(line.strip())
                if not found:
                    raise ValueError(f"{path}:{i + 1}: not 'FROM → TO: paths': {line!r}")
                copies.append(Copy(found.group(1), found.group(2), tuple(found.group(3).split())))
            hosts = tuple(sorted({c.source for c in copies} | {c.dest for c in copies}))
            blocks.append(Block(i + 1, "copy", hosts, body, tuple(copies)))
        i = end + 1
    return blocks


def substitute(text: str, table: dict[str, str], used: set[str]) -> str:
    """`text` with each whole line (compared without surrounding blanks) that is a key of
    `table` replaced by its value; the keys met are added to `used`."""
    out = []
    for line in text.splitlines():
        key = line.strip()
        if key in table:
            used.add(key)
            out.append(table[key])
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def assigned_names(text: str) -> list[str]:
    """Upper-case shell variables a block assigns (`NAME=…`, `export NAME=…`): what carries over
    to the next block on the same host."""
    return sorted(set(re.findall(r"(?:^|[\s;&(])(?:export\s+)?([A-Z_][A-Z0-9_]*)=", text)))
