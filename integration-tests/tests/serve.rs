//! The ranking service end to end: a generated log replayed with training,
//! the service started over its pair state and checkpoints, and requests over
//! loopback HTTP.

mod common;

use common::rliv_bin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rliv::serve::{ServeConfig, Server};
use rliv_learner::checkpoint;
use rliv_learner::embed::PairInput;
use rliv_learner::engine::Engine;
use rliv_state::{PairKey, Store};

/// A small model trained hard enough to learn from pair history.
const TRAIN_ENV: &[(&str, &str)] = &[
    ("RLIV__LEARNER__ID_ROWS", "65536"),
    ("RLIV__LEARNER__FEATURE_ROWS", "4096"),
    ("RLIV__LEARNER__BATCH_SIZE", "256"),
    ("RLIV__LEARNER__UPDATES_PER_TRANSITION", "0.01"),
    ("RLIV__LEARNER__MIN_BUFFER", "2000"),
];

struct Trained {
    _dir: tempfile::TempDir,
    state: PathBuf,
    empty_state: PathBuf,
    checkpoints: PathBuf,
}

fn rliv(args: &[&str]) {
    let mut cmd = Command::new(rliv_bin());
    cmd.args(args);
    for (k, v) in TRAIN_ENV {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run rliv");
    assert!(
        out.status.success(),
        "rliv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a log, replays it with training (once for all tests).
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        let p = |n: &str| dir.path().join(n);
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        rliv(&["gen", "--out", &s(&p("log")), "--exposures", "200000"]);
        rliv(&[
            "replay",
            "-q",
            "--exposures",
            &s(&p("log/exposures.jsonl")),
            "--actions",
            &s(&p("log/actions.jsonl")),
            "--state",
            &s(&p("state")),
            "--train",
            "--checkpoints",
            &s(&p("ck")),
        ]);
        rliv(&[
            "replay",
            "-q",
            "--exposures",
            "/dev/null",
            "--state",
            &s(&p("empty")),
        ]);
        Trained {
            state: p("state"),
            empty_state: p("empty"),
            checkpoints: p("ck"),
            _dir: dir,
        }
    })
}

fn start(state: &Path, checkpoints: &Path, cfg: ServeConfig) -> Server {
    let server = Server::start(
        ServeConfig {
            addr: "127.0.0.1:0".into(),
            reload_interval_ms: 50,
            catch_up_interval_ms: 50,
            ..cfg
        },
        state,
        checkpoints,
    )
    .expect("start");
    let t = std::time::Instant::now();
    while server.state.current().is_none() || server.state.pair_state().is_none() {
        assert!(t.elapsed().as_secs() < 30, "service not ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server
}

struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    /// `POST path` with `body`; returns the status and the body.
    fn post(&mut self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).expect("write");
        self.stream.write_all(body).expect("write");
        self.read_response()
    }

    fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        self.stream.write_all(head.as_bytes()).expect("write");
        self.read_response()
    }

    fn read_response(&mut self) -> (u16, Vec<u8>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut len = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("body");
        (status, body)
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("json body")
}

/// The pair with the most clicks in the state (a long history of clicks and watches).
fn best_pair(state: &Path) -> (PairKey, rliv_state::PairCounters) {
    let store = Store::open_read_only(state).expect("open");
    let mut best: Option<(PairKey, rliv_state::PairCounters)> = None;
    for item in store.scan_pairs(None).expect("scan") {
        let (k, c) = item.expect("pair");
        if best
            .as_ref()
            .is_none_or(|(_, b)| c.counts.clicks > b.counts.clicks)
        {
            best = Some((k, c));
        }
    }
    best.expect("pairs")
}

#[test]
fn a_long_history_of_clicks_and_watches_raises_the_watch_liv() {
    // Why this holds: `rliv gen` gives every user favourite authors with a
    // high affinity, and affinity drives the probability of clicks and the
    // length of watches. A pair with a long history of clicks and long watches
    // is such a favourite pair and keeps earning watch rewards, so the high
    // counter buckets that only such pairs reach learn a high watch value; an
    // empty pair state is every pair's first exposure, whose return is the
    // population's average. The two requests below are identical; only the
    // pair state the service reads differs (the real one, or an empty one).
    let t = trained();
    let (pair, counters) = best_pair(&t.state);
    assert!(
        counters.counts.clicks > 100 && counters.watch_sec_total > 1000.0,
        "{counters:?}"
    );
    let with_history = start(&t.state, &t.checkpoints, ServeConfig::default());
    let without = start(&t.empty_state, &t.checkpoints, ServeConfig::default());
    let body = serde_json::json!({
        "user_id": pair.user_id, "user_feats": [1, 0, 2],
        "candidates": [{"item_id": pair.author_id * 1_000_000 + 1, "author_id": pair.author_id, "item_feats": [3, 1]}]
    })
    .to_string();
    let watch = |server: &Server| {
        let (status, resp) = Client::new(server.addr).post("/rank", body.as_bytes());
        assert_eq!(status, 200);
        json(&resp)["items"][0]["liv"]["watch"]
            .as_f64()
            .expect("watch liv")
    };
    let (a, b) = (watch(&with_history), watch(&without));
    assert!(
        a > b + 1.0,
        "watch LIV with history {a} vs empty pair state {b}"
    );
}

#[test]
fn responses_are_sorted_hold_min_k_n_items_and_equal_the_models_scores() {
    let t = trained();
    let server = start(&t.state, &t.checkpoints, ServeConfig::default());
    let (model, manifest, _) = checkpoint::load_newest_model(&t.checkpoints)
        .expect("load")
        .expect("one");
    let store = Store::open_read_only(&t.state).expect("open");
    let user = best_pair(&t.state).0.user_id;
    let authors: Vec<u64> = (1..=20).collect();
    let feats: Vec<[u32; 2]> = authors
        .iter()
        .map(|a| [(*a % 20) as u32, (*a % 7) as u32])
        .collect();
    let candidates: Vec<serde_json::Value> = authors
        .iter()
        .zip(&feats)
        .map(|(a, f)| serde_json::json!({"item_id": a * 1_000_000 + 2, "author_id": a, "item_feats": f}))
        .collect();
    // Expected: the model's own scores for these inputs and the stored counters.
    let keys: Vec<PairKey> = authors.iter().map(|a| PairKey::new(user, *a)).collect();
    let counts = store.get_pairs(&keys).expect("pairs");
    let uf = [2u32, 1, 0];
    const REQUEST_TS: i64 = 1_700_900_000_000;
    let inputs: Vec<PairInput<'_>> = authors
        .iter()
        .zip(&feats)
        .zip(&counts)
        .map(|((a, f), c)| PairInput {
            user_id: user,
            author_id: *a,
            item_id: a * 1_000_000 + 2,
            user_feats: &uf,
            item_feats: f,
            state: c
                .map(|c| rliv_state::PairSnapshot::from(&c))
                .unwrap_or_default(),
            ts_ms: REQUEST_TS,
        })
        .collect();
    let mut engine = Engine::new("fused", "cpu", 1).expect("engine");
    let expected = model.score(&mut engine, &inputs).expect("score");
    let mut client = Client::new(server.addr);
    for k in [Some(1u64), Some(5), Some(20), Some(50), None] {
        // The request's event time: recency is computed at it, not at the
        // service's clock.
        let mut body = serde_json::json!({"user_id": user, "user_feats": uf,
            "ts_ms": REQUEST_TS, "candidates": candidates});
        if let Some(k) = k {
            body["k"] = k.into();
        }
        let (status, resp) = client.post("/rank", body.to_string().as_bytes());
        assert_eq!(status, 200);
        let resp = json(&resp);
        assert_eq!(resp["model_version"].as_u64(), Some(manifest.model_version));
        let items = resp["items"].as_array().expect("items");
        assert_eq!(
            items.len(),
            k.map_or(20, |k| (k as usize).min(20)),
            "k = {k:?}"
        );
        let scores: Vec<f32> = items
            .iter()
            .map(|i| i["score"].as_f64().expect("score") as f32)
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "not sorted: {scores:?}"
        );
        for item in items {
            let a = item["author_id"].as_u64().expect("author");
            let want = &expected[(a - 1) as usize];
            assert_eq!(
                item["score"].as_f64().map(|s| s as f32),
                Some(want.score),
                "author {a}"
            );
            assert_eq!(
                item["liv"]["watch"].as_f64().map(|s| s as f32),
                want.towers[1],
                "author {a}"
            );
        }
    }
}

#[test]
fn checkpoints_swapped_under_load_fail_no_request_and_change_the_version() {
    let t = trained();
    let dir = tempfile::tempdir().expect("tmp");
    let ck = dir.path().join("ck");
    // Start from a copy of the trained checkpoint.
    let src = checkpoint::list(&t.checkpoints).expect("list")[0].clone();
    let dst = ck.join(src.file_name().expect("name"));
    std::fs::create_dir_all(&dst).expect("mkdir");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "manifest.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).expect("copy");
    }
    let server = start(&t.state, &ck, ServeConfig::default());
    let first = server.state.current().expect("model").version;
    let stop = Arc::new(AtomicBool::new(false));
    let user = best_pair(&t.state).0.user_id;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, stop) = (server.addr, stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(addr);
                let mut versions = std::collections::BTreeSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) || n < 20 {
                    let body = serde_json::json!({"user_id": user + c, "k": 3, "candidates":
                        (1..=50).map(|a| serde_json::json!({"item_id": a, "author_id": a})).collect::<Vec<_>>()});
                    let (status, resp) = client.post("/rank", body.to_string().as_bytes());
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
                    versions.insert(json(&resp)["model_version"].as_u64().expect("version"));
                    n += 1;
                }
                (versions, n)
            })
        })
        .collect();
    // Train a few more updates and write two newer checkpoints while the clients run.
    let (manifest, _, _) = checkpoint::read(&dst, false).expect("manifest");
    let (mut learner, _, _) = checkpoint::resume(&ck, &manifest.config)
        .expect("resume")
        .expect("one");
    let data = rliv_learner::bench::synthetic(2000, 3);
    let batch: Vec<&rliv_learner::buffer::Sample> = data.iter().take(256).collect();
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        learner.train_step(&batch).expect("step");
        checkpoint::save(&mut learner, &ck, serde_json::Value::Null).expect("save");
    }
    let t0 = std::time::Instant::now();
    while server.state.current().map(|s| s.version) != Some(learner.step) {
        assert!(
            t0.elapsed().as_secs() < 5,
            "the new checkpoint was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        let (versions, n) = c.join().expect("client");
        assert!(n >= 20);
        seen.extend(versions);
    }
    assert!(
        seen.contains(&first) && seen.contains(&learner.step),
        "versions seen {seen:?}"
    );
    let (_, metrics) = Client::new(server.addr).get("/metrics");
    let text = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        text.contains(&format!("rliv_model_version {}", learner.step)),
        "{text}"
    );
    assert!(
        text.contains("rliv_rank_errors_total{kind=\"internal\"} 0"),
        "{text}"
    );
}

/// Bodies: valid requests, their mutations, and random JSON.
fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let candidate = (
        any::<u64>(),
        0u64..50,
        proptest::collection::vec(any::<u32>(), 0..3),
    )
        .prop_map(|(i, a, f)| serde_json::json!({"item_id": i, "author_id": a, "item_feats": f}));
    let valid = (
        0u64..5000,
        proptest::option::of(0u64..30),
        proptest::collection::vec(candidate, 0..40),
        proptest::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(|(u, k, c, f)| {
            let mut v = serde_json::json!({"user_id": u, "user_feats": f, "candidates": c});
            if let Some(k) = k {
                v["k"] = k.into();
            }
            v.to_string().into_bytes()
        });
    let mutated = (
        valid.clone(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        any::<usize>(),
    )
        .prop_map(|(mut b, flips, cut)| {
            for (at, byte) in flips {
                let n = b.len();
                b[at % n] = byte;
            }
            let keep = cut % (b.len() + 1);
            if cut % 3 == 0 {
                b.truncate(keep);
            }
            b
        });
    let odd = prop_oneof![
        Just(b"".to_vec()),
        Just(b"null".to_vec()),
        Just(b"[]".to_vec()),
        Just(br#"{"user_id":-1,"candidates":[{"item_id":1,"author_id":1}]}"#.to_vec()),
        Just(br#"{"user_id":1,"k":1e400,"candidates":[{"item_id":1,"author_id":1}]}"#.to_vec()),
        Just(br#"{"user_id":1,"k":NaN,"candidates":[{"item_id":1,"author_id":1}]}"#.to_vec()),
        Just(br#"{"user_id":1.5,"candidates":[{"item_id":1,"author_id":1}]}"#.to_vec()),
        Just(br#"{"user_id":1,"candidates":{"item_id":1}}"#.to_vec()),
        Just(br#"{"user_id":1,"candidates":[{"item_id":"1","author_id":1}]}"#.to_vec()),
        Just(
            br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":1,"item_feats":[-1]}]}"#
                .to_vec()
        ),
        // More candidates than the limit (413).
        Just(
            format!(
                r#"{{"user_id":1,"candidates":[{}]}}"#,
                vec![r#"{"item_id":1,"author_id":1}"#; 1001].join(",")
            )
            .into_bytes()
        ),
        // A body over the size limit (413).
        Just(
            format!(
                r#"{{"user_id":1,"pad":"{}","candidates":[]}}"#,
                "x".repeat(70_000)
            )
            .into_bytes()
        ),
        proptest::collection::vec(any::<u8>(), 0..200),
    ];
    prop_oneof![3 => valid, 5 => mutated, 2 => odd]
}

#[test]
fn random_and_mutated_bodies_get_400_or_413_never_5xx() {
    let t = trained();
    let server = start(
        &t.state,
        &t.checkpoints,
        ServeConfig {
            max_body_bytes: 64 * 1024,
            ..ServeConfig::default()
        },
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(400));
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&body_strategy(), |body| {
            // A connection per body: after a 413 for size the server may close it.
            let (status, resp) = Client::new(server.addr).post("/rank", &body);
            *seen.borrow_mut().entry(status).or_default() += 1;
            prop_assert!(
                matches!(status, 200 | 400 | 413),
                "status {status} for {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            let v: serde_json::Value = serde_json::from_slice(&resp).expect("a JSON body");
            if status != 200 {
                prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
            }
            Ok(())
        })
        .expect("property");
    let seen = seen.into_inner();
    // The generator must reach every class of answer.
    for s in [200u16, 400, 413] {
        assert!(
            seen.get(&s).copied().unwrap_or(0) > 0,
            "no {s} among {seen:?}"
        );
    }
    let (status, _) = Client::new(server.addr).get("/healthz");
    assert_eq!(status, 200);
}

/// Writes `head` and `body` whole before reading anything (as urllib does),
/// then reads the response to the end of the connection. Returns the status,
/// the header lines (lowercased) and the body.
fn write_all_then_read(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write the head");
    stream.write_all(body).expect("write the whole body");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response to the end");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, response[split + 4..].to_vec())
}

#[test]
fn an_oversized_body_written_whole_before_reading_gets_the_413() {
    let dir = tempfile::tempdir().expect("tmp");
    // A limit whose 3x is more than loopback TCP buffers between the
    // client and the service hold (4 MiB of send buffer at most here): had
    // the service answered without reading, the client would still be
    // writing when the connection is closed, and see a reset.
    let server = Server::start(
        ServeConfig {
            addr: "127.0.0.1:0".into(),
            max_body_bytes: 4 << 20,
            ..ServeConfig::default()
        },
        &dir.path().join("state"),
        &dir.path().join("ck"),
    )
    .expect("start");
    let limit = server.state.cfg.max_body_bytes;
    let rank_head = |extra: &str| format!("POST /rank HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    let refused = |(status, head, body): (u16, String, Vec<u8>), what: &str| {
        assert_eq!(status, 413, "{what}: {head}");
        assert!(head.contains("connection: close"), "{what}: {head}");
        let error = json(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("serve.max_body_bytes"), "{what}: {error}");
    };
    // 3x the limit with a Content-Length, written whole before reading.
    let body = vec![b'x'; 3 * limit];
    refused(
        write_all_then_read(
            server.addr,
            &rank_head(&format!("Content-Length: {}\r\n", body.len())),
            &body,
        ),
        "3x the limit",
    );
    // The same without a declared length (chunked).
    let mut chunked = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    refused(
        write_all_then_read(
            server.addr,
            &rank_head("Transfer-Encoding: chunked\r\n"),
            &chunked,
        ),
        "chunked, 3x the limit",
    );
    // Declared far over what is worth discarding: answered before any body.
    refused(
        write_all_then_read(
            server.addr,
            &rank_head(&format!("Content-Length: {}\r\n", 100 * limit)),
            b"",
        ),
        "declared 100x the limit",
    );
    // A client waiting for "100 Continue" gets the 413 instead.
    refused(
        write_all_then_read(
            server.addr,
            &rank_head(&format!(
                "Content-Length: {}\r\nExpect: 100-continue\r\n",
                2 * limit
            )),
            b"",
        ),
        "Expect: 100-continue",
    );
    // The service goes on answering (no model in this test: 503).
    let (status, resp) = Client::new(server.addr).post(
        "/rank",
        br#"{"user_id":1,"candidates":[{"item_id":1,"author_id":1}]}"#,
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&resp));
    let (_, metrics) = Client::new(server.addr).get("/metrics");
    let text = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        text.contains("rliv_rank_errors_total{kind=\"body_too_large\"} 4"),
        "{text}"
    );
}

/// `rliv serve` as a child process, its stderr collected.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<std::sync::Mutex<String>>,
}

impl ServeProcess {
    fn start(t: &Trained) -> ServeProcess {
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        let mut child = Command::new(rliv_bin())
            .args([
                "serve",
                "--state",
                &s(&t.state),
                "--checkpoints",
                &s(&t.checkpoints),
                "--addr",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rliv serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = log2.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
                drop(l);
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("rliv serve did not say where it listens");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("address");
            }
        };
        let p = ServeProcess { child, addr, log };
        // Ready: a model is loaded.
        let t0 = std::time::Instant::now();
        loop {
            let (status, body) = Client::new(p.addr).get("/healthz");
            if status == 200 && json(&body)["model_version"].as_u64().is_some() {
                break;
            }
            assert!(t0.elapsed().as_secs() < 60, "no model loaded");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        p
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `secs` for the process to exit.
    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                t0.elapsed().as_secs() < secs,
                "rliv serve still running {secs}s after the signal:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A /rank request whose body is half sent: in flight in the service.
    fn request_in_flight(&self, user: u64) -> (Client, Vec<u8>) {
        let body = serde_json::json!({"user_id": user, "k": 2, "candidates":
            (1..=10).map(|a| serde_json::json!({"item_id": a, "author_id": a})).collect::<Vec<_>>()})
        .to_string()
        .into_bytes();
        let mut client = Client::new(self.addr);
        let head = format!(
            "POST /rank HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        client.stream.write_all(head.as_bytes()).expect("write");
        let half = body.len() / 2;
        client.stream.write_all(&body[..half]).expect("write");
        // Let the service take the request in hand.
        std::thread::sleep(std::time::Duration::from_millis(500));
        (client, body[half..].to_vec())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drains_and_exits_0_on(sig: &str, name: &str) {
    let t = trained();
    let mut serve = ServeProcess::start(t);
    let user = best_pair(&t.state).0.user_id;
    let (mut client, rest) = serve.request_in_flight(user);
    serve.signal(sig);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Draining: still running, no longer accepting.
    assert!(
        serve.exited().is_none(),
        "rliv serve exited with a request in flight:\n{}",
        serve.log()
    );
    assert!(
        TcpStream::connect(serve.addr).is_err(),
        "new connections are still accepted after {name}"
    );
    client.stream.write_all(&rest).expect("write the rest");
    let (status, resp) = client.read_response();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(json(&resp)["items"].as_array().map(Vec::len), Some(2));
    let status = serve.wait_exit(10);
    let log = serve.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains(name) && log.contains("serve: stopped"),
        "{log}"
    );
}

#[test]
fn serve_drains_the_requests_in_flight_and_exits_0_on_sigterm() {
    drains_and_exits_0_on("-TERM", "SIGTERM");
}

#[test]
fn serve_drains_the_requests_in_flight_and_exits_0_on_sigint() {
    drains_and_exits_0_on("-INT", "SIGINT");
}

#[test]
fn a_second_signal_ends_a_drain_at_once() {
    let t = trained();
    let mut serve = ServeProcess::start(t);
    let (_client, _rest) = serve.request_in_flight(1);
    serve.signal("-TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(serve.exited().is_none(), "{}", serve.log());
    serve.signal("-TERM");
    let status = serve.wait_exit(5);
    let log = serve.log();
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(log.contains("SIGTERM again: exiting now"), "{log}");
}
