use super::*;
use serde_json::json;

fn good() -> Value {
    json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": ["111122223333", "ou-ab12-cdef3456"],
        "regions": ["us-east-1", "eu-west-1"]
    })
}

fn with(field: &str, v: Value) -> Value {
    let mut g = good();
    g.as_object_mut().unwrap().insert(field.to_string(), v);
    g
}

fn without(field: &str) -> Value {
    let mut g = good();
    g.as_object_mut().unwrap().remove(field);
    g
}

#[test]
fn minimal_input_gets_the_documented_defaults() {
    let r = validate(&good()).unwrap();
    assert_eq!(r.operation, Operation::Install);
    assert_eq!(
        r.execution_role_name,
        "AWS-SystemsManager-AutomationExecutionRole"
    );
    assert_eq!(r.location_concurrency, Rate::Count(10));
    assert_eq!(r.location_error_threshold, Rate::Percent(10));
    assert_eq!(r.target_concurrency, Rate::Percent(10));
    assert_eq!(r.target_error_threshold, Rate::Percent(10));
    assert_eq!(r.reboot_option, RebootOption::RebootIfNeeded);
    assert_eq!(r.delivery_timeout_seconds, 600);
    assert_eq!(r.snapshot_id, None);
    assert_eq!(
        r.accounts,
        vec![
            AccountTarget::Account("111122223333".into()),
            AccountTarget::OrganizationalUnit("ou-ab12-cdef3456".into())
        ]
    );
}

#[test]
fn duplicate_regions_are_removed() {
    let r = validate(&with(
        "regions",
        json!(["us-east-1", "us-east-1", "eu-west-1"]),
    ))
    .unwrap();
    assert_eq!(r.regions, vec!["us-east-1", "eu-west-1"]);
}

/// The table shared with the JSON Schema's test (tests/schema/test_run_input_schema.py): every
/// refused input is named by its fields, in the list and in the one message.
#[test]
fn the_validation_agrees_with_the_shared_table_of_cases() {
    let table: Value =
        serde_json::from_str(include_str!("../../../statemachine/run-input.cases.json")).unwrap();
    let cases = table["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut disagreements = Vec::new();
    for case in cases {
        // GIVEN a case of the shared table
        let name = case["name"].as_str().unwrap();
        // WHEN the validation reads its input
        let got = validate(&case["input"]);
        // THEN it accepts exactly the valid ones, and refuses the others naming the fields
        let mut want: Vec<&str> = case["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        want.sort_unstable();
        match (case["valid"].as_bool().unwrap(), got) {
            (true, Ok(_)) => {}
            (true, Err(errs)) => {
                disagreements.push(format!("{name}: refused: {}", describe(&errs)))
            }
            (false, Ok(_)) => disagreements.push(format!("{name}: accepted")),
            (false, Err(errs)) => {
                let mut fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
                fields.sort_unstable();
                fields.dedup();
                if fields != want {
                    disagreements.push(format!("{name}: named {fields:?}, not {want:?}"));
                }
                let message = describe(&errs);
                if let Some(field) = want.iter().find(|f| !message.contains(**f)) {
                    disagreements.push(format!("{name}: message without {field}: {message}"));
                }
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn the_message_of_a_huge_bad_input_stays_under_a_step_functions_cause() {
    // GIVEN an input with 2,000 bad account entries and an unknown field of 100 KB
    let mut input = with("accounts", json!(vec!["x".repeat(50); 1_000]));
    input["excludeAccounts"] = json!(vec!["y"; 1_000]);
    input["f".repeat(100_000)] = json!(1);
    // WHEN it is validated
    let errs = validate(&input).unwrap_err();
    let msg = describe(&errs);
    // THEN the message counts every violation, lists the first ones, and fits a cause
    assert!(errs.len() > 2_000);
    assert!(
        msg.starts_with(&format!("{} invalid field(s)", errs.len())),
        "{}",
        &msg[..80]
    );
    assert!(msg.ends_with(&format!("and {} more", errs.len() - MAX_DESCRIBED)));
    assert!(msg.len() < 32_768, "{} bytes", msg.len());
}

#[test]
fn a_whole_number_written_with_a_fraction_is_that_number() {
    let r = validate(&with("deliveryTimeoutSeconds", json!(600.0))).unwrap();
    assert_eq!(r.delivery_timeout_seconds, 600);
}

#[test]
fn regions_aws_does_not_list_are_named_by_their_place() {
    // GIVEN the Regions AWS publishes, and an input naming two that do not exist
    let known: BTreeSet<String> = ["us-east-1", "eu-west-1"].map(String::from).into();
    let input = with("regions", json!(["us-east-1", "us-east-3", "eu-nowhere-1"]));
    assert!(validate(&input).is_ok(), "well formed");
    // WHEN they are checked against the list
    let errs = unknown_regions(&input, &known);
    // THEN each unknown one is named, with its place in the input
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["regions[1]", "regions[2]"]);
    assert!(
        errs[0].rule.contains("us-east-3 is not an AWS Region"),
        "{}",
        errs[0].rule
    );
    assert!(unknown_regions(&good(), &known).is_empty());
}

#[test]
fn all_violations_are_reported_together() {
    let input = json!({
        "operation": "Patch",
        "accounts": ["123"],
        "regions": ["nowhere"],
        "targetConcurrency": "0",
        "snapshotId": "x"
    });
    let errs = validate(&input).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "operation",
        "resourceGroup",
        "accounts[0]",
        "regions[0]",
        "targetConcurrency",
        "snapshotId",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(describe(&errs).starts_with(&format!("{} invalid field(s)", errs.len())));
}

#[test]
fn full_input_is_accepted() {
    let input = json!({
        "operation": "Install",
        "resourceGroup": "web-servers",
        "accounts": ["111122223333", "ou-ab12-cdef3456", "r-ab12"],
        "excludeAccounts": ["444455556666"],
        "regions": ["us-east-1", "ap-southeast-2"],
        "executionRoleName": "MyPatchRole",
        "locationConcurrency": "25%",
        "locationErrorThreshold": "0",
        "targetConcurrency": "50",
        "targetErrorThreshold": "5%",
        "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "installOverrideList": "s3://my-bucket/lists/override.yaml",
        "rebootOption": "NoReboot",
        "deliveryTimeoutSeconds": 1800,
        "cloudWatchLogGroup": "/fleetpatch/commands"
    });
    let r = validate(&input).unwrap();
    assert_eq!(r.accounts[2], AccountTarget::Root("r-ab12".into()));
    assert_eq!(r.reboot_option, RebootOption::NoReboot);
    assert_eq!(r.target_error_rate(), Rate::Percent(5));
    assert_eq!(r.delivery_timeout_seconds, 1800);
}

#[test]
fn the_stored_input_keeps_the_text_the_person_wrote() {
    // GIVEN an input with a rate of each kind, as a person writes them
    let mut input = with("locationConcurrency", json!("25%"));
    input["locationErrorThreshold"] = json!("0");
    input["targetConcurrency"] = json!("50");

    // WHEN it is validated and written as the run item stores it
    let stored = serde_json::to_string(&validate(&input).unwrap()).unwrap();

    // THEN the rates are the same text, and the rest is the stored shape of before
    assert_eq!(
        stored,
        concat!(
            r#"{"operation":"Install","resourceGroup":"patch-group-a","#,
            r#""accounts":[{"kind":"Account","id":"111122223333"},"#,
            r#"{"kind":"OrganizationalUnit","id":"ou-ab12-cdef3456"}],"#,
            r#""excludeAccounts":[],"regions":["us-east-1","eu-west-1"],"#,
            r#""executionRoleName":"AWS-SystemsManager-AutomationExecutionRole","#,
            r#""locationConcurrency":"25%","locationErrorThreshold":"0","#,
            r#""targetConcurrency":"50","targetErrorThreshold":"10%","#,
            r#""snapshotId":null,"installOverrideList":null,"rebootOption":"RebootIfNeeded","#,
            r#""deliveryTimeoutSeconds":600,"cloudWatchLogGroup":null}"#
        )
    );

    // AND it reads back as the same input
    let read: RunInput = serde_json::from_str(&stored).unwrap();
    assert_eq!(read, validate(&input).unwrap());
}

#[test]
fn a_stored_rate_outside_its_grammar_is_an_error_not_a_default() {
    // GIVEN a stored input whose location concurrency is 0, which no input may say
    let mut stored = serde_json::to_value(validate(&good()).unwrap()).unwrap();
    stored["locationConcurrency"] = json!("0");

    // WHEN it is read back
    let read = serde_json::from_value::<RunInput>(stored);

    // THEN reading fails, naming the grammar
    let err = read.unwrap_err().to_string();
    assert!(err.contains("of at least 1"), "{err}");
}

#[test]
fn a_violation_says_the_rule_in_words_and_the_value() {
    // GIVEN an input with a concurrency of 0, and a missing and an unknown field
    let mut input = without("resourceGroup");
    input["targetConcurrency"] = json!("0");
    input["regoins"] = json!(["us-east-1"]);

    // WHEN it is validated
    let errs = validate(&input).unwrap_err();

    // THEN each violation reads as its field, the rule and, for a value, what it was
    let texts: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for want in [
        r#"targetConcurrency: must be a number of at least 1 or a percentage 1%-100%, as SSM's MaxConcurrency (^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$) (got "0")"#,
        "resourceGroup: is required",
        "regoins: unknown field (check its spelling; fields are camelCase)",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want} not in {texts:#?}");
    }
}

#[test]
fn a_duplicated_bad_entry_is_named_once_as_a_duplicate() {
    // GIVEN the same bad account ID twice
    let input = with("accounts", json!(["12345", "12345"]));

    // WHEN it is validated
    let errs = validate(&input).unwrap_err();

    // THEN the first is refused for its shape, the second only as a duplicate
    let texts: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 2, "{texts:#?}");
    assert!(texts[0].starts_with("accounts[0]: must be a 12-digit account ID"));
    assert!(texts[1].starts_with("accounts[1]: duplicate of accounts[0]"));
}

/// Every subschema that states a type, a pattern, a set of values or a range also states
/// it in words, so that no violation is reported in the validator's own terms.
#[test]
fn every_rule_of_the_schema_has_words() {
    fn walk(path: String, node: &Value, missing: &mut Vec<String>) {
        let Some(obj) = node.as_object() else {
            return;
        };
        let states_a_rule = ["type", "pattern", "enum", "const", "minimum", "maximum"]
            .iter()
            .any(|k| obj.contains_key(*k));
        if states_a_rule && !obj.contains_key("errorMessage") {
            missing.push(path.clone());
        }
        for (k, v) in obj {
            match v {
                Value::Object(_) => walk(format!("{path}/{k}"), v, missing),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(format!("{path}/{k}/{i}"), item, missing);
                    }
                }
                _ => {}
            }
        }
    }

    let mut missing = Vec::new();
    walk(String::new(), &schema::SCHEMA.0, &mut missing);
    // An `if` only selects the inputs its `then` applies to: it refuses nothing itself.
    missing.retain(|p| !p.contains("/if/"));
    assert!(missing.is_empty(), "no errorMessage at {missing:?}");
}

/// Python's jsonschema lets this one through (tests/schema says why); the plan function
/// must not, whose `$` is the end of the text, as in the schema's own dialect.
#[test]
fn an_account_id_with_a_trailing_newline_is_refused() {
    let input = with("accounts", json!(["111122223333\n"]));
    let errs = validate(&input).unwrap_err();
    assert_eq!(errs[0].field, "accounts[0]", "{errs:?}");
}

#[test]
fn a_window_end_that_has_passed_is_refused_when_the_run_starts() {
    // GIVEN inputs whose notAfter is past, future, and a day that does not exist
    let now = crate::clock::parse_rfc3339_ms("2026-12-01T00:00:00Z").unwrap();
    let read = |t: &str| validate(&with("notAfter", json!(t))).unwrap();

    // WHEN they are checked against the clock
    let past = timing_violations(&read("2026-11-30T23:59:59Z"), now);
    let future = timing_violations(&read("2026-12-13T06:00:00Z"), now);
    let impossible = timing_violations(&read("2026-02-30T06:00:00Z"), now);

    // THEN the past one and the impossible one are named, the future one is not
    assert_eq!(past.len(), 1);
    assert_eq!(past[0].field, "notAfter");
    assert!(
        past[0].rule.contains("has already passed"),
        "{}",
        past[0].rule
    );
    assert!(future.is_empty());
    assert_eq!(impossible[0].field, "notAfter");
    assert_eq!(
        read("2026-12-13T06:00:00Z").not_after_ms(),
        crate::clock::parse_rfc3339_ms("2026-12-13T06:00:00Z")
    );
}

fn waves_input(waves: Value) -> Value {
    json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "regions": ["us-east-1", "eu-west-1"],
        "waves": waves
    })
}

#[test]
fn waves_take_the_runs_regions_and_rates_where_they_give_none() {
    // GIVEN a canary in one Region with its own threshold, and a wave that gives nothing
    let r = validate(&waves_input(json!([
        {"name": "canary", "accounts": ["111122223333"], "regions": ["us-east-1"], "locationErrorThreshold": "0"},
        {"name": "rest", "accounts": ["ou-ab12-cdef3456", "111122223333"]}
    ])))
    .unwrap();
    // THEN the second wave has the run's Regions and rates, and no soak nor approval
    assert_eq!(r.waves[0].regions, ["us-east-1"]);
    assert_eq!(r.waves[0].location_error_threshold, Rate::Count(0));
    assert_eq!(r.waves[1].regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(r.waves[1].location_error_threshold, Rate::Percent(10));
    assert_eq!(r.waves[1].target_concurrency, Rate::Percent(10));
    assert_eq!((r.waves[1].soak_minutes, r.waves[1].approval), (0, false));
    assert_eq!(
        r.waves[1].approval_timeout_minutes,
        DEFAULT_APPROVAL_TIMEOUT_MINUTES
    );
    // AND the run targets every entry the waves name, each once
    assert_eq!(
        r.accounts,
        vec![
            AccountTarget::Account("111122223333".into()),
            AccountTarget::OrganizationalUnit("ou-ab12-cdef3456".into())
        ]
    );
}

#[test]
fn an_account_a_later_wave_names_again_in_covered_regions_is_a_duplicate() {
    // GIVEN an account in the canary for every Region, named again by the next wave
    let errs = validate(&waves_input(json!([
        {"name": "canary", "accounts": ["111122223333"]},
        {"name": "canary", "accounts": ["444455556666", "111122223333"], "regions": ["eu-west-1"]}
    ])))
    .unwrap_err();
    // THEN the later entry and the second use of the name are named by their place
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["waves[1].name", "waves[1].accounts[1]"]);
    assert!(
        errs[1].rule.contains("duplicate of waves[0].accounts[0]"),
        "{}",
        errs[1]
    );
}

#[test]
fn an_account_a_later_wave_names_for_other_regions_is_no_duplicate() {
    // GIVEN a canary in us-east-1, and the same account in every Region afterwards
    let r = validate(&waves_input(json!([
        {"name": "canary", "accounts": ["111122223333"], "regions": ["us-east-1"]},
        {"name": "rest", "accounts": ["111122223333"]}
    ])));
    // THEN it is accepted: the later wave gets the Regions the canary did not have
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_locations_target_rates_are_its_waves() {
    // GIVEN a canary sending one instance at a time, tolerating none, and a wave with none
    let r = validate(&waves_input(json!([
        {"name": "canary", "accounts": ["111122223333"], "targetConcurrency": "1", "targetErrorThreshold": "0"},
        {"name": "rest", "accounts": ["ou-ab12-cdef3456"]}
    ])))
    .unwrap();
    // THEN the canary's locations use its rates, the other wave's the run's
    assert_eq!(r.target_rates(0), (Rate::Count(1), Rate::Count(0)));
    assert_eq!(r.target_rates(1), (Rate::Percent(10), Rate::Percent(10)));
    // AND a run without waves uses its own
    let single = validate(&good()).unwrap();
    assert_eq!(
        single.target_rates(0),
        (Rate::Percent(10), Rate::Percent(10))
    );
}

#[test]
fn a_waved_runs_input_is_written_back_as_waves() {
    // GIVEN a stored input in waves
    let original = validate(&waves_input(json!([
        {"name": "canary", "accounts": ["111122223333"], "regions": ["us-east-1"], "soakMinutes": 5},
        {"name": "rest", "accounts": ["ou-ab12-cdef3456"], "approval": true}
    ])))
    .unwrap();
    // WHEN the resume's document is written and validated as plan would
    let back = validate(&resume_document(&original, "run-orig", false)).unwrap();
    // THEN it is the original's input, waves and all, naming the run it resumes
    let mut want = original.clone();
    want.resume_of = Some("run-orig".into());
    assert_eq!(back, want);
}

#[test]
fn a_resumed_runs_input_is_its_originals_naming_the_run() {
    // GIVEN a stored input with every kind of account target, rates and its snapshot
    let original = validate(&json!({
        "operation": "Install", "resourceGroup": "patch-group-a",
        "accounts": ["111122223333", "ou-ab12-cdef3456", "r-ab12"],
        "excludeAccounts": ["444455556666"], "regions": ["us-east-1", "eu-west-1"],
        "targetConcurrency": "5", "locationErrorThreshold": "0%",
        "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "rebootOption": "NoReboot",
    }))
    .unwrap();
    // WHEN the resume's document is written and validated as plan would
    let back = validate(&resume_document(&original, "run-orig", true)).unwrap();
    // THEN it is the original's input, naming the run it resumes
    let mut want = original.clone();
    want.resume_of = Some("run-orig".into());
    want.resume_delivery_timeouts = true;
    assert_eq!(back, want);
}
