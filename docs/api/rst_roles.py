"""A griffe extension for the API reference: sgdlab's docstrings use a few reStructuredText
idioms that Markdown does not know. Before the docstrings are parsed it rewrites

- ``:class:`~sgdlab.core.store.save``` (any role: class, func, mod, meth, attr, data, exc, obj)
  into a cross-reference link to that object's entry, ``[`save`][sgdlab.core.store.save]``
  (with ``~``: the last component as the text), when the target is a full ``sgdlab.`` path, and
  into inline code otherwise (a relative or external name);
- a paragraph ending in ``::`` (an RST literal-block marker) into one ending in ``:``.

mkdocs.yml loads it (``plugins: mkdocstrings: handlers: python: options: extensions``)."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|mod|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::$", flags=re.M)


def rewrite(text: str) -> str:
    """The docstring ``text`` with RST roles turned into links or code, ``::`` into ``:``."""

    def role(match: re.Match) -> str:
        tilde, target = match.group(1), match.group(2).strip()
        shown = target.rsplit(".", 1)[-1] if tilde else target
        if target.startswith("sgdlab.") and re.fullmatch(r"[\w.]+", target):
            return f"[`{shown}`][{target}]"
        return f"`{shown}`"

    text = ROLE.sub(role, text)
    text = re.sub(r"^::$\n?", "", text, flags=re.M)   # a marker alone on its line
    return LITERAL_MARKER.sub(":", text)


class RstRoles(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
