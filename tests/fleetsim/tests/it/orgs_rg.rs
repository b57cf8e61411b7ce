//! Organizations and Resource Groups.

use serde_json::{json, Value};

use crate::util::{Sim, A, MGMT_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_group_resources_filters_paginates_and_reports_missing_groups() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    let mut arns = Vec::new();
    let mut body = json!({"Group": "patch-group-a", "MaxResults": 4});
    loop {
        let r = sim
            .rg(&key, "us-east-1", "/list-group-resources", body.clone())
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["QueryErrors"], json!([]));
        for res in v["Resources"].as_array().expect("resources") {
            arns.push(
                res["Identifier"]["ResourceArn"]
                    .as_str()
                    .expect("arn")
                    .to_string(),
            );
        }
        match v["NextToken"].as_str() {
            Some(t) => body["NextToken"] = json!(t),
            None => break,
        }
    }
    assert_eq!(arns.len(), 9, "all members, stopped and unmanaged included");
    assert!(arns
        .contains(&"arn:aws:ec2:us-east-1:222222222222:instance/i-0a00000000000a001".to_string()));
    assert!(arns.contains(
        &"arn:aws:ssm:us-east-1:222222222222:managed-instance/mi-0a00000000000a009".to_string()
    ));
    let hybrid = sim
        .rg(&key, "us-east-1", "/list-group-resources", json!({"GroupName": "patch-group-a", "Filters": [{"Name": "resource-type", "Values": ["AWS::SSM::ManagedInstance"]}]}))
        .await
        .json();
    assert_eq!(
        hybrid["ResourceIdentifiers"].as_array().map(Vec::len),
        Some(1)
    );
    // the group does not exist in eu-west-1 for this account
    let nf = sim
        .rg(
            &key,
            "eu-west-1",
            "/list-group-resources",
            json!({"Group": "patch-group-a"}),
        )
        .await;
    assert_eq!(nf.status, 404);
    assert_eq!(
        nf.headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("NotFoundException")
    );
    let empty = sim.rg(&key, "eu-west-1", "/list-group-resources", json!({"Group": "arn:aws:resource-groups:eu-west-1:222222222222:group/patch-group-empty"})).await;
    assert_eq!(empty.json()["Resources"], json!([]));
    let g = sim
        .rg(
            &key,
            "eu-west-1",
            "/get-group",
            json!({"GroupName": "patch-group-empty"}),
        )
        .await
        .json();
    assert_eq!(
        g["Group"]["GroupArn"],
        "arn:aws:resource-groups:eu-west-1:222222222222:group/patch-group-empty"
    );
    let too_many = sim
        .rg(
            &key,
            "us-east-1",
            "/list-group-resources",
            json!({"Group": "patch-group-a", "MaxResults": 51}),
        )
        .await;
    assert_eq!(too_many.status, 400);
    sim.run.shutdown().await;
}

async fn all_pages(sim: &Sim, op: &str, body: Value, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut body = body;
    body["MaxResults"] = json!(1);
    loop {
        let r = sim.orgs(MGMT_KEY, op, body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        out.extend(v[key].as_array().cloned().unwrap_or_default());
        match v["NextToken"].as_str() {
            Some(t) => body["NextToken"] = json!(t),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_walks_nested_ous_for_the_management_account_only() {
    let sim = Sim::start().await;
    let roots = sim.orgs(MGMT_KEY, "ListRoots", json!({})).await.json();
    assert_eq!(roots["Roots"][0]["Id"], "r-sm01");
    let ous = all_pages(
        &sim,
        "ListChildren",
        json!({"ParentId": "ou-sm01-workload", "ChildType": "ORGANIZATIONAL_UNIT"}),
        "Children",
    )
    .await;
    assert_eq!(
        ous,
        vec![json!({"Id": "ou-sm01-nested01", "Type": "ORGANIZATIONAL_UNIT"})]
    );
    let nested = all_pages(
        &sim,
        "ListAccountsForParent",
        json!({"ParentId": "ou-sm01-nested01"}),
        "Accounts",
    )
    .await;
    let statuses: Vec<(&str, &str)> = nested
        .iter()
        .map(|a| {
            (
                a["Id"].as_str().unwrap_or(""),
                a["Status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![("333333333333", "ACTIVE"), ("555555555555", "SUSPENDED")]
    );
    let ou_list = sim
        .orgs(
            MGMT_KEY,
            "ListOrganizationalUnitsForParent",
            json!({"ParentId": "r-sm01"}),
        )
        .await
        .json();
    assert_eq!(ou_list["OrganizationalUnits"][0]["Name"], "Workloads");
    let d = sim
        .orgs(
            MGMT_KEY,
            "DescribeAccount",
            json!({"AccountId": "444444444444"}),
        )
        .await
        .json();
    assert_eq!(d["Account"]["Name"], "no-role");
    assert_eq!(
        sim.orgs(
            MGMT_KEY,
            "DescribeAccount",
            json!({"AccountId": "000000000000"})
        )
        .await
        .error_type(),
        "AccountNotFoundException"
    );
    assert_eq!(
        sim.orgs(
            MGMT_KEY,
            "ListChildren",
            json!({"ParentId": "ou-nope", "ChildType": "ACCOUNT"})
        )
        .await
        .error_type(),
        "ParentNotFoundException"
    );
    assert_eq!(
        sim.orgs(MGMT_KEY, "ListRoots", json!({"MaxResults": 21}))
            .await
            .error_type(),
        "InvalidInputException"
    );
    let member = sim.assume(A).await;
    assert_eq!(
        sim.orgs(&member, "ListRoots", json!({})).await.error_type(),
        "AccessDeniedException"
    );
    sim.run.shutdown().await;
}
