"""The local stack's fixes to moto's DynamoDB (tests/localstack/moto_server.py), in process:
a transaction copies only the items it touches, and a cancelled one still leaves every item
as it was; a Query reads only its partition; attribute values are written to JSON directly,
as moto's generic serializer writes them."""

from __future__ import annotations

import copy
import logging

import boto3
import pytest
import werkzeug._internal
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.dynamodb.models.table import Table

import moto_server

TABLE = "fleetpatch-test"


@pytest.fixture()
def ddb():
    moto_server.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                       {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                                  {"AttributeName": "SK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def key(i: int) -> dict:
    return {"PK": {"S": "LOC#r#111111111111#us-east-1"}, "SK": {"S": f"INST#i-{i:017x}"}}


def put(client, i: int, state: str = "Pending") -> None:
    client.put_item(TableName=TABLE, Item={**key(i), "state": {"S": state}})


def claim(i: int) -> dict:
    return {"Update": {"TableName": TABLE, "Key": key(i),
                       "UpdateExpression": "SET #st = :claimed",
                       "ConditionExpression": "#st = :pending",
                       "ExpressionAttributeNames": {"#st": "state"},
                       "ExpressionAttributeValues": {":claimed": {"S": "Claimed"},
                                                     ":pending": {"S": "Pending"}}}}


def state(client, i: int) -> str | None:
    item = client.get_item(TableName=TABLE, Key=key(i), ConsistentRead=True).get("Item")
    return item and item["state"]["S"]


def test_a_transaction_copies_no_table(ddb, monkeypatch):
    # GIVEN a location of 2,000 instances
    for i in range(2_000):
        put(ddb, i)
    table_copies = []
    real = copy.deepcopy

    def counting(x, memo=None):
        if isinstance(x, Table):
            table_copies.append(x.name)
        return real(x, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    # WHEN a batch of 50 is claimed with a batch item, in one transaction
    items = [claim(i) for i in range(50)]
    items.append({"Put": {"TableName": TABLE, "ConditionExpression": "attribute_not_exists(PK)",
                          "Item": {"PK": key(0)["PK"], "SK": {"S": "BATCH#000001"}}}})
    ddb.transact_write_items(TransactItems=items)
    # THEN the table was never deep-copied (moto 5.2.5 copies it once per item: 51 times)
    assert table_copies == []
    assert [state(ddb, i) for i in (0, 49, 50)] == ["Claimed", "Claimed", "Pending"]


def test_a_cancelled_transaction_leaves_every_item_as_it_was(ddb):
    # GIVEN instance 1 Pending, instance 2 already Claimed, and no batch item yet
    put(ddb, 1)
    put(ddb, 2, "Claimed")
    batch = {"PK": key(0)["PK"], "SK": {"S": "BATCH#000007"}}
    # WHEN a transaction puts the batch, claims 1, then fails its condition on 2
    with pytest.raises(ClientError) as e:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": TABLE, "Item": batch,
                     "ConditionExpression": "attribute_not_exists(PK)"}},
            claim(1),
            claim(2),
        ])
    # THEN it is cancelled for that condition, and nothing it wrote stays
    assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in e.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert state(ddb, 1) == "Pending"
    assert state(ddb, 2) == "Claimed"
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=batch, ConsistentRead=True)


def other_key(i: int) -> dict:
    return {"PK": {"S": "LOC#r#222222222222#eu-west-1"}, "SK": {"S": f"INST#i-{i:017x}"}}


def query(client, **extra) -> dict:
    return client.query(TableName=TABLE, KeyConditionExpression="PK = :p",
                        ExpressionAttributeValues={":p": key(0)["PK"]}, ConsistentRead=True,
                        **extra)


def test_a_query_reads_only_its_partition(ddb, monkeypatch):
    # GIVEN two locations' partitions, written out of order
    for i in (3, 1, 2, 0):
        put(ddb, i)
        ddb.put_item(TableName=TABLE, Item={**other_key(i), "state": {"S": "Pending"}})

    def whole_table(self):
        raise AssertionError(f"Query walked the whole table {self.name}")

    monkeypatch.setattr(Table, "all_items", whole_table)
    # WHEN one partition is queried, forwards, backwards, and a page at a time
    forwards = query(ddb)
    backwards = query(ddb, ScanIndexForward=False)
    first = query(ddb, Limit=3)
    rest = query(ddb, Limit=3, ExclusiveStartKey=first["LastEvaluatedKey"])
    # THEN only its items come back, in sort-key order, without walking the table (moto 5.2.5
    # walks and sorts every item of the table for each Query)
    sks = [item["SK"]["S"] for item in forwards["Items"]]
    assert sks == [key(i)["SK"]["S"] for i in range(4)]
    assert [item["SK"]["S"] for item in backwards["Items"]] == sks[::-1]
    assert [item["SK"]["S"] for item in first["Items"] + rest["Items"]] == sks
    assert "LastEvaluatedKey" not in rest


EVERY_TYPE = {
    "s": {"S": "text é"}, "n": {"N": "12.50"}, "b": {"B": b"\x00\x01bytes"},
    "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"x", b"\xff"]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "3"}, {"NULL": True}]},
                "flag": {"BOOL": False}}},
    "l": {"L": [{"M": {"b": {"B": b"y"}}}, {"BOOL": True}]}, "nul": {"NULL": True},
}


def answers(client) -> list[dict]:
    item = {**key(9), **EVERY_TYPE}
    client.put_item(TableName=TABLE, Item=item)
    got = client.get_item(TableName=TABLE, Key=key(9), ConsistentRead=True)
    queried = query(client)
    updated = client.update_item(TableName=TABLE, Key=key(9), UpdateExpression="SET s = :s",
                                 ExpressionAttributeValues={":s": {"S": "t"}},
                                 ReturnValues="ALL_OLD")
    batch = client.batch_get_item(RequestItems={TABLE: {"Keys": [key(9)]}})
    for answer in (got, queried, updated, batch):
        answer.pop("ResponseMetadata")
    return [got, queried, updated, batch]


def test_attribute_values_are_written_as_moto_writes_them(ddb, monkeypatch):
    # GIVEN an item with every kind of attribute value, read back four ways
    fast = answers(ddb)
    walked = []
    real = moto_server.BaseJSONSerializer._serialize_type_structure

    def walking(self, serialized, value, shape, key):
        if shape.name == "AttributeValue":
            walked.append(key)
        return real(self, serialized, value, shape, key)

    monkeypatch.setattr(moto_server.BaseJSONSerializer, "_serialize_type_structure", walking)
    fast_again = answers(ddb)
    walked_fast = list(walked)
    # WHEN the same reads go through moto's generic serializer
    monkeypatch.setattr(moto_server.BaseJSONSerializer, "_serialize",
                        moto_server._original_serialize)
    generic = answers(ddb)
    # THEN the answers are the same, and the fast path never walked an AttributeValue's shape
    # (moto 5.2.5 looks up each of its ten members under two names)
    assert walked_fast == [] and walked != []
    assert fast == fast_again == generic
    assert fast[0]["Item"]["b"] == {"B": b"\x00\x01bytes"}


def test_the_access_log_is_off_and_warnings_stay(ddb, monkeypatch):
    # GIVEN moto's fixes installed (the fixture), and werkzeug's logger not yet set up
    monkeypatch.setattr(werkzeug._internal, "_logger", None)
    log = logging.getLogger("werkzeug")
    # WHEN werkzeug logs its first request (it sets an unset level to INFO)
    werkzeug._internal._log("info", '"POST / HTTP/1.1" 200 -')
    # THEN access lines (INFO) are not logged, warnings are
    assert not log.isEnabledFor(logging.INFO)
    assert log.isEnabledFor(logging.WARNING)
