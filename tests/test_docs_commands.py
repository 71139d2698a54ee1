"""Every ``sagepose`` command the documentation shows is one the real command line accepts.

What is checked: README.md and docs/*.md, every command line in a fenced ```bash block and every inline code span
that starts with ``sagepose `` (a span may wrap across lines of a paragraph).

* In bash blocks, ``\\`` continuations are joined (the command is reported at its first line), ``# ...`` comments
  are dropped (shell rules, via :func:`shlex.split`), and a line is split at ``&&``, ``||``, ``;`` and ``|`` into
  commands. A command is ``sagepose ARGS`` or anything that runs ``-m sagepose.cli.main ARGS`` (``torchrun
  --nproc_per_node 4 -m sagepose.cli.main train ...``, ``srun python -m sagepose.cli.main ...``); other commands
  (pip, python scripts, tensorboard) are not checked.
* A bash-block command's ``[--fp16] [--opset 17]`` after a ``#`` is a comment, so not checked at all.
* A full command is parsed with :func:`sagepose.cli.main.parse_args` (subcommands, options and ``key=value``
  overrides in any order); its ``SystemExit`` is a failure naming the doc file and line.
* A usage synopsis -- a command with a standalone ``...`` or a ``[bracketed]`` part (``[--fp16]``,
  ``[key=value ...]``), or an inline span naming only the command (``sagepose test``, ``sagepose import dlc``) --
  is not parsed whole, since it leaves out required arguments on purpose. Its ``...`` tokens and the brackets
  themselves are stripped (the bracketed contents stay) and what is left is checked part by part: the
  subcommand exists, every ``--option`` is one of that subcommand's options, every override key is real
  (a ``... --dtype bfloat16`` synopsis still fails on a misspelt ``--dtpye``). ``key=...`` is an ordinary
  placeholder value, not a synopsis.
* The CONFIG positional of ``train``, ``test`` and ``show-data`` names an existing recipe: a bundled recipe name
  (:func:`sagepose.configs.resolve_config`), a YAML file in the repository, a checkpoint (``*.ckpt``, ``*.pth``,
  ``*.safetensors``: a checkpoint carries its recipe), a run's saved ``runs/.../config.yaml``, or a placeholder
  in capitals (``CONFIG``, ``CKPT``).
* Every ``section.key=value`` override names a real field of :class:`sagepose.config.Config` (nested dataclasses),
  checked with the config module's own ``apply_overrides`` / ``config_from_dict`` (what ``load_config`` runs);
  values may be placeholders, so an error about the value (``expected a number``) is not a failure.

And README.md stays a front page: at most 200 lines.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

CONFIG_COMMANDS = ("train", "test", "show-data")  # subcommands whose first positional is a recipe
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".safetensors")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # CONFIG, CKPT, CFG
OVERRIDE = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)=(.*)$", re.S)
SEPARATORS = {"&&", "||", ";", "|"}


@dataclasses.dataclass
class Command:
    where: str  # "docs/training.md:12"
    text: str
    args: list  # the tokens after `sagepose` / `-m sagepose.cli.main`
    synopsis: bool


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _commands_of_tokens(tokens: list[str]) -> list[list[str]]:
    """Split a token list at shell separators; keep the sagepose commands' arguments."""
    segments, cur = [], []
    for t in tokens:
        if t in SEPARATORS:
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    found = []
    for seg in segments:
        while seg and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[0]):  # FOO=1 sagepose ...
            seg = seg[1:]
        if seg and seg[0] == "sagepose":
            found.append(seg[1:])
        elif "-m" in seg:
            i = seg.index("-m")
            if i + 1 < len(seg) and seg[i + 1] == "sagepose.cli.main":
                found.append(seg[i + 2:])
    return found


def _marks_synopsis(token: str) -> bool:
    """``...`` or a bracket outside an override's value (``data.scale_factor=[0.5,1.5]`` is a real value)."""
    return token == "..." or (("[" in token or "]" in token) and not OVERRIDE.match(token))


def _is_synopsis(args: list[str]) -> bool:
    return any(_marks_synopsis(a) for a in args)


def _strip_synopsis(args: list[str]) -> list[str]:
    """The synopsis without its marks: ``...`` and ``|`` dropped, brackets removed from around their contents
    (``[--fp16]`` -> ``--fp16``, still checked as an option; overrides' list values kept whole)."""
    out = []
    for a in args:
        if not OVERRIDE.match(a):
            a = a.replace("[", "").replace("]", "")
        if a and a not in ("...", "|"):
            out.append(a)
    return out


def bash_commands(path: Path) -> list[Command]:
    lines = path.read_text().split("\n")
    out, in_bash, i = [], False, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = (not in_bash) and stripped[3:].strip() in ("bash", "sh", "shell", "console")
            i += 1
            continue
        if not in_bash:
            i += 1
            continue
        start, text = i + 1, line
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i]
        i += 1
        text = text.strip()
        if text.startswith("$ "):
            text = text[2:]
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError as e:
            out.append(Command(f"{_rel(path)}:{start}", text, ["<unparsable>", str(e)], False))
            continue
        for args in _commands_of_tokens(tokens):
            out.append(Command(f"{_rel(path)}:{start}", text, args, _is_synopsis(args)))
    return out


def inline_commands(path: Path) -> list[Command]:
    text = path.read_text()
    # blank out fenced blocks (keeping line numbers) so their backticks are not read as spans
    masked = re.sub(r"^```.*?^```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S | re.M)
    out = []
    for m in re.finditer(r"(?<!`)`(sagepose\s[^`]*)`(?!`)", masked):
        span = " ".join(m.group(1).split())
        line = masked.count("\n", 0, m.start()) + 1
        try:
            tokens = shlex.split(span)
        except ValueError:
            tokens = span.split()
        args = tokens[1:]
        # an inline span naming only the command (`sagepose test`, `sagepose import dlc`) is a reference to it
        reference = len(args) <= 1 or (len(args) == 2 and not args[1].startswith("-") and "=" not in args[1]
                                        and args[0] in ("import", "translate"))
        out.append(Command(f"{_rel(path)}:{line}", span, args, reference or _is_synopsis(args)))
    return out


def all_commands() -> list[Command]:
    cmds = []
    for path in DOCS:
        cmds += bash_commands(path) + inline_commands(path)
    return cmds


# ---------------------------------------------------------------------------------------------------- the checks


def _override_key_error(item: str) -> str | None:
    """None if ``item``'s key is a real Config field (its value may be a placeholder), else the reason."""
    from sagepose.config import Config, ConfigError, apply_overrides, config_from_dict

    key = item.split("=", 1)[0]
    try:
        config_from_dict(apply_overrides({}, [item]))
    except ConfigError as e:
        reason = e.reason or str(e)
        if "unknown key" in reason or "not a section" in reason:
            return reason
    # the value may have been wrong (a placeholder); make sure the key itself ends on a field, not inside one
    cls = Config
    parts = key.split(".")
    for n, part in enumerate(parts):
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            return f"{'.'.join(parts[:n])} is not a section"
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return f"unknown key {part!r} in {'.'.join(parts[:n]) or 'the config'}"
        cls = hints[part]
    return None


def _config_error(value: str) -> str | None:
    """None if ``value`` names a recipe (see the module docstring), else the reason."""
    from sagepose.configs import resolve_config

    if PLACEHOLDER.match(value) or value.endswith(CHECKPOINT_SUFFIXES):
        return None
    if value.startswith("runs/") and value.endswith("/config.yaml"):  # the config a run saved in its folder
        return None
    if value.endswith((".yaml", ".yml")):
        return None if (ROOT / value).is_file() else f"{value}: no such YAML file in the repository"
    try:
        resolve_config(value)
    except FileNotFoundError:
        return f"{value}: not a bundled recipe (configs/), a YAML file, a checkpoint or a CAPITALS placeholder"
    return None


def _check(cmd: Command) -> list[str]:
    from sagepose.cli.main import build_parser, parse_args

    problems = []
    args = cmd.args
    if args and args[0] == "<unparsable>":
        return [f"shell quoting: {args[1]}"]
    if not args:
        return ["no subcommand"]
    parser = build_parser()
    sub_name = args[0]
    if sub_name not in parser.subcommand_parsers:
        return [f"unknown subcommand {sub_name!r} (known: {', '.join(parser.subcommand_parsers)})"]
    sub = parser.subcommand_parsers[sub_name]

    if cmd.synopsis:
        rest = _strip_synopsis(args[1:])
        options = set(sub._option_string_actions)
        for a in rest:
            if a.startswith("--") and a.split("=", 1)[0] not in options:
                problems.append(f"{sub_name}: unknown option {a.split('=', 1)[0]}")
        positionals = [a for a in rest if not a.startswith("-") and not OVERRIDE.match(a)]
    else:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parse_args(args)
        except SystemExit as e:
            message = err.getvalue().strip().splitlines()
            return [f"the argument parser refused it (exit {e.code}): {message[-1] if message else ''}"]
        positionals = [getattr(ns, "config", None)] if hasattr(ns, "config") else []
        rest = list(getattr(ns, "overrides", []) or [])
        rest += [a for a in args[1:] if OVERRIDE.match(a) and a not in rest]

    if sub_name in CONFIG_COMMANDS and positionals and positionals[0] is not None:
        error = _config_error(positionals[0])
        if error:
            problems.append(error)
    for a in rest:
        m = OVERRIDE.match(a)
        if m:
            error = _override_key_error(a)
            if error:
                problems.append(f"override {a}: {error}")
    return problems


COMMANDS = all_commands()


def test_docs_show_commands():
    """The collection itself works: the README's walkthrough and the training page have commands."""
    where = {c.where.split(":")[0] for c in COMMANDS}
    assert "README.md" in where and "docs/training.md" in where
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.where} {' '.join(c.args[:2])}" for c in COMMANDS])
def test_doc_command_is_accepted(cmd):
    problems = _check(cmd)
    assert not problems, f"{cmd.where}: `sagepose {' '.join(cmd.args)}`:\n  " + "\n  ".join(problems)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: move details to docs/)"


def test_readme_quickstart_block():
    """`.ci/run` runs the second non-blank line of the first ```bash block under ``## Quickstart``."""
    lines = (ROOT / "README.md").read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(r"^## *Quickstart", line))
    begin = next(i for i in range(start, len(lines)) if lines[i].startswith("```bash"))
    end = next(i for i in range(begin + 1, len(lines)) if lines[i].startswith("```"))
    block = [line for line in lines[begin + 1:end] if line.strip()]
    assert block[:2] == ['pip install torch==2.13.0 && pip install -e ".[dev]" && sagepose demo',
                         "python -m pytest -q"]


# --------------------------------------------------------------------------------- the checker checks itself


@pytest.mark.parametrize("line, ok", [
    ("sagepose train demo_tiny_vit data.train_json=a.json trainer.max_epochs=5", True),
    ("sagepose train demo_tiny_vit data.trian_json=a.json", False),          # misspelt key
    ("sagepose train demo_tiny_vit optim.lr=LR", True),                        # placeholder value
    ("sagepose train demo_tiny_vit model.schema.names=x", False),              # inside a field
    ("sagepose train no_such_recipe", False),
    ("sagepose train configs/demo_tiny_vit.yaml", True),
    ("sagepose train CONFIG --resume", True),
    ("sagepose test demo_tiny_vit --checkpoint x.ckpt data.val_json=V", True),
    ("sagepose infer vitpose-b photos/ --no-such-flag", False),
    ("sagepose export vitpose-b --out m.onnx   # [--fp16] [--opset 17]", True),  # comment
    ("pip install x && sagepose demo --ssl", True),
    ("torchrun --nproc_per_node 4 -m sagepose.cli.main train CONFIG trainer.devices=4", True),
    ("sagepose train CONFIG [key=value ...] [--resume]", True),                # synopsis
    ("sagepose train CONFIG [--resumee]", False),
])
def test_checker(tmp_path, line, ok):
    doc = tmp_path / "x.md"
    doc.write_text(f"```bash\n{line}\n```\n")
    cmds = bash_commands(doc)
    assert cmds
    assert (not any(_check(c) for c in cmds)) == ok, [_check(c) for c in cmds]


def test_inline_spans(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Run `sagepose test` or `sagepose\ninfer ... --dtype bfloat16`, or `sagepose demo --ssl`.\n"
                   "```bash\n`sagepose not_in_a_span`\n```\n")
    cmds = inline_commands(doc)
    assert [(c.text, c.synopsis) for c in cmds] == [
        ("sagepose test", True), ("sagepose infer ... --dtype bfloat16", True), ("sagepose demo --ssl", False)]
    assert all(not _check(c) for c in cmds)
    assert cmds[1].where.endswith(":1")
