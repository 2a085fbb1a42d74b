"""The ``/qlp`` grammar: turn the text of a slash command into a typed command, or a UserError
that says what was wrong and what is accepted.

User text never leaves this module as anything but validated values: versions match a strict
pattern, environment names are checked against the policy, numbers are numbers.
"""

from __future__ import annotations

import difflib
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from bot.formatting import escape
from procedures.errors import UserError

# ASCII only, spelled out: ``\d`` and str.isdigit() also take look-alike digits (fullwidth
# U+FF11, Arabic-Indic U+0661) that an approver cannot tell from ``v1.2.3``. Semver with an
# optional ``v``: three numbers, an optional pre-release (``-rc.1``) and optional build
# metadata (``+build.5``).
VERSION_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+-")
VERSION_PATTERN = re.compile(
    r"v?([0-9]{1,4})\.([0-9]{1,4})\.([0-9]{1,4})(-[0-9A-Za-z][0-9A-Za-z.-]{0,40})?"
    r"(\+[0-9A-Za-z-]{1,40}(?:\.[0-9A-Za-z-]{1,40}){0,8})?", re.ASCII)
MIGRATION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,80}$")
EMERGENCY_CATEGORIES = ("security", "outage", "critical-bug", "compliance")
# Slack clients turn straight quotes into typographic ones; shlex only knows the straight ones.
_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


@dataclass(frozen=True)
class CommandSpec:
    """One command of the grammar: its usage line, what it does, and examples."""

    name: str
    usage: str
    summary: str
    examples: tuple[str, ...] = ()


SPECS: tuple[CommandSpec, ...] = (
    CommandSpec("deploy", "deploy <version> [to <env>] [at <YYYY-MM-DD HH:MM>] [--maintenance] "
                '[--dry-run] [--override "reason"]',
                "standard blue-green deployment, inside the window, with approval "
                "(--override: break glass past a closed window, a freeze or a lock, with a "
                "second person's grant)",
                ("/qlp deploy v1.2.3", "/qlp deploy v1.2.3 to staging --dry-run",
                 "/qlp deploy v1.2.3 at 2026-12-01 10:00",
                 '/qlp deploy v1.2.3 --override "checkout fix cannot wait for Tuesday"')),
    CommandSpec("hotfix", 'hotfix <version> [to <env>] --reason "..."',
                "urgent fix: allowed outside the window, not in a freeze",
                ('/qlp hotfix v1.2.4 --reason "checkout 500s"',)),
    CommandSpec("emergency", 'emergency <security|outage|critical-bug|compliance> <version> '
                '--reason "..."', "24/7 fast track with a second person's approval",
                ('/qlp emergency outage v1.2.5 --reason "API down"',)),
    CommandSpec("migrate", "migrate <migration> [to <env>] [--maintenance]",
                "run a database migration, validated first",
                ("/qlp migrate 2026_11_26_add_index",)),
    CommandSpec("rollback", 'rollback [<version>] [in <env>] --reason "..."',
                "go back to the previous (or named) version",
                ('/qlp rollback --reason "error rate up"', '/qlp rollback v1.2.2 --reason "..."')),
    CommandSpec("status", "status [<env>]", "live slot, version, lock and running deployment",
                ("/qlp status", "/qlp status staging")),
    CommandSpec("history", "history [<env>] [<n>]", "the last n deployments",
                ("/qlp history", "/qlp history production 20")),
    CommandSpec("window", "window [<env>]",
                "may a standard deployment run now, and if not, when", ("/qlp window",)),
    CommandSpec("lock", 'lock <env> --reason "..."', "stop deployments to an environment",
                ('/qlp lock production --reason "incident 42"',)),
    CommandSpec("unlock", "unlock <env>", "lift a lock (its holder or an approver)",
                ("/qlp unlock production",)),
    CommandSpec("cancel", "cancel <id>", "stop a deployment and undo what it did",
                ("/qlp cancel 12",)),
    CommandSpec("checklist", "checklist <id>", "the deployment's checklist",
                ("/qlp checklist 12",)),
    CommandSpec("stats", "stats [<env>] [<days>]", "success rate, durations, DORA figures",
                ("/qlp stats", "/qlp stats production 30")),
    CommandSpec("doctor", "doctor [<env>]",
                "check everything a deployment needs: policy, database, Slack, platform "
                "(approvers)", ("/qlp doctor", "/qlp doctor staging")),
    CommandSpec("help", "help [<command>]", "this help", ("/qlp help deploy",)),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Command:
    """A parsed command. Only the fields its grammar uses are set."""

    name: str
    version: str | None = None
    environment: str | None = None
    at: datetime | None = None
    at_zone: str | None = None
    reason: str | None = None
    category: str | None = None
    migration: str | None = None
    number: int | None = None
    topic: str | None = None
    override: str | None = None  # the reason of a break-glass override (``--override "..."``)
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def dry_run(self) -> bool:
        return "dry-run" in self.flags

    @property
    def maintenance(self) -> bool:
        return "maintenance" in self.flags


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` Did you mean `X`?`` (or `` `X` or `Y`?``) for near misses, else an empty string."""
    near = [c for c in choices if word and len(word) >= 3 and c.startswith(word)][:2]
    near += [c for c in difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
             if c not in near][: 2 - len(near)]
    return (" Did you mean " + " or ".join(f"`{n}`" for n in near) + "?") if near else ""


_VERSION_HINT = ("A version looks like `v1.2.3`, `v1.2.3-rc.1` or `v1.2.3+build.5` (three "
                 "numbers, an optional pre-release and build of letters, digits, dots and "
                 "dashes).")
_VERSION_ALPHABET = "versions are ASCII: digits, letters, '.', '+', '-'"


def normalise_version(text: str) -> str:
    """Validate a version against the strict pattern and give it its ``v`` prefix.

    Anything outside ASCII ``[0-9A-Za-z.+-]`` is refused with the character, its code point and
    its position, so that a look-alike (a fullwidth digit) is told apart from what it imitates.
    """
    for position, char in enumerate(text, start=1):
        if char not in VERSION_CHARACTERS:
            kind = "a non-ASCII character" if ord(char) > 127 else "the character"
            raise UserError(
                f"`{_clip(text)}` is not a version: it has {kind} {describe_character(char)} "
                f"at position {position}; {_VERSION_ALPHABET}.",
                hint=_VERSION_HINT,
            )
    if not VERSION_PATTERN.fullmatch(text):
        raise UserError(f"`{_clip(text)}` is not a version.", hint=_VERSION_HINT)
    return text if text.startswith("v") else "v" + text


def describe_character(char: str) -> str:
    """``'x' (U+FF11 FULLWIDTH DIGIT ONE)``: a character as Slack may show it, and its name.

    Invisible and control characters (a right-to-left override, a zero-width space) are named
    only: shown, they would rearrange or hide the message around them.
    """
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    label = f"{code} {name}" if name else code
    if _invisible(char) or unicodedata.category(char)[0] == "M" or char == "`":
        return f"({label})"
    quote = '"' if char == "'" else "'"
    return f"{quote}{escape(char)}{quote} ({label})"


def _invisible(char: str) -> bool:
    # Control, format (bidi overrides, zero-width), separators other than a plain space,
    # unassigned and private-use characters.
    return unicodedata.category(char)[0] in "CZ" and char != " "


def _clip(text: str, limit: int = 40) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    # Echoed user text must not format, link or ping (``<!channel>``) in Slack, nor reorder or
    # hide what surrounds it (a right-to-left override, a zero-width space): those are shown as
    # their code points.
    text = "".join(f"<U+{ord(ch):04X}>" if _invisible(ch) else ch for ch in text)
    return escape(text.replace("`", "'"))


def _usage(name: str) -> str:
    usage = SPEC_BY_NAME[name].usage.replace("<", "&lt;").replace(">", "&gt;")
    return f"Usage: `/qlp {usage}`"


class _Tokens:
    """A cursor over the words of one command, collecting flags and options as it goes."""

    def __init__(self, name: str, words: list[str], allowed_flags: tuple[str, ...],
                 options: tuple[str, ...]) -> None:
        self.name = name
        self.flags: set[str] = set()
        self.options: dict[str, str] = {}
        self.words: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word.startswith("--") or word.startswith("—"):
                key, _, inline = word.lstrip("-—").partition("=")
                key = key.lower()
                if key in options:
                    if inline:
                        self.options[key] = inline
                    elif i + 1 < len(words):
                        self.options[key] = words[i + 1]
                        i += 1
                    else:
                        raise UserError(f"`--{key}` needs a value.", hint=_usage(name))
                elif key in allowed_flags:
                    self.flags.add(key)
                else:
                    accepted = [f"--{f}" for f in (*allowed_flags, *options)]
                    listing = ", ".join(f"`{a}`" for a in accepted) or "none"
                    raise UserError(
                        f"`/qlp {name}` has no option `{_clip(word)}`."
                        + did_you_mean("--" + key, accepted),
                        hint=f"Options it takes: {listing}. {_usage(name)}",
                    )
            else:
                self.words.append(word)
            i += 1

    def take(self) -> str | None:
        return self.words.pop(0) if self.words else None

    def take_after(self, keyword: str, count: int = 1) -> list[str] | None:
        lowered = [w.lower() for w in self.words]
        if keyword not in lowered:
            return None
        at = lowered.index(keyword)
        values = self.words[at + 1: at + 1 + count]
        if len(values) < 1:
            raise UserError(f"`{keyword}` needs a value.", hint=_usage(self.name))
        del self.words[at: at + 1 + len(values)]
        return values

    def done(self) -> None:
        if self.words:
            raise UserError(
                f"I did not understand `{_clip(' '.join(self.words))}` in `/qlp {self.name}`.",
                hint=_usage(self.name),
            )


def _reason(tokens: _Tokens, required: bool) -> str | None:
    reason = tokens.options.get("reason")
    if reason is not None:
        reason = reason.strip()
        if len(reason) < 3:
            raise UserError("The reason is too short.", hint='Say why, e.g. `--reason "..."`.')
        if len(reason) > 500:
            raise UserError("The reason is longer than 500 characters.")
    if required and not reason:
        raise UserError(f"`/qlp {tokens.name}` needs a reason.", hint=_usage(tokens.name))
    return reason


def _number(text: str, what: str, name: str, limit: int) -> int:
    cleaned = text.lstrip("#")
    # ASCII digits only: str.isdigit() takes '١٢' (int() reads it as 12) and '²' (int() fails).
    if not _ascii_digits(cleaned) or len(cleaned) > 12 or not 0 < int(cleaned) <= limit:
        raise UserError(f"`{_clip(text)}` is not a {what} (a whole number from 1 to {limit}).",
                        hint=_usage(name))
    return int(cleaned)


def _ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _at(tokens: _Tokens) -> tuple[datetime | None, str | None]:
    words = tokens.take_after("at", 3)
    if words is None:
        return None, None
    date_part = words[0]
    time_part = words[1] if len(words) > 1 else ""
    zone = words[2] if len(words) > 2 else None
    # Put back anything that is not part of the time ("at 2026-12-01 10:00 --x" keeps flags).
    if not re.fullmatch(r"[0-9]{1,2}:[0-9]{2}", time_part) or \
            not re.fullmatch(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}", date_part):
        raise UserError(
            f"`at {_clip(' '.join(words))}` is not a date and time.",
            hint="Write `at YYYY-MM-DD HH:MM`, optionally followed by a time zone such as "
                 "`Europe/Berlin`; the policy's time zone is used otherwise.",
        )
    if zone is not None and not re.fullmatch(r"[A-Za-z_]+(/[A-Za-z_+-]+){0,2}|UTC", zone):
        tokens.words.insert(0, zone)
        zone = None
    try:
        moment = datetime.strptime(f"{date_part} {time_part}", "%Y-%m-%d %H:%M")
    except ValueError:
        raise UserError(f"`{_clip(date_part)} {_clip(time_part)}` is not a valid date and time.",
                        hint="Write `at YYYY-MM-DD HH:MM`, e.g. `at 2026-12-01 10:00`.") from None
    return moment, zone


def _environment_after(tokens: _Tokens, keyword: str) -> str | None:
    words = tokens.take_after(keyword)
    return words[0].lower() if words else None


def _parse_deploy(tokens: _Tokens) -> Command:
    version = tokens.take()
    if version is None:
        raise UserError("Which version?", hint=_usage("deploy"))
    version = normalise_version(version)
    environment = _environment_after(tokens, "to")
    at, zone = _at(tokens)
    override = _override(tokens)
    tokens.done()
    return Command("deploy", version=version, environment=environment, at=at, at_zone=zone,
                   override=override, flags=frozenset(tokens.flags))


def _override(tokens: _Tokens) -> str | None:
    """The reason given with ``--override``: required text, like a ``--reason``."""
    text = tokens.options.get("override")
    if text is None:
        return None
    text = text.strip()
    if len(text) < 3:
        raise UserError("An override needs a reason.",
                        hint='Say why the rule must be broken, e.g. `--override "checkout is '
                             'down, fix cannot wait"`.')
    if len(text) > 500:
        raise UserError("The override reason is longer than 500 characters.")
    return text


def _parse_hotfix(tokens: _Tokens) -> Command:
    version = tokens.take()
    if version is None:
        raise UserError("Which version?", hint=_usage("hotfix"))
    version = normalise_version(version)
    environment = _environment_after(tokens, "to")
    reason = _reason(tokens, required=True)
    tokens.done()
    return Command("hotfix", version=version, environment=environment, reason=reason,
                   flags=frozenset(tokens.flags))


def _parse_emergency(tokens: _Tokens) -> Command:
    category = (tokens.take() or "").lower()
    if category not in EMERGENCY_CATEGORIES:
        raise UserError(
            f"`{_clip(category) or '(nothing)'}` is not an emergency category."
            + did_you_mean(category, EMERGENCY_CATEGORIES),
            hint=f"Categories: {', '.join(EMERGENCY_CATEGORIES)}. {_usage('emergency')}",
        )
    version = tokens.take()
    if version is None:
        raise UserError("Which version?", hint=_usage("emergency"))
    version = normalise_version(version)
    environment = _environment_after(tokens, "to")
    reason = _reason(tokens, required=True)
    tokens.done()
    return Command("emergency", version=version, category=category, environment=environment,
                   reason=reason, flags=frozenset(tokens.flags))


def _parse_migrate(tokens: _Tokens) -> Command:
    name = tokens.take()
    if name is None or not MIGRATION_PATTERN.match(name) or ".." in name:
        raise UserError(
            f"`{_clip(name or '(nothing)')}` is not a migration name.",
            hint="A migration name is letters, digits, `_`, `.` and `-`, such as "
                 "`2026_11_26_add_index` or `v1.2.3`. " + _usage("migrate"),
        )
    environment = _environment_after(tokens, "to")
    tokens.done()
    return Command("migrate", migration=name, environment=environment,
                   flags=frozenset(tokens.flags))


def _parse_rollback(tokens: _Tokens) -> Command:
    environment = _environment_after(tokens, "in")
    version = tokens.take()
    reason = _reason(tokens, required=True)
    tokens.done()
    return Command("rollback", version=normalise_version(version) if version else None,
                   environment=environment, reason=reason, flags=frozenset(tokens.flags))


def _parse_env_only(tokens: _Tokens) -> Command:
    environment = tokens.take()
    tokens.done()
    return Command(tokens.name, environment=environment.lower() if environment else None)


def _parse_env_number(tokens: _Tokens, what: str, limit: int) -> Command:
    environment: str | None = None
    number: int | None = None
    for word in list(tokens.words):
        tokens.words.remove(word)
        if _ascii_digits(word) and number is None:
            number = _number(word, what, tokens.name, limit)
        elif environment is None and not _ascii_digits(word):
            environment = word.lower()
        else:
            tokens.words.append(word)
    tokens.done()
    return Command(tokens.name, environment=environment, number=number)


def _parse_lock(tokens: _Tokens) -> Command:
    environment = tokens.take()
    if environment is None:
        raise UserError("Which environment?", hint=_usage(tokens.name))
    reason = _reason(tokens, required=tokens.name == "lock")
    tokens.done()
    return Command(tokens.name, environment=environment.lower(), reason=reason)


def _parse_id(tokens: _Tokens) -> Command:
    raw = tokens.take()
    if raw is None:
        raise UserError("Which deployment? Give its number, e.g. `12` or `#12`.",
                        hint=_usage(tokens.name))
    number = _number(raw, "deployment number", tokens.name, 10**9)
    tokens.done()
    return Command(tokens.name, number=number)


def _parse_help(tokens: _Tokens) -> Command:
    topic = tokens.take()
    tokens.done()
    return Command("help", topic=topic.lower() if topic else None)


_PARSERS = {
    "deploy": (_parse_deploy, ("maintenance", "dry-run"), ("override",)),
    "hotfix": (_parse_hotfix, ("maintenance", "dry-run"), ("reason",)),
    "emergency": (_parse_emergency, ("dry-run",), ("reason",)),
    "migrate": (_parse_migrate, ("maintenance", "dry-run"), ()),
    "rollback": (_parse_rollback, ("dry-run",), ("reason",)),
    "status": (_parse_env_only, (), ()),
    "window": (_parse_env_only, (), ()),
    "history": (lambda t: _parse_env_number(t, "count", 100), (), ()),
    "stats": (lambda t: _parse_env_number(t, "number of days", 365), (), ()),
    "lock": (_parse_lock, (), ("reason",)),
    "unlock": (_parse_lock, (), ("reason",)),
    "cancel": (_parse_id, (), ()),
    "checklist": (_parse_id, (), ()),
    "doctor": (_parse_env_only, (), ()),
    "help": (_parse_help, (), ()),
}


def parse(text: str) -> Command:
    """Parse the text after ``/qlp``. Raise UserError with a usage hint on anything wrong."""
    text = (text or "").translate(_SMART_QUOTES).strip()
    if len(text) > 1000:
        raise UserError("That command is longer than 1000 characters.")
    if not text:
        return Command("help")
    try:
        words = shlex.split(text)
    except ValueError:
        raise UserError("A quote is not closed.",
                        hint='Put the reason in straight quotes: `--reason "why"`.') from None
    name = words[0].lower()
    if name not in _PARSERS:
        raise UserError(
            f"`{_clip(words[0])}` is not a /qlp command." + did_you_mean(name, list(_PARSERS)),
            hint="Commands: " + ", ".join(f"`{n}`" for n in _PARSERS) + ". Try `/qlp help`.",
        )
    parser, flags, options = _PARSERS[name]
    tokens = _Tokens(name, words[1:], flags, options)
    return parser(tokens)
