//! The typed client against a scripted agent: each answer the agent sends is decoded into its
//! type, and a refusal, an answer without details and garbage become errors that say so.

use super::*;
use crate::ipc::codec::decode_request;
use crate::ipc::protocol::ErrorCode;
use crate::status::{Outcome, Phase};
use std::io::{BufRead, BufReader, Write};

/// A client whose agent reads one request per line in `answers` and writes that line back
/// (with `{id}` replaced by the request's id); lines starting with `!` are sent unasked.
fn scripted(answers: &[&str]) -> Client {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let answers: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || {
        let mut w = theirs.try_clone().unwrap();
        let mut r = BufReader::new(theirs);
        let mut id = 0;
        for a in answers {
            if let Some(unasked) = a.strip_prefix('!') {
                let _ = writeln!(w, "{unasked}");
                continue;
            }
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            id = decode_request(line.trim_ascii_end()).map_or(id, |req| req.id);
            let _ = writeln!(w, "{}", a.replace("{id}", &id.to_string()));
        }
    });
    let c = Client::from_stream(ours).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// A status as the agent sends it.
fn status(host: &str, phase: Phase) -> String {
    let s = AgentStatus {
        host: host.into(),
        phase,
        applied_generation: Some(7),
        ..AgentStatus::default()
    };
    serde_json::to_string(&s).unwrap()
}

fn event(phase: Phase) -> String {
    format!(
        r#"!{{"event":"status","data":{}}}"#,
        status("laptop", phase)
    )
}

fn ok(data: &str) -> String {
    format!(r#"{{"id":{{id}},"ok":true,"data":{data}}}"#)
}

#[test]
fn status_is_decoded() {
    let s = scripted(&[&ok(&status("laptop", Phase::Idle))])
        .status()
        .unwrap();
    assert_eq!((s.host.as_str(), s.applied_generation), ("laptop", Some(7)));
}

#[test]
fn each_cycle_call_answers_with_a_report() {
    let report =
        r#"{"outcome":"failed","generation":4,"failed_step":"fetch","message":"hash mismatch"}"#;
    let mut c = scripted(&[
        &ok(report),
        &ok(r#"{"outcome":"updated","generation":5}"#),
        &ok(r#"{"outcome":"rolled_back"}"#),
    ]);
    let r = c.check().unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.generation, Some(4));
    assert_eq!(r.failed_step, Some(crate::status::Step::Fetch));
    assert_eq!(r.message.as_deref(), Some("hash mismatch"));
    assert_eq!(c.update().unwrap().generation, Some(5));
    assert_eq!(c.rollback().unwrap().outcome, Outcome::RolledBack);
}

#[test]
fn log_is_text_or_none_before_the_first_cycle() {
    let mut c = scripted(&[
        &ok(r#""line 1\nline 2\n""#),
        &ok("null"),
        r#"{"id":{id},"ok":true}"#,
    ]);
    assert_eq!(c.log().unwrap().as_deref(), Some("line 1\nline 2\n"));
    assert_eq!(c.log().unwrap(), None);
    assert_eq!(c.log().unwrap(), None, "an answer without data");
}

#[test]
fn a_log_of_another_shape_is_an_error() {
    let e = scripted(&[&ok(r#"{"text":"a"}"#)]).log().unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("log")),
        "{e}"
    );
}

#[test]
fn refusal_is_the_agents_error() {
    let refusal = r#"{"id":{id},"ok":false,"error":{"code":"forbidden","message":"`rollback` needs membership in group \"wheel\""}}"#;
    let e = scripted(&[refusal]).rollback().unwrap_err();
    match e {
        ClientError::Agent(w) => {
            assert_eq!(w.code, ErrorCode::Forbidden);
            assert!(w.message.contains("wheel"), "{}", w.message);
        }
        e => panic!("not the agent's refusal: {e}"),
    }
}

#[test]
fn an_error_without_details_is_a_protocol_error() {
    let e = scripted(&[r#"{"id":{id},"ok":false}"#])
        .update()
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("without details")),
        "{e}"
    );
}

#[test]
fn garbage_is_a_protocol_error() {
    for garbage in ["\u{1}not json", r#"{"id":{id},"ok":"yes"}"#, "[1,2]"] {
        let e = scripted(&[garbage]).status().unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{garbage}: {e}");
    }
    let e = scripted(&[&ok(r#"{"phase":"dancing"}"#)])
        .status()
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("bad status")),
        "{e}"
    );
    let e = scripted(&[&ok(r#"{"outcome":"exploded"}"#)])
        .update()
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("bad report")),
        "{e}"
    );
    let e = scripted(&[r#"!{"event":"weather","data":{}}"#])
        .next_status()
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Protocol(ref m) if m.contains("bad event")),
        "{e}"
    );
}

#[test]
fn a_closed_connection_is_closed() {
    let e = scripted(&[]).status().unwrap_err();
    assert!(matches!(e, ClientError::Closed | ClientError::Io(_)), "{e}");
}

#[test]
fn answers_to_other_ids_are_skipped() {
    let stray = format!(
        r#"!{{"id":999,"ok":true,"data":{}}}"#,
        status("wrong", Phase::Idle)
    );
    let s = scripted(&[&stray, &ok(&status("right", Phase::Idle))])
        .status()
        .unwrap();
    assert_eq!(s.host, "right");
}

#[test]
fn subscribe_then_statuses_in_order_including_those_during_a_call() {
    let mut c = scripted(&[
        &ok(&status("laptop", Phase::Idle)),
        &event(Phase::Checking),
        &event(Phase::Downloading),
        &ok(r#"{"outcome":"up_to_date"}"#),
        &event(Phase::Idle),
    ]);
    assert_eq!(c.subscribe().unwrap().applied_generation, Some(7));
    let mut seen = Vec::new();
    let r = c
        .cycle(CycleCall::Check, &mut |s| seen.push(s.phase))
        .unwrap();
    assert_eq!(r.outcome, Outcome::UpToDate);
    assert_eq!(seen, vec![Phase::Checking, Phase::Downloading]);
    assert_eq!(c.next_status().unwrap().phase, Phase::Idle);
}

#[test]
fn statuses_during_a_plain_call_wait_for_next_status() {
    let mut c = scripted(&[
        &ok(&status("laptop", Phase::Idle)),
        &event(Phase::Building),
        &ok(&status("now", Phase::Idle)),
    ]);
    c.subscribe().unwrap();
    assert_eq!(c.status().unwrap().host, "now");
    assert_eq!(c.next_status().unwrap().phase, Phase::Building);
}

#[test]
fn a_subscribe_answer_without_status_is_followed_by_a_status_request() {
    let mut c = scripted(&[&ok("null"), &ok(&status("asked", Phase::Idle))]);
    assert_eq!(c.subscribe().unwrap().host, "asked");
}

#[test]
fn watch_yields_the_status_now_then_changes_then_the_error() {
    let c = scripted(&[
        &ok(&status("laptop", Phase::Idle)),
        &event(Phase::Verifying),
    ]);
    let got: Vec<_> = c.watch().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].as_ref().unwrap().host, "laptop");
    assert_eq!(got[1].as_ref().unwrap().phase, Phase::Verifying);
    assert!(got[2].is_err());
}
