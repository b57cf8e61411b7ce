//! The SSM public-parameters adapter: the Region codes AWS itself publishes, under
//! `/aws/service/global-infrastructure/regions` (one parameter per Region, its value the
//! code). `plan` reads them once per run in its own account and Region, so that a well-formed
//! code naming no Region (`us-east-3`) is refused as bad input instead of failing at STS or
//! SSM in every location.

use crate::error::{from_sdk, Error, Result};
use crate::input::REGIONS_PARAMETER_PATH;
use std::collections::BTreeSet;

/// GetParametersByPath's largest page.
const PAGE_SIZE: i32 = 10;

/// Every Region code AWS lists (all pages). An empty list is an error: no input could pass,
/// and AWS always lists its Regions.
pub async fn aws_regions(ssm: &aws_sdk_ssm::Client) -> Result<BTreeSet<String>> {
    let mut pages = ssm
        .get_parameters_by_path()
        .path(REGIONS_PARAMETER_PATH)
        .recursive(false)
        .max_results(PAGE_SIZE)
        .into_paginator()
        .send();

    let mut out = BTreeSet::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ssm:GetParametersByPath", e))?;
        for p in page.parameters.unwrap_or_default() {
            // The value is the code; the name ends with it too.
            let code = p.value.filter(|v| !v.is_empty()).or_else(|| {
                p.name
                    .and_then(|n| n.rsplit('/').next().map(str::to_string))
            });
            out.extend(code);
        }
    }

    if out.is_empty() {
        return Err(Error::Transient {
            operation: "ssm:GetParametersByPath".into(),
            message: format!("no Region listed under {REGIONS_PARAMETER_PATH}"),
        });
    }
    Ok(out)
}
