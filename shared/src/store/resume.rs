//! What a resumed run reads of its original, and the link between the two: `resumeOf` is
//! in the new run's input, `resumedBy` on the original's item, written once (a run is
//! resumed at most once, so no instance is sent twice by two resumes). The decisions are
//! `crate::resume`'s; this module loads and writes.

use super::items::s;
use super::keys::{location_key, run_key};
use super::Store;
use crate::error::Result;
use crate::input::{FieldError, RunInput};
use crate::model::{Location, LocationRecord, RunRecord, RunStatus};
use crate::resume::{self, Original, OriginalLocation};

impl Store {
    /// The run `input` resumes, checked and narrowed to `planned` ([`resume::original`]),
    /// then linked to `run_id` (`resumedBy`). Ok(Ok(None)) when the input resumes nothing;
    /// Ok(Err(_)) when the resume is refused, naming the field.
    pub async fn resume_source(
        &self,
        run_id: &str,
        input: &RunInput,
        planned: &[Location],
    ) -> Result<std::result::Result<Option<Original>, FieldError>> {
        let Some(original_id) = input.resume_of.as_deref() else {
            return Ok(Ok(None));
        };
        let refused = |rule: String| {
            Ok(Err(FieldError {
                field: "resumeOf".into(),
                rule,
            }))
        };

        let Some(item) = self.get(run_key(original_id)).await? else {
            return refused(format!("no run {original_id} in the table"));
        };
        let original = match RunRecord::try_from(&item) {
            Ok(r) => r,
            Err(e) => return refused(e.to_string()),
        };
        let resumed_by = item.get("resumedBy").and_then(|v| v.as_s().ok());
        let locations = self.list_locations(original_id).await?;
        let decided = resume::original(
            run_id,
            input,
            &original,
            resumed_by.map(String::as_str),
            &locations,
            planned,
        );
        let Ok(decided) = decided else {
            return Ok(decided.map(Some));
        };

        if !self.claim_resume(original_id, run_id).await? {
            let now = self.get(run_key(original_id)).await?.unwrap_or_default();
            let other = now.get("resumedBy").and_then(|v| v.as_s().ok());
            let why = resume::may_resume(&original, other.map(String::as_str), run_id);
            return Ok(why.map(|()| Some(decided)));
        }
        Ok(Ok(Some(decided)))
    }

    /// Links the original to the run resuming it, once: false when another run resumed it
    /// first, or it is running again.
    pub async fn claim_resume(&self, original_id: &str, run_id: &str) -> Result<bool> {
        self.update_run_if(
            original_id,
            "SET resumedBy = :by, resumedAt = :now",
            "(attribute_not_exists(resumedBy) OR resumedBy = :by) \
             AND NOT (#st IN (:running, :stopping, :cancelling))",
            vec![
                (":by", s(run_id)),
                (":running", s(RunStatus::Running.as_str())),
                (":stopping", s(RunStatus::Stopping.as_str())),
                (":cancelling", s(RunStatus::Cancelling.as_str())),
            ],
        )
        .await
    }

    /// The run that resumed `run_id`, if any.
    pub async fn resumed_by(&self, run_id: &str) -> Result<Option<String>> {
        let item = self.get(run_key(run_id)).await?;
        Ok(item
            .and_then(|mut i| i.remove("resumedBy"))
            .and_then(|v| v.as_s().ok().cloned()))
    }

    /// What the original of a resumed run knew of location `l`, for expand to narrow the
    /// group with ([`resume::narrow`]); None when `run` resumes nothing.
    pub async fn original_location(
        &self,
        run: &RunRecord,
        l: &Location,
    ) -> Result<Option<OriginalLocation>> {
        let Some(original_id) = run.input.resume_of.as_deref() else {
            return Ok(None);
        };
        let record = match self.get(location_key(original_id, l)).await? {
            Some(item) => Some(LocationRecord::try_from(&item)?),
            None => None,
        };
        let (instances, _) = self.list_location_items(original_id, l).await?;
        Ok(Some(OriginalLocation::new(record.as_ref(), &instances)))
    }
}
