//! Metrics: exact counts after a known sequence of requests, scraped from the metrics
//! listener as Prometheus would.

use bytes::Bytes;
use http_body_util::Full;

use crate::fakes::{Fake, grant_all_but_secret};
use crate::harness::{Server, auth_request, send};

/// The value of the sample `name{labels}` in a text exposition (labels as written, in order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_known_sequence_gives_exact_counts_on_the_metrics_listener() {
    let hook = Fake::start(grant_all_but_secret).await;
    // The setting turns recording on; the test serves the metrics itself.
    let s = Server::start(&[
        ("CAPSIGN_POLICY_URL", &hook.url("/decide")),
        ("CAPSIGN_METRICS_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(capsign::server::run_metrics(
        listener,
        std::sync::Arc::clone(&s.app),
        std::future::pending(),
    ));

    let health = s
        .send(s.get("/healthz").body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(health.status, 200);
    let anonymous = s
        .send(s.get("/auth").body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(anonymous.status, 401);
    // A fresh client: the rules grant chat:a.
    let a = s
        .first_auth("alice", Some(r#"{"chat:a":["subscribe"]}"#))
        .await;
    assert_eq!(a.status, 200);
    let cookie = a.grant_cookie().unwrap();
    // Held chat:a (cookie), billing:1 through the webhook, as a TokenRequest.
    let mut b = auth_request(
        &s,
        "alice",
        Some(r#"{"chat:a":["subscribe"],"billing:1":["subscribe"]}"#),
        Some(&cookie),
    );
    *b.uri_mut() = format!("{}&format=tokenRequest", b.uri()).parse().unwrap();
    let b = s.send(b).await;
    assert_eq!(b.status, 200, "{}", b.body);
    // A tampered cookie, and a channel the webhook denies: nothing to mint, 403/40160.
    let tampered = format!("{}x", &cookie[..cookie.len() - 2]);
    let c = s
        .send(auth_request(
            &s,
            "alice",
            Some(r#"{"secret:x":["subscribe"]}"#),
            Some(&tampered),
        ))
        .await;
    assert_eq!((c.status, c.error_code()), (403, 40160), "{}", c.body);

    // Prometheus's own `Accept` (2.x, scrape_protocols' default order).
    let scrape = send(
        metrics_addr,
        http::Request::get("/metrics")
            .header("host", metrics_addr.to_string())
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scrape.body;
    for (series, want) in [
        (
            r#"capsign_http_requests_total{route="healthz",status="200"}"#,
            1.0,
        ),
        (
            r#"capsign_http_requests_total{route="auth",status="401"}"#,
            1.0,
        ),
        (
            r#"capsign_http_requests_total{route="auth",status="200"}"#,
            2.0,
        ),
        (
            r#"capsign_http_requests_total{route="auth",status="403"}"#,
            1.0,
        ),
        (r#"capsign_refusals_total{code="40101"}"#, 1.0),
        (r#"capsign_refusals_total{code="40160"}"#, 1.0),
        (r#"capsign_credentials_issued_total{format="jwt"}"#, 1.0),
        (
            r#"capsign_credentials_issued_total{format="tokenRequest"}"#,
            1.0,
        ),
        (
            r#"capsign_grant_decisions_total{decider="rules",outcome="allowed"}"#,
            1.0,
        ),
        (
            r#"capsign_grant_decisions_total{decider="cookie",outcome="allowed"}"#,
            1.0,
        ),
        (
            r#"capsign_grant_decisions_total{decider="webhook",outcome="allowed"}"#,
            1.0,
        ),
        (
            r#"capsign_grant_decisions_total{decider="webhook",outcome="denied"}"#,
            1.0,
        ),
        (r#"capsign_grant_cookies_total{result="absent"}"#, 1.0),
        (r#"capsign_grant_cookies_total{result="opened"}"#, 1.0),
        (r#"capsign_grant_cookies_total{result="tampered"}"#, 1.0),
        (r#"capsign_grant_cookie_keys_total{key_id="1"}"#, 1.0),
        (r#"capsign_webhook_duration_seconds_count"#, 2.0),
        (r#"capsign_grant_cookie_size_bytes_count"#, 2.0),
        (r#"capsign_http_requests_in_flight"#, 0.0),
        // Known label values are there at 0 from the start.
        (r#"capsign_refusals_total{code="50200"}"#, 0.0),
        (r#"capsign_credentials_issued_total{format="token"}"#, 0.0),
        (r#"capsign_grant_cookies_total{result="unknown_key"}"#, 0.0),
        (r#"capsign_webhook_errors_total{kind="timeout"}"#, 0.0),
        (r#"capsign_ably_errors_total{kind="refused"}"#, 0.0),
        (r#"capsign_jwks_refreshes_total{result="error"}"#, 0.0),
        (r#"capsign_connections_shed_total{reason="per_peer"}"#, 0.0),
        (r#"capsign_clock_offset_seconds"#, 0.0),
        (r#"capsign_ready"#, 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    // Every family in the exposition is one `Metrics::families` names (which the dashboard
    // test relies on).
    let families = s.app.metrics.families();
    for family in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
    {
        assert!(
            families.iter().any(|f| f == family),
            "{family} not in {families:?}"
        );
    }
    // The process metrics every client library exports.
    // (CPU time is counted in ticks of 10 ms: it may still read 0.)
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(family)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(value.is_some_and(|v| v > 0.0), "{family} in\n{text}");
    }
    assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0));
    // A scraper that asks for nothing in particular gets the 0.0.4 text format, whose
    // counter families carry `_total` and which has no `# EOF`.
    let plain = send(
        metrics_addr,
        http::Request::get("/metrics")
            .header("host", metrics_addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        plain
            .body
            .contains("# TYPE capsign_http_requests_total counter\n")
    );
    assert!(!plain.body.contains("# EOF"));
    assert_eq!(
        sample(&plain.body, r#"capsign_refusals_total{code="40160"}"#),
        Some(1.0)
    );
    // No client-chosen value is a label.
    for private in ["alice", "chat:a", "billing:1", "secret:x"] {
        assert!(!text.contains(private), "{private} in the metrics");
    }
    let other = send(
        metrics_addr,
        http::Request::get("/auth")
            .header("host", metrics_addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        other.status, 404,
        "the metrics listener serves /metrics only"
    );
}

/// The metric names in a PromQL expression (capsign's and the process ones).
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("capsign_") || w.starts_with("process_"))
        .collect()
}

/// Whether `name` is a sample name of the exposition (a family, or its `_total`, `_bucket`,
/// `_sum` or `_count`).
fn exported(name: &str) -> bool {
    let metrics = capsign::metrics::Metrics::new();
    metrics.families().iter().any(|f| {
        name == f
            || ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(f))
    })
}

/// The Grafana dashboard (`deploy/grafana-capsign.json`) queries only metrics capsign exports,
/// and every query is narrowed by the dashboard's `job` and `instance` variables.
#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana-capsign.json")).unwrap();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance"]);
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no capsign metric");
            for name in names {
                assert!(exported(name), "{name} (in {expr}) is not exported");
                let scoped = format!("{name}{{job=~\"$job\",instance=~\"$instance\"");
                assert!(
                    expr.contains(&scoped),
                    "{name} not narrowed by job and instance in {expr}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} names checked");
}

/// The alerting rules (`deploy/prometheus/capsign-alerts.yml`, tested by `promtool test
/// rules` in CI) name only exported metrics.
#[test]
fn every_alert_names_an_exported_metric() {
    let rules = include_str!("../../deploy/prometheus/capsign-alerts.yml");
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr: "))
        .collect();
    assert!(exprs.len() >= 7, "{exprs:?}");
    for expr in exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} names no capsign metric");
        for name in names {
            assert!(exported(name), "{name} (in {expr}) is not exported");
        }
    }
}
