"""Versioned prompt templates: load conf/prompts/<version>/*.txt and render them into chat messages."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from vlclip_core.errors import ConfigError

if TYPE_CHECKING:
    from vlclip_core.config import LLMConfig

STEPS = ("summarise", "evaluate", "refine")
SYSTEM_FILE = "system.txt"  # optional
FIELDS = ("title", "description", "product_type", "attributes", "summary", "missing", "reasons")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PACKAGED = Path(__file__).resolve().parents[1] / "prompts"  # conf/prompts as installed package data
DEFAULT_PROMPT_DIR = "conf/prompts"

Message = Dict[str, str]


@dataclass(frozen=True)
class PromptSet:
    """The templates of one prompt version; `messages(step, **fields)` renders one conversation."""

    version: str
    templates: Dict[str, str]
    system: Optional[str] = None

    def messages(self, step: str, **fields: str) -> List[Message]:
        if step not in self.templates:
            raise KeyError(f"unknown prompt step {step!r}; expected one of {', '.join(STEPS)}")
        user = render(self.templates[step], fields)
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": "user", "content": user}]


def render(template: str, fields: Dict[str, str]) -> str:
    """Fill `{name}` placeholders; other braces (JSON examples) are left as they are."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        return str(fields.get(name, "")) if name in FIELDS else match.group(0)

    return _PLACEHOLDER.sub(fill, template)


def resolve_prompt_dir(prompt_dir: str) -> Path:
    """An absolute dir as is; a relative one under the current dir, else under the repo root; the
    default (conf/prompts) of an installed vlclip without the repository: the packaged copy."""
    path = Path(prompt_dir)
    if path.is_absolute() or path.is_dir():
        return path
    if (_REPO_ROOT / path).is_dir() or path != Path(DEFAULT_PROMPT_DIR):
        return _REPO_ROOT / path
    return _PACKAGED


def load_prompts(config: "LLMConfig") -> PromptSet:
    """Load the templates of `config.prompt_version`, failing with the missing file's path."""
    version_dir = resolve_prompt_dir(config.prompt_dir) / config.prompt_version
    if not version_dir.is_dir():
        raise ConfigError(
            f"models.llm.prompt_version {config.prompt_version!r}: no prompt directory "
            f"{version_dir} (models.llm.prompt_dir={config.prompt_dir!r})"
        )
    templates = {step: _read_template(version_dir / f"{step}.txt") for step in STEPS}
    system_path = version_dir / SYSTEM_FILE
    system = system_path.read_text(encoding="utf-8").strip() if system_path.is_file() else None
    return PromptSet(version=config.prompt_version, templates=templates, system=system or None)


def prompt_files(config: "LLMConfig") -> Tuple:
    """(name, size, mtime_ns) of each file of the prompt version: a cheap key that changes on an edit."""
    version_dir = resolve_prompt_dir(config.prompt_dir) / config.prompt_version
    if not version_dir.is_dir():
        return (str(version_dir),)
    return (str(version_dir),) + tuple(
        (p.name, st.st_size, st.st_mtime_ns)
        for p in sorted(version_dir.iterdir())
        if p.is_file()
        for st in (p.stat(),)
    )


def _read_template(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"prompt template missing: {path}")
    text = path.read_text(encoding="utf-8").strip()
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"prompt template {path} has unknown placeholder(s) "
            f"{', '.join('{' + u + '}' for u in unknown)}; known: {', '.join(FIELDS)}"
        )
    if not text:
        raise ConfigError(f"prompt template is empty: {os.fspath(path)}")
    return text
