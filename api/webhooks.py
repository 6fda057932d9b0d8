"""Webhooks to a conversation's ``callback_url``: signed, retried, off the call's path.

Each delivery is a POST of the contract's envelope ``{conversation_id,
event_type, message_type, timestamp, properties}`` with the header
``x-cvi-signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes
keyed by the webhook secret of the API key that created the conversation
(:func:`webhook_secret`). A receiver verifies it with::

    hmac.compare_digest(header, "sha256=" + hmac.new(secret, body, "sha256").hexdigest())

:meth:`WebhookSender.send` only queues: a slow or dead receiver never delays
the replica. A failed delivery (network error, or a status other than 2xx)
is tried again after ``backoff_s``, doubling each time, up to ``attempts``
tries in all.
"""

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
from loguru import logger

SIGNATURE_HEADER = "x-cvi-signature"
EVENT_HEADER = "x-cvi-event-type"
_SECRET_LABEL = b"open-cvi webhook secret v1"


def api_key_id(api_key: str) -> str:
    """A fingerprint that names a key without revealing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def webhook_secret(api_key: str) -> bytes:
    """The webhook secret of ``api_key``: hex of HMAC-SHA256(key, "open-cvi webhook secret v1")."""
    return hmac.new(api_key.encode(), _SECRET_LABEL, hashlib.sha256).hexdigest().encode()


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    url: str
    body: bytes
    secret: bytes
    event_type: str
    conversation_id: str


class WebhookSender:
    """Delivers webhooks from background workers.

    Args:
        attempts: Tries per webhook, the first included.
        backoff_s: Delay before the first retry; doubles after each failure.
        timeout_s: Per-request timeout.
        workers: Deliveries in flight at once.
    """

    def __init__(self, *, attempts: int = 5, backoff_s: float = 1.0, timeout_s: float = 10.0, workers: int = 4):
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._workers_n = workers
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._client: httpx.AsyncClient | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-worker-{i}") for i in range(self._workers_n)
        ]

    def send(self, url: str, envelope: dict[str, Any], *, secret: bytes) -> None:
        """Queue one webhook; returns at once."""
        body = json.dumps(envelope, separators=(",", ":"), default=str).encode()
        self._queue.put_nowait(
            Delivery(
                url=url, body=body, secret=secret, event_type=envelope["event_type"],
                conversation_id=envelope["conversation_id"],
            )
        )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued webhook is delivered or given up; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def close(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is queued (for a while), then stop."""
        if not await self.drain(drain_timeout_s):
            logger.warning(f"webhooks: {self._queue.qsize() + self._in_flight} undelivered at shutdown")
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(delivery)
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    async def _deliver(self, d: Delivery) -> None:
        assert self._client is not None
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(d.body, d.secret),
            EVENT_HEADER: d.event_type,
        }
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(d.url, content=d.body, headers=headers)
                if 200 <= response.status_code < 300:
                    logger.debug(f"webhooks: {d.event_type} for {d.conversation_id} delivered (try {attempt})")
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            if attempt == self._attempts:
                logger.warning(
                    f"webhooks: {d.event_type} for {d.conversation_id} given up after {attempt} tries ({problem})"
                )
                return
            logger.info(
                f"webhooks: {d.event_type} for {d.conversation_id} failed (try {attempt}, {problem}); "
                f"retrying in {delay:.1f} s"
            )
            await asyncio.sleep(delay)
            delay *= 2
