"""Client of an OpenAI-compatible chat endpoint (vLLM) with JSON-schema-constrained output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from taxonomy.ports import Completion


class OpenAIChatModel:
    """Talks to vLLM's /v1/chat/completions.

    Transport failures are retried by the openai client itself (`max_retries`); callers add
    retries only for content that fails validation, so no error is retried twice over.
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
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "",
        )

    async def close(self) -> None:
        await self._client.close()
