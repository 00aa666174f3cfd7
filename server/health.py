"""What grpc.health.v1 reports: the interesttree.v1 services, and the language model as a
service of its own.

- `""` and every interesttree.v1 service: NOT_SERVING until the language model first answers
  (at once SERVING without a model), then SERVING until shutdown. A later model outage leaves
  them in rotation, since trees still come from the data meanwhile.
- `MODEL_SERVICE` ("interesttree.v1.LanguageModel"): SERVING while the model answers its
  periodic probe, NOT_SERVING while the probes fail (or the embedded vLLM is down). A server
  without a model does not report it: Check answers NOT_FOUND.

The HTTP port tells the same to Kubernetes' HTTP probes (`liveness`, `readiness`): `/healthz`
answers 200 while the process serves requests at all; `/readyz` answers 200 only when the store
answers a read, the indexes and the embedder are loaded and the services are in rotation (the
gRPC health's `""`), else 503, with each check's state (the language model's included) in the
JSON body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grpc_health.v1 import health, health_pb2

from taxonomy.ports import ChatModel

if TYPE_CHECKING:
    from taxonomy.engine import InterestEngine

logger = logging.getLogger("interest_tree.health")

MODEL_SERVICE = "interesttree.v1.LanguageModel"
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 30.0


def _status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


async def probe_model(chat: ChatModel, timeout_s: float) -> None:
    """Asks the model for the smallest structured answer; raises if none comes in time."""
    async with asyncio.timeout(timeout_s):
        await chat.complete_json(
            [{"role": "user", "content": "Say ok."}],
            schema_name="probe",
            schema=_PROBE_SCHEMA,
            max_tokens=8,
        )


class ServiceHealth:
    def __init__(self, servicer: health.aio.HealthServicer, services: Sequence[str]) -> None:
        self.servicer = servicer
        self._services = ("", *services)
        self._model_serving: bool | None = None
        self._services_serving = False
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def services_serving(self) -> bool:
        """Whether the interesttree.v1 services (and `""`) are in rotation."""
        return self._services_serving

    @property
    def model_state(self) -> str:
        """`serving` or `not_serving` once probed; before that `waiting` (a model is expected
        to answer first) or `none` (no model: the services serve at once)."""
        if self._model_serving is not None:
            return "serving" if self._model_serving else "not_serving"
        return "none" if self._services_serving else "waiting"

    async def set_services(self, serving: bool) -> None:
        for name in self._services:
            await self.servicer.set(name, _status(serving))
        self._services_serving = serving

    async def set_model(self, serving: bool) -> None:
        if serving != self._model_serving and self._model_serving is not None:
            if serving:
                logger.info("language model answers again")
            else:
                logger.warning("language model stopped answering; trees come from the data")
        self._model_serving = serving
        await self.servicer.set(MODEL_SERVICE, _status(serving))

    def model_state_changed(self, ready: bool) -> None:
        """For the embedded vLLM's supervisor, which calls it on the loop."""
        task = asyncio.get_running_loop().create_task(self.set_model(ready))
        self._pending.add(task)  # the set keeps the task referenced until it is done
        task.add_done_callback(self._pending.discard)

    async def _answers(self, chat: ChatModel, timeout_s: float) -> bool:
        try:
            await probe_model(chat, timeout_s)
        except Exception as error:  # any failure of the probe is the model not answering
            # Once per outage at WARNING, so that a long one does not flood the log.
            level = logging.DEBUG if self._model_serving is False else logging.WARNING
            logger.log(level, "language model not answering: %s", error or type(error).__name__)
            return False
        return True

    async def watch_model(self, chat: ChatModel, *, interval_s: float, timeout_s: float) -> None:
        """Runs until cancelled: probes until the model first answers (backing off), puts the
        services in rotation, then probes every `interval_s` and reports the model's state."""
        delay = _FIRST_RETRY_S
        while not await self._answers(chat, timeout_s):
            await self.set_model(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_S)
        logger.info("model answers; serving")
        await self.set_model(True)
        await self.set_services(True)
        while True:
            await asyncio.sleep(interval_s)
            await self.set_model(await self._answers(chat, timeout_s))


async def readiness(
    engine: InterestEngine, service_health: ServiceHealth, *, timeout_s: float = 2.0
) -> tuple[bool, dict[str, Any]]:
    """What `/readyz` reports: (ready, the checks), each check with its `ok`."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.to_thread(engine.store.version, "items")
        checks["store"] = {"ok": True}
    except Exception as error:  # any failure to read is the store not being ready
        checks["store"] = {"ok": False, "error": str(error) or type(error).__name__}
    try:
        sizes = engine.index_sizes()
        checks["models"] = {
            "ok": True,
            "embedder": engine.embedder.name,
            "indexes": {name: vectors for name, (vectors, _) in sizes.items()},
            "collaborative": engine.recommender.collaborative is not None,
        }
    except Exception as error:  # an index not opened yet
        checks["models"] = {"ok": False, "error": str(error) or type(error).__name__}
    checks["llm"] = {"ok": service_health.services_serving, "state": service_health.model_state}
    return all(check["ok"] for check in checks.values()), checks
