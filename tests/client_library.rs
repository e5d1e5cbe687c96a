//! `lockstep::client` against fake servers: threads on 127.0.0.1 that speak NDJSON and answer
//! from a script. Each test tells what the servers do and what the client must make of it:
//! silence, redirects to a newer term's leader, stale answers, refusals, timeouts.
//!
//! The fake servers stop when dropped, also when a test panics. No test asserts on timing.

use lockstep::client::{Check, Client, ClientOptions, Error, Preempt, Release};
use lockstep::net::protocol::ErrorCode;
use lockstep::node::{ClientId, Consistency};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a fake server does with one request line.
enum Act {
    /// Write these lines (each without its newline).
    Say(Vec<Value>),
    /// Answer nothing.
    Silence,
    /// Write this raw text (to break the protocol).
    Raw(&'static str),
}

type Script = Box<dyn FnMut(&Value) -> Act + Send>;

struct FakeServer {
    address: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Value>>>,
    connections: Arc<AtomicUsize>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(script: impl FnMut(&Value) -> Act + Send + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let address = listener.local_addr().expect("an address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let accept_thread = {
            let (stop, requests, connections) =
                (stop.clone(), requests.clone(), connections.clone());
            std::thread::spawn(move || {
                let mut handles = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let (stop, requests, script) =
                                (stop.clone(), requests.clone(), script.clone());
                            handles.push(std::thread::spawn(move || {
                                serve(stream, &stop, &requests, &script)
                            }));
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => break,
                    }
                }
                for handle in handles {
                    let _ = handle.join();
                }
            })
        };
        FakeServer {
            address,
            stop,
            requests,
            connections,
            accept_thread: Some(accept_thread),
        }
    }

    /// Every request line received so far, parsed.
    fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("not poisoned").clone()
    }

    fn ops(&self) -> Vec<(String, u64)> {
        self.requests()
            .iter()
            .map(|r| (r["op"].as_str().unwrap_or("").to_string(), seq(r)))
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    stop: &AtomicBool,
    requests: &Mutex<Vec<Value>>,
    script: &Mutex<Script>,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {}
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => return,
        }
        let request: Value = serde_json::from_str(&line).expect("the client sends JSON");
        line.clear();
        requests.lock().expect("not poisoned").push(request.clone());
        let act = (script.lock().expect("not poisoned"))(&request);
        let written = match act {
            Act::Say(replies) => replies
                .iter()
                .try_for_each(|reply| writeln!(writer, "{reply}")),
            Act::Silence => Ok(()),
            Act::Raw(text) => writer.write_all(text.as_bytes()),
        };
        if written.is_err() {
            return;
        }
    }
}

fn seq(request: &Value) -> u64 {
    request["seq"].as_u64().expect("every request has a seq")
}

fn term(request: &Value) -> u64 {
    request["term"].as_u64().unwrap_or(0)
}

fn welcome(request: &Value, client: u64, term: u64) -> Value {
    json!({"seq": seq(request), "ok": "welcome", "term": term, "client": client, "version": 1,
           "nonce": request["nonce"], "index": 3})
}

fn answer(request: &Value, ok: &str, term: u64, extra: Value) -> Value {
    let mut reply = json!({"seq": seq(request), "ok": ok, "term": term, "index": 10});
    for (key, value) in extra.as_object().expect("an object") {
        reply[key] = value.clone();
    }
    reply
}

fn refusal(request: &Value, code: &str, term: u64) -> Value {
    json!({"seq": seq(request), "error": code, "term": term, "message": "scripted"})
}

/// Answers hello with client 7 in `term`; everything else with `then`.
fn registering(
    term: u64,
    mut then: impl FnMut(&Value) -> Act + Send + 'static,
) -> impl FnMut(&Value) -> Act + Send + 'static {
    move |request| match request["op"].as_str() {
        Some("hello") => Act::Say(vec![welcome(request, 7, term)]),
        _ => then(request),
    }
}

fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        attempt_timeout: Duration::from_millis(100),
        operation_timeout: Duration::from_secs(3),
        error_backoff: Duration::from_millis(10),
        client_id: None,
    }
}

fn client(servers: &[&FakeServer], options: ClientOptions) -> Client {
    let addresses = servers.iter().map(|s| s.address.clone()).collect();
    Client::new(addresses, options).expect("valid servers")
}

#[test]
fn a_client_registers_once_then_runs_operations_over_one_connection() {
    let server = FakeServer::start(registering(2, |request| match request["op"].as_str() {
        Some("preempt") => Act::Say(vec![answer(request, "granted", 2, json!({"token": 10}))]),
        Some("release") => Act::Say(vec![answer(request, "released", 2, json!({}))]),
        _ => Act::Say(vec![answer(request, "free", 2, json!({}))]),
    }));
    let mut client = client(&[&server], quick());
    assert_eq!(client.client_id(), None, "registration is lazy");
    assert_eq!(client.preempt("a"), Ok(Preempt::Granted { token: 10 }));
    assert_eq!(client.client_id(), Some(ClientId(7)));
    assert_eq!(client.release("a"), Ok(Release::Released));
    assert_eq!(
        client.check("a", Consistency::Linearizable),
        Ok(Check::Free)
    );
    let requests = server.requests();
    let ops: Vec<_> = requests.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["hello", "preempt", "release", "check"]);
    let seqs: Vec<u64> = requests.iter().map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs rise: {seqs:?}");
    assert_eq!(requests[1]["client"], 7);
    assert_eq!(requests[1]["term"], 2, "sends the highest term seen");
    assert_eq!(requests[1]["seen_index"], 3, "and the highest index seen");
    assert_eq!(requests[2]["seen_index"], 10);
    assert_eq!(requests[3]["consistency"], "linearizable");
    assert_eq!(
        server.connections.load(Ordering::Relaxed),
        1,
        "one connection serves every operation"
    );
}

#[test]
fn silence_sends_the_same_seq_to_the_next_server() {
    // s1 registers the client but never answers a preempt; s2 does.
    let silent = FakeServer::start(registering(2, |_| Act::Silence));
    let answering = FakeServer::start(|request| {
        Act::Say(vec![answer(request, "granted", 2, json!({"token": 12}))])
    });
    let mut client = client(&[&silent, &answering], quick());
    assert_eq!(client.preempt("a"), Ok(Preempt::Granted { token: 12 }));
    let [hello, preempt] = &silent.ops()[..] else {
        panic!("s1 saw {:?}", silent.ops())
    };
    assert_eq!(hello.0, "hello");
    assert_eq!(preempt.0, "preempt");
    assert_eq!(
        answering.ops(),
        [("preempt".to_string(), preempt.1)],
        "the retry reuses the seq: exactly-once"
    );
}

#[test]
fn unavailable_and_overloaded_back_off_then_try_the_next_server_with_the_same_seq() {
    let busy = FakeServer::start(registering(2, |request| {
        Act::Say(vec![refusal(request, "overloaded", 2)])
    }));
    let electing = FakeServer::start(|request| Act::Say(vec![refusal(request, "unavailable", 3)]));
    let fine =
        FakeServer::start(|request| Act::Say(vec![answer(request, "released", 3, json!({}))]));
    let mut client = client(&[&busy, &electing, &fine], quick());
    assert_eq!(client.release("a"), Ok(Release::Released));
    let seqs: Vec<u64> = [&busy, &electing, &fine]
        .iter()
        .flat_map(|s| s.requests())
        .filter(|r| r["op"] == "release")
        .map(|r| seq(&r))
        .collect();
    assert_eq!(seqs.len(), 3, "one attempt per server");
    assert!(seqs.iter().all(|&s| s == seqs[0]));
    assert_eq!(
        term(&fine.requests()[0]),
        3,
        "the term of an unavailable counts as seen"
    );
}

#[test]
fn not_leader_with_a_newer_term_is_adopted_and_the_same_seq_goes_to_the_named_leader() {
    let leader = FakeServer::start(|request| {
        if term(request) == 5 {
            Act::Say(vec![answer(request, "granted", 5, json!({"token": 40}))])
        } else {
            Act::Say(vec![refusal(request, "unavailable", 5)])
        }
    });
    let leader_address = leader.address.clone();
    // The follower knows term 5 and its leader; the client still believes in term 2.
    let follower = FakeServer::start(registering(2, move |request| {
        let mut redirect = refusal(request, "not_leader", 5);
        redirect["leader"] = json!(3);
        redirect["leader_address"] = json!(leader_address);
        Act::Say(vec![redirect])
    }));
    // Only the follower is listed: the leader's address comes from the redirect.
    let mut client = client(&[&follower], quick());
    assert_eq!(client.preempt("a"), Ok(Preempt::Granted { token: 40 }));
    assert_eq!(client.term(), 5);
    assert_eq!(client.servers().len(), 2, "the leader's address was learnt");
    let to_follower: Vec<_> = follower
        .requests()
        .into_iter()
        .filter(|r| r["op"] == "preempt")
        .collect();
    let to_leader = leader.requests();
    assert_eq!(to_follower.len(), 1);
    assert_eq!(term(&to_follower[0]), 2);
    assert_eq!(to_leader.len(), 1, "resent at once, without waiting");
    assert_eq!(term(&to_leader[0]), 5, "with the adopted term");
    assert_eq!(seq(&to_leader[0]), seq(&to_follower[0]), "and the same seq");
}

#[test]
fn a_write_ignores_answers_from_a_term_older_than_its_attempt() {
    // The server answers each preempt twice: first a stale `granted` from term 2 (an earlier
    // attempt's answer, forwarded late), then the current attempt's `held_by` in term 3.
    let server = FakeServer::start(registering(3, |request| {
        Act::Say(vec![
            answer(request, "granted", 2, json!({"token": 99})),
            answer(request, "held_by", 3, json!({"owner": 9})),
        ])
    }));
    let mut client = client(&[&server], quick());
    assert_eq!(
        client.preempt("a"),
        Ok(Preempt::HeldBy { owner: ClientId(9) })
    );
}

#[test]
fn a_check_is_not_held_to_the_term_rule() {
    let server = FakeServer::start(registering(3, |request| {
        Act::Say(vec![answer(request, "free", 2, json!({}))])
    }));
    let mut client = client(&[&server], quick());
    assert_eq!(client.check("a", Consistency::Local), Ok(Check::Free));
    assert_eq!(client.term(), 3, "a lower term never lowers the client's");
}

#[test]
fn answers_to_other_seqs_and_answers_that_do_not_fit_are_ignored() {
    let server = FakeServer::start(registering(2, |request| {
        let mut earlier = answer(request, "granted", 2, json!({"token": 1}));
        earlier["seq"] = json!(seq(request) - 1);
        let mut later = answer(request, "granted", 2, json!({"token": 2}));
        later["seq"] = json!(seq(request) + 5);
        Act::Say(vec![
            earlier,
            later,
            answer(request, "free", 2, json!({})),
            answer(request, "released", 2, json!({})),
        ])
    }));
    let mut client = client(&[&server], quick());
    assert_eq!(client.release("a"), Ok(Release::Released));
}

#[test]
fn an_operation_with_no_answer_times_out_and_says_whether_its_effect_is_unknown() {
    let silent = FakeServer::start(|_| Act::Silence);
    let options = ClientOptions {
        operation_timeout: Duration::from_millis(400),
        client_id: Some(ClientId(7)),
        ..quick()
    };
    let mut client = client(&[&silent], options);
    let Err(Error::TimedOut { effect_unknown, .. }) = client.preempt("a") else {
        panic!("a silent cluster times out")
    };
    assert!(
        effect_unknown,
        "a preempt was sent: it may have been applied"
    );
    let Err(Error::TimedOut { effect_unknown, .. }) = client.check("a", Consistency::Local) else {
        panic!("a silent cluster times out")
    };
    assert!(!effect_unknown, "a check changes nothing");
    assert!(silent.requests().iter().all(|r| r["op"] != "hello"));
    let seqs: Vec<u64> = silent.requests().iter().map(seq).collect();
    assert!(seqs.len() >= 2, "retried: {seqs:?}");
    assert!(
        seqs[0] > 1_577_836_800_000_000,
        "an existing id's seqs start at the clock in microseconds"
    );
}

#[test]
fn no_listening_server_is_reported_with_every_address_tried() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    };
    let options = ClientOptions {
        operation_timeout: Duration::from_millis(300),
        ..quick()
    };
    let mut client = Client::new(vec![closed.clone()], options).expect("valid");
    match client.preempt("a") {
        Err(Error::NoServerReachable { tried }) => {
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].address, closed);
        }
        other => panic!("expected NoServerReachable, got {other:?}"),
    }
}

#[test]
fn bad_request_and_stale_request_are_surfaced_not_retried() {
    let server = FakeServer::start(registering(2, |request| match request["op"].as_str() {
        Some("preempt") => Act::Say(vec![refusal(request, "bad_request", 2)]),
        _ => Act::Say(vec![refusal(request, "stale_request", 2)]),
    }));
    let mut client = client(&[&server], quick());
    match client.preempt("a") {
        Err(Error::Rejected { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert_eq!(message, "scripted");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(
        client.release("a"),
        Err(Error::Rejected {
            code: ErrorCode::StaleRequest,
            ..
        })
    ));
    assert_eq!(
        server.requests().len(),
        3,
        "hello, preempt, release: no retries"
    );
}

#[test]
fn a_server_that_breaks_the_protocol_is_an_error_not_a_panic() {
    for raw in [
        "not json\n",
        "{\"seq\":2,\"ok\":\"granted\",\"index\":1}\n",
        "[1,2,3]\n",
        "{\"error\":\"bad_request\",\"message\":\"cannot read your line\"}\n",
    ] {
        let server = FakeServer::start(registering(2, move |_| Act::Raw(raw)));
        let mut client = client(&[&server], quick());
        match client.preempt("a") {
            Err(Error::Protocol {
                server: address, ..
            }) => assert_eq!(address, server.address),
            other => panic!("{raw:?}: expected a protocol error, got {other:?}"),
        }
    }
}
