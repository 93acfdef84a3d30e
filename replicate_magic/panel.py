"""The chat panel: ipywidgets over a ``PanelModel`` (panel_model.py). No HTTP, no state.

Show it with ``%replicate panel [NAME]`` or ``replicate_magic.ChatPanel(chat=NAME)``.
Handlers return at once; the turn streams on the private loop and the widgets follow the
model's traits. Updates from that loop's thread only set widget values: ``with output:``
from a thread or task renders nothing (DESIGN.md, decision 2).

Turns show as HTML made by the one renderer (render.py: raw HTML in a reply is text), not
as ``text/markdown`` in an ``Output`` widget: JupyterLab renders an Output widget's
contents as trusted, so HTML a model wrote there would run (a ``<script>``, an
``onerror=``). Setting ``HTML.value`` is also one small trait update, safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ipywidgets import (
    HTML,
    BoundedIntText,
    Button,
    Combobox,
    FileUpload,
    FloatSlider,
    HBox,
    HTMLMath,
    Layout,
    Text,
    Textarea,
    VBox,
)
from traitlets import link

from .catalog import KNOWN_MODELS
from .chat import ChatSession
from .conversation import Turn
from .magics import loaded_magics
from .panel_model import FAILED, STOPPED, ColumnDraft, Comparison, Draft, PanelModel
from .render import Column, StreamingMarkdown, columns_html, files_html, inline_html, markdown_html, plain_html
from .settings import SETTINGS

__all__ = ["ChatPanel"]

_NOTES = {
    STOPPED: "stopped: this turn is not in the history",
    FAILED: "failed: this turn is not in the history (see the status line)",
}


class ChatPanel(VBox):  # ipywidgets ships no type hints: VBox is Any to mypy
    """A chat with a model hosted on Replicate, in one conversation shared with the magic.

    ``settings`` are ``PanelModel`` traits: ``model_name``, ``temperature``, ``max_tokens``,
    ``system_prompt``, ``max_history``, ``default_inputs``, ``timeout``, ``connect_timeout``,
    ``compare_with`` (more models, comma-separated: each message then goes to all of them, and
    their replies stream side by side; none is recorded in the conversation);
    those not given follow the magic's ``%config`` when the extension is loaded.
    ``panel.model`` drives the panel from code: ``panel.model.send("Hi")``, then
    ``await panel.model.wait()``.
    """

    def __init__(self, chat: str = "default", *, model: PanelModel | None = None, **settings: Any) -> None:
        super().__init__(layout=Layout(width="100%", max_width="900px"))
        self._links: list[link] = []
        self._after_cell: Callable[[], None] | None = None
        self._draft_markdown = StreamingMarkdown()  # the live reply re-renders only its open blocks
        self._column_markdown: list[StreamingMarkdown] = []  # the same, per column of a comparison
        if model is None:
            model = PanelModel(session=_session(), chat=chat, **{**_configured(), **settings})
        self.model = model
        self._build()
        self._connect()
        self._after_cell = _watch_cells(self.model)

    # -- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        wide = {"description_width": "initial"}
        self._title = HTML()
        self._picker = Combobox(
            options=KNOWN_MODELS, ensure_option=False, description="Model", placeholder="owner/name",
            style=wide, layout=Layout(flex="1 1 300px"),
        )
        # Side by side: more models for the same message, each in its own column.
        self._compare = Text(description="Compare with", placeholder="more models, comma-separated",
                             style=wide, layout=Layout(flex="1 1 260px"),
                             tooltip="ask these models too, side by side; no reply is recorded in the conversation")
        temperature, max_tokens = SETTINGS["temperature"], SETTINGS["max_tokens"]
        self._temperature = FloatSlider(
            min=temperature.low, max=temperature.slider_high, step=0.05, description="Temperature", style=wide,
            layout=Layout(flex="1 1 220px"), tooltip=temperature.help,
        )
        self._max_tokens = BoundedIntText(
            min=max_tokens.low, max=1_000_000, description="Max tokens", style=wide,
            layout=Layout(flex="0 0 160px"), tooltip=max_tokens.help,
        )
        self._system = Textarea(placeholder="System prompt (optional)", rows=1, layout=_full())
        # JupyterLab's class for rendered Markdown: its styles for code, tables, quotes.
        # HTMLMath: the frontend's MathJax typesets our math spans (plain HTML never does).
        self._history = HTMLMath(layout=_full()).add_class("jp-RenderedHTMLCommon")
        self._made = HTML(layout=_full()).add_class("jp-RenderedHTMLCommon")  # images, players
        self._live = HTMLMath(layout=_full()).add_class("jp-RenderedHTMLCommon")
        self._prompt = Textarea(placeholder="Message", rows=3, layout=_full())
        self._send_button = Button(description="Send", button_style="primary", tooltip="Ask the model",
                                   layout=_button())
        self._stop_button = Button(description="Stop", tooltip="Stop the reply and cancel its prediction",
                                   disabled=True, layout=_button())
        self._clear_button = Button(description="Clear", tooltip="Forget this conversation", layout=_button())
        # Images for the next message, sent to the model's image input (a vision model's).
        self._attach = FileUpload(accept="image/*", multiple=True, description="Attach",
                                  tooltip="Attach images to the next message", layout=_button())
        self._attached = HTML(layout=Layout(margin="0 0 0 8px"))
        self._status = HTML(layout=Layout(flex="1 1 auto", min_width="0", margin="0 0 0 8px"))
        conversation = VBox(
            [self._history, self._made, self._live],
            layout=Layout(border="1px solid var(--jp-border-color2, #ccc)", padding="4px 8px", margin="4px 0"),
        )
        # Stable hooks for styling and for browser tests.
        self.add_class("replicate-chat-panel")
        conversation.add_class("replicate-chat-conversation")
        self._made.add_class("replicate-chat-files")
        self._status.add_class("replicate-chat-status")
        self.children = [
            self._title,
            HBox([self._picker, self._compare, self._temperature, self._max_tokens],
                 layout=Layout(width="100%", flex_flow="row wrap")),
            self._system,
            conversation,
            self._prompt,
            HBox([self._send_button, self._stop_button, self._clear_button, self._attach, self._attached,
                  self._status],
                 layout=Layout(width="100%", align_items="center")),
        ]

    def _connect(self) -> None:
        model = self.model
        self._links = [
            link((model, "model_name"), (self._picker, "value")),
            link((model, "compare_with"), (self._compare, "value")),
            link((model, "temperature"), (self._temperature, "value")),
            link((model, "max_tokens"), (self._max_tokens, "value")),
            link((model, "system_prompt"), (self._system, "value")),
        ]
        self._send_button.on_click(self._on_send_clicked)
        self._stop_button.on_click(self._on_stop_clicked)
        self._clear_button.on_click(self._on_clear_clicked)
        self._attach.observe(self._on_files_chosen, names="value")
        model.observe(self._on_attachments_changed, names="attachments")
        model.observe(self._on_chat_changed, names="chat")
        model.observe(self._on_turns_changed, names="turns")
        model.observe(self._on_made_changed, names="made")
        model.observe(self._on_draft_changed, names=["draft", "comparison"])
        model.observe(self._on_status_changed, names=["status", "error"])
        model.observe(self._on_busy_changed, names="busy")
        for handler in (self._on_chat_changed, self._on_turns_changed, self._on_made_changed, self._on_draft_changed,
                        self._on_status_changed, self._on_busy_changed):
            handler(None)

    # -- handlers (buttons: kernel thread; model changes: also the loop's thread) -------------------

    def _on_send_clicked(self, button: Button) -> None:
        if self.model.send(self._prompt.value) is not None:
            self._prompt.value = ""

    def _on_stop_clicked(self, button: Button) -> None:
        self.model.stop()

    def _on_clear_clicked(self, button: Button) -> None:
        self.model.clear()

    def _on_chat_changed(self, change: Any) -> None:
        chat = inline_html(self.model.chat)
        self._title.value = f"{_CSS}<b>Replicate chat</b> · conversation <code>{chat}</code>"

    def _on_turns_changed(self, change: Any) -> None:
        # With files made and no turns, "the conversation is empty" above them would mislead.
        self._history.value = render_turns(self.model.turns, self.model.chat) if self.model.turns or \
            not self.model.made else ""

    def _on_files_chosen(self, change: Any) -> None:
        from .attachments import Attachment

        chosen = tuple(Attachment.of(bytes(f["content"]), str(f["name"]), str(f.get("type") or "") or None)
                       for f in self._attach.value)
        if chosen:
            self.model.attachments = (*self.model.attachments, *chosen)

    def _on_attachments_changed(self, change: Any) -> None:
        names = [a.name for a in self.model.attachments]
        self._attached.value = inline_html(f"attached: {', '.join(names)}") if names else ""
        if not names and self._attach.value:
            self._attach.value = ()  # sent: the next message starts with none

    def _on_made_changed(self, change: Any) -> None:
        self._made.value = render_made(self.model.made)
        self._on_turns_changed(None)

    def _on_draft_changed(self, change: Any) -> None:
        comparison = self.model.comparison
        if comparison is None:
            self._live.value = render_draft(self.model.draft, self._draft_markdown)
            return
        while len(self._column_markdown) < len(comparison.columns):
            self._column_markdown.append(StreamingMarkdown())
        self._live.value = render_comparison(comparison, self._column_markdown)

    def _on_status_changed(self, change: Any) -> None:
        css = "rm-status rm-error" if self.model.error else "rm-status"
        self._status.value = f'<span class="{css}">{inline_html(self.model.status)}</span>'

    def _on_busy_changed(self, change: Any) -> None:
        self._send_button.disabled = self.model.busy
        self._stop_button.disabled = not self.model.busy

    # -- lifetime ------------------------------------------------------------------------------

    def __repr__(self) -> str:  # the text/plain of the panel's output, where widgets do not show
        count = len(self.model.turns) if hasattr(self, "model") else 0
        chat = self.model.chat if hasattr(self, "model") else "?"
        return f"<ChatPanel on conversation {chat!r}: {count} turn{'' if count == 1 else 's'}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.model.refresh()  # show what the magic recorded since the panel was made
        return super()._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop a running turn, stop following cells, close every widget of the panel."""
        if hasattr(self, "model"):  # also called by __del__, even of a panel half built
            self.model.stop()
        unwatch, self._after_cell = getattr(self, "_after_cell", None), None
        if unwatch is not None:
            unwatch()
        for item in getattr(self, "_links", ()):
            item.unlink()
        self._links = []
        for widget in _descendants(self):
            widget.close()
        super().close()


# -- rendering: conversation state -> HTML (pure) ----------------------------------------------------

# Our classes, styled once per panel (in its title): a fixed string, nothing from the text.
_CSS = """<style>
.replicate-chat-panel .rm-msg { margin: 6px 0; padding: 2px 10px; border-radius: 6px; }
.replicate-chat-panel .rm-user { background: var(--jp-layout-color2, #f2f2f2); }
.replicate-chat-panel .rm-role { font-size: 0.85em; font-weight: 600; margin-top: 4px;
  color: var(--jp-ui-font-color2, #616161); }
.replicate-chat-panel .rm-note { font-style: italic; color: var(--jp-warn-color0, #b26a00); }
.replicate-chat-panel .rm-status { color: var(--jp-ui-font-color2, #616161); }
.replicate-chat-panel .rm-status.rm-error { color: var(--jp-error-color1, #c62828); }
.replicate-chat-panel .rm-msg > :last-child { margin-bottom: 6px; }
.replicate-chat-panel .rm-msg pre { padding: 6px 10px; border-radius: 4px;
  background: var(--jp-cell-editor-background, #f7f7f7); }
</style>"""


def render_turns(turns: tuple[Turn, ...], chat: str) -> str:
    if not turns:
        return (f'<p class="rm-note">Conversation <code>{inline_html(chat)}</code> is empty: '
                "type a message below and press Send.</p>")
    return "".join(_turn_html(turn) for turn in turns)


def render_draft(draft: Draft | None, stream: StreamingMarkdown | None = None) -> str:
    if draft is None:
        return ""
    body = draft.reply or ("" if draft.note else "…")
    reply = stream.render(body) if stream is not None else markdown_html(body)
    return (_message("You", markdown_html(draft.prompt), user=True)
            + _message(draft.model, reply, note=_NOTES.get(draft.note, "")))


def render_comparison(comparison: Comparison, streams: list[StreamingMarkdown] | None = None) -> str:
    """The prompt, then each model's reply in its own column, with its line under it."""
    columns = [Column(c.model, _column_body(c, streams[i] if streams else None), c.note, c.failed)
               for i, c in enumerate(comparison.columns)]
    return _message("You", markdown_html(comparison.prompt), user=True) + columns_html(columns, comparison.note)


def _column_body(column: ColumnDraft, stream: StreamingMarkdown | None) -> str:
    if column.files is not None:
        return files_html(column.files) if column.files else plain_html("the model made no files")
    if not column.reply:
        waiting = column.status or ("" if column.done else "…")
        return plain_html(waiting) if waiting else ""
    if column.done or stream is None:
        return markdown_html(column.reply)
    return stream.render(column.reply)


def render_made(made: tuple[Draft, ...]) -> str:
    """Each exchange with a model that makes files: the prompt, then its files as a grid."""
    return "".join(_message("You", markdown_html(d.prompt), user=True) + _message(d.model, files_html(d.files))
                   for d in made)


@lru_cache(maxsize=1024)  # a finished turn never changes; only the live exchange re-renders
def _turn_html(turn: Turn) -> str:
    return (_message("You", markdown_html(turn.prompt), user=True)
            + _message(turn.model or "model", markdown_html(turn.reply)))


def _message(label: str, body_html: str, *, user: bool = False, note: str = "") -> str:
    note_html = f'<p class="rm-note">{inline_html(note)}</p>' if note else ""
    css = "rm-msg rm-user" if user else "rm-msg"
    return f'<div class="{css}"><div class="rm-role">{inline_html(label)}</div>{body_html}{note_html}</div>'



# -- helpers -------------------------------------------------------------------------------------


def _session() -> ChatSession:
    """A session that logs where the magic's %config says (log, log_path, prices)."""
    from .journal import shared_log

    magics = loaded_magics()
    if magics is None:
        return ChatSession(log=shared_log())
    return ChatSession(log=magics.log_store(), prices=magics.prices)


def _configured() -> dict[str, Any]:
    """The %config settings of the loaded magic, so a panel made in code honours them too."""
    magics = loaded_magics()
    if magics is None:
        return {}
    names = ("max_history", "default_inputs", "timeout", "connect_timeout")
    return {"model_name": magics.model, **{name: getattr(magics, name) for name in names}}


def _watch_cells(model: PanelModel) -> Callable[[], None] | None:
    """Refresh after every cell, so a ``%%replicate -c NAME`` turn shows in the panel at once.

    Returns the function that stops it. Outside IPython there are no cells: None.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None

    def after_cell(result: Any = None) -> None:
        model.refresh()

    def unwatch() -> None:
        if after_cell in shell.events.callbacks["post_run_cell"]:
            shell.events.unregister("post_run_cell", after_cell)

    shell.events.register("post_run_cell", after_cell)
    return unwatch


def _full() -> Layout:
    return Layout(width="auto")  # stretches across the panel; "100%" plus the margin overflows


def _button() -> Layout:
    return Layout(width="auto", min_width="80px")


def _descendants(box: Any) -> list[Any]:
    found: list[Any] = []
    for child in getattr(box, "children", ()):
        found += [child, *_descendants(child)]
    return found
