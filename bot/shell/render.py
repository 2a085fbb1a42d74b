"""Block Kit to terminal text, for the local shell.

Renders the blocks the bot sends (header, section with text / fields / accessory, context,
divider, actions, image, rich_text, markdown, input) and falls back to a message's top-level
``text`` when it has no blocks. Every button gets a number within the rendered view, shown as
``[!1 Approve]``, so a shell user can type ``!1``; the returned ``RenderedButton`` list carries
what the shell needs to build the ``block_actions`` payload. A trailing ``…`` on a button means
it asks for confirmation first (``confirm`` is set).

Thread replies are indented with ``"  │ "``, ephemeral messages start with ``(only you)``,
broadcast replies with ``(also sent to the channel)``. Slack mrkdwn is converted minimally:
``<@U1>`` becomes ``@name``, ``<url|label>`` becomes ``label (url)``, ``&lt;``/``&gt;``/``&amp;``
are unescaped, ``*bold*`` and ``:emoji:`` stay as typed. ANSI colour only with ``color=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "BROADCAST_MARK",
    "EPHEMERAL_MARK",
    "REPLY_PREFIX",
    "MessageLike",
    "RenderedButton",
    "RenderedView",
    "mrkdwn_to_text",
    "render_blocks",
    "render_message",
    "render_transcript",
]

REPLY_PREFIX = "  │ "
EPHEMERAL_MARK = "(only you) "
BROADCAST_MARK = "(also sent to the channel) "
DIVIDER = "─" * 40

UserName = Callable[[str], str | None]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOLD, _DIM, _ITALIC, _STRIKE, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[3m", "\x1b[9m", "\x1b[0m"
_GREEN, _RED, _CYAN = "\x1b[32m", "\x1b[31m", "\x1b[36m"
_ANGLE = re.compile(r"<([^<>\n]+)>")
_BOLD_SPAN = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC_SPAN = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE_SPAN = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")


class MessageLike(Protocol):
    """What ``render_message`` needs of a message (``StoredMessage`` fits)."""

    @property
    def channel(self) -> str: ...
    @property
    def ts(self) -> str: ...
    @property
    def thread_ts(self) -> str | None: ...
    @property
    def text(self) -> str: ...
    @property
    def blocks(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def ephemeral(self) -> bool: ...
    @property
    def broadcast(self) -> bool: ...


@dataclass(frozen=True)
class RenderedButton:
    """A button as shown in the terminal: ``number`` is what the user types after ``!``.

    ``message_ts`` / ``channel`` / ``thread_ts`` / ``ephemeral`` locate the message it sits on
    (for the ``container`` of a ``block_actions`` payload); ``confirm`` is the button's confirm
    dialog object, if any.
    """

    number: int
    action_id: str
    value: str | None
    text: str
    confirm: dict[str, Any] | None
    message_ts: str
    channel: str
    block_id: str | None = None
    style: str | None = None
    url: str | None = None
    thread_ts: str | None = None
    ephemeral: bool = False


@dataclass(frozen=True)
class RenderedView:
    """Rendered terminal text plus the buttons in it, numbered in order of appearance."""

    text: str
    buttons: list[RenderedButton] = field(default_factory=list)

    def button(self, number: int) -> RenderedButton | None:
        """The button shown as ``[!number ...]``, or None."""
        return next((b for b in self.buttons if b.number == number), None)

    @property
    def next_number(self) -> int:
        """The number the next rendered button should get to keep numbers unique."""
        return max((b.number for b in self.buttons), default=0) + 1


# --------------------------------------------------------------------- public functions


def mrkdwn_to_text(text: str, *, user_name: UserName | None = None, color: bool = False) -> str:
    """Slack mrkdwn to terminal text: resolve ``<...>`` references, unescape entities and,
    with ``color``, turn ``*bold*``, ``_italic_`` and ``~strike~`` into ANSI styles."""
    converted = _ANGLE.sub(lambda m: _reference(m.group(1), user_name), text)
    if color:
        converted = _BOLD_SPAN.sub(lambda m: f"{_BOLD}{m.group(1)}{_RESET}", converted)
        converted = _ITALIC_SPAN.sub(lambda m: f"{_ITALIC}{m.group(1)}{_RESET}", converted)
        converted = _STRIKE_SPAN.sub(lambda m: f"{_STRIKE}{m.group(1)}{_RESET}", converted)
    return _unescape(converted)


def render_blocks(
    blocks: Sequence[Mapping[str, Any]],
    *,
    text: str = "",
    channel: str = "",
    message_ts: str = "",
    thread_ts: str | None = None,
    ephemeral: bool = False,
    first_button: int = 1,
    user_name: UserName | None = None,
    color: bool = False,
) -> RenderedView:
    """Render blocks (or ``text`` when there are none) without any message decoration.

    The location arguments are copied into each ``RenderedButton``; buttons are numbered from
    ``first_button``.
    """
    renderer = _BlockRenderer(
        _Location(channel, message_ts, thread_ts, ephemeral), first_button, user_name, color
    )
    lines = renderer.render(blocks, text)
    return RenderedView("\n".join(lines), renderer.buttons)


def render_message(
    message: MessageLike,
    *,
    first_button: int = 1,
    user_name: UserName | None = None,
    color: bool = False,
) -> RenderedView:
    """Render one message: indented when it is a thread reply, marked when ephemeral or
    broadcast. Buttons are numbered from ``first_button``."""
    is_reply = message.thread_ts is not None and message.thread_ts != message.ts
    view = render_blocks(
        message.blocks,
        text=message.text,
        channel=message.channel,
        message_ts=message.ts,
        thread_ts=message.thread_ts if is_reply else None,
        ephemeral=message.ephemeral,
        first_button=first_button,
        user_name=user_name,
        color=color,
    )
    lines = view.text.split("\n") if view.text else [""]
    mark = ""
    if message.ephemeral:
        mark += _style(EPHEMERAL_MARK, _DIM, color)
    if message.broadcast and is_reply:
        mark += _style(BROADCAST_MARK, _DIM, color)
    lines[0] = mark + lines[0]
    if is_reply:
        lines = [_style(REPLY_PREFIX, _DIM, color) + line for line in lines]
    return RenderedView("\n".join(lines), view.buttons)


def render_transcript(
    messages: Iterable[MessageLike],
    *,
    first_button: int = 1,
    user_name: UserName | None = None,
    color: bool = False,
) -> RenderedView:
    """Render many messages (top-level, replies and ephemerals, in any order) as a channel:
    top-level messages by ts, separated by a blank line, each followed by its thread replies
    (indented, by ts). Replies whose parent is not among ``messages`` stand on their own."""
    everything = list(messages)
    tops = {m.ts for m in everything if m.thread_ts is None or m.thread_ts == m.ts}
    replies: dict[str, list[MessageLike]] = {}
    roots: list[MessageLike] = []
    for message in everything:
        parent = message.thread_ts
        if parent is not None and parent != message.ts and parent in tops:
            replies.setdefault(parent, []).append(message)
        else:
            roots.append(message)
    chunks: list[str] = []
    buttons: list[RenderedButton] = []
    number = first_button
    for root in sorted(roots, key=lambda m: _ts_key(m.ts)):
        group = [root, *sorted(replies.get(root.ts, []), key=lambda m: _ts_key(m.ts))]
        parts: list[str] = []
        for message in group:
            view = render_message(message, first_button=number, user_name=user_name, color=color)
            parts.append(view.text)
            buttons.extend(view.buttons)
            number = max(number, view.next_number)
        chunks.append("\n".join(parts))
    return RenderedView("\n\n".join(chunks), buttons)


# --------------------------------------------------------------------- the block walker


@dataclass(frozen=True)
class _Location:
    channel: str
    message_ts: str
    thread_ts: str | None
    ephemeral: bool


class _BlockRenderer:
    def __init__(
        self, where: _Location, first_button: int, user_name: UserName | None, color: bool
    ) -> None:
        self.where = where
        self.number = first_button
        self.user_name = user_name
        self.color = color
        self.buttons: list[RenderedButton] = []

    def render(self, blocks: Sequence[Mapping[str, Any]], text: str) -> list[str]:
        if not blocks:
            return self.mrkdwn(text).split("\n") if text else []
        lines: list[str] = []
        for block in blocks:
            lines.extend(self.block(block))
        return lines

    def block(self, block: Mapping[str, Any]) -> list[str]:
        kind = block.get("type")
        if kind == "header":
            title = self.text_object(block.get("text"))
            return [_style(title, _BOLD, self.color) if self.color else f"== {title} =="]
        if kind == "section":
            return self.section(block)
        if kind == "divider":
            return [_style(DIVIDER, _DIM, self.color)]
        if kind == "context":
            parts = [self.context_element(e) for e in block.get("elements", [])]
            return [_style("  ".join(p for p in parts if p), _DIM, self.color)]
        if kind == "actions":
            elements = [self.element(e, block.get("block_id")) for e in block.get("elements", [])]
            return self.inline(elements)
        if kind == "image":
            return [f"[image: {block.get('alt_text', '')}] ({block.get('image_url', '')})"]
        if kind == "markdown":
            return str(block.get("text", "")).split("\n")
        if kind == "rich_text":
            return self.rich_text(block.get("elements", []))
        if kind == "input":
            label = self.text_object(block.get("label"))
            return [f"{label}: {' '.join(self.element(block.get('element', {}), None))}"]
        return [f"[{kind} block]"]

    def section(self, block: Mapping[str, Any]) -> list[str]:
        lines: list[str] = []
        if block.get("text"):
            lines.extend(self.text_object(block["text"]).split("\n"))
        fields = [self.text_object(f) for f in block.get("fields", [])]
        lines.extend(_columns(fields))
        accessory = block.get("accessory")
        if isinstance(accessory, Mapping):
            lines.extend(self.inline([self.element(accessory, block.get("block_id"))]))
        return lines

    def inline(self, elements: list[list[str]]) -> list[str]:
        """Short elements (buttons, selects) side by side; multi-line ones on their own."""
        lines: list[str] = []
        row: list[str] = []
        for element in elements:
            if len(element) == 1:
                row.append(element[0])
                continue
            if row:
                lines.append("  ".join(row))
                row = []
            lines.extend(element)
        if row:
            lines.append("  ".join(row))
        return lines

    def element(self, element: Mapping[str, Any], block_id: str | None) -> list[str]:
        kind = element.get("type")
        if kind == "button":
            return [self.button(element, block_id)]
        if kind in ("checkboxes", "radio_buttons"):
            chosen = {o.get("value") for o in element.get("initial_options", []) or []}
            if kind == "radio_buttons" and element.get("initial_option"):
                chosen.add(element["initial_option"].get("value"))
            on, off = ("☑", "☐") if kind == "checkboxes" else ("(•)", "( )")
            return [
                f"{on if o.get('value') in chosen else off} {self.text_object(o.get('text'))}"
                for o in element.get("options", [])
            ]
        if kind == "overflow":
            return ["[⋯]"]
        if kind in ("datepicker", "timepicker", "datetimepicker"):
            initial = element.get("initial_date") or element.get("initial_time") or ""
            return [f"[{initial or self.text_object(element.get('placeholder')) or kind} ▾]"]
        if isinstance(kind, str) and kind.endswith("_select"):
            initial = element.get("initial_option") or {}
            shown = self.text_object(initial.get("text")) or self.text_object(
                element.get("placeholder")
            )
            return [f"[{shown or 'choose'} ▾]"]
        if kind in ("plain_text_input", "number_input", "email_text_input", "url_text_input"):
            return [f"[{element.get('initial_value', '') or '…'}]"]
        if kind == "image":
            return [f"[image: {element.get('alt_text', '')}]"]
        return [f"[{kind}]"]

    def button(self, element: Mapping[str, Any], block_id: str | None) -> str:
        label = self.text_object(element.get("text"))
        confirm = element.get("confirm")
        url = element.get("url")
        number = self.number
        self.number += 1
        self.buttons.append(
            RenderedButton(
                number=number,
                action_id=str(element.get("action_id", "")),
                value=element.get("value"),
                text=label,
                confirm=dict(confirm) if isinstance(confirm, Mapping) else None,
                message_ts=self.where.message_ts,
                channel=self.where.channel,
                block_id=block_id,
                style=element.get("style"),
                url=url,
                thread_ts=self.where.thread_ts,
                ephemeral=self.where.ephemeral,
            )
        )
        shown = f"[!{number} {label}{'…' if confirm else ''}]"
        if url:
            shown += f" ({url})"
        colour = {"primary": _GREEN, "danger": _RED}.get(str(element.get("style")), _CYAN)
        return _style(shown, colour, self.color)

    def context_element(self, element: Mapping[str, Any]) -> str:
        if element.get("type") == "image":
            return f"[{element.get('alt_text', 'image')}]"
        return self.text_object(element)

    def text_object(self, obj: Any) -> str:
        if not isinstance(obj, Mapping):
            return "" if obj is None else str(obj)
        text = str(obj.get("text", ""))
        if obj.get("type") == "mrkdwn":
            return self.mrkdwn(text)
        return text

    def mrkdwn(self, text: str) -> str:
        return mrkdwn_to_text(text, user_name=self.user_name, color=self.color)

    # rich_text: the structure Slack's composer produces; rendered to readable lines.

    def rich_text(self, elements: Iterable[Mapping[str, Any]]) -> list[str]:
        lines: list[str] = []
        for element in elements:
            kind = element.get("type")
            inner = element.get("elements", [])
            if kind == "rich_text_list":
                indent = "  " * int(element.get("indent", 0) or 0)
                ordered = element.get("style") == "ordered"
                for i, item in enumerate(inner, start=1):
                    bullet = f"{i}." if ordered else "•"
                    lines.append(f"{indent}{bullet} {self.rich_inline(item.get('elements', []))}")
            elif kind == "rich_text_preformatted":
                lines.extend(f"    {line}" for line in self.rich_inline(inner).split("\n"))
            elif kind == "rich_text_quote":
                lines.extend(f"> {line}" for line in self.rich_inline(inner).split("\n"))
            else:
                lines.extend(self.rich_inline(inner).split("\n"))
        return lines

    def rich_inline(self, elements: Iterable[Mapping[str, Any]]) -> str:
        parts: list[str] = []
        for element in elements:
            kind = element.get("type")
            if kind == "text":
                parts.append(self.rich_styled(str(element.get("text", "")), element.get("style")))
            elif kind == "link":
                url = str(element.get("url", ""))
                label = element.get("text")
                parts.append(f"{label} ({url})" if label and label != url else url)
            elif kind == "user":
                parts.append("@" + self.user_label(str(element.get("user_id", ""))))
            elif kind == "channel":
                parts.append(f"#{element.get('channel_id', '')}")
            elif kind == "usergroup":
                parts.append(f"@{element.get('usergroup_id', '')}")
            elif kind == "emoji":
                parts.append(f":{element.get('name', '')}:")
            elif kind == "broadcast":
                parts.append(f"@{element.get('range', '')}")
        return "".join(parts)

    def rich_styled(self, text: str, style: Any) -> str:
        if not isinstance(style, Mapping) or not self.color:
            if isinstance(style, Mapping) and style.get("code"):
                return f"`{text}`"
            return text
        codes = "".join(
            code
            for key, code in (("bold", _BOLD), ("italic", _ITALIC), ("strike", _STRIKE))
            if style.get(key)
        )
        return f"{codes}{text}{_RESET}" if codes else text

    def user_label(self, user_id: str) -> str:
        name = self.user_name(user_id) if self.user_name is not None else None
        return name or user_id


# --------------------------------------------------------------------- helpers


def _reference(inner: str, user_name: UserName | None) -> str:
    """One ``<...>`` mrkdwn reference as terminal text."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        if label:
            return "@" + label.lstrip("@")
        name = user_name(target[1:]) if user_name is not None else None
        return "@" + (name or target[1:])
    if target.startswith("#"):
        return "#" + (label.lstrip("#") or target[1:])
    if target.startswith("!"):
        command = target[1:]
        if command.startswith("subteam^"):
            return "@" + (label.lstrip("@") or command.split("^", 1)[1])
        if command in ("here", "channel", "everyone"):
            return "@" + command
        return label or command
    if label and label != target:
        return f"{label} ({target})"
    return target


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _style(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and text else text


def _visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def _columns(fields: list[str], gap: int = 4) -> list[str]:
    """Section fields two per row, like Slack shows them; each field keeps its own lines."""
    if not fields:
        return []
    lefts = [line for f in fields[0::2] for line in f.split("\n")]
    width = max(_visible_len(line) for line in lefts) + gap
    lines: list[str] = []
    for i in range(0, len(fields), 2):
        left = fields[i].split("\n")
        right = fields[i + 1].split("\n") if i + 1 < len(fields) else []
        for row in range(max(len(left), len(right))):
            a = left[row] if row < len(left) else ""
            b = right[row] if row < len(right) else ""
            padded = a + " " * (width - _visible_len(a)) if b else a
            lines.append((padded + b).rstrip())
    return lines


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    try:
        return int(seconds), int(micros or 0)
    except ValueError:
        return 0, 0
