//! The EventBridge adapter: "Patch Run Started" and "Patch Run Completed" events, source
//! `fleetpatch`, on the configured bus.
//!
//! An event is either accepted or an error: an entry EventBridge refuses
//! (`FailedEntryCount`) is `Transient`, so the step is retried, and a detail too large to
//! send is a `RecordError` before any call.

use crate::error::{from_sdk, Error, Result};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;

/// The source of every fleetpatch event.
pub const SOURCE: &str = "fleetpatch";
/// Detail type of the event sent when a run is planned.
pub const RUN_STARTED: &str = "Patch Run Started";
/// Detail type of the event sent when a run ends (rejected runs included).
pub const RUN_COMPLETED: &str = "Patch Run Completed";
/// A wave waits for its approval (its task token is on the wave item, never in the event).
pub const WAVE_AWAITING_APPROVAL: &str = "Patch Wave Awaiting Approval";
/// EventBridge refuses entries larger than 256 KiB; fleetpatch keeps details well under.
pub const MAX_DETAIL_BYTES: usize = 200 * 1024;

/// Sends one event and checks that EventBridge accepted it: a refused entry is `Transient`,
/// with EventBridge's codes and messages.
pub async fn put_event<T: Serialize>(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    detail_type: &str,
    detail: &T,
) -> Result<()> {
    let detail = serde_json::to_string(detail).map_err(|e| Error::Record(e.to_string()))?;
    if detail.len() > MAX_DETAIL_BYTES {
        return Err(Error::Record(format!(
            "event detail is {} bytes, more than {MAX_DETAIL_BYTES}",
            detail.len()
        )));
    }

    let out = client
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .source(SOURCE)
                .detail_type(detail_type)
                .detail(detail)
                .event_bus_name(bus)
                .build(),
        )
        .send()
        .await
        .map_err(|e| from_sdk("events:PutEvents", e))?;

    if out.failed_entry_count > 0 {
        let why = out
            .entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                e.error_code
                    .map(|c| format!("{c}: {}", e.error_message.unwrap_or_default()))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Transient {
            operation: "events:PutEvents".into(),
            message: why,
        });
    }
    Ok(())
}
