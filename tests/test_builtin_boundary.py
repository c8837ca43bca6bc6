"""Built-in connectors and plugins use only the public API (``relaybot``, ``relaybot.testing``).

A third-party connector or plugin can use nothing else, so the built-ins are held to the same
rule; where they do not keep it yet, the gap is listed below, per file, and the list may only
shrink. Two kinds of gap are found:

- an import of ``relaybot.core…`` (the private implementation) — AST-based, so strings and
  comments do not count;
- a reach into the running app instead of a typed surface: ``app.plugins.pm`` /
  ``app.plugins`` (registering hook objects), ``app.store``, ``app.dispatcher``,
  ``app.registrations``, ``app.conversations``, ``getattr(app, …)`` / ``getattr(self.app, …)``
  (counted in the code with docstrings removed).

A new gap fails the test (use or extend the public API instead); a gap that was closed also
fails until its entry is removed here, so the list always shows the truth. Connectors reach
the core through the typed :class:`relaybot.ConnectorHost`, plugins through
:class:`relaybot.BotServices`.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILT_INS = ("connectors", "plugins")

REACH_INS = {
    "app.plugins.pm": r"\bapp\.plugins\.pm\b",
    "app.plugins": r"\bapp\.plugins\b(?!\.pm\b)",
    "app.store": r"\bapp\.store\b",
    "app.dispatcher": r"\bapp\.dispatcher\b",
    "app.registrations": r"\bapp\.registrations\b",
    "app.conversations": r"\bapp\.conversations\b",
    "app.turns": r"\bapp\.turns\b",
    "getattr(app": r"\bgetattr\((?:self\.)?app\b",
    # the app itself handed around (a command's ctx.app, a connector's .app)
    "ctx.app": r"\bctx\.app\b",
    "connector.app": r"\bconnector\.app\b",
}

# ── what the built-ins use of relaybot.core today (shrink only) ─────────────────────────────
# Modules whose public parts are exported from `relaybot` already (connector, errors, hookspecs,
# models, provider, images) are listed because the import names the private path; switching
# the import to `from relaybot import …` removes the entry.
CORE_IMPORTS: dict[str, set[str]] = {
    # fence-repairing splitter for markdown blocks: public once the Slack connector settles how
    # it splits (the scheduler's parts or its own blocks)
    "connectors/slack/formatting.py": {"relaybot.core.streaming.text"},
    # the providers' aiohttp transport reads only as fast as the reply's stream wants text (the
    # scheduler's read-demand signal): a performance coupling of two built-ins, not an API
    "plugins/providers/_aiohttp_transport.py": {"relaybot.core.streaming.demand"},
}

# ── reach-ins into the running app today, counted (shrink only) ─────────────────────────────
# None: connectors get a typed ConnectorHost in start(), plugins a BotServices (ctx.bot, the
# lifecycle hooks, the spend guard). Keep it that way.
APP_REACH_INS: dict[str, dict[str, int]] = {}


def built_in_files() -> list[Path]:
    return sorted(p for folder in BUILT_INS for p in (ROOT / folder).rglob("*.py"))


def core_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "relaybot.core" or node.module.startswith("relaybot.core."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("relaybot.core")}
    return found


def code_without_docstrings(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
    return ast.unparse(tree)  # comments are gone too


def reach_ins(tree: ast.Module) -> Counter[str]:
    code = code_without_docstrings(tree)
    return Counter({kind: n for kind, pattern in REACH_INS.items() if (n := len(re.findall(pattern, code)))})


@pytest.fixture(scope="module")
def scanned() -> dict[str, tuple[set[str], Counter[str]]]:
    result = {}
    for path in built_in_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        result[path.relative_to(ROOT).as_posix()] = (core_imports(tree), reach_ins(tree))
    assert len(result) > 20, "the scan found too few built-in modules"
    return result


def test_no_new_imports_of_relaybot_core(scanned) -> None:
    new = {f: sorted(mods - CORE_IMPORTS.get(f, set())) for f, (mods, _) in scanned.items()}
    new = {f: mods for f, mods in new.items() if mods}
    assert not new, f"built-ins must import from `relaybot` (extend the public API if needed): {new}"


def test_the_core_import_list_only_shrinks() -> None:
    stale = {}
    for f, allowed in CORE_IMPORTS.items():
        path = ROOT / f
        mods = core_imports(ast.parse(path.read_text(encoding="utf-8"))) if path.exists() else set()
        if allowed - mods:
            stale[f] = sorted(allowed - mods)
    assert not stale, f"no longer imported: remove from CORE_IMPORTS: {stale}"


def test_no_new_reach_ins_into_the_app(scanned) -> None:
    new = {}
    for f, (_, found) in scanned.items():
        over = {k: n for k, n in found.items() if n > APP_REACH_INS.get(f, {}).get(k, 0)}
        if over:
            new[f] = over
    assert not new, f"use a typed surface instead of reaching into the app: {new}"


def test_the_reach_in_list_only_shrinks(scanned) -> None:
    stale = {}
    for f, allowed in APP_REACH_INS.items():
        found = scanned.get(f, (set(), Counter()))[1]
        fewer = {k: (n, found.get(k, 0)) for k, n in allowed.items() if found.get(k, 0) < n}
        if fewer:
            stale[f] = fewer
    assert not stale, f"fewer reach-ins now (allowed, found): lower APP_REACH_INS: {stale}"


def test_the_scan_sees_a_reach_in_and_a_core_import() -> None:
    # the patterns themselves: a test that cannot find anything would pass forever
    sample = ast.parse(
        '"""app.store in a docstring does not count"""\n'
        "from relaybot.core.contracts.redact import redact\n"
        "def f(self):\n"
        "    # app.dispatcher in a comment does not count\n"
        "    return self.app.store, getattr(self.app, 'registrations', None), self.app.plugins.pm\n"
    )
    assert core_imports(sample) == {"relaybot.core.contracts.redact"}
    assert reach_ins(sample) == Counter({"app.store": 1, "getattr(app": 1, "app.plugins.pm": 1})
