//! `deploy/prometheus/keygate.rules.yml` and `deploy/grafana/keygate.json` against a real
//! Prometheus (Debian's `prometheus`, which `cargo xtask test` installs) scraping a real
//! keygate: the recording rules produce their series, and every query of the dashboard
//! returns data. `promtool check rules` / `promtool test rules` run in `deploy/check.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping `target` (host:port) every second as job `keygate`, with keygate's
/// rules loaded, its data in `dir`.
fn start_prometheus(dir: &Path, target: &str) -> Prometheus {
    let bin = system_program(&["/usr/bin/prometheus"], "prometheus");
    let rules = repo().join("deploy/prometheus/keygate.rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: keygate\n    static_configs:\n      - targets: ['{target}']\n",
        rules.canonicalize().unwrap().display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The result vector of an instant query (empty when Prometheus is not up yet).
async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let Ok(r) = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: Value = r.json().await.unwrap_or_default();
    if body["status"] != "success" {
        assert!(
            body["errorType"] != "bad_data",
            "Prometheus refused `{expr}`: {body}"
        );
        return Vec::new();
    }
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Traffic of every kind the dashboard shows: tokens issued, tokens verified and refused,
/// an unknown route. (A refused credential is sent once, before: refusals from one address
/// soon meet the failed-attempt limit.)
async fn traffic(s: &TestServer) {
    let token = s.token().await;
    assert_eq!(s.verify(&token).await.status(), 200);
    assert_eq!(s.verify("not-a-token").await.status(), 401);
    let r = s.http.get(s.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_records_keygate_series_and_every_dashboard_query_has_data() {
    let s = TestServer::with_extra("[audit]\npath = \"audit.jsonl\"\n").await;
    assert_eq!(s.login("kg_nobody_wrong").await.status(), 401);
    traffic(&s).await;
    let target = s.url("").trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let prometheus = start_prometheus(dir.path(), &target);
    let http = reqwest::Client::new();

    // The recording rules are evaluated every 15 s: wait for one of their series, sending
    // traffic meanwhile so that every rate has two samples to work from.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        traffic(&s).await;
        let issued = query(&http, &prometheus.url, "keygate:tokens_issued:rate5m").await;
        let p99 = query(
            &http,
            &prometheus.url,
            "keygate:http_request_duration_seconds:p99_5m",
        )
        .await;
        if !issued.is_empty() && !p99.is_empty() {
            assert_eq!(issued[0]["metric"]["job"], "keygate", "{issued:?}");
            assert_eq!(issued[0]["metric"]["grant"], "api_key", "{issued:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recorded series after 90 s; prometheus.log: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/keygate.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{}", panels.len());
    let mut asked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$job", "keygate");
            // A fresh series can take a recording interval to appear: ask again briefly.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let result = query(&http, &prometheus.url, &expr).await;
                if !result.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "panel {:?}: `{expr}` returns no data",
                    panel["title"]
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            asked += 1;
        }
    }
    assert!(asked >= panels.len());

    // What the panels show is what keygate served: one replica up and ready.
    let up = query(&http, &prometheus.url, "sum(up{job=\"keygate\"})").await;
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let ready = query(
        &http,
        &prometheus.url,
        "sum(keygate_ready{job=\"keygate\"})",
    )
    .await;
    assert_eq!(ready[0]["value"][1], "1", "{ready:?}");
    s.stop().await.unwrap();
}
