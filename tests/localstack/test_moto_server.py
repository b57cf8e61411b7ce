"""The local stack's fixes to moto's DynamoDB (tests/localstack/moto_server.py), in process:
a transaction copies only the items it touches, and a cancelled one still leaves every item
as it was."""

from __future__ import annotations

import copy

import boto3
import pytest
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
