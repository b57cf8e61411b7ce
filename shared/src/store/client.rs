//! The client helpers every record family uses: one `conditional` reading of a conditional
//! write, queries that read every page, new-item writes, and transactions retried on
//! conflict or throttling.

use super::{Item, Store, MAX_TRANSACTION_ITEMS};
use crate::error::{from_sdk, Error, Result};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An operation error that can say "your condition failed".
pub(super) trait ConditionFailed {
    fn condition_failed(&self) -> bool;
}

impl ConditionFailed for PutItemError {
    fn condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

impl ConditionFailed for UpdateItemError {
    fn condition_failed(&self) -> bool {
        self.is_conditional_check_failed_exception()
    }
}

/// A conditional write's answer: Ok(true) written, Ok(false) its condition failed (someone
/// else got there first), Err anything else.
pub(super) fn conditional<T, E, R>(
    operation: &str,
    r: std::result::Result<T, SdkError<E, R>>,
) -> Result<bool>
where
    E: ConditionFailed + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(E::condition_failed) => Ok(false),
        Err(e) => Err(from_sdk(operation, e)),
    }
}

pub(super) fn build_err(e: impl std::fmt::Display) -> Error {
    Error::Record(format!("building a DynamoDB request: {e}"))
}

/// How a transaction ended, short of an error.
pub(super) enum Transacted {
    Done,
    /// Cancelled by failed conditions: per-item flags when the service named them.
    ConditionsFailed(Option<Vec<bool>>),
}

/// Cancellation reasons that mean "try again": another transaction holds one of the items,
/// or the table's throughput was exceeded. Retried like throttling, never an error.
const RETRYABLE_CANCELLATIONS: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Attempts of a transaction cancelled for a retryable reason, before the handler fails
/// with `Transient` (and the state machine retries the whole step).
const TRANSACT_ATTEMPTS: u32 = 4;

/// A transaction cancelled because one of its conditions failed (not a conflict or a throttle).
fn transaction_condition_failed(e: &TransactWriteItemsError) -> bool {
    match e {
        TransactWriteItemsError::TransactionCanceledException(c) => {
            c.cancellation_reasons()
                .iter()
                .any(|r| r.code() == Some("ConditionalCheckFailed"))
                || c.message()
                    .unwrap_or_default()
                    .contains("ConditionalCheckFailed")
        }
        _ => false,
    }
}

/// Which items of a cancelled transaction failed their condition, when the service says
/// (one flag per item, in order); None when it does not say, or names none.
fn failed_conditions(e: &TransactWriteItemsError) -> Option<Vec<bool>> {
    let TransactWriteItemsError::TransactionCanceledException(c) = e else {
        return None;
    };
    let flags: Vec<bool> = c
        .cancellation_reasons()
        .iter()
        .map(|r| r.code() == Some("ConditionalCheckFailed"))
        .collect();
    flags.iter().any(|f| *f).then_some(flags)
}

/// A transaction cancelled only for reasons worth retrying (no failed condition).
fn transaction_retryable(e: &TransactWriteItemsError) -> bool {
    match e {
        TransactWriteItemsError::TransactionCanceledException(c) => {
            let named = c.cancellation_reasons().iter().any(|r| {
                r.code()
                    .is_some_and(|code| RETRYABLE_CANCELLATIONS.contains(&code))
            });
            let in_message = RETRYABLE_CANCELLATIONS
                .iter()
                .any(|code| c.message().unwrap_or_default().contains(code));
            !transaction_condition_failed(e) && (named || in_message)
        }
        TransactWriteItemsError::TransactionInProgressException(_) => true,
        _ => false,
    }
}

/// Exponential backoff with jitter before transaction attempt `attempt + 1`: 25-50 ms,
/// 50-100 ms, 100-200 ms.
fn transact_backoff(attempt: u32) -> Duration {
    let base = 25u64 << attempt.saturating_sub(1).min(6);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base + 1))
}

impl Store {
    /// Every item of partition `pk` whose SK starts with `sk_prefix` (all of it when empty),
    /// strongly consistent, every page.
    pub(super) async fn query_all(&self, pk: String, sk_prefix: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // A key condition may not hold an empty string (DynamoDB and moto answer
            // ValidationException): no prefix means the whole partition.
            let query = if sk_prefix.is_empty() {
                self.client.query().key_condition_expression("PK = :pk")
            } else {
                self.client
                    .query()
                    .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                    .expression_attribute_values(":p", super::items::s(sk_prefix))
            };
            let out = query
                .table_name(&self.table)
                .expression_attribute_values(":pk", super::items::s(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("dynamodb:Query", e))?;
            items.extend(out.items.unwrap_or_default());

            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Reads one item, strongly consistent.
    pub(super) async fn get(&self, key: Item) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:GetItem", e))?;
        Ok(out.item)
    }

    /// Writes the items that do not exist yet and leaves existing ones as they are: up to
    /// 100 conditional Puts per transaction; a chunk in which some item exists already is
    /// written item by item.
    pub(super) async fn put_new(&self, items: Vec<Item>) -> Result<()> {
        const NEW: &str = "attribute_not_exists(PK)";
        for chunk in items.chunks(MAX_TRANSACTION_ITEMS) {
            let ops = chunk
                .iter()
                .map(|i| {
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(i.clone()))
                        .condition_expression(NEW)
                        .build()
                        .map(|p| TransactWriteItem::builder().put(p).build())
                        .map_err(build_err)
                })
                .collect::<Result<Vec<_>>>()?;
            if self.transact(ops).await? {
                continue;
            }

            for item in chunk {
                let r = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .condition_expression(NEW)
                    .send()
                    .await;
                conditional("dynamodb:PutItem", r)?;
            }
        }
        Ok(())
    }

    /// Runs a transaction. Cancelled by a conflict with another transaction or by
    /// throttling, it is retried a few times with backoff, then reported `Transient`: never a
    /// failure of the location. Cancelled by failed conditions (someone else got there
    /// first), it answers which items failed when the service says.
    pub(super) async fn transact_detailed(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Transacted> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let e = match r {
                Ok(_) => return Ok(Transacted::Done),
                Err(e) => e,
            };

            let Some(se) = e.as_service_error() else {
                return Err(from_sdk("dynamodb:TransactWriteItems", e));
            };
            if transaction_condition_failed(se) {
                return Ok(Transacted::ConditionsFailed(failed_conditions(se)));
            }
            if !transaction_retryable(se) {
                return Err(from_sdk("dynamodb:TransactWriteItems", e));
            }
            if attempt >= TRANSACT_ATTEMPTS {
                return Err(Error::Transient {
                    operation: "dynamodb:TransactWriteItems".into(),
                    message: format!("cancelled {attempt} times: {se}"),
                });
            }
            tokio::time::sleep(transact_backoff(attempt)).await;
        }
    }

    /// Runs a transaction (retried as [`Store::transact_detailed`] says). Ok(false): a
    /// condition failed (someone else got there first).
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool> {
        Ok(matches!(
            self.transact_detailed(items).await?,
            Transacted::Done
        ))
    }
}
