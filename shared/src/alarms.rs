//! CloudWatch alarms of the account fleetpatch runs in (`stopOnAlarms`): which of them exist,
//! and whether one is in ALARM. An alarm is named by its ARN; it is read with DescribeAlarms
//! in the ARN's Region, by name, and matched back by its full ARN, so that an alarm of the
//! same name in another account never stands in for it.

use crate::error::{from_sdk, Result};
use crate::input::FieldError;
use aws_config::SdkConfig;
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use std::collections::{BTreeMap, BTreeSet};

/// DescribeAlarms takes at most 100 names per call.
const NAMES_PER_CALL: usize = 100;

/// Reads alarms with the function's own credentials, one client per Region.
#[derive(Clone)]
pub struct Alarms {
    sdk: SdkConfig,
}

/// An alarm ARN's parts: `arn:PARTITION:cloudwatch:REGION:ACCOUNT:alarm:NAME`.
fn parts(arn: &str) -> Option<(&str, &str)> {
    let mut it = arn.splitn(7, ':');
    let (_, _, service, region, _, kind, name) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    (service == "cloudwatch" && kind == "alarm").then_some((region, name))
}

impl Alarms {
    pub fn new(sdk: &SdkConfig) -> Alarms {
        Alarms { sdk: sdk.clone() }
    }

    /// The state of each alarm named (by ARN); an alarm that does not exist (in this account
    /// and its Region) is absent from the answer.
    pub async fn states(&self, arns: &[String]) -> Result<BTreeMap<String, StateValue>> {
        let mut by_region: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (region, name) in arns.iter().filter_map(|a| parts(a)) {
            by_region.entry(region).or_default().insert(name);
        }

        let mut found = BTreeMap::new();
        for (region, names) in by_region {
            let conf = aws_sdk_cloudwatch::config::Builder::from(&self.sdk)
                .region(aws_config::Region::new(region.to_string()))
                .build();
            let client = aws_sdk_cloudwatch::Client::from_conf(conf);
            let names: Vec<&str> = names.into_iter().collect();
            for chunk in names.chunks(NAMES_PER_CALL) {
                read_chunk(&client, chunk, &mut found).await?;
            }
        }

        found.retain(|arn, _| arns.contains(arn));
        Ok(found)
    }

    /// The alarms of `arns` (`stopOnAlarms`) that do not exist in this account and their
    /// Region, named by place: a run that could never see them go into ALARM is bad input.
    pub async fn missing(&self, arns: &[String]) -> Result<Vec<FieldError>> {
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.states(arns).await?;
        Ok(arns
            .iter()
            .enumerate()
            .filter(|(_, a)| !found.contains_key(*a))
            .map(|(i, a)| FieldError {
                field: format!("stopOnAlarms[{i}]"),
                rule: format!(
                    "{a} does not exist (an alarm of the account fleetpatch runs in, in the ARN's Region)"
                ),
            })
            .collect())
    }

    /// The first alarm of `arns` (in their order) that is in ALARM.
    pub async fn first_in_alarm(&self, arns: &[String]) -> Result<Option<String>> {
        let states = self.states(arns).await?;
        Ok(arns
            .iter()
            .find(|a| states.get(*a) == Some(&StateValue::Alarm))
            .cloned())
    }
}

/// One DescribeAlarms (metric and composite alarms), every page, into `found` by ARN.
async fn read_chunk(
    client: &aws_sdk_cloudwatch::Client,
    names: &[&str],
    found: &mut BTreeMap<String, StateValue>,
) -> Result<()> {
    let mut token = None;
    loop {
        let out = client
            .describe_alarms()
            .set_alarm_names(Some(names.iter().map(|n| n.to_string()).collect()))
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| from_sdk("cloudwatch:DescribeAlarms", e))?;

        for a in out.metric_alarms() {
            if let (Some(arn), Some(state)) = (a.alarm_arn(), a.state_value()) {
                found.insert(arn.to_string(), state.clone());
            }
        }
        for a in out.composite_alarms() {
            if let (Some(arn), Some(state)) = (a.alarm_arn(), a.state_value()) {
                found.insert(arn.to_string(), state.clone());
            }
        }

        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_arn_gives_its_region_and_name() {
        // GIVEN alarm ARNs, one whose name holds spaces, and an ARN of another service
        // WHEN they are split
        // THEN the Region and the name come out, and the other service's ARN is not an alarm
        assert_eq!(
            parts("arn:aws:cloudwatch:eu-west-1:111111111111:alarm:Queue depth (prod)"),
            Some(("eu-west-1", "Queue depth (prod)"))
        );
        assert_eq!(parts("arn:aws:sns:us-east-1:111111111111:alerts"), None);
    }
}
