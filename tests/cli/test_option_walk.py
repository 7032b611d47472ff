"""Every option of every command, given a value it must refuse: exit code 2, one ``error:`` line
and a ``hint:``, never a traceback, and no work started (the refusal comes from parsing)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from braintumor.cli import build_parser, main
from braintumor.options import RULES

BAD_NUMBERS = ["", " ", "abc", "nan", "inf", "-inf", "1e400", "-1e12", "1e12", "0x10", "1,5"]
BAD_INTEGER_ONLY = ["2.5"]


def _commands(parser: argparse.ArgumentParser, prefix=()):
    """(argv prefix, parser) of every leaf command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*prefix, name))


def _rule_of(action):
    name = getattr(action.type, "__name__", "")
    return next((r for r in RULES.values() if r.describe() == name), None)


def _cases():
    for prefix, parser in _commands(build_parser()):
        positionals = [a for a in parser._actions if not a.option_strings and a.required]
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            rule = _rule_of(action)
            if action.choices is not None:
                values = ["", "no-such-choice"]
            elif rule is None:
                values = [None]  # an option with neither choices nor a declared rule: a failure below
            elif rule.kind in ("path", "text"):
                values = ["", "   "]
            else:
                values = BAD_NUMBERS + (BAD_INTEGER_ONLY if rule.kind == "int" else [])
                values += [v for v in ("-1", "0", "1e9", "-0.5", "1.5") if not rule.accepts(float(v))]
            for value in values:
                yield pytest.param(prefix, positionals, action, value,
                                   id=f"{' '.join(prefix)} {action.option_strings[-1] if action.option_strings else action.dest}={value!r}")


@pytest.mark.parametrize("prefix, positionals, action, value", list(_cases()))
def test_a_refused_value_is_one_clear_error(prefix, positionals, action, value):
    assert value is not None, f"{action.option_strings or action.dest} has no declared rule (options.RULES) nor choices"
    fill = [p for p in positionals if p is not action]
    if action.option_strings:
        argv = [*prefix, *("x.png" if p.choices is None else next(iter(p.choices)) for p in fill), action.option_strings[-1], value]
    else:
        argv = [*prefix, value]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    assert code == 2, (argv, text)
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and any(line.strip().startswith("hint: ") for line in lines), text


def test_the_walk_covers_every_command():
    names = {" ".join(prefix) for prefix, _ in _commands(build_parser())}
    assert {"train", "evaluate", "predict", "explain", "export", "fit-ood", "data info", "data fetch", "audit",
            "label-issues", "compare", "lesson"} <= names
    assert len(list(_cases())) > 500
