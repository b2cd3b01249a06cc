"""The models a job is sent to, checked against the line-up as it is when the job runs.

A request is resolved against the model table when Slack delivers it, but it may wait in the queue while a
shutdown date passes: before a turn is sent, its image and conversational models are checked again (`current`).
When OpenAI refuses a parameter or a model all the same, what the refusal teaches is recorded and the turn is
tried once more where it can work (`adapt`, see `bot.refusals`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bot import messages, options, refusals
from bot.answers import GenerationError
from bot.imaging import Turn
from bot.lifecycle import Lifecycle
from storage.models import Job

log = logging.getLogger(__name__)

_ALL_CHOSEN = ("model", *options.CHECKED)  # a job stored before "chosen" was: take every value as asked for


def _chosen(job: Job) -> tuple[str, ...]:
    return _ALL_CHOSEN if job.options.chosen is None else job.options.chosen


def _add(notices: list[str], notice: str | None) -> None:
    if notice and notice not in notices:
        notices.append(notice)


class LineUp:
    """`lifecycle` keeps the table; `chat_model` is the configured conversational model (OPENAI_MODEL)."""

    def __init__(self, *, lifecycle: Lifecycle, chat_model: str):
        self.lifecycle = lifecycle
        self._chat_model = chat_model

    async def current(
        self, job: Job, tool: dict[str, Any], notices: list[str], *, starts_thread: bool
    ) -> tuple[dict[str, Any], str | None]:
        """The image tool and conversational model to send now: a model shut down since the request was
        taken is replaced (saying so), one about to be gets a notice. Raises GenerationError if no model can
        serve the request any more."""
        await self.lifecycle.read()
        table = self.lifecycle.table
        model = str(tool.get("model") or "")
        if model and table.is_shut_down(model):
            try:
                resolved = options.recheck(tool, _chosen(job), table=table)
            except options.OptionError as e:
                raise GenerationError("shut_down", messages.not_possible(str(e)), f"{model} is shut down") from None
            log.warning("job %s: %s was shut down on %s; sending %s instead", job.id, model,
                        table.shutdown_date(model), resolved.model)
            tool = resolved.tool()
            _add(notices, resolved.replaced)
        elif model and table.ending_soon(model):
            then = table.replacement(model, lambda m: m.name != model)
            _add(notices, messages.ending_soon(model, str(table.shutdown_date(model)), table.days_left(model) or 0,
                                               then.name if then else None))
        configured = self._chat_model
        chat = table.chat_model(configured)
        if chat == configured:
            return tool, None
        date = table.shutdown_date(configured)
        table.warn_once(f"chat:{configured}", "OPENAI_MODEL %s was shut down by OpenAI on %s; using %s instead",
                        configured, date, chat)
        if starts_thread:
            _add(notices, messages.chat_model_replaced(configured, date, chat))
        return tool, chat

    async def adapt(self, job: Job, turn: Turn, error: GenerationError, notices: list[str]) -> Turn | None:
        """The turn to try once more after OpenAI refused a parameter or a model (the lack is recorded), or
        None if the refusal was not of that kind. Raises GenerationError telling plainly what is not possible."""
        chat = turn.model or self._chat_model
        refusal = refusals.read(code=error.code, param=error.param, message=error.message, tool=turn.tool,
                                chat_model=chat)
        if refusal is None:
            if error.kind == "unknown_model" and error.param != "model":  # named by Easel, not by OpenAI
                raise GenerationError("unknown_model", messages.unknown_model(str(turn.tool.get("model"))),
                                      error.detail)
            return None
        table = self.lifecycle.table
        log.info("job %s: OpenAI refused %s for %s (%s)", job.id, refusal.capability, refusal.model, error.detail)
        if refusal.capability == "shut_down":
            await self.lifecycle.learned_shutdown(refusal.model, refusal.date or table.today().isoformat())
            if refusal.field == "chat":
                new = table.chat_model(refusal.model)
                if new == refusal.model:
                    return None
                _add(notices, messages.chat_model_replaced(refusal.model, table.shutdown_date(refusal.model), new))
                return dataclasses.replace(turn, model=new)
        else:
            await self.lifecycle.learned_lack(refusal.model, refusal.capability)
        try:
            tool, notice = refusals.adapt(refusal, tool=turn.tool, chosen=_chosen(job),
                                          table=table)
        except options.OptionError as e:
            raise GenerationError("unsupported", messages.not_possible(str(e)),
                                  f"{refusal.model} lacks {refusal.capability}: {error.detail}") from None
        if tool == turn.tool:
            return None
        _add(notices, notice)
        return dataclasses.replace(turn, tool=tool)
