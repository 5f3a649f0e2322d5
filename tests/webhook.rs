//! `POST /webhook` end to end, in process, against the fake GitHub:
//! signatures, size bound, dedupe, the table's answers, and invalidations
//! seen as upstream requests on the next read.
#![cfg(feature = "daemon")]

mod common;

use std::time::Duration;

use common::{test_config, Daemon, FakeGithub};
use ghcache::daemon::config::Secret;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-test-secret";

fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn start(secret: Option<&str>) -> (FakeGithub, Daemon) {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.webhook_secret = Secret(secret.map(str::to_string));
    let d = Daemon::start(config).await;
    (gh, d)
}

/// POSTs a delivery; `signature: None` signs it properly.
async fn deliver(d: &Daemon, event: &str, delivery: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let signature = signature.map_or_else(|| sign(SECRET, body), str::to_string);
    let r = d
        .client
        .post(d.url("/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn deliveries(metrics: &str, result: &str) -> u64 {
    let prefix = format!("ghcache_webhook_deliveries_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn without_a_secret_the_endpoint_is_off_and_says_how_to_turn_it_on() {
    let (_gh, d) = start(None).await;
    let (status, v) = deliver(&d, "ping", "id-1", b"{}", None).await;
    assert_eq!(status, 404, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("--webhook-secret-file") && message.contains("GHCACHE_WEBHOOK_SECRET"),
        "{message}"
    );
    assert_eq!(deliveries(&d.metrics().await, "disabled"), 1);
}

#[tokio::test]
async fn missing_or_wrong_signatures_are_refused_before_anything_is_read() {
    let (_gh, d) = start(Some(SECRET)).await;
    let body = br#"{"repository": {"full_name": "o/r"}}"#;
    let wrong_secret = sign("not-the-secret", body);
    let other_body = sign(SECRET, b"{}");
    for signature in [
        "",
        "sha256=",
        wrong_secret.as_str(),
        other_body.as_str(),
        &wrong_secret.replace("sha256=", "sha1="),
    ] {
        let (status, v) = deliver(&d, "push", "id-sig", body, Some(signature)).await;
        assert_eq!(status, 401, "{signature}: {v}");
    }
    // Not even the event name is looked at: an unknown event is 401 too.
    let (status, _) = deliver(&d, "no_such_event", "id-sig", b"x", Some("sha256=00")).await;
    assert_eq!(status, 401);
    // And a refused id is not used up.
    let (status, v) = deliver(&d, "push", "id-sig", body, None).await;
    assert_eq!(status, 200, "{v}");
    let m = d.metrics().await;
    assert_eq!((deliveries(&m, "bad_signature"), deliveries(&m, "accepted")), (6, 1));
}

#[tokio::test]
async fn a_known_event_drops_exactly_its_scopes_and_the_next_read_goes_upstream() {
    let (gh, d) = start(Some(SECRET)).await;
    let runs = json!({"repo": "Octo/Repo", "branch": "main"});
    let other_runs = json!({"repo": "octo/other"});
    let labels = json!({"path": "/repos/octo/repo/labels"});
    for (tool, args) in [
        ("gh_list_workflow_runs", &runs),
        ("gh_list_workflow_runs", &other_runs),
        ("gh_api", &labels),
    ] {
        assert_eq!(d.mode(tool, args.clone()).await, "miss");
        assert_eq!(d.mode(tool, args.clone()).await, "hit");
    }
    let proxied = d.url("/github/repos/octo/repo/actions/runs?per_page=5");
    assert_eq!(d.client.get(&proxied).send().await.unwrap().status(), 200);
    let before = gh.requests();
    assert_eq!(before, 4);

    // A workflow_job of octo/repo (GitHub's spelling; the tool was asked
    // for Octo/Repo): that repository's runs, jobs and runners only.
    let job = json!({"action": "completed", "workflow_job": {"id": 9},
        "repository": {"full_name": "octo/repo", "owner": {"login": "octo"}}});
    let body = job.to_string();
    let (status, v) = deliver(&d, "workflow_job", "delivery-1", body.as_bytes(), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["event"], "workflow_job");
    assert_eq!(v["dropped"], 2, "the tool's runs list and the proxied runs page: {v}");
    assert!(v["invalidated"][0]["paths"]
        .as_array()
        .unwrap()
        .contains(&json!("/repos/octo/repo/actions/runs/**")));

    assert_eq!(d.mode("gh_list_workflow_runs", runs.clone()).await, "miss");
    assert_eq!(gh.requests(), before + 1, "the invalidated read went to GitHub");
    assert_eq!(d.mode("gh_list_workflow_runs", other_runs.clone()).await, "hit");
    assert_eq!(d.mode("gh_api", labels.clone()).await, "hit");
    assert_eq!(gh.requests(), before + 1, "other repositories and areas were kept");

    // The same delivery again: a duplicate, nothing applied.
    let (status, v) = deliver(&d, "workflow_job", "delivery-1", body.as_bytes(), None).await;
    assert_eq!((status, &v["duplicate"]), (200, &json!(true)), "{v}");
    assert_eq!(d.mode("gh_list_workflow_runs", runs.clone()).await, "hit");

    // A new delivery of the same event applies again.
    let (status, _) = deliver(&d, "workflow_job", "delivery-2", body.as_bytes(), None).await;
    assert_eq!(status, 200);
    assert_eq!(d.mode("gh_list_workflow_runs", runs).await, "miss");

    let m = d.metrics().await;
    assert_eq!((deliveries(&m, "accepted"), deliveries(&m, "duplicate")), (2, 1));

    // The dashboard's activity log: each applied delivery (not the
    // duplicate) after the invalidations it made.
    let r = d.client.get(d.url("/api/dashboard")).send().await.unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let webhooks: Vec<&str> = v["activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "webhook")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        webhooks,
        [
            "workflow_job (delivery-1): 2 entries dropped",
            "workflow_job (delivery-2): 1 entries dropped"
        ]
    );
}

#[tokio::test]
async fn a_renamed_repository_drops_the_old_and_the_new_name() {
    let (gh, d) = start(Some(SECRET)).await;
    for repo in ["o/old", "o/new", "o/kept"] {
        assert_eq!(d.mode("gh_get_repo", json!({"repo": repo})).await, "miss");
        assert_eq!(
            d.mode("gh_list_issues", json!({"repo": repo, "state": "open"})).await,
            "miss"
        );
    }
    let before = gh.requests();
    let body = json!({"action": "renamed", "repository": {"full_name": "o/new", "owner": {"login": "o"}},
        "changes": {"repository": {"name": {"from": "old"}}}})
    .to_string();
    let (status, v) = deliver(&d, "repository", "rename-1", body.as_bytes(), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["dropped"], 4, "{v}");
    for repo in ["o/old", "o/new"] {
        assert_eq!(d.mode("gh_get_repo", json!({"repo": repo})).await, "miss");
    }
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/kept"})).await, "hit");
    assert_eq!(gh.requests(), before + 2);
}

#[tokio::test]
async fn ping_unknown_malformed_and_form_encoded_deliveries() {
    let (_gh, d) = start(Some(SECRET)).await;
    let (status, v) = deliver(&d, "ping", "p-1", br#"{"zen": "Keep it logically awesome."}"#, None).await;
    assert_eq!((status, v["dropped"].as_u64()), (200, Some(0)), "{v}");

    let (status, v) = deliver(&d, "sponsorship", "u-1", b"{}", None).await;
    assert_eq!((status, &v["ignored"]), (202, &json!(true)), "{v}");

    // A known event without the field its row needs: 400 naming it, and
    // the id stays free for a corrected redelivery.
    let (status, v) = deliver(&d, "push", "m-1", b"{}", None).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("repository.full_name"), "{v}");
    let (status, v) = deliver(&d, "push", "m-1", br#"{"repository": {"full_name": "o/../x"}}"#, None).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = deliver(&d, "push", "m-1", br#"{"repository": {"full_name": "o/r"}}"#, None).await;
    assert_eq!(status, 200, "{v}");

    // No event header.
    let body = b"{}";
    let r = d
        .client
        .post(d.url("/webhook"))
        .header("x-hub-signature-256", sign(SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // application/x-www-form-urlencoded: the JSON is in `payload`, the
    // signature covers the raw form body.
    let form = "payload=%7B%22repository%22%3A%7B%22full_name%22%3A%22o%2Fr%22%7D%7D";
    let r = d
        .client
        .post(d.url("/webhook"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "release")
        .header("x-github-delivery", "f-1")
        .header("x-hub-signature-256", sign(SECRET, form.as_bytes()))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(v["invalidated"][0]["paths"]
        .as_array()
        .unwrap()
        .contains(&json!("/repos/o/r/releases/**")));

    let m = d.metrics().await;
    assert_eq!(
        (
            deliveries(&m, "accepted"),
            deliveries(&m, "ignored"),
            deliveries(&m, "malformed")
        ),
        (3, 1, 3)
    );
}

/// Writes `head` then, concurrently, up to `body_bytes` of body; returns
/// the status line of the answer.
async fn raw_post(d: &Daemon, head: String, body_bytes: usize) -> String {
    let stream = tokio::net::TcpStream::connect(d.running.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0;
        while sent < body_bytes {
            // Chunked encoding: size in hex, CRLF, data, CRLF.
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if write.write_all(&frame).await.is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        let _ = write.write_all(b"0\r\n\r\n").await;
        sent
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = read.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    String::from_utf8_lossy(&answer).lines().next().unwrap().to_string()
}

#[tokio::test]
async fn bodies_over_25_mb_are_refused_without_being_read_whole() {
    let (_gh, d) = start(Some(SECRET)).await;
    let addr = d.running.addr;
    // Declared: the answer comes with no body byte sent.
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nContent-Length: {}\r\n\r\n",
        25 * 1024 * 1024 + 1
    );
    let status = tokio::time::timeout(Duration::from_secs(30), raw_post(&d, head, 0))
        .await
        .expect("answered before any body");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Streamed (chunked, no length): cut at the bound.
    let head =
        format!("POST /webhook HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nTransfer-Encoding: chunked\r\n\r\n");
    let status = raw_post(&d, head, 40 << 20).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert_eq!(deliveries(&d.metrics().await, "too_large"), 2);
    // Under the bound, a big signed body is read and verified.
    let big = format!(
        r#"{{"repository": {{"full_name": "o/r"}}, "pad": "{}"}}"#,
        "x".repeat(3 << 20)
    );
    let (status, v) = deliver(&d, "push", "big-1", big.as_bytes(), None).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn the_host_check_still_applies() {
    let (_gh, d) = start(Some(SECRET)).await;
    let body = b"{}";
    let r = d
        .client
        .post(d.url("/webhook"))
        .header("host", "hooks.example.com")
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", sign(SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a public name must be listed in allowed_hosts");
}

/// The binary: the start log says whether webhooks are on, and a secret
/// file that cannot be used is a config error naming the key.
#[test]
fn the_start_log_says_whether_webhooks_are_on() {
    let dir = std::env::temp_dir().join(format!("ghcache-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let start = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ghcache"));
        cmd.args(["daemon", "--no-p2p", "--no-store", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("GHCACHE_WEBHOOK_SECRET")
            .env("GITHUB_TOKEN", "test-token")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    for (extra, expected) in [
        (vec![], "webhooks off: POST /webhook answers 404"),
        (vec!["--webhook-secret-file", secret.to_str().unwrap()], "webhooks on"),
    ] {
        let mut child = common::KillOnDrop(start(&extra).spawn().unwrap());
        let stderr = child.stderr.take().unwrap();
        let lines: Vec<String> = std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .take_while(|l| !l.contains("daemon listening"))
            .collect();
        assert!(lines.iter().any(|l| l.contains(expected)), "{extra:?}: {lines:#?}");
        let _ = child.kill();
    }
    let out = start(&["--webhook-secret-file", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook_secret_file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_webhook_invalidation_reaches_the_store_too() {
    let gh = FakeGithub::start().await;
    let dir = std::env::temp_dir().join(format!("ghcache-webhook-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = test_config(&gh);
    config.store = true;
    config.data_dir = dir.clone();
    config.webhook_secret = Secret(Some(SECRET.into()));
    let d = Daemon::start(config.clone()).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(d.mode("gh_list_runners", json!({"repo": "o/r"})).await, "miss");
    let body = json!({"action": "queued", "repository": {"full_name": "o/r"}}).to_string();
    let (status, v) = deliver(&d, "workflow_job", "store-1", body.as_bytes(), None).await;
    assert_eq!((status, v["dropped"].as_u64()), (200, Some(1)), "{v}");
    d.running.shutdown(Duration::from_secs(2)).await;

    let d = Daemon::start(config).await;
    let v = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(v["result"]["origin"], "disk", "kept: {v}");
    assert_eq!(
        d.mode("gh_list_runners", json!({"repo": "o/r"})).await,
        "miss",
        "the dropped runners list stayed dropped on disk"
    );
    d.running.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
