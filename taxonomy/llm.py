"""Client of an OpenAI-compatible chat endpoint (vLLM) with JSON-schema-constrained output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taxonomy.errors import ModelOutputError
from taxonomy.ports import Completion


class _Reply(BaseModel):
    """The part of a chat completion this client reads, checked strictly: the openai client
    builds its response objects without validation, so a malformed body arrives as a str, a
    list, or an object with missing fields."""

    model_config = ConfigDict(from_attributes=True, strict=True)

    class Message(BaseModel):
        model_config = ConfigDict(from_attributes=True, strict=True)
        content: str | None = None

    class Choice(BaseModel):
        model_config = ConfigDict(from_attributes=True, strict=True)
        message: _Reply.Message
        finish_reason: str | None = None

    class Usage(BaseModel):
        model_config = ConfigDict(from_attributes=True, strict=True)
        prompt_tokens: int = Field(default=0, ge=0)
        completion_tokens: int = Field(default=0, ge=0)

    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None


def completion_from_reply(response: object) -> Completion:
    """The first choice of a reply; ModelOutputError if the reply is not a chat completion."""
    try:
        reply = _Reply.model_validate(response)
    except ValidationError as error:
        raise ModelOutputError(f"malformed reply from the model server: {error}") from error
    choice = reply.choices[0]
    return Completion(
        text=choice.message.content or "",
        prompt_tokens=reply.usage.prompt_tokens if reply.usage else 0,
        completion_tokens=reply.usage.completion_tokens if reply.usage else 0,
        finish_reason=choice.finish_reason or "",
    )


class OpenAIChatModel:
    """Talks to vLLM's /v1/chat/completions.

    Transport failures are retried by the openai client itself (`max_retries`) and raised as
    `openai.OpenAIError`; callers add retries only for content that fails validation, so no
    error is retried twice over. Any reply that is not a well-formed chat completion (a
    text/plain body, broken JSON, no `choices`, empty `choices`, fields of the wrong type)
    raises `ModelOutputError`, the port's error for an unusable answer.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        temperature: float = 0.0,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._model = model
        self._temperature = temperature

    @property
    def model_name(self) -> str:
        return self._model

    async def complete_json(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        schema_name: str,
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Completion:
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=list(messages),
                temperature=self._temperature,
                max_tokens=max_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                },
            )
        except openai.OpenAIError:
            raise
        except Exception as error:
            # The client failed to decode the body (broken JSON, for one).
            raise ModelOutputError(f"unreadable reply from the model server: {error!r}") from error
        return completion_from_reply(response)

    async def close(self) -> None:
        await self._client.close()
