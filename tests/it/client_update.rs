//! `tiffin update|check|status|log` as a member of the socket group, against the real agent.

use crate::daemon_support;
use daemon_support::*;

#[test]
fn update_as_member_prints_progress_and_exits_with_the_outcome() {
    if !require_root("client update") {
        return;
    }
    let group = TestGroup::new("tfcs");
    let member = TestUser::new("tfcm", &[&group]);
    let agent = Agent::start(AgentOptions {
        socket_group: group.name.clone(),
        ..Default::default()
    });
    let socket = agent.socket.to_str().unwrap().to_string();
    let tiffin = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--socket", &socket]);
        let o = tiffin_as(member.uid, member.gid, member.login_groups(), &full)
            .output()
            .unwrap();
        let (out, err) = output_text(&o);
        println!("tiffin {args:?} -> {:?}\n{out}{err}", o.status.code());
        (o.status.code(), out, err)
    };

    // Nothing new: up to date, exit 0.
    let (code, out, _) = tiffin(&["update"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("up to date (generation 1)"), "{out}");

    // A bigger generation: progress lines while it downloads, then "updated", exit 0.
    agent.publication.publish(2, &files(500, 32 * 1024, "g2"));
    let (code, out, _) = tiffin(&["update"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("downloading: "), "no progress shown: {out}");
    assert!(
        out.lines().last() == Some("updated (generation 2)"),
        "{out}"
    );

    let (code, out, _) = tiffin(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("applied generation   2"), "{out}");
    let (code, out, _) = tiffin(&["status", "--json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applied_generation"], 2);
    assert_eq!(v["host"], "testhost");

    // `check` finds (and fetches) a new generation but does not apply it.
    agent.publication.publish(3, &files(5, 100, "g3"));
    let (code, out, _) = tiffin(&["check"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("generation 3 is available"), "{out}");
    let (code, out, _) = tiffin(&["update"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("updated (generation 3)"), "{out}");

    // A corrupted file on the publication: the fetch refuses it, exit 1, and the log says why.
    agent.publication.publish(4, &files(5, 100, "g4"));
    agent.publication.corrupt(4, "etc/f0002");
    let (code, out, _) = tiffin(&["update"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("failed (generation 4): fetch:"), "{out}");
    let (code, out, _) = tiffin(&["log"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("fetch: ") && out.contains("f0002") && out.contains("sha256"),
        "{out}"
    );
    let (_, out, _) = tiffin(&["status"]);
    assert!(out.contains("applied generation   3"), "{out}");

    // A generation whose activation cuts the machine off the server (the fake NixOS's
    // CUT_NETWORK moves the publication aside): verification fails, the agent rolls back, and
    // `tiffin update` says so with exit 3.
    let mut cut = files(5, 100, "g5");
    cut.push(("CUT_NETWORK".into(), Vec::new()));
    agent.publication.publish(5, &cut);
    let (code, out, _) = tiffin(&["update"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("rolled back (generation 5)"), "{out}");
    let (_, out, _) = tiffin(&["status"]);
    assert!(out.contains("applied generation   3"), "{out}");
}
