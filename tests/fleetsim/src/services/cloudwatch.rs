//! CloudWatch DescribeAlarms, translated between the protocol the Rust SDK speaks and the one
//! moto speaks. The SDK calls CloudWatch with Smithy RPC v2 CBOR (`POST
//! /service/GraniteServiceVersion20100801/operation/OP`, `application/cbor`); moto holds the
//! alarms (tests create them and set their state with boto3, as real alarms) but answers
//! only the Query protocol. A DescribeAlarms request is rewritten as its Query form, sent to
//! moto, and moto's XML answer comes back as CBOR with the members fleetpatch reads
//! (AlarmName, AlarmArn, StateValue) and NextToken. Other operations are not translated.

use ciborium::Value as Cbor;

/// The path of every CloudWatch operation in RPC v2 CBOR; the operation name follows.
pub const PATH_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";

/// The operations translated.
pub const OPERATIONS: &[&str] = &["DescribeAlarms"];

/// The operation a request path names, if it is a CloudWatch RPC v2 path.
pub fn operation(path: &str) -> Option<&str> {
    path.strip_prefix(PATH_PREFIX)
}

/// The request's CBOR map as (key, value) pairs.
fn request_map(body: &[u8]) -> Result<Vec<(Cbor, Cbor)>, String> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    match ciborium::from_reader::<Cbor, _>(body) {
        Ok(Cbor::Map(m)) => Ok(m),
        Ok(_) => Err("the request body is not a CBOR map".into()),
        Err(e) => Err(format!("the request body is not CBOR: {e}")),
    }
}

fn texts(v: &Cbor) -> Vec<String> {
    match v {
        Cbor::Array(items) => items
            .iter()
            .filter_map(|i| i.as_text().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The alarm names a DescribeAlarms request asks for (for IAM: each is one alarm ARN).
pub fn alarm_names(body: &[u8]) -> Vec<String> {
    request_map(body)
        .unwrap_or_default()
        .iter()
        .find(|(k, _)| k.as_text() == Some("AlarmNames"))
        .map(|(_, v)| texts(v))
        .unwrap_or_default()
}

/// The Query form (`application/x-www-form-urlencoded`) of a CBOR DescribeAlarms request.
pub fn query_form(body: &[u8]) -> Result<String, String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "DescribeAlarms");
    form.append_pair("Version", "2010-08-01");
    for (k, v) in request_map(body)? {
        match k.as_text() {
            Some(list @ ("AlarmNames" | "AlarmTypes")) => {
                for (i, item) in texts(&v).iter().enumerate() {
                    form.append_pair(&format!("{list}.member.{}", i + 1), item);
                }
            }
            Some(name @ ("NextToken" | "StateValue" | "AlarmNamePrefix")) => {
                if let Some(t) = v.as_text() {
                    form.append_pair(name, t);
                }
            }
            Some("MaxRecords") => {
                if let Some(n) = v.as_integer() {
                    form.append_pair("MaxRecords", &i128::from(n).to_string());
                }
            }
            _ => {}
        }
    }
    Ok(form.finish())
}

/// The text of every `<tag>...</tag>` in `xml`, in document order, unescaped.
fn all_of(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The section `<tag>...</tag>` of `xml`, or "".
fn section<'a>(xml: &'a str, tag: &str) -> &'a str {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    match (xml.find(&open), xml.find(&close)) {
        (Some(a), Some(b)) if b > a => &xml[a + open.len()..b],
        _ => "",
    }
}

/// The alarms of one section: each alarm has exactly one AlarmName, AlarmArn and StateValue,
/// and moto writes them in that order, so the n-th of each belong together.
fn alarms(section: &str) -> Cbor {
    let names = all_of(section, "AlarmName");
    let arns = all_of(section, "AlarmArn");
    let states = all_of(section, "StateValue");
    let alarms = names
        .into_iter()
        .zip(arns)
        .zip(states)
        .map(|((name, arn), state)| {
            Cbor::Map(vec![
                (Cbor::Text("AlarmName".into()), Cbor::Text(name)),
                (Cbor::Text("AlarmArn".into()), Cbor::Text(arn)),
                (Cbor::Text("StateValue".into()), Cbor::Text(state)),
            ])
        })
        .collect();
    Cbor::Array(alarms)
}

fn encode(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// The CBOR answer to a DescribeAlarms, from moto's XML answer.
pub fn cbor_answer(xml: &str) -> Vec<u8> {
    let mut map = vec![
        (
            Cbor::Text("MetricAlarms".into()),
            alarms(section(xml, "MetricAlarms")),
        ),
        (
            Cbor::Text("CompositeAlarms".into()),
            alarms(section(xml, "CompositeAlarms")),
        ),
    ];
    if let Some(token) = all_of(xml, "NextToken").into_iter().next() {
        map.push((Cbor::Text("NextToken".into()), Cbor::Text(token)));
    }
    encode(&Cbor::Map(map))
}

/// An RPC v2 CBOR error body: the SDK reads the code from `__type`.
pub fn cbor_error(code: &str, message: &str) -> Vec<u8> {
    encode(&Cbor::Map(vec![
        (Cbor::Text("__type".into()), Cbor::Text(code.into())),
        (Cbor::Text("message".into()), Cbor::Text(message.into())),
    ]))
}

/// The code and message of moto's XML error answer.
pub fn xml_error(xml: &str) -> (String, String) {
    let code = all_of(xml, "Code").into_iter().next();
    let message = all_of(xml, "Message").into_iter().next();
    (
        code.unwrap_or_else(|| "InternalFailure".into()),
        message.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(names: &[&str]) -> Vec<u8> {
        let names = names.iter().map(|n| Cbor::Text(n.to_string())).collect();
        encode(&Cbor::Map(vec![
            (Cbor::Text("AlarmNames".into()), Cbor::Array(names)),
            (
                Cbor::Text("AlarmTypes".into()),
                Cbor::Array(vec![Cbor::Text("MetricAlarm".into())]),
            ),
        ]))
    }

    #[test]
    fn a_cbor_request_becomes_its_query_form() {
        // GIVEN a CBOR DescribeAlarms for two names, one with a space and an ampersand
        let body = request(&["api-5xx", "Queue depth & age"]);
        // WHEN it is translated
        let form = query_form(&body).unwrap();
        // THEN the Query form names the action, each name and the type, encoded
        assert_eq!(
            form,
            "Action=DescribeAlarms&Version=2010-08-01&AlarmNames.member.1=api-5xx&AlarmNames.member.2=Queue+depth+%26+age&AlarmTypes.member.1=MetricAlarm"
        );
        assert_eq!(alarm_names(&body), ["api-5xx", "Queue depth & age"]);
    }

    #[test]
    fn motos_xml_answer_becomes_cbor_with_each_alarms_state() {
        // GIVEN moto's answer with two metric alarms (one with nested members) and a token
        let xml = "<DescribeAlarmsResponse><DescribeAlarmsResult><MetricAlarms>\
            <member><AlarmName>a &amp; b</AlarmName><AlarmArn>arn:1</AlarmArn>\
            <Dimensions><member><Name>x</Name></member></Dimensions><StateValue>ALARM</StateValue></member>\
            <member><AlarmName>c</AlarmName><AlarmArn>arn:2</AlarmArn><StateValue>OK</StateValue></member>\
            </MetricAlarms><CompositeAlarms></CompositeAlarms><NextToken>t1</NextToken>\
            </DescribeAlarmsResult></DescribeAlarmsResponse>";
        // WHEN it is translated
        let cbor: Cbor = ciborium::from_reader(&cbor_answer(xml)[..]).unwrap();
        // THEN each alarm keeps its own name, ARN and state, and the token follows
        let text = format!("{cbor:?}");
        assert!(text.contains(r#"Text("a & b")"#), "{text}");
        let map = cbor.as_map().unwrap();
        let metric = map[0].1.as_array().unwrap();
        assert_eq!(metric.len(), 2);
        let second = metric[1].as_map().unwrap();
        assert_eq!(second[1].1.as_text(), Some("arn:2"));
        assert_eq!(second[2].1.as_text(), Some("OK"));
        assert_eq!(map[2].1.as_text(), Some("t1"));
    }
}
