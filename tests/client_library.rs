//! `lockstep::client` against fake servers: threads on 127.0.0.1 that speak NDJSON and answer
//! from a script. Each test tells what the servers do and what the client must make of it:
//! silence, redirects to a newer term's leader, stale answers, refusals, timeouts.
//!
//! Every fake server holds the client to protocol version 2 as a real one does: a request
//! without `"version":2` is answered `unsupported_version`, and a lock request whose `secret`
//! is not its client's (see [`secret_of`]) is answered `unauthorized`, before the script sees
//! it.
//!
//! The fake servers stop when dropped, also when a test panics. No test asserts on timing.

use lockstep::client::{Check, Client, ClientOptions, Credential, Error, Preempt, Release};
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
        let act = match version_2_refusal(&request) {
            Some(refusal) => Act::Say(vec![refusal]),
            None => (script.lock().expect("not poisoned"))(&request),
        };
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

/// The secret the fake cluster issues with client id `client`: 32 hex digits that differ from
/// client to client.
fn secret_of(client: u64) -> String {
    format!(
        "{:032x}",
        u128::from(client).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

fn credential_of(client: u64) -> Credential {
    format!("{client}:{}", secret_of(client))
        .parse()
        .expect("a well-formed credential")
}

/// What a version 2 server says to a request that a version 2 client must never send: one
/// without `"version":2`, or a lock request without its client's secret.
fn version_2_refusal(request: &Value) -> Option<Value> {
    if request["version"] != 2 {
        let mut refusal = refusal(request, "unsupported_version", 0);
        refusal["version"] = json!(2);
        return Some(refusal);
    }
    if request["op"] == "hello" {
        return None;
    }
    let client = request["client"].as_u64().unwrap_or(0);
    (request["secret"] != json!(secret_of(client))).then(|| refusal(request, "unauthorized", 1))
}

fn term(request: &Value) -> u64 {
    request["term"].as_u64().unwrap_or(0)
}

fn welcome(request: &Value, client: u64, term: u64) -> Value {
    json!({"seq": seq(request), "ok": "welcome", "term": term, "client": client,
           "secret": secret_of(client), "version": 2, "nonce": request["nonce"], "index": 3})
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
        ..ClientOptions::default()
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
    assert_eq!(
        client.credential(),
        Some(credential_of(7)),
        "keeps the secret"
    );
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
    for request in &requests {
        assert_eq!(request["version"], 2, "every request states version 2");
    }
    for request in &requests[1..] {
        assert_eq!(request["client"], 7);
        assert_eq!(
            request["secret"],
            json!(secret_of(7)),
            "every lock request carries the welcome's secret"
        );
    }
    assert_eq!(requests[0].get("secret"), None, "hello has none to send");
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
        credential: Some(credential_of(7)),
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
    assert!(
        silent
            .requests()
            .iter()
            .all(|r| r["secret"] == json!(secret_of(7))),
        "a given credential's secret goes with every request"
    );
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
    // The client tries the closed port again and again until this runs out (so the test takes
    // this long): long enough for at least one attempt to be refused on a loaded machine,
    // where 300 ms once was not.
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(1),
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

/// One client operation, its answer dropped.
type Operation = Box<dyn Fn(&mut Client) -> Result<(), Error>>;

#[test]
fn refusals_of_who_is_asking_and_of_a_reused_seq_are_surfaced_with_advice_not_retried() {
    let cases = [
        (
            "unknown_client",
            ErrorCode::UnknownClient,
            "never issued this client id",
        ),
        (
            "unauthorized",
            ErrorCode::Unauthorized,
            "pass the ID:SECRET",
        ),
        (
            "seq_reused",
            ErrorCode::SeqReused,
            "give every process its own client",
        ),
    ];
    for (name, code, advice) in cases {
        // Three servers: a permanent refusal from the first must not be tried on the others.
        let refusing = FakeServer::start(registering(2, move |request| {
            let mut refusal = refusal(request, name, 2);
            refusal["message"] = json!(format!("{name} from the fake"));
            Act::Say(vec![refusal])
        }));
        let others: Vec<FakeServer> = (0..2)
            .map(|_| {
                FakeServer::start(|request| {
                    Act::Say(vec![answer(request, "released", 2, json!({}))])
                })
            })
            .collect();
        // A generous attempt time-out: on a loaded machine the fake's answer can take longer
        // than quick()'s 100 ms, and a client that gave up on it would rightly try the others.
        let patient = ClientOptions {
            attempt_timeout: Duration::from_secs(2),
            ..quick()
        };
        let mut client = client(&[&refusing, &others[0], &others[1]], patient);
        let operations: [(&str, Operation); 3] = [
            (
                "preempt",
                Box::new(|c: &mut Client| c.preempt("a").map(drop)),
            ),
            (
                "release",
                Box::new(|c: &mut Client| c.release("a").map(drop)),
            ),
            (
                "check",
                Box::new(|c: &mut Client| c.check("a", Consistency::Linearizable).map(drop)),
            ),
        ];
        for (op, operation) in operations {
            let error = operation(&mut client).expect_err("refused for good");
            let Error::Rejected {
                code: ref got,
                ref message,
            } = error
            else {
                panic!("{name} on {op}: expected a rejection, got {error:?}")
            };
            assert_eq!(*got, code, "{op}");
            assert_eq!(message, &format!("{name} from the fake"));
            let shown = error.to_string();
            assert!(
                shown.contains(&format!("refused the request ({name})")) && shown.contains(advice),
                "{name} on {op}: the error should say what to do: {shown}"
            );
            assert!(
                !shown.contains(&secret_of(7)),
                "never shows the secret: {shown}"
            );
        }
        let sent: Vec<String> = refusing.ops().into_iter().map(|(op, _)| op).collect();
        assert_eq!(
            sent,
            ["hello", "preempt", "release", "check"],
            "{name}: one attempt per operation, no retries"
        );
        for other in &others {
            assert!(other.requests().is_empty(), "{name}: not retried elsewhere");
        }
    }
}

#[test]
fn a_client_acting_as_a_given_credential_sends_its_secret_and_no_hello() {
    let server = FakeServer::start(|request| {
        Act::Say(vec![answer(request, "granted", 1, json!({"token": 4}))])
    });
    let options = ClientOptions {
        credential: Some(credential_of(12)),
        ..quick()
    };
    let mut acting = client(&[&server], options);
    assert_eq!(acting.client_id(), Some(ClientId(12)));
    assert_eq!(acting.preempt("a"), Ok(Preempt::Granted { token: 4 }));
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "no hello: {requests:?}");
    assert_eq!(requests[0]["client"], 12);
    assert_eq!(requests[0]["secret"], json!(secret_of(12)));
    // Another client's secret with this id is what a forger would send: the fake refuses it
    // as a real server does, and the client says so instead of retrying.
    let forged: Credential = format!("12:{}", secret_of(13))
        .parse()
        .expect("well-formed");
    let options = ClientOptions {
        credential: Some(forged),
        ..quick()
    };
    let mut forger = client(&[&server], options);
    assert!(matches!(
        forger.release("a"),
        Err(Error::Rejected {
            code: ErrorCode::Unauthorized,
            ..
        })
    ));
    assert_eq!(server.requests().len(), 2, "one attempt, not retried");
}

// ----- the command line against a fake cluster of one -----

/// A one-server fake cluster: an in-memory lock table behind the protocol, in term 1.
fn lock_table_server() -> FakeServer {
    let mut next_client = 1u64;
    let mut index = 3u64;
    let mut locks: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    // Each client's session TTL as its hello asked (`lockstep lock` keeps it alive).
    let mut ttls: std::collections::BTreeMap<u64, Value> = Default::default();
    FakeServer::start(move |request| {
        index += 1;
        let lock = request["lock"].as_str().unwrap_or("").to_string();
        let client = request["client"].as_u64().unwrap_or(0);
        let reply = match request["op"].as_str() {
            Some("hello") => {
                next_client += 1;
                ttls.insert(next_client - 1, request["ttl_ms"].clone());
                welcome(request, next_client - 1, 1)
            }
            Some("keepalive") => {
                let ttl_ms = ttls.get(&client).cloned().unwrap_or(Value::Null);
                let mut reply = answer(request, "kept_alive", 1, json!({}));
                if !ttl_ms.is_null() {
                    reply["ttl_ms"] = ttl_ms;
                }
                reply
            }
            Some("preempt") => match locks.get(&lock) {
                Some(&(owner, _)) if owner != client => {
                    answer(request, "held_by", 1, json!({"owner": owner}))
                }
                Some(&(_, token)) => answer(request, "granted", 1, json!({"token": token})),
                None => {
                    locks.insert(lock, (client, index));
                    answer(request, "granted", 1, json!({"token": index}))
                }
            },
            // A fake without a line: a wait for a held lock runs out at once.
            Some("acquire") => match locks.get(&lock) {
                Some(&(owner, _)) if owner != client && request["wait_ms"] == 0 => {
                    answer(request, "held_by", 1, json!({"owner": owner}))
                }
                Some(&(owner, _)) if owner != client => answer(request, "timeout", 1, json!({})),
                Some(&(_, token)) => answer(request, "granted", 1, json!({"token": token})),
                None => {
                    locks.insert(lock, (client, index));
                    answer(request, "granted", 1, json!({"token": index}))
                }
            },
            Some("cancel") => answer(request, "not_waiting", 1, json!({})),
            Some("release") => match locks.get(&lock) {
                Some(&(owner, _)) if owner == client => {
                    locks.remove(&lock);
                    answer(request, "released", 1, json!({}))
                }
                _ => answer(request, "not_owner", 1, json!({})),
            },
            _ => match locks.get(&lock) {
                Some(&(owner, token)) => {
                    answer(request, "owner", 1, json!({"owner": owner, "token": token}))
                }
                None => answer(request, "free", 1, json!({})),
            },
        };
        Act::Say(vec![reply])
    })
}

fn lockstep(args: &[&str]) -> std::process::Output {
    lockstep_with_env(args, &[])
}

/// Runs the binary with `env` added to an environment without any `LOCKSTEP_CLIENT` the test
/// runner may have, so that every run starts from the same place.
fn lockstep_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .env_remove("LOCKSTEP_CLIENT")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn holder(server: &FakeServer, lock: &str) -> Check {
    let mut checker = client(&[server], quick());
    checker
        .check(lock, Consistency::Local)
        .expect("the fake answers checks")
}

/// A scratch file removed when the test ends, pass or fail.
struct ScratchFile(std::path::PathBuf);

impl ScratchFile {
    fn new(name: &str, text: &str, mode: u32) -> ScratchFile {
        let path = std::env::temp_dir().join(format!(
            "lockstep-client-library-{name}-{}",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write a scratch file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("chmod the scratch file");
        }
        #[cfg(not(unix))]
        let _ = mode;
        ScratchFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_client_command_says_what_happened_and_exits_0_1_or_2() {
    let server = lock_table_server();
    let at = server.address.as_str();
    let taken = lockstep(&["client", "--servers", at, "preempt", "printer"]);
    assert_eq!(taken.status.code(), Some(0), "{}", stderr(&taken));
    let said = stdout(&taken);
    assert!(
        said.contains("granted: you hold `printer` with fencing token"),
        "{said}"
    );
    assert!(said.contains("client id 1"), "{said}");
    assert!(
        said.contains("--client 1:SECRET release printer"),
        "names the id, not the secret: {said}"
    );
    assert!(!said.contains(&secret_of(1)), "no secret on stdout: {said}");
    // The credential is handed over once, on stderr, with the way to use it.
    let told = stderr(&taken);
    let credential = format!("1:{}", secret_of(1));
    assert_eq!(told.matches(&credential).count(), 2, "{told}");
    assert!(told.contains(&format!("--client {credential}")), "{told}");
    assert!(
        told.contains(&format!("LOCKSTEP_CLIENT={credential}")),
        "{told}"
    );
    assert!(told.contains("Keep it secret"), "{told}");
    let refused = lockstep(&["client", "--servers", at, "preempt", "printer"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("held: client 1 holds `printer`"));
    let not_owner = lockstep(&["client", "--servers", at, "release", "printer"]);
    assert_eq!(not_owner.status.code(), Some(1));
    assert!(
        stdout(&not_owner).contains("pass the credential of the client that took the lock"),
        "hints at the credential: {}",
        stdout(&not_owner)
    );
    let checked = lockstep(&["client", "--servers", at, "--json", "check", "printer"]);
    assert_eq!(checked.status.code(), Some(0));
    let object: Value = serde_json::from_str(&stdout(&checked)).expect("one JSON object");
    assert_eq!(object["result"], "owner");
    assert_eq!(object["owner"], 1);
    assert!(
        !stdout(&checked).contains(&secret_of(object["client"].as_u64().unwrap_or(0))),
        "--json never carries the secret: {}",
        stdout(&checked)
    );
    let released = lockstep(&[
        "client",
        "--servers",
        at,
        "--client",
        &credential,
        "--json",
        "release",
        "printer",
    ]);
    assert_eq!(released.status.code(), Some(0), "{}", stderr(&released));
    let object: Value = serde_json::from_str(&stdout(&released)).expect("one JSON object");
    assert_eq!(object["result"], "released");
    assert_eq!(object["client"], 1);
    assert!(!stdout(&released).contains(&secret_of(1)));
    assert!(
        !stderr(&released).contains(&secret_of(1)),
        "a run given its credential does not print it again: {}",
        stderr(&released)
    );
    assert_eq!(holder(&server, "printer"), Check::Free);
}

#[test]
fn the_credential_comes_from_the_flag_the_environment_or_a_file() {
    let server = lock_table_server();
    let at = server.address.as_str();
    let mut owner = client(&[&server], quick());
    assert!(matches!(owner.preempt("a"), Ok(Preempt::Granted { .. })));
    assert!(matches!(owner.preempt("b"), Ok(Preempt::Granted { .. })));
    assert!(matches!(owner.preempt("c"), Ok(Preempt::Granted { .. })));
    let id = owner.client_id().expect("registered").0;
    let credential = format!("{id}:{}", secret_of(id));
    // The environment.
    let by_env = lockstep_with_env(
        &["client", "--servers", at, "release", "a"],
        &[("LOCKSTEP_CLIENT", &credential)],
    );
    assert_eq!(by_env.status.code(), Some(0), "{}", stderr(&by_env));
    assert!(
        !stderr(&by_env).contains("registered"),
        "{}",
        stderr(&by_env)
    );
    // A file of one line, its newline included.
    let file = ScratchFile::new("credential", &format!("{credential}\n"), 0o600);
    let by_file = lockstep(&[
        "client",
        "--servers",
        at,
        "--client-file",
        file.path(),
        "release",
        "b",
    ]);
    assert_eq!(by_file.status.code(), Some(0), "{}", stderr(&by_file));
    assert!(stderr(&by_file).is_empty(), "{}", stderr(&by_file));
    // The flag wins over the environment.
    let stranger = format!("{}:{}", id + 50, secret_of(id + 50));
    let by_flag = lockstep_with_env(
        &[
            "client",
            "--servers",
            at,
            "--client",
            &credential,
            "release",
            "c",
        ],
        &[("LOCKSTEP_CLIENT", &stranger)],
    );
    assert_eq!(by_flag.status.code(), Some(0), "{}", stderr(&by_flag));
    for lock in ["a", "b", "c"] {
        assert_eq!(holder(&server, lock), Check::Free, "{lock} released");
    }
    // An empty variable counts as unset: a new client is registered.
    let empty = lockstep_with_env(
        &["client", "--servers", at, "check", "a"],
        &[("LOCKSTEP_CLIENT", "")],
    );
    assert_eq!(empty.status.code(), Some(0), "{}", stderr(&empty));
    assert!(
        stderr(&empty).contains("registered as client"),
        "{}",
        stderr(&empty)
    );
    // A file others can read still works, with a warning.
    let open_file = ScratchFile::new("open-credential", &credential, 0o644);
    let warned = lockstep(&[
        "client",
        "--servers",
        at,
        "--client-file",
        open_file.path(),
        "check",
        "a",
    ]);
    assert_eq!(warned.status.code(), Some(0), "{}", stderr(&warned));
    #[cfg(unix)]
    assert!(stderr(&warned).contains("chmod 600"), "{}", stderr(&warned));
}

#[test]
fn the_client_command_refuses_bad_input_with_exit_2() {
    let long = "x".repeat(257);
    for args in [
        vec!["client", "--servers", "", "preempt", "a"],
        vec!["client", "--servers", "localhost", "preempt", "a"],
        vec!["client", "--servers", "127.0.0.1:1", "preempt", ""],
        vec!["client", "--servers", "127.0.0.1:1", "preempt", &long],
        vec![
            "client",
            "--servers",
            "127.0.0.1:1",
            "--timeout",
            "soon",
            "check",
            "a",
        ],
        // The old flag is gone: a credential has a secret.
        vec![
            "client",
            "--servers",
            "127.0.0.1:1",
            "--client-id",
            "7",
            "release",
            "a",
        ],
    ] {
        let output = lockstep(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains("error"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

/// Flags, environment, and what the refusal must say.
type CredentialCase = (Vec<String>, Vec<(&'static str, String)>, &'static str);

#[test]
fn a_malformed_credential_is_refused_with_exit_2_naming_where_it_came_from_but_not_its_secret() {
    let secret = "9c0ffee5deadbeef0123456789abcdzz";
    let cases: Vec<CredentialCase> = vec![
        (
            vec!["--client".into(), "7".into()],
            vec![],
            "--client: a client credential is ID:SECRET",
        ),
        (
            vec!["--client".into(), format!("0:{}", secret_of(1))],
            vec![],
            "--client: client ids start at 1",
        ),
        (
            vec!["--client".into(), format!("seven:{}", secret_of(1))],
            vec![],
            "--client: the client id before the colon must be a whole number",
        ),
        (
            vec!["--client".into(), format!("7:{secret}")],
            vec![],
            "--client: a client secret is made of hex digits",
        ),
        (
            vec!["--client".into(), "7:9c0ffee5".into()],
            vec![],
            "--client: a client secret is 32 hex digits; this one has 8 characters",
        ),
        (
            vec![],
            vec![("LOCKSTEP_CLIENT", format!("7:{secret}"))],
            "LOCKSTEP_CLIENT: a client secret is made of hex digits",
        ),
        (
            vec![
                "--client-file".into(),
                "/nonexistent/lockstep-credential".into(),
            ],
            vec![],
            "--client-file /nonexistent/lockstep-credential: cannot open it",
        ),
    ];
    for (flags, env, fragment) in cases {
        let mut args: Vec<&str> = vec!["client", "--servers", "127.0.0.1:1"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["release", "a"]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for json in [false, true] {
            let mut args = args.clone();
            if json {
                args.insert(3, "--json");
            }
            let output = lockstep_with_env(&args, &env);
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            let said = format!("{}{}", stdout(&output), stderr(&output));
            assert!(
                said.contains(fragment),
                "{args:?}: {said}\nshould say: {fragment}"
            );
            assert!(
                !said.contains("deadbeef"),
                "{args:?} quotes the secret: {said}"
            );
            assert!(!said.contains("panicked"), "{said}");
        }
    }
    let files = [
        (
            "two-lines",
            format!("7:{}\n8:{}\n", secret_of(7), secret_of(8)),
            "holds 2 lines",
        ),
        ("empty", "\n".to_string(), "it is empty"),
        ("bad-secret", format!("7:{secret}\n"), "hex digits"),
    ];
    for (name, text, fragment) in files {
        let file = ScratchFile::new(name, &text, 0o600);
        let output = lockstep(&[
            "client",
            "--servers",
            "127.0.0.1:1",
            "--client-file",
            file.path(),
            "release",
            "a",
        ]);
        assert_eq!(output.status.code(), Some(2), "{name}");
        let said = stderr(&output);
        assert!(
            said.contains("--client-file") && said.contains(fragment),
            "{name}: {said}"
        );
        assert!(
            !said.contains("deadbeef") && !said.contains(&secret_of(7)),
            "{said}"
        );
    }
    // Both flags at once is a usage error.
    let both = lockstep(&[
        "client",
        "--servers",
        "127.0.0.1:1",
        "--client",
        &format!("7:{}", secret_of(7)),
        "--client-file",
        "/dev/null",
        "release",
        "a",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

#[test]
fn the_help_says_where_a_credential_may_come_from_and_why_not_the_command_line() {
    for command in ["client", "lock"] {
        let output = lockstep(&[command, "--help"]);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        for fragment in [
            "--client <ID:SECRET>",
            "--client-file <PATH>",
            "LOCKSTEP_CLIENT",
            "visible to other users in `ps`",
        ] {
            assert!(
                help.contains(fragment),
                "{command} --help lacks {fragment}:\n{help}"
            );
        }
        assert!(!help.contains("--client-id"), "{help}");
    }
}

#[test]
fn lock_runs_the_command_with_the_token_and_releases_whatever_its_exit_status() {
    let server = lock_table_server();
    let at = server.address.as_str();
    let script = r#"echo "$LOCKSTEP_FENCING_TOKEN $LOCKSTEP_LOCK $LOCKSTEP_CLIENT_ID"; exit 3"#;
    let output = lockstep(&["lock", "job", "--servers", at, "--", "sh", "-c", script]);
    assert_eq!(output.status.code(), Some(3), "the command's own exit code");
    let said = stdout(&output);
    let fields: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{said}");
    assert!(fields[0].parse::<u64>().is_ok(), "a fencing token: {said}");
    assert_eq!(&fields[1..], ["job", "1"]);
    assert_eq!(
        stderr(&output)
            .matches(&format!("--client 1:{}", secret_of(1)))
            .count(),
        1,
        "the new credential, once: {}",
        stderr(&output)
    );
    assert_eq!(
        holder(&server, "job"),
        Check::Free,
        "released after the command"
    );
    let missing = lockstep(&["lock", "job", "--servers", at, "--", "no-such-command-here"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(stderr(&missing).contains("command not found"));
    assert_eq!(
        holder(&server, "job"),
        Check::Free,
        "released after a failed start"
    );
}

#[test]
fn lock_keeps_the_secret_from_the_command() {
    let server = lock_table_server();
    let at = server.address.as_str();
    let mut registrar = client(&[&server], quick());
    let id = registrar.register().expect("registers").0;
    let credential = format!("{id}:{}", secret_of(id));
    let script = r#"echo "id=$LOCKSTEP_CLIENT_ID credential=${LOCKSTEP_CLIENT:-none}""#;
    let output = lockstep_with_env(
        &["lock", "job", "--servers", at, "--", "sh", "-c", script],
        &[("LOCKSTEP_CLIENT", &credential)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), format!("id={id} credential=none"));
    assert!(
        !stderr(&output).contains(&secret_of(id)),
        "a given credential is not printed: {}",
        stderr(&output)
    );
    assert_eq!(holder(&server, "job"), Check::Free);
}

#[test]
fn lock_gives_up_after_wait_naming_the_holder() {
    let server = lock_table_server();
    let mut other = client(&[&server], quick());
    assert!(matches!(other.preempt("job"), Ok(Preempt::Granted { .. })));
    let output = lockstep(&[
        "lock",
        "job",
        "--servers",
        &server.address,
        "--wait",
        "200ms",
        "--",
        "true",
    ]);
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("client 1 holds it"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn lock_releases_when_it_is_terminated_and_reports_the_signal() {
    let server = lock_table_server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "lock",
            "job",
            "--servers",
            &server.address,
            "--",
            "sleep",
            "30",
        ])
        .env_remove("LOCKSTEP_CLIENT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary runs");
    // Wait (bounded) until the command runs under the lock.
    let mut held = false;
    for _ in 0..500 {
        if matches!(holder(&server, "job"), Check::Owner { .. }) {
            held = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !held {
        let _ = child.kill();
        panic!("lockstep lock never took the lock");
    }
    // Let the child start before the signal arrives.
    std::thread::sleep(Duration::from_millis(100));
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = child.wait().expect("lockstep exits");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "sleep died of SIGTERM"
    );
    assert_eq!(
        holder(&server, "job"),
        Check::Free,
        "released on the way out"
    );
}

#[test]
fn the_tcp_bench_measures_pairs_against_a_cluster() {
    let server = lock_table_server();
    let output = lockstep(&[
        "bench",
        "--servers",
        &server.address,
        "--clients",
        "2",
        "--locks",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let figures: Value = serde_json::from_str(&stdout(&output)).expect("JSON figures");
    assert!(figures["pairs_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(
        figures["latency"]["preempt_refused"]["count"], 0,
        "uncontended"
    );
    let contended = lockstep(&[
        "bench",
        "--servers",
        &server.address,
        "--clients",
        "3",
        "--duration",
        "1s",
        "--contended",
    ]);
    assert_eq!(contended.status.code(), Some(0), "{}", stderr(&contended));
    assert!(stdout(&contended).contains("hand-offs/s"));
}

#[test]
fn the_tcp_bench_with_no_server_to_reach_exits_two_naming_the_address() {
    // A port nobody listens on: bound, then closed.
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("an address").to_string()
    };
    let output = lockstep(&[
        "bench",
        "--servers",
        &address,
        "--clients",
        "2",
        "--duration",
        "1s",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("no client could register") && message.contains(&address),
        "{message}"
    );
}

#[test]
fn a_silent_acquire_is_resent_with_its_seq_and_a_full_queue_is_waited_out_without_a_new_place() {
    // The first attempt is parked forever (a leader that lost its leadership), the second
    // finds the line full, the third is granted: one seq throughout, so one place at most.
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let server = FakeServer::start(registering(2, move |request| {
        match (
            request["op"].as_str(),
            counted.fetch_add(1, Ordering::Relaxed),
        ) {
            (Some("acquire"), 0) => Act::Silence,
            (Some("acquire"), 1) => {
                let mut full = refusal(request, "queue_full", 2);
                full["waiters_max"] = json!(1024);
                Act::Say(vec![full])
            }
            (Some("acquire"), _) => {
                Act::Say(vec![answer(request, "granted", 2, json!({"token": 21}))])
            }
            _ => Act::Silence,
        }
    }));
    let mut client = client(&[&server], quick());
    assert_eq!(
        client.acquire("printer", Duration::from_secs(30)),
        Ok(lockstep::client::Acquire::Granted { token: 21 })
    );
    let acquires: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|request| request["op"] == "acquire")
        .collect();
    assert_eq!(acquires.len(), 3, "{acquires:?}");
    for acquire in &acquires {
        assert_eq!(seq(acquire), seq(&acquires[0]), "a retry reuses the seq");
        assert_eq!(acquire["wait_ms"], 30_000);
        assert_eq!(acquire["lock"], "printer");
    }
}

#[test]
fn an_acquire_that_times_out_or_is_cancelled_says_so_and_a_cancel_hears_not_waiting() {
    let server = FakeServer::start(registering(2, |request| match request["op"].as_str() {
        Some("acquire") if request["lock"] == "door" => {
            Act::Say(vec![answer(request, "timeout", 2, json!({}))])
        }
        Some("acquire") => Act::Say(vec![answer(request, "cancelled", 2, json!({}))]),
        Some("cancel") => Act::Say(vec![answer(request, "not_waiting", 2, json!({}))]),
        _ => Act::Silence,
    }));
    let mut client = client(&[&server], quick());
    let wait = Duration::from_secs(2);
    assert_eq!(
        client.acquire("door", wait),
        Ok(lockstep::client::Acquire::TimedOut)
    );
    assert_eq!(
        client.acquire("printer", wait),
        Ok(lockstep::client::Acquire::Cancelled)
    );
    assert_eq!(
        client.cancel("printer"),
        Ok(lockstep::client::Cancel::NotWaiting)
    );
    let too_long = client.acquire("printer", Duration::from_secs(3_601));
    assert!(
        matches!(&too_long, Err(Error::InvalidInput(message)) if message.contains("3600000 ms")),
        "{too_long:?}"
    );
}
