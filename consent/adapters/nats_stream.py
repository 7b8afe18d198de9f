"""The JetStream stream the service publishes to, and how to reach it: one or several NATS servers (a
cluster), the stream's name, subjects and replicas (CONSENT_NATS_URL, _STREAM, _SUBJECT_PREFIX, _REPLICAS)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from consent.config import Settings

log = logging.getLogger("consent.nats")

DUPLICATE_WINDOW = 300.0  # seconds; far longer than a relay takes to restart


class StreamTarget(NamedTuple):
    servers: list[str]
    name: str
    subject_prefix: str
    replicas: int = 1


def stream_target(settings: Settings) -> StreamTarget:
    assert settings.nats_url is not None
    servers = [server.strip() for server in settings.nats_url.split(",") if server.strip()]
    return StreamTarget(servers, settings.nats_stream, settings.nats_subject_prefix, settings.nats_replicas)


async def connect(target: StreamTarget, name: str, **callbacks: Any) -> nats.NATS:
    """Connected to any of the servers; reconnects for ever, to whichever answers (cluster members included)."""
    return await nats.connect(servers=target.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                              name=name, **callbacks)


async def ensure_stream(js: JetStreamContext, target: StreamTarget, patience: float = 30.0) -> None:
    """Create the stream, or bring an existing one to this configuration. A cluster that is still electing
    its leaders (at start, or after a node died) answers with timeouts: they are waited out for `patience`
    seconds. A replica count the servers refuse (one server cannot hold three) is logged, and the stream is
    used with the replicas it has."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            return await _ensure_stream(js, target)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _ensure_stream(js: JetStreamContext, target: StreamTarget) -> None:
    config = StreamConfig(name=target.name, subjects=[f"{target.subject_prefix}.>"],
                          duplicate_window=DUPLICATE_WINDOW, num_replicas=target.replicas)
    try:
        existing = (await js.stream_info(target.name)).config
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:  # another replica created it meanwhile
            existing = (await js.stream_info(target.name)).config
    if (existing.subjects, existing.duplicate_window, existing.num_replicas) == (
            config.subjects, config.duplicate_window, config.num_replicas):
        return
    try:
        await js.update_stream(config)
    except APIError as error:
        if existing.num_replicas == target.replicas:
            raise
        log.warning("NATS stream %s keeps %s replicas: the servers refused CONSENT_NATS_REPLICAS=%s (%s)",
                    target.name, existing.num_replicas, target.replicas, error.description)
        await js.update_stream(StreamConfig(name=target.name, subjects=config.subjects,
                                            duplicate_window=DUPLICATE_WINDOW, num_replicas=existing.num_replicas))
