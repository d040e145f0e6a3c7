//! Isolation and hardening of the pub/sub path (issue 16), end to end over real HTTP, WebSocket,
//! Redis and the real messages service: tenants never hear each other's calls on any subscribe
//! route, clients cannot publish on service namespaces, the socket and pattern caps refuse the
//! cap+1'th with the documented error, and a publish flood at sockets that do not read keeps the
//! process's memory under a stated bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::ws::Event;
use testkit::{
    REDIS_URL, RedisServer, TestGateway, WsClient, http, spawn_gateway, spawn_messages,
    tenant_token, token, unique, wait_until,
};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(600);

/// How an upgrade ended: the socket, or the refusal's status and error envelope.
#[allow(clippy::large_enum_variant)] // a handful per test
enum Upgrade {
    Open(WsClient),
    Refused(u16, Value),
}

async fn upgrade(url: &str, bearer: &str) -> Upgrade {
    match WsClient::connect(url, Some(bearer)).await {
        Ok(client) => Upgrade::Open(client),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Upgrade::Refused(status, body)
        }
        Err(e) => panic!("upgrade to {url} failed: {e}"),
    }
}

fn encode(s: &str) -> String {
    s.replace('[', "%5B")
        .replace(']', "%5D")
        .replace('^', "%5E")
        .replace('*', "%2A")
        .replace('?', "%3F")
}

/// The value of `series` (`name` or `name{label="value"}`) in the gateway's `/metrics`, whatever
/// other labels (the `service` one) the line carries.
async fn metric(gw: &TestGateway, series: &str) -> f64 {
    let (name, wanted) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let text = gw.get_text(&http(), "/metrics").await;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let labels = key.strip_prefix(name)?;
            let matches = (labels.is_empty() || labels.starts_with('{'))
                && wanted.split(',').all(|l| labels.contains(l));
            matches.then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

/// Two stacks on one Redis: Redis matches our patterns against their channels too. Theirs is a
/// prefix that extends ours (`ours` + `x:`), so our pattern `x*` matches every one of their
/// channels at the Redis level; the gateway must deliver only what is one of its own subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_never_reaches_another_stacks_channels_on_a_shared_redis() {
    let ours = format!("{}:", unique("shared"));
    let theirs = format!("{ours}x:");
    let their_messages = spawn_messages(&[("PUBSUB_PREFIX", &theirs)]).await;
    let gw = spawn_gateway(&[("PUBSUB_PREFIX", &ours)]).await;
    let client = http();
    let tenant = Uuid::new_v4();
    let eve = token("eve");
    let Upgrade::Open(mut socket) = upgrade(&gw.ws_url("/api/v1/ws?subscribe=x%2A"), &eve).await
    else {
        panic!("x* is an ordinary pattern");
    };
    let call = json!({"call_id": "c-shared", "state": "INITIATED", "from": "+1", "to": "+2"});
    let (status, answer) = their_messages
        .send(
            &client,
            reqwest::Method::POST,
            "/api/v1/demo/events/call",
            Some(&tenant_token("agent", tenant)),
            Some(&call),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = their_messages
        .send(
            &client,
            reqwest::Method::POST,
            "/api/v1/channels/general/messages",
            Some(&eve),
            Some(&json!({"body": "theirs"})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    // Our own subject under the same pattern still arrives, and is the only thing that does.
    let published = gw
        .publish(&client, &eve, "xylophone", r#"{"ours":true}"#)
        .await;
    assert_eq!(published.status(), 202);
    let envelope = socket.next_json(WAIT).await;
    assert_eq!(envelope["subject"], "xylophone", "{envelope}");
    socket.expect_silence(SILENCE).await;
    assert!(metric(&gw, "gateway_pubsub_undeliverable_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscribe_route_hears_another_tenants_calls() {
    let prefix = format!("{}:", unique("iso"));
    let messages = spawn_messages(&[("PUBSUB_PREFIX", &prefix)]).await;
    let gw = spawn_gateway(&[("PUBSUB_PREFIX", &prefix)]).await;
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    let token_a = tenant_token("agent-a", tenant_a);
    let token_b = tenant_token("agent-b", tenant_b);
    let tenantless = token("nobody");

    let a_initiated = format!("call.{tenant_a}.initiated");
    let attempts = [
        "*",
        "*.*",
        "call.*",
        "*.initiated",
        "[c]all.*",
        "[^x]all.*",
        "c*",
        "?all.*",
        "call.initiated",
        a_initiated.as_str(),
        "call.#",
    ];
    // Every foreign token × subscription × route: refused, or open and (later) silent.
    let mut listening: Vec<(String, WsClient)> = Vec::new();
    for (who, bearer) in [("tenant B", &token_b), ("no tenant", &tenantless)] {
        for subject in attempts {
            let v1 = gw.ws_url(&format!("/api/v1/ws?subscribe={}", encode(subject)));
            let s0 = gw.ws_url(&format!("/ws?subject={}", encode(subject)));
            for (route, url) in [("v1", v1), ("s0", s0)] {
                let label = format!("{who} {route} {subject}");
                match upgrade(&url, bearer).await {
                    Upgrade::Open(client) => listening.push((label, client)),
                    Upgrade::Refused(status, body) => {
                        assert!(matches!(status, 400 | 403), "{label}: {status} {body}");
                        assert!(
                            body["error"]["message"].as_str().is_some(),
                            "{label}: {body}"
                        );
                    }
                }
            }
            let Upgrade::Open(mut client) = upgrade(&gw.ws_url("/api/v1/ws"), bearer).await else {
                panic!("a plain socket opens");
            };
            let reply = client.op("subscribe", subject).await;
            let label = format!("{who} op {subject}");
            match reply["op"].as_str() {
                Some("ack") => listening.push((label, client)),
                Some("error") => {
                    assert!(
                        matches!(reply["code"].as_str(), Some("forbidden" | "bad_request")),
                        "{label}: {reply}"
                    );
                    listening.push((label, client));
                }
                _ => panic!("{label}: {reply}"),
            }
        }
    }
    // The documented answers for the shapes SPEC names.
    let refused = |url: String, bearer: String| async move {
        match upgrade(&url, &bearer).await {
            Upgrade::Refused(status, body) => (status, body["error"]["code"].clone()),
            Upgrade::Open(_) => (101, Value::Null),
        }
    };
    for (subject, bearer, status, code) in [
        ("call.*", &tenantless, 403, "forbidden"),
        ("*.initiated", &token_b, 403, "forbidden"),
        ("[c]all.*", &token_b, 403, "forbidden"),
        ("c*", &token_a, 403, "forbidden"),
        ("*", &token_b, 400, "bad_request"),
        ("*.*", &token_a, 400, "bad_request"),
    ] {
        let url = gw.ws_url(&format!("/api/v1/ws?subscribe={}", encode(subject)));
        assert_eq!(
            refused(url, bearer.clone()).await,
            (status, json!(code)),
            "{subject}"
        );
    }

    // A's own sockets, through every route.
    let mut own = Vec::new();
    for url in [
        gw.ws_url("/api/v1/ws?subscribe=call.*"),
        gw.ws_url("/ws?subject=call.*"),
        gw.ws_url("/api/v1/ws?subscribe=call.initiated,call.ringing,call.answered,call.completed"),
    ] {
        let Upgrade::Open(client) = upgrade(&url, &token_a).await else {
            panic!("tenant A opens {url}");
        };
        own.push(client);
    }
    let Upgrade::Open(mut by_op) = upgrade(&gw.ws_url("/api/v1/ws"), &token_a).await else {
        panic!("a plain socket opens");
    };
    assert_eq!(
        by_op.op("subscribe", "call.*").await,
        json!({"op": "ack", "subject": "call.*"})
    );
    own.push(by_op);

    // A's call lifecycle through the real messages service.
    let client = http();
    let call_id = unique("iso-call");
    let states = ["INITIATED", "RINGING", "ANSWERED", "COMPLETED"];
    for state in states {
        let body =
            json!({"call_id": call_id, "state": state, "from": "+15550001", "to": "+15550002"});
        let (status, answer) = messages
            .send(
                &client,
                reqwest::Method::POST,
                "/api/v1/demo/events/call",
                Some(&token_a),
                Some(&body),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    for socket in own.iter_mut() {
        for state in states {
            let envelope = socket.next_json(WAIT).await;
            assert_eq!(
                envelope["subject"],
                format!("call.{}", state.to_lowercase())
            );
            assert_eq!(envelope["tenant"], tenant_a.to_string());
            assert_eq!(envelope["origin"], "messages");
            assert_eq!(envelope["data"]["call_id"], call_id.as_str());
        }
    }
    assert!(!listening.is_empty());
    for (label, socket) in listening.iter_mut() {
        match socket.next_event(SILENCE).await {
            Event::Timeout => {}
            other => panic!("{label} heard something: {other:?}"),
        }
    }
    assert!(metric(&gw, r#"gateway_ws_refusals_total{reason="needs_tenant"}"#).await >= 1.0);
    assert!(metric(&gw, r#"gateway_ws_refusals_total{reason="cross_tenant"}"#).await >= 1.0);
    assert!(metric(&gw, r#"gateway_ws_refusals_total{reason="wildcard_only"}"#).await >= 1.0);
    gw.stop().await.unwrap();
    messages.stop().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_maps_like_subscribe() {
    let gw = spawn_gateway(&[]).await;
    let tenant = Uuid::new_v4();
    let Upgrade::Open(mut socket) = upgrade(
        &gw.ws_url("/api/v1/ws?subscribe=call.*"),
        &tenant_token("a", tenant),
    )
    .await
    else {
        panic!("opens");
    };
    assert_eq!(
        socket.op("unsubscribe", "call.*").await,
        json!({"op": "ack", "subject": "call.*"})
    );
    assert_eq!(
        gw.get_json(&http(), "/api/metrics").await["pubsub_topics"],
        0
    );
    let reply = socket.op("unsubscribe", "*.initiated").await;
    assert_eq!(
        (reply["op"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn forged_publishes_on_reserved_namespaces_are_refused_and_deliver_nothing() {
    let gw = spawn_gateway(&[]).await;
    let client = http();
    let tenant = Uuid::new_v4();
    let publisher = tenant_token("forger", tenant);
    // Whatever reaches Redis under this gateway's prefix.
    let mut raw = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    raw.psubscribe(format!("{}*", gw.prefix)).await.unwrap();
    let Upgrade::Open(mut victim) =
        upgrade(&gw.ws_url("/api/v1/ws?subscribe=call.*"), &publisher).await
    else {
        panic!("opens");
    };
    let Upgrade::Open(mut channel) =
        upgrade(&gw.ws_url("/api/v1/channels/general/ws"), &publisher).await
    else {
        panic!("opens");
    };
    for (subject, namespace) in [
        ("call.x", "call."),
        ("call", "call."),
        ("call.answered", "call."),
        ("channel.general", "channel."),
        ("channel", "channel."),
    ] {
        let v1 = gw
            .publish(&client, &publisher, subject, r#"{"forged":true}"#)
            .await;
        let s0 = client
            .post(gw.url(&format!("/publish?subject={subject}")))
            .bearer_auth(&publisher)
            .header("content-type", "application/json")
            .body(r#"{"forged":true}"#)
            .send()
            .await
            .unwrap();
        for (route, response) in [("v1", v1), ("s0", s0)] {
            assert_eq!(response.status(), 403, "{route} {subject}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "{route} {subject}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(namespace), "{route} {subject}: {message}");
        }
    }
    for socket in [&mut victim, &mut channel] {
        socket.expect_silence(SILENCE).await;
    }
    {
        use futures_util::StreamExt;
        let mut stream = raw.on_message();
        let heard = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(heard.is_err(), "nothing reached Redis: {heard:?}");
    }
    // A client's own subject still works, and says who published it.
    let Upgrade::Open(mut room) =
        upgrade(&gw.ws_url("/api/v1/ws?subscribe=room.*"), &publisher).await
    else {
        panic!("opens");
    };
    let response = gw
        .publish(&client, &publisher, "room.1", r#"{"origin":"messages"}"#)
        .await;
    assert_eq!(response.status(), 202);
    let envelope = room.next_json(WAIT).await;
    assert_eq!(
        envelope["origin"], "client",
        "set by the server, not the body"
    );
    assert_eq!(envelope["data"]["origin"], "messages");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn socket_caps_refuse_the_next_socket_with_429() {
    let gw = spawn_gateway(&[
        ("WS_MAX_SOCKETS_PER_USER", "3"),
        ("WS_MAX_SOCKETS_PER_IP", "5"),
    ])
    .await;
    let url = gw.ws_url("/api/v1/ws?subscribe=caps.test");
    let alice = token("alice");
    let mut alice_sockets = Vec::new();
    for _ in 0..3 {
        let Upgrade::Open(client) = upgrade(&url, &alice).await else {
            panic!("within the per-user cap");
        };
        alice_sockets.push(client);
    }
    let Upgrade::Refused(status, body) = upgrade(&url, &alice).await else {
        panic!("the 4th socket of one user is refused");
    };
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WS_MAX_SOCKETS_PER_USER"),
        "{body}"
    );
    // Another user from the same IP: 2 more fit the per-IP cap of 5, the 6th does not.
    let bob = token("bob");
    let mut bob_sockets = Vec::new();
    for _ in 0..2 {
        let Upgrade::Open(client) = upgrade(&url, &bob).await else {
            panic!("within the per-IP cap");
        };
        bob_sockets.push(client);
    }
    let Upgrade::Refused(status, body) = upgrade(&url, &token("carol")).await else {
        panic!("the 6th socket of one IP is refused");
    };
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WS_MAX_SOCKETS_PER_IP"),
        "{body}"
    );
    assert_eq!(
        metric(&gw, r#"gateway_ws_refusals_total{reason="per_user"}"#).await,
        1.0
    );
    assert_eq!(
        metric(&gw, r#"gateway_ws_refusals_total{reason="per_ip"}"#).await,
        1.0
    );
    // A closed socket gives its slots back.
    alice_sockets.pop().unwrap().close().await;
    let admitted = wait_until(WAIT, || async {
        matches!(upgrade(&url, &alice).await, Upgrade::Open(_))
    })
    .await;
    assert!(admitted, "a freed slot admits the user again");
    gw.stop().await.unwrap();
}

async fn numpat(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(redis)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_cap_refuses_the_next_pattern_and_redis_never_holds_more() {
    // A private Redis: NUMPAT counts every client's patterns.
    let server = RedisServer::start().await;
    let url = server.url();
    let gw = spawn_gateway(&[("REDIS_URL", &url), ("WS_MAX_PATTERNS", "3")]).await;
    let mut redis = testkit::redis_connection(&url).await;
    let most = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicUsize::new(1));
    let watcher = tokio::spawn({
        let (mut redis, most, watching) = (redis.clone(), most.clone(), watching.clone());
        async move {
            while watching.load(Ordering::Relaxed) == 1 {
                let n = numpat(&mut redis).await;
                most.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let tok = token("patterns");
    let Upgrade::Open(mut first) =
        upgrade(&gw.ws_url("/api/v1/ws?subscribe=p1.*,p2.*"), &tok).await
    else {
        panic!("two patterns fit");
    };
    let Upgrade::Open(mut second) = upgrade(&gw.ws_url("/api/v1/ws"), &tok).await else {
        panic!("opens");
    };
    assert_eq!(second.op("subscribe", "p3.*").await["op"], "ack");
    let refused = second.op("subscribe", "p4.*").await;
    assert_eq!(refused["op"], "error");
    assert_eq!(refused["code"], "too_many_patterns");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("WS_MAX_PATTERNS")
    );
    let Upgrade::Refused(status, body) =
        upgrade(&gw.ws_url("/api/v1/ws?subscribe=exact.1,p5.*"), &tok).await
    else {
        panic!("a new pattern beyond the cap is refused on upgrade");
    };
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WS_MAX_PATTERNS")
    );
    // Patterns already held and exact subjects do not count.
    let Upgrade::Open(_shared) = upgrade(
        &gw.ws_url("/api/v1/ws?subscribe=p1.*,exact.2,exact.3"),
        &tok,
    )
    .await
    else {
        panic!("a held pattern and exact subjects fit");
    };
    assert_eq!(numpat(&mut redis).await, 3);
    // Letting one go frees its slot once Redis has dropped it.
    assert_eq!(second.op("unsubscribe", "p3.*").await["op"], "ack");
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let reply = first.op("subscribe", "p6.*").await;
        if reply["op"] == "ack" || tokio::time::Instant::now() >= deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let freed = reply["op"] == "ack";
    assert!(freed, "the slot came back: {reply}");
    // p4 and p5, plus any p6 attempt made before the slot was free.
    assert!(metric(&gw, r#"gateway_ws_refusals_total{reason="patterns"}"#).await >= 2.0);
    watching.store(0, Ordering::Relaxed);
    watcher.await.unwrap();
    let most = most.load(Ordering::Relaxed);
    assert!(most <= 3, "Redis held {most} patterns (cap 3)");
    gw.stop().await.unwrap();
}

/// This process's resident memory in KiB (the gateway runs in it).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The bound stated for the flood (growth of this process's RSS, the gateway's and the test's
/// clients' together): FANOUT_QUEUE (1,024) × 8 KiB messages (8 MiB) + 4 subjects × WS_SEND_QUEUE
/// (128) shared frames × 8 KiB (4 MiB) + 200 sockets × their largest write buffer (32 KiB + 2 ×
/// MAX_EVENT_BYTES + 64 KiB = 128 KiB: 25 MiB) + the test's pipeline of 500 publishes (4 MiB),
/// about 41 MiB, with room for the allocator: 96 MiB. The flood is 40,000 × 8 KiB = 320 MiB.
const RSS_GROWTH_BOUND_KIB: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_at_sockets_that_do_not_read_stays_within_memory_bounds() {
    let gw = spawn_gateway(&[
        ("FANOUT_QUEUE", "1024"),
        ("WS_SEND_QUEUE", "128"),
        ("MAX_EVENT_BYTES", "16384"),
        ("WS_IDLE_SECS", "600"),
    ])
    .await;
    let tok = token("flood");
    let subjects: Vec<String> = (0..4).map(|i| format!("flood.{i}")).collect();
    let mut sockets = Vec::new();
    for i in 0..200 {
        let url = gw.ws_url(&format!("/api/v1/ws?subscribe={}", subjects[i % 4]));
        sockets.push(WsClient::connect(&url, Some(&tok)).await.unwrap());
    }
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicUsize::new(1));
    let sampler = std::thread::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        move || {
            while sampling.load(Ordering::Relaxed) == 1 {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    // Straight into Redis, as fast as it takes them: 40,000 × 8 KiB over the four subjects.
    let mut redis = testkit::redis_connection(REDIS_URL).await;
    let payload = json!({"subject": "flood", "data": "x".repeat(8 * 1024)}).to_string();
    for batch in 0..80 {
        let mut pipe = redis::pipe();
        for n in 0..500 {
            pipe.cmd("PUBLISH")
                .arg(format!("{}{}", gw.prefix, subjects[(batch + n) % 4]))
                .arg(&payload)
                .ignore();
        }
        let _: () = pipe.query_async(&mut redis).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampling.store(0, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    let dropped = metric(&gw, "gateway_fanout_dropped_total").await;
    let slow = metric(&gw, "gateway_ws_slow_consumer_closes_total").await;
    eprintln!(
        "flood: RSS {baseline} KiB → peak +{growth} KiB; fanout dropped {dropped}; slow-consumer closes {slow}"
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "RSS grew by {growth} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    // The gateway still serves: a fresh socket hears a fresh event.
    let mut fresh = WsClient::connect(&gw.ws_url("/api/v1/ws?subscribe=after.flood"), Some(&tok))
        .await
        .unwrap();
    assert_eq!(
        gw.publish(&http(), &tok, "after.flood", "1").await.status(),
        202
    );
    assert_eq!(fresh.next_json(WAIT).await["data"], 1);
    drop(sockets);
    gw.stop().await.unwrap();
}
