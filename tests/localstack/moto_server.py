"""moto's server, with two fixes to its DynamoDB that the local stack needs at scale.

Run as `python moto_server.py -H HOST -p PORT` (the same arguments as moto's `moto_server`).

moto 5.2.5's `transact_write_items` deep-copies the whole table as its rollback snapshot, once
for every item of the transaction: a 51-item claim on a table of 10,000 items copies the table
51 times. And moto's threaded server does not serialise those copies against concurrent
writes (`RuntimeError: dictionary changed size during iteration`). Measured: at 2,000
instances moto reached 92% CPU and 9 GB, and the functions' calls timed out (see
local-stack-facts.md). The fixes keep the API and its answers exactly as they are:

1. a transaction snapshots only the items it touches, and on cancellation restores exactly
   those (a Put of a new item is undone by deleting it);
2. every DynamoDB request runs under one lock, as DynamoDB's own per-item atomicity would
   have it for a single table.

With `FLEETPATCH_VIRTUAL_CLOCK=<fleetsim URL>` set (the scale benchmark only), Wait states
also wait on fleetsim's simulated clock, which a coordinator advances while the stack is
quiescent (see virtual_clock.py). Without it, waits stay real-time.
"""

from __future__ import annotations

import copy
import sys
import threading

from moto.dynamodb import models as ddb_models
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TransactionCanceledException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

_LOCK = threading.RLock()


class _NoTableCopy:
    """Stands in for the `copy` module inside moto's DynamoDB models: a Table is "copied" as
    itself (the touched items are snapshotted by `_transact_write_items` instead); anything
    else is deep-copied as before."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(x, memo=None):
        return x if isinstance(x, Table) else copy.deepcopy(x, memo)


def _key_of(table: Table, op_type: str, op: dict) -> tuple[DynamoType, DynamoType | None]:
    attrs = op["Item"] if op_type == "Put" else op["Key"]
    hash_value = DynamoType(attrs[table.hash_key_attr])
    range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return hash_value, range_value


def _snapshot(backend: DynamoDBBackend, transact_items: list[dict]) -> list[tuple]:
    """(table, hash, range, deep copy of the item or None) for every item the transaction
    names, in order."""
    saved = []
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            hash_value, range_value = _key_of(table, op_type, op)
        except (KeyError, StopIteration, AttributeError):
            continue  # a malformed entry: moto's own validation answers it
        current = table.get_item(hash_value, range_value)
        saved.append((table, hash_value, range_value, copy.deepcopy(current)))
    return saved


def _restore(saved: list[tuple]) -> None:
    # Reversed: when a key is named twice, its first snapshot (the state before) wins.
    for table, hash_value, range_value, item in reversed(saved):
        if item is None:
            if range_value is not None:
                table.items.get(hash_value, {}).pop(range_value, None)
            else:
                table.items.pop(hash_value, None)
        elif range_value is not None:
            table.items[hash_value][range_value] = item
        else:
            table.items[hash_value] = item


_original_transact = DynamoDBBackend.transact_write_items


def _transact_write_items(self, transact_items):
    saved = _snapshot(self, transact_items)
    try:
        return _original_transact(self, transact_items)
    except (TransactionCanceledException, MultipleTransactionsException, MockValidationException):
        _restore(saved)
        raise


_original_call_action = DynamoHandler.call_action


def _call_action(self):
    with _LOCK:
        return _original_call_action(self)


def install() -> None:
    """Applies both fixes to moto in this process."""
    ddb_models.copy = _NoTableCopy()
    DynamoDBBackend.transact_write_items = _transact_write_items
    DynamoHandler.call_action = _call_action


if __name__ == "__main__":
    install()
    import moto_sfn_patch  # SendTaskFailure's cause (the waves' approvals)

    moto_sfn_patch.install()
    import virtual_clock

    virtual_clock.install_from_env()
    from moto.server import main

    main(sys.argv[1:])
