"""One registry writer per registered model, across every machine that shares the Prefect server.

The artifact lock (an flock on the artifact root) only guards runs that share that root's file
system. Two workers on two machines registering the same artifacts could each find no version and
both create one, or both take `champion`. So version creation and the champion decision hold a
Prefect global concurrency limit named after the model, with one slot.

The slot is a lease: the holder renews it while it works, and a holder that dies (SIGKILL, a lost
node) stops renewing, so the server takes the slot back after LEASE_S (plus up to its repossessor's
loop, 15 s) without anyone cleaning up. Only a server that runs its background services does that: a
temporary one (`lmpipe run` without PREFECT_API_URL, Prefect's test harness) never takes a slot back, and
keeps the slot count in PREFECT_HOME's database, so one killed registration would block every later one.
Hence:
- a run on the temporary server `lmpipe run` started for it alone takes no slot: no other machine talks
  to that server, and runs on this machine that share the artifact root are already one at a time
  (the register artifact's flock);
- waiting is bounded by WAIT_S, and then register fails saying which slot to free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from lmpipe.orchestration.temporary_server import serves_this_process_alone

LEASE_S = 60.0  # how long a dead holder keeps others waiting; a live one renews well before (the server's minimum)
WAIT_S = 600.0  # longer than any registration we have seen; past it, something holds the slot for good

_log = logging.getLogger(__name__)


class RegistryBusy(RuntimeError):
    """The model's registry writer slot was not given within WAIT_S."""


def limit_name(model_name: str) -> str:
    """The global concurrency limit that guards writes to one registered model."""
    return f"lmpipe-register-{model_name}"


def ensure_single_slot_limit(name: str) -> None:
    """Create the limit with one slot when it is missing; put it back to one active slot if it was changed.

    Two workers may create it at once: the second creation answers 409, and that is fine."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
            return
        if limit.limit != 1 or not limit.active:  # two slots, or none enforced, would let two writers in
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))


@contextmanager
def registry_writer(model_name: str, log: logging.Logger | logging.LoggerAdapter = _log) -> Iterator[None]:
    """Be the only writer of `model_name`'s versions and aliases while inside."""
    from prefect.settings import PREFECT_API_URL

    name = limit_name(model_name)
    if serves_this_process_alone(PREFECT_API_URL.value()):
        log.debug(f"register: {name} not taken: this run's temporary Prefect server serves no other process")
        yield
        return
    ensure_single_slot_limit(name)
    asked = time.monotonic()
    with ExitStack() as held:
        try:
            # strict: a limit that vanished must fail the task (and be retried), never let it in unguarded.
            held.enter_context(concurrency(name, occupy=1, timeout_seconds=WAIT_S, lease_duration=LEASE_S, strict=True))
        except TimeoutError:
            raise RegistryBusy(
                f"register: {name} stayed taken for {WAIT_S:.0f} s. Another registration of {model_name} is still "
                "running, or one was killed on a Prefect server that runs no background services (a temporary "
                f"server), which never takes its slot back: free it with `prefect gcl update {name} --active-slots 0`"
            ) from None
        waited = time.monotonic() - asked
        if waited > 1:
            log.info(f"register: waited {waited:.0f} s for another registration of {model_name} ({name}) to finish")
        yield
