"""Hot reload: poll the cloud's pointer and swap in each new version, verified, atomically.

The server's model is one reference, `ModelReloader.current`, to an immutable `LoadedModel`. A request
reads the reference once and uses that model to the end, so a swap (a single assignment) never changes
the model under a request in flight. A version that fails verification or loading is refused: the old
one keeps serving, the failure is logged and counted, and the same pointer is tried again only after
`REFUSED_RETRY_SECONDS` (or at once if the pointer moves). A store that cannot be read is retried every
poll, and reopened, so that a server started before its store (or its emulator) came up finds it later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from serving.server.loader import BundleRejected, load_version, read_pointer
from serving.server.metrics import ServerMetrics
from serving.server.model import LoadedModel
from toolkit.errors import ToolkitError
from toolkit.publishing.manifest import Pointer, pointer_key
from toolkit.storage import ObjectStore
from toolkit.storage.errors import ObjectNotFound

__all__ = ["REFUSED_RETRY_SECONDS", "ModelReloader"]

logger = logging.getLogger(__name__)

# A refused version is re-examined this long after its refusal even if the pointer stays: someone may have
# repaired its objects in place. Long enough not to download a bad bundle on every poll.
REFUSED_RETRY_SECONDS = 60.0
STARTING_REASON = "starting: the first check of the store has not finished"


class ModelReloader:
    """Holds the model a server serves and replaces it when the cloud's pointer moves."""

    def __init__(
        self,
        open_store: Callable[[], ObjectStore],
        model: str,
        *,
        alias: str = "champion",
        poll_seconds: float,
        max_rows: int,
        metrics: ServerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.max_rows = max_rows
        self.metrics = metrics
        #: The model being served; None until a verified version has loaded.
        self.current: LoadedModel | None = None
        #: Why the server is not ready (or what is wrong while it still serves an older version).
        self.problem: str | None = STARTING_REASON
        self._open_store = open_store
        self._store: ObjectStore | None = None
        self._refused: dict[tuple[str, str], float] = {}
        self._clock = clock

    @property
    def not_ready_reason(self) -> str | None:
        """None when a model is being served; otherwise why not."""
        return None if self.current is not None else self.problem or STARTING_REASON

    async def run(self) -> None:
        """Poll forever, `poll_seconds` apart; store calls run in a worker thread, off the event loop."""
        while True:
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # a bug in a poll must not end hot reload for the life of the process
                logger.exception("unexpected error while polling the pointer; polling goes on")
                self.metrics.poll_failures.inc()
            await asyncio.sleep(self.poll_seconds)

    def poll(self) -> None:
        """Read the pointer once; load and swap in the version it names if that is new."""
        try:
            store = self._store or self._open_store()
            self._store = store
            pointer = read_pointer(store, self.model, self.alias)
        except ObjectNotFound:
            where = f"{self._store.url}/{pointer_key(self.model, self.alias)}" if self._store else "the store"
            self._report(f"no model published yet: {where} does not exist")
            return
        except BundleRejected as exc:
            self._report(f"refused the pointer: {exc}")
            return
        except ToolkitError as exc:  # the store cannot be opened or read: reopen it on the next poll
            self._store = None
            self.metrics.poll_failures.inc()
            self._report(f"cannot read the store: {exc}")
            return
        target = (pointer.version, pointer.manifest_sha256)
        current = self.current
        if current is not None and current.identity == target:
            self._report(None)
            return
        refused_at = self._refused.get(target)
        if refused_at is not None and self._clock() - refused_at < REFUSED_RETRY_SECONDS:
            return
        self._load(store, pointer)

    def _load(self, store: ObjectStore, pointer: Pointer) -> None:
        version, target = pointer.version, (pointer.version, pointer.manifest_sha256)
        try:
            loaded = load_version(store, pointer, self.max_rows)
        except BundleRejected as exc:
            self._refused[target] = self._clock()
            self.metrics.reload_failures.labels(reason="rejected").inc()
            logger.error("refused %s v%s: %s; %s", self.model, version, exc, self._still_serving())
            self.problem = f"refused v{version}: {exc}"
            return
        except ToolkitError as exc:  # the store failed mid-way: worth retrying on the next poll
            self._store = None
            self.metrics.reload_failures.labels(reason="storage").inc()
            self._report(f"could not load v{version}, retrying: {exc}")
            return
        previous = self.current
        self.current = loaded
        self._refused.pop(target, None)
        self.metrics.reloads.inc()
        self.metrics.model_version.set(_number(loaded.version))
        self.metrics.model_ready.set(1)
        self.problem = None
        was = f" (was v{previous.version})" if previous is not None else ""
        logger.info("serving %s v%s%s", self.model, loaded.version, was)

    def _report(self, problem: str | None) -> None:
        """Record a problem (or its end), logging it once rather than on every poll."""
        if problem != self.problem and problem is not None:
            logger.warning("%s; %s", problem, self._still_serving())
        self.problem = problem

    def _still_serving(self) -> str:
        current = self.current
        return f"still serving v{current.version}" if current is not None else "not ready"


def _number(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return -1.0
