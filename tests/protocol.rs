//! The client wire protocol, told as what a client types and what comes back: every request
//! and reply on the wire, every way a line can be wrong, the line framing under awkward reads,
//! the `nc` session printed in docs/PROTOCOL.md, checked line by line against the codec, and
//! the `status` request a server answers about itself.

use lockstep::net::protocol::{
    Answer, ErrorCode, ErrorReply, LINE_BYTES_MAX, LOCK_NAME_BYTES_MAX, LineDecoder, LineEvent,
    PROTOCOL_VERSION, ServerStatus, WireError, WireErrorKind, WireOp, WireReply, WireRequest,
    decode_reply, decode_request, encode_error, encode_reply, encode_reply_with, encode_request,
    encode_wire_reply, parse_role, role_name,
};
use lockstep::node::{
    Claim, ClientId, ClientReply, ClientRequest, ClientSecret, Consistency, Mode, Operation,
    Outcome, ReplyBody, RequestBody, Role, ServerId, ServiceError,
};

const PROTOCOL_MD: &str = include_str!("../docs/PROTOCOL.md");

fn text(line: &[u8]) -> &str {
    std::str::from_utf8(line).expect("the codec writes UTF-8")
}

/// The secret the welcome of these tests hands out, as it reads on the wire.
const SECRET_HEX: &str = "5f3a9c0e7b2d4186a1c3e5f7092b4d6e";

fn secret() -> ClientSecret {
    ClientSecret::parse_hex(SECRET_HEX).expect("32 hex digits")
}

fn client_op(seq: u64, seen_index: u64, client: u64, op: Operation) -> ClientRequest {
    ClientRequest {
        seq,
        seen_index,
        term: 0,
        body: RequestBody::Op {
            client: ClientId(client),
            secret: Some(secret()),
            op,
        },
    }
}

/// Replies in the tests come from a server in term 2, unless they say otherwise.
const TERM: u64 = 2;

fn node_reply(seq: u64, index: u64, body: ReplyBody) -> ClientReply {
    ClientReply {
        seq,
        index,
        term: TERM,
        body,
    }
}

fn in_term(term: u64, reply: ClientReply) -> ClientReply {
    ClientReply { term, ..reply }
}

/// The front end's lookup from server id to client address: it knows s1 only.
fn addresses(id: ServerId) -> Option<String> {
    (id == ServerId(1)).then(|| "10.0.0.1:7100".to_string())
}

fn outcome(seq: u64, index: u64, outcome: Outcome) -> ClientReply {
    node_reply(seq, index, ReplyBody::Outcome(outcome))
}

/// The error a server sends back for a line: the response a person would see.
fn refusal(line: &str) -> String {
    let error = decode_request(line.as_bytes()).expect_err("the line should be refused");
    text(&encode_error(&ErrorReply::from(error))).to_string()
}

// ----- requests -----

#[test]
fn a_hello_goes_out_with_the_protocol_version_and_asks_the_node_for_an_id() {
    let hello = WireRequest {
        seq: 1,
        seen_index: 0,
        term: 0,
        op: WireOp::Hello {
            nonce: 42,
            ttl_ms: None,
        },
    };
    let line = encode_request(&hello);
    assert_eq!(
        text(&line),
        "{\"seq\":1,\"op\":\"hello\",\"version\":2,\"nonce\":42}\n"
    );
    let decoded = decode_request(&line).expect("a hello decodes");
    assert_eq!(decoded, hello);
    assert_eq!(
        decoded.into_client_request(),
        Some(ClientRequest {
            seq: 1,
            seen_index: 0,
            term: 0,
            body: RequestBody::Hello {
                nonce: 42,
                ttl_ms: None
            },
        })
    );
}

#[test]
fn every_lock_request_round_trips_and_reaches_the_node_as_the_same_operation() {
    let client = ClientId(7);
    let cases = [
        (
            WireOp::Preempt {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                claim: Claim::EXCLUSIVE,
            },
            concat!(
                r#"{"seq":2,"op":"preempt","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","version":2,"seen_index":12}"#
            ),
            Operation::Preempt {
                lock: "a".into(),
                claim: Claim::EXCLUSIVE,
            },
        ),
        (
            WireOp::Release {
                client,
                secret: Some(secret()),
                lock: "a".into(),
            },
            concat!(
                r#"{"seq":2,"op":"release","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","version":2,"seen_index":12}"#
            ),
            Operation::Release { lock: "a".into() },
        ),
        (
            WireOp::Check {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                consistency: Consistency::Local,
            },
            concat!(
                r#"{"seq":2,"op":"check","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","consistency":"local","version":2,"seen_index":12}"#
            ),
            Operation::Check {
                lock: "a".into(),
                consistency: Consistency::Local,
            },
        ),
        (
            WireOp::Check {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                consistency: Consistency::Linearizable,
            },
            concat!(
                r#"{"seq":2,"op":"check","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","consistency":"linearizable","version":2,"seen_index":12}"#
            ),
            Operation::Check {
                lock: "a".into(),
                consistency: Consistency::Linearizable,
            },
        ),
        (
            WireOp::Acquire {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                wait_ms: 30_000,
                claim: Claim::EXCLUSIVE,
            },
            concat!(
                r#"{"seq":2,"op":"acquire","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","wait_ms":30000,"version":2,"seen_index":12}"#
            ),
            Operation::Acquire {
                lock: "a".into(),
                wait_ms: 30_000,
                claim: Claim::EXCLUSIVE,
            },
        ),
        (
            WireOp::Cancel {
                client,
                secret: Some(secret()),
                lock: "a".into(),
            },
            concat!(
                r#"{"seq":2,"op":"cancel","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","version":2,"seen_index":12}"#
            ),
            Operation::Cancel { lock: "a".into() },
        ),
        (
            WireOp::Preempt {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                claim: Claim::SHARED,
            },
            concat!(
                r#"{"seq":2,"op":"preempt","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","mode":"shared","version":2,"seen_index":12}"#
            ),
            Operation::Preempt {
                lock: "a".into(),
                claim: Claim::SHARED,
            },
        ),
        (
            WireOp::Acquire {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                wait_ms: 30_000,
                claim: Claim::semaphore(3),
            },
            concat!(
                r#"{"seq":2,"op":"acquire","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","wait_ms":30000,"mode":"shared","permits":3,"version":2,"#,
                r#""seen_index":12}"#
            ),
            Operation::Acquire {
                lock: "a".into(),
                wait_ms: 30_000,
                claim: Claim::semaphore(3),
            },
        ),
        (
            // A writer that drains a semaphore: exclusive, so `mode` is written out.
            WireOp::Preempt {
                client,
                secret: Some(secret()),
                lock: "a".into(),
                claim: Claim {
                    mode: Mode::Exclusive,
                    permits: Some(3),
                },
            },
            concat!(
                r#"{"seq":2,"op":"preempt","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""lock":"a","mode":"exclusive","permits":3,"version":2,"seen_index":12}"#
            ),
            Operation::Preempt {
                lock: "a".into(),
                claim: Claim {
                    mode: Mode::Exclusive,
                    permits: Some(3),
                },
            },
        ),
    ];
    for (op, expected_line, node_op) in cases {
        let request = WireRequest {
            seq: 2,
            seen_index: 12,
            term: 0,
            op,
        };
        let line = encode_request(&request);
        assert_eq!(text(&line), format!("{expected_line}\n"));
        let decoded = decode_request(&line).expect("an encoded request decodes");
        assert_eq!(decoded, request);
        assert_eq!(
            decoded.into_client_request(),
            Some(client_op(2, 12, 7, node_op)),
            "{expected_line}"
        );
    }
}

#[test]
fn a_request_carries_the_highest_term_its_client_has_seen_to_the_node() {
    let request = WireRequest {
        seq: 2,
        seen_index: 12,
        term: 5,
        op: WireOp::Release {
            client: ClientId(7),
            secret: Some(secret()),
            lock: "a".into(),
        },
    };
    let line = encode_request(&request);
    assert_eq!(
        text(&line),
        format!(
            "{{\"seq\":2,\"op\":\"release\",\"client\":7,\"secret\":\"{SECRET_HEX}\",\"lock\":\"a\",\
             \"version\":2,\"seen_index\":12,\"term\":5}}\n"
        )
    );
    let decoded = decode_request(&line).expect("a request with a term decodes");
    assert_eq!(decoded, request);
    let node = decoded
        .into_client_request()
        .expect("a release is for the node");
    assert_eq!(node.term, 5, "the node sees the term the client sent");
    assert_eq!(WireRequest::try_from(node), Ok(request.clone()));
    // Leaving the term out is term 0: a client that predates terms still parses.
    let old = decode_request(br#"{"seq":2,"op":"release","client":7,"lock":"a","version":2}"#)
        .expect("no term is fine");
    assert_eq!(old.term, 0);
    // A term is a whole number like every other.
    let error =
        decode_request(br#"{"seq":2,"op":"release","client":7,"lock":"a","version":2,"term":-1}"#)
            .expect_err("a negative term");
    assert!(
        error
            .message
            .contains("`term` must be the highest term you have seen"),
        "{}",
        error.message
    );
}

#[test]
fn encoding_into_a_reused_buffer_appends_the_same_line() {
    let request = WireRequest {
        seq: 9,
        seen_index: 0,
        term: 3,
        op: WireOp::Preempt {
            client: ClientId(7),
            secret: Some(secret()),
            lock: "printer".into(),
            claim: Claim::EXCLUSIVE,
        },
    };
    let mut buffer = b"left over".to_vec();
    buffer.clear();
    lockstep::net::protocol::encode_request_into(&request, &mut buffer);
    assert_eq!(buffer, encode_request(&request));
    lockstep::net::protocol::encode_request_into(&request, &mut buffer);
    assert_eq!(
        buffer,
        [encode_request(&request), encode_request(&request)].concat()
    );
}

#[test]
fn a_person_typing_leaves_out_what_has_a_default() {
    let hello =
        decode_request(br#"{"seq":1,"op":"hello","version":2}"#).expect("a bare hello is fine");
    assert_eq!(
        hello.into_client_request(),
        Some(ClientRequest {
            seq: 1,
            seen_index: 0,
            term: 0,
            body: RequestBody::Hello {
                nonce: 0,
                ttl_ms: None
            },
        })
    );
    let check = format!(
        r#"{{"op":"check","lock":"a","secret":"{SECRET_HEX}","version":2,"client":7,"seq":4}}"#
    );
    let check = decode_request(check.as_bytes())
        .expect("field order does not matter, consistency defaults to local");
    let local = Operation::Check {
        lock: "a".into(),
        consistency: Consistency::Local,
    };
    assert_eq!(check.into_client_request(), Some(client_op(4, 0, 7, local)));
    // Whitespace, and the carriage return a terminal may send, are JSON whitespace.
    let spaced =
        b"  { \"seq\" : 5 , \"op\" : \"release\", \"client\": 7, \"lock\": \"a\", \"version\": 2 }\r\n";
    let release = decode_request(spaced).expect("spaces and CRLF are fine");
    assert_eq!(release.seq, 5);
}

#[test]
fn the_node_clients_requests_survive_the_wire_unchanged() {
    let requests = [
        ClientRequest {
            seq: 0,
            seen_index: 0,
            term: 0,
            body: RequestBody::Hello {
                nonce: u64::MAX,
                ttl_ms: None,
            },
        },
        client_op(
            u64::MAX,
            u64::MAX,
            u64::MAX,
            Operation::Preempt {
                lock: "ü".into(),
                claim: Claim::EXCLUSIVE,
            },
        ),
        client_op(
            3,
            0,
            1,
            Operation::Release {
                lock: "with \"quotes\"\nand a newline".into(),
            },
        ),
    ];
    for request in requests {
        let wire = WireRequest::try_from(request.clone()).expect("every request here has a line");
        let line = encode_request(&wire);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back = decode_request(&line).expect("decodes");
        assert_eq!(back.into_client_request(), Some(request));
    }
}

// ----- replies -----

#[test]
fn every_reply_the_node_gives_encodes_to_the_documented_line() {
    let cases = [
        (
            node_reply(
                1,
                3,
                ReplyBody::Welcome {
                    nonce: 0,
                    client: ClientId(7),
                    secret: secret(),
                },
            ),
            concat!(
                r#"{"seq":1,"ok":"welcome","term":2,"client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""version":2,"nonce":0,"index":3}"#
            ),
        ),
        (
            outcome(2, 12, Outcome::Granted { token: 12 }),
            r#"{"seq":2,"ok":"granted","term":2,"token":12,"index":12}"#,
        ),
        (
            outcome(2, 15, Outcome::HeldBy { owner: ClientId(9) }),
            r#"{"seq":2,"ok":"held_by","term":2,"owner":9,"index":15}"#,
        ),
        (
            outcome(3, 16, Outcome::Released),
            r#"{"seq":3,"ok":"released","term":2,"index":16}"#,
        ),
        (
            outcome(3, 16, Outcome::NotOwner),
            r#"{"seq":3,"ok":"not_owner","term":2,"index":16}"#,
        ),
        (
            outcome(4, 16, Outcome::Free),
            r#"{"seq":4,"ok":"free","term":2,"index":16}"#,
        ),
        (
            outcome(
                4,
                16,
                Outcome::Owner {
                    owner: ClientId(7),
                    token: 12,
                },
            ),
            r#"{"seq":4,"ok":"owner","term":2,"owner":7,"token":12,"index":16}"#,
        ),
    ];
    for (reply, expected) in cases {
        let line = encode_reply(&reply);
        assert_eq!(text(&line), format!("{expected}\n"));
        let decoded = decode_reply(&line).expect("an encoded reply decodes");
        assert_eq!(decoded, WireReply::from(&reply), "{expected}");
        assert_eq!(decoded.seq(), Some(reply.seq));
    }
}

#[test]
fn the_nodes_refusals_say_what_to_do_and_carry_no_index() {
    let cases = [
        (
            ServiceError::Unavailable,
            "unavailable",
            "retry the same seq",
        ),
        (ServiceError::Overloaded, "overloaded", "back off"),
        (ServiceError::StaleRequest, "stale_request", "higher seq"),
    ];
    for (error, code, advice) in cases {
        let line = encode_reply(&node_reply(6, 40, ReplyBody::Error(error)));
        let line = text(&line);
        assert!(
            line.starts_with(&format!(
                r#"{{"seq":6,"error":"{code}","term":2,"message":""#
            )),
            "{line}"
        );
        assert!(line.contains(advice), "{line} should say {advice:?}");
        assert!(!line.contains("\"index\""), "{line}");
        let Ok(WireReply::Error(decoded)) = decode_reply(line.as_bytes()) else {
            panic!("{line} decodes as an error");
        };
        assert_eq!(decoded.code.name(), code);
        assert_eq!(decoded.seq, Some(6));
        assert_eq!(
            decoded.term,
            Some(TERM),
            "the node's refusals carry its term"
        );
    }
    let unavailable = encode_reply(&node_reply(
        6,
        40,
        ReplyBody::Error(ServiceError::Unavailable),
    ));
    assert_eq!(
        text(&unavailable),
        "{\"seq\":6,\"error\":\"unavailable\",\"term\":2,\"message\":\"this server cannot serve \
         the request \
         now (it knows no leader, or its replica is behind your seen_index); retry the same seq \
         after a pause, here or on another server\"}\n"
    );
}

#[test]
fn a_write_with_an_old_term_is_told_the_new_term_and_where_its_leader_listens() {
    let refusal = |leader| {
        let error = ServiceError::NotLeader { leader, term: 5 };
        in_term(5, node_reply(2, 0, ReplyBody::Error(error)))
    };
    let line = encode_reply_with(&refusal(Some(ServerId(1))), &addresses);
    assert_eq!(
        text(&line),
        "{\"seq\":2,\"error\":\"not_leader\",\"term\":5,\"leader\":1,\"leader_address\":\
         \"10.0.0.1:7100\",\"message\":\"the request did not name the current leader's term; \
         resend the same seq with term 5 to server 1 at `10.0.0.1:7100`\"}\n"
    );
    let Ok(WireReply::Error(decoded)) = decode_reply(&line) else {
        panic!("a not_leader decodes")
    };
    assert_eq!(decoded.term, Some(5));
    assert_eq!(
        decoded.code,
        ErrorCode::NotLeader {
            leader: Some(ServerId(1)),
            leader_address: Some("10.0.0.1:7100".into()),
        }
    );
    // A leader whose address the front end does not know: named by id only.
    let line = encode_reply_with(&refusal(Some(ServerId(3))), &addresses);
    assert!(
        text(&line).contains(r#""leader":3,"message""#),
        "{}",
        text(&line)
    );
    assert!(!text(&line).contains("leader_address"));
    // No leader known (an election under way): still `not_leader`, because the client must
    // learn the term to make progress, but without `leader`.
    let line = encode_reply_with(&refusal(None), &addresses);
    assert!(!text(&line).contains(r#""leader""#), "{}", text(&line));
    let Ok(WireReply::Error(decoded)) = decode_reply(&line) else {
        panic!("a not_leader without a leader decodes")
    };
    assert_eq!(
        decoded.code,
        ErrorCode::NotLeader {
            leader: None,
            leader_address: None
        }
    );
    assert!(decoded.message.contains("no leader is known here yet"));
    // Without a lookup (plain `encode_reply`) the id is still named.
    let plain = encode_reply(&refusal(Some(ServerId(1))));
    assert!(!text(&plain).contains("leader_address"));
    for reply in [
        ErrorReply::not_leader(2, 5, Some(ServerId(3)), Some("10.0.0.3:7100".into())),
        ErrorReply::not_leader(2, 5, None, None),
    ] {
        let decoded = decode_reply(&encode_error(&reply)).expect("a redirect decodes");
        assert_eq!(decoded, WireReply::Error(reply));
    }
}

#[test]
fn a_node_refusal_of_a_bad_request_says_why_in_few_words() {
    let reason = "the lock name is 300 bytes, above the limit of 256";
    let error = ServiceError::BadRequest {
        reason: reason.into(),
    };
    let line = encode_reply(&node_reply(4, 0, ReplyBody::Error(error)));
    let Ok(WireReply::Error(decoded)) = decode_reply(&line) else {
        panic!("a bad_request decodes")
    };
    assert_eq!(decoded.code, ErrorCode::BadRequest);
    assert_eq!(decoded.seq, Some(4));
    assert!(decoded.message.contains(reason), "{}", decoded.message);
    let long = ServiceError::BadRequest {
        reason: "x".repeat(100_000),
    };
    let line = encode_reply(&node_reply(4, 0, ReplyBody::Error(long)));
    assert!(line.len() < 1_000, "a long reason is cut short");
}

#[test]
fn replies_without_a_term_come_from_servers_that_predate_terms_and_read_as_term_0() {
    let reply = decode_reply(br#"{"seq":2,"ok":"granted","token":12,"index":12}"#)
        .expect("no term is fine");
    assert_eq!(reply.term(), 0);
    let refusal =
        decode_reply(br#"{"seq":2,"error":"overloaded","message":"m"}"#).expect("no term is fine");
    assert_eq!(refusal.term(), 0);
    // The front end's own refusals of a line carry no term: they never reached the node.
    let front_end = encode_error(&ErrorReply::from(WireError::line_too_long()));
    assert!(!text(&front_end).contains("term"));
}

#[test]
fn every_response_kind_survives_a_round_trip() {
    let replies = [
        WireReply::Ok {
            seq: u64::MAX,
            index: u64::MAX,
            term: u64::MAX,
            answer: Answer::Welcome {
                client: ClientId(u64::MAX),
                nonce: u64::MAX,
                secret: ClientSecret::from_bytes([0xff; 16]),
            },
        },
        WireReply::Ok {
            seq: 0,
            index: 0,
            term: 0,
            answer: Answer::Outcome(Outcome::Free),
        },
        WireReply::Error(ErrorReply {
            seq: None,
            term: None,
            code: ErrorCode::BadRequest,
            message: "no seq to echo".into(),
        }),
        WireReply::Error(ErrorReply {
            seq: Some(1),
            term: None,
            code: ErrorCode::UnsupportedVersion { supported: 2 },
            message: "versions".into(),
        }),
        WireReply::Error(ErrorReply {
            seq: Some(1),
            term: Some(7),
            code: ErrorCode::StaleRequest,
            message: "quotes \" and\nnewlines".into(),
        }),
        WireReply::Error(ErrorReply {
            seq: Some(4),
            term: Some(7),
            code: ErrorCode::QueueFull { waiters_max: 1_024 },
            message: "full".into(),
        }),
    ];
    // The blocking acquire's answers, each as the line it is and back.
    for (outcome, ok) in [
        (
            Outcome::Granted { token: 21 },
            r#""ok":"granted","term":3,"token":21"#,
        ),
        (Outcome::TimedOut, r#""ok":"timeout","term":3"#),
        (Outcome::Cancelled, r#""ok":"cancelled","term":3"#),
        (Outcome::NotWaiting, r#""ok":"not_waiting","term":3"#),
    ] {
        let reply = WireReply::Ok {
            seq: 5,
            index: 21,
            term: 3,
            answer: Answer::Outcome(outcome),
        };
        let line = encode_wire_reply(&reply);
        assert_eq!(text(&line), format!("{{\"seq\":5,{ok},\"index\":21}}\n"));
        assert_eq!(decode_reply(&line), Ok(reply));
    }
    for reply in replies {
        let line = encode_wire_reply(&reply);
        assert_eq!(decode_reply(&line), Ok(reply));
    }
}

#[test]
fn a_client_reads_past_fields_a_newer_server_adds_but_not_past_broken_replies() {
    let extended = br#"{"seq":2,"ok":"granted","token":12,"index":12,"lease_ms":5000,"lock":[]}"#;
    assert_eq!(
        decode_reply(extended),
        Ok(WireReply::Ok {
            seq: 2,
            index: 12,
            term: 0,
            answer: Answer::Outcome(Outcome::Granted { token: 12 }),
        })
    );
    let broken: [(&[u8], &str); 7] = [
        (
            br#"{"seq":2,"ok":"granted","token":12,"index":12,"term":-2}"#,
            "malformed reply",
        ),
        (b"granted", "malformed reply"),
        (
            br#"{"seq":2,"index":12}"#,
            "exactly one of `ok` and `error`",
        ),
        (
            br#"{"seq":2,"ok":"free","error":"overloaded"}"#,
            "exactly one of",
        ),
        (
            br#"{"seq":2,"ok":"granted","index":12}"#,
            "`granted` needs `token`",
        ),
        (br#"{"seq":2,"ok":"free"}"#, "needs `index`"),
        (
            br#"{"seq":2,"ok":"maybe","index":1}"#,
            "unknown ok value `maybe`",
        ),
    ];
    for (line, fragment) in broken {
        let error = decode_reply(line).expect_err("a broken reply is refused");
        assert_eq!(error.kind, WireErrorKind::Malformed);
        assert!(error.message.contains(fragment), "{}", error.message);
    }
}

// ----- bad requests -----

#[test]
fn every_bad_line_gets_a_bad_request_that_says_what_is_wrong() {
    let long_lock = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
    let too_long_lock =
        format!(r#"{{"seq":9,"version":2,"op":"preempt","client":7,"lock":"{long_lock}"}}"#);
    // (what the client sent, the seq the error echoes, what the message must say)
    let cases: Vec<(&str, Option<u64>, &str)> = vec![
        ("", None, "empty line"),
        ("   \r", None, "empty line"),
        ("{\"seq\":1,", None, "not valid JSON: EOF while parsing"),
        (
            "hello",
            None,
            "not valid JSON: expected value at line 1 column 1",
        ),
        ("[1,2]", None, "a request is one JSON object"),
        (r#"{"op":"hello"}"#, None, "missing `seq`"),
        (
            r#"{"seq":-1,"op":"hello"}"#,
            None,
            "got the negative number -1",
        ),
        (r#"{"seq":"1","op":"hello"}"#, None, "`seq` must be"),
        (r#"{"seq":1.5,"op":"hello"}"#, None, "got the number 1.5"),
        (
            r#"{"seq":1e30,"op":"hello"}"#,
            None,
            "whole number from 0 to 18446744073709551615",
        ),
        (
            r#"{"seq":3,"version":2}"#,
            Some(3),
            "missing `op` (one of hello, keepalive, preempt, release, check, acquire, cancel, status, watch or unwatch)",
        ),
        (
            r#"{"seq":3,"version":2,"op":7}"#,
            Some(3),
            "`op` must be one of",
        ),
        (
            r#"{"seq":3,"version":2,"op":"lock","lock":"a"}"#,
            Some(3),
            "unknown op `lock`",
        ),
        (
            r#"{"seq":3,"version":2,"op":"acquire","client":7,"lock":"a"}"#,
            Some(3),
            "acquire needs `wait_ms` (how long to wait in the lock's queue, in milliseconds (0 \
             tries once))",
        ),
        (
            r#"{"seq":3,"version":2,"op":"acquire","client":7,"lock":"a","wait_ms":3600001}"#,
            Some(3),
            "`wait_ms` is 3600001, above the limit of 3600000 (one hour)",
        ),
        (
            r#"{"seq":3,"version":2,"op":"acquire","client":7,"lock":"a","wait_ms":-1}"#,
            Some(3),
            "`wait_ms` must be how long to wait in the lock's queue",
        ),
        (
            r#"{"seq":3,"version":2,"op":"cancel","client":7,"lock":"a","wait_ms":1}"#,
            Some(3),
            "unknown field `wait_ms` for cancel (it takes seq, op, version, seen_index, term, \
             client, secret, lock)",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":7,"lock":"a","wait_ms":1}"#,
            Some(3),
            "unknown field `wait_ms` for preempt",
        ),
        (
            r#"{"seq":3,"version":2,"op":"cancel","client":7}"#,
            Some(3),
            "cancel needs `lock`",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":7}"#,
            Some(3),
            "preempt needs `lock`",
        ),
        (
            r#"{"seq":3,"version":2,"op":"release","lock":"a"}"#,
            Some(3),
            "release needs `client`",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":"7","lock":"a"}"#,
            Some(3),
            "the string `7`",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":0,"lock":"a"}"#,
            Some(3),
            "got 0",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":7,"lock":5}"#,
            Some(3),
            "`lock` must be a string",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":7,"lock":""}"#,
            Some(3),
            "`lock` cannot be empty",
        ),
        (
            &too_long_lock,
            Some(9),
            "`lock` is 257 bytes, above the limit of 256",
        ),
        (
            r#"{"seq":3,"version":2,"op":"check","client":7,"lock":"a","consistency":"strong"}"#,
            Some(3),
            r#"must be "local" or "linearizable"; got the string `strong`"#,
        ),
        (
            r#"{"seq":3,"version":2,"op":"check","client":7,"lock":"a","consistancy":"local"}"#,
            Some(3),
            "unknown field `consistancy` for check",
        ),
        (
            r#"{"seq":3,"version":2,"op":"preempt","client":7,"lock":"a","consistency":"local"}"#,
            Some(3),
            "unknown field `consistency` for preempt (it takes seq, op, version, seen_index, \
             term, client, secret, lock, mode, permits)",
        ),
        (
            r#"{"seq":3,"version":2,"op":"hello","client":7}"#,
            Some(3),
            "unknown field `client` for hello",
        ),
        (
            r#"{"seq":3,"version":2,"op":"hello","nonce":-5}"#,
            Some(3),
            "`nonce` must be",
        ),
        (
            r#"{"seq":3,"version":2,"op":"check","client":7,"lock":"a","seen_index":null}"#,
            Some(3),
            "`seen_index` must be the highest index you have seen",
        ),
    ];
    for (line, seq, fragment) in cases {
        let error = decode_request(line.as_bytes()).expect_err(line);
        assert_eq!(error.kind, WireErrorKind::Malformed, "{line}");
        assert_eq!(error.seq, seq, "{line}: {}", error.message);
        assert!(
            error.message.contains(fragment),
            "{line}\n  message: {}\n  should say: {fragment}",
            error.message
        );
        let response = decode_reply(&encode_error(&ErrorReply::from(error.clone())))
            .expect("the refusal is itself a valid response");
        assert_eq!(response.seq(), seq);
    }
    let exactly_the_limit = format!(
        r#"{{"seq":9,"version":2,"op":"preempt","client":7,"lock":"{}"}}"#,
        "x".repeat(LOCK_NAME_BYTES_MAX)
    );
    assert!(decode_request(exactly_the_limit.as_bytes()).is_ok());
}

#[test]
fn a_refusal_reads_as_one_flat_line() {
    assert_eq!(
        refusal(r#"{"seq":3,"version":2,"op":"release","lock":"a"}"#),
        "{\"seq\":3,\"error\":\"bad_request\",\"message\":\"release needs `client` (the id hello \
         gave you, a whole number from 1)\"}\n"
    );
    assert_eq!(
        refusal("{nope"),
        "{\"error\":\"bad_request\",\"message\":\"not valid JSON: key must be a string at line \
         1 column 2\"}\n"
    );
}

#[test]
fn the_client_own_text_is_quoted_back_short() {
    let op = "z".repeat(5_000);
    let line = format!(r#"{{"seq":1,"version":2,"op":"{op}"}}"#);
    let response = refusal(&line);
    assert!(response.len() < 300, "{response}");
    assert!(response.contains("unknown op `zzzz"), "{response}");
}

#[test]
fn a_request_line_over_the_limit_is_refused_even_without_the_line_decoder() {
    let line = vec![b' '; LINE_BYTES_MAX + 1];
    assert_eq!(decode_request(&line), Err(WireError::line_too_long()));
    // The newline does not count.
    let hello = b"{\"seq\":1,\"op\":\"hello\",\"version\":2}\n";
    let mut at_the_limit = vec![b' '; LINE_BYTES_MAX + 1 - hello.len()];
    at_the_limit.extend_from_slice(hello);
    assert_eq!(at_the_limit.len(), LINE_BYTES_MAX + 1);
    assert!(decode_request(&at_the_limit).is_ok());
}

// ----- versions -----

#[test]
fn a_version_1_client_is_told_that_version_2_needs_the_secret() {
    // Leaving `version` out means version 1, as it always did; stating 1 is the same.
    let lines: [&[u8]; 3] = [
        br#"{"seq":1,"op":"hello"}"#,
        br#"{"seq":1,"op":"hello","version":1}"#,
        br#"{"seq":1,"op":"preempt","client":7,"lock":"a"}"#,
    ];
    for line in lines {
        let error = decode_request(line).expect_err("version 1 is refused");
        assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
        assert_eq!(error.seq, Some(1));
        for fragment in ["version 2", "not version 1", "`secret`", "\"version\":2"] {
            assert!(error.message.contains(fragment), "{}", error.message);
        }
        let reply = decode_reply(&encode_error(&ErrorReply::from(error)))
            .expect("the refusal is a valid response");
        let WireReply::Error(reply) = reply else {
            panic!("an error response")
        };
        assert_eq!(reply.code, ErrorCode::UnsupportedVersion { supported: 2 });
        assert_eq!(reply.term, None, "decided before the node");
    }
    assert_eq!(
        refusal(r#"{"seq":1,"op":"hello"}"#),
        "{\"seq\":1,\"error\":\"unsupported_version\",\"version\":2,\"message\":\"this server \
         speaks version 2 of the protocol, not version 1 (a request without `version` is version \
         1). Version 2 proves who a client is: the welcome to hello carries a `secret`, and every \
         later request must carry it in a `secret` field. Send \\\"version\\\":2 on every \
         request\"}\n"
    );
    // The version is judged before anything else, so a version 1 line that version 2 would
    // also refuse hears about the version.
    let error = decode_request(br#"{"seq":4,"op":"free_all"}"#).expect_err("v1");
    assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
}

#[test]
fn a_client_of_another_version_is_told_which_version_the_server_speaks() {
    assert_eq!(PROTOCOL_VERSION, 2);
    let error = decode_request(br#"{"seq":1,"op":"hello","version":3,"shiny_v3_field":true}"#)
        .expect_err("version 3 is refused");
    assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
    assert_eq!(error.seq, Some(1));
    assert_eq!(
        text(&encode_error(&ErrorReply::from(error))),
        "{\"seq\":1,\"error\":\"unsupported_version\",\"version\":2,\"message\":\"this server \
         speaks version 2 of the protocol, not version 3\"}\n"
    );
    // Any request may state its version; a lock request from version 0 is refused the same way.
    let error = decode_request(br#"{"seq":4,"op":"free_all","version":0}"#).expect_err("v0");
    assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
    // A version that is not a whole number is a bad request, not a version.
    let error = decode_request(br#"{"seq":4,"op":"hello","version":"2"}"#).expect_err("a string");
    assert_eq!(error.kind, WireErrorKind::Malformed);
}

#[test]
fn a_client_refuses_a_welcome_from_another_version_or_without_a_secret() {
    let old = br#"{"seq":1,"ok":"welcome","client":7,"nonce":0,"version":1,"index":3}"#;
    let error = decode_reply(old).expect_err("a version 1 welcome");
    assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
    assert_eq!(error.seq, Some(1));
    assert!(error.message.contains("version 1"), "{}", error.message);
    let newer = format!(
        r#"{{"seq":1,"ok":"welcome","client":7,"secret":"{SECRET_HEX}","nonce":0,"version":3,"index":3}}"#
    );
    let error = decode_reply(newer.as_bytes()).expect_err("a version 3 welcome");
    assert_eq!(error.kind, WireErrorKind::UnsupportedVersion);
    let secretless = br#"{"seq":1,"ok":"welcome","client":7,"nonce":0,"version":2,"index":3}"#;
    let error = decode_reply(secretless).expect_err("a welcome must hand out a secret");
    assert_eq!(error.kind, WireErrorKind::Malformed);
    assert!(
        error.message.contains("welcome needs `secret`"),
        "{}",
        error.message
    );
    let short =
        br#"{"seq":1,"ok":"welcome","client":7,"secret":"abc","nonce":0,"version":2,"index":3}"#;
    let error = decode_reply(short).expect_err("a secret is 32 hex digits");
    assert_eq!(error.kind, WireErrorKind::Malformed);
}

// ----- framing -----

const HELLO: &[u8] = br#"{"seq":1,"op":"hello","version":2}"#;
const PREEMPT: &[u8] = concat!(
    r#"{"seq":2,"op":"preempt","client":7,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
    r#""lock":"a","version":2}"#
)
.as_bytes();

fn lines(events: &[LineEvent]) -> Vec<&[u8]> {
    events
        .iter()
        .map(|event| match event {
            LineEvent::Line(line) => line.as_slice(),
            other => panic!("expected only lines, got {other:?}"),
        })
        .collect()
}

#[test]
fn lines_arriving_a_byte_at_a_time_come_out_whole() {
    let stream = [HELLO, b"\n", PREEMPT, b"\n"].concat();
    let mut decoder = LineDecoder::new();
    let mut events = Vec::new();
    for byte in &stream {
        events.extend(decoder.feed(std::slice::from_ref(byte)));
    }
    assert_eq!(lines(&events), [HELLO, PREEMPT]);
    assert!(!decoder.is_mid_line());
    for line in lines(&events) {
        assert!(decode_request(line).is_ok());
    }
}

#[test]
fn several_lines_in_one_read_come_out_in_order_and_a_partial_one_waits() {
    let stream = [HELLO, b"\n\n", PREEMPT, b"\n{\"seq\":3,"].concat();
    let mut decoder = LineDecoder::new();
    let events = decoder.feed(&stream);
    assert_eq!(lines(&events), [HELLO, b"".as_slice(), PREEMPT]);
    assert!(decoder.is_mid_line());
    assert_eq!(decoder.buffered_bytes(), 9);
    let rest = decoder.feed(b"\"op\":\"hello\"}\n");
    assert_eq!(lines(&rest), [b"{\"seq\":3,\"op\":\"hello\"}".as_slice()]);
    // The empty line in the middle is a bad request of its own, and nothing worse.
    assert!(decode_request(b"").is_err());
}

#[test]
fn a_100_kib_line_is_refused_once_with_bounded_memory_and_the_next_line_still_decodes() {
    let mut huge = br#"{"seq":3,"op":"preempt","client":7,"lock":""#.to_vec();
    huge.resize(100 * 1024, b'x');
    huge.extend_from_slice(b"\"}");
    let stream = [HELLO, b"\n", &huge, b"\n", PREEMPT, b"\n"].concat();
    let chunk_bytes = 4096;
    let mut decoder = LineDecoder::new();
    let mut events = Vec::new();
    for chunk in stream.chunks(chunk_bytes) {
        events.extend(decoder.feed(chunk));
        assert!(decoder.buffered_bytes() <= LINE_BYTES_MAX + chunk_bytes);
        assert!(decoder.buffer_capacity_bytes() <= LINE_BYTES_MAX + chunk_bytes);
        assert!(decoder.is_usable());
    }
    assert_eq!(
        events,
        [
            LineEvent::Line(HELLO.to_vec()),
            LineEvent::TooLong,
            LineEvent::Line(PREEMPT.to_vec()),
        ]
    );
    assert_eq!(
        text(&encode_error(&ErrorReply::from(WireError::line_too_long()))),
        "{\"error\":\"bad_request\",\"message\":\"a line is longer than 65536 bytes; it was \
         discarded up to its newline\"}\n"
    );
    let after = decode_request(PREEMPT).expect("the line after the long one decodes");
    assert_eq!(after.seq, 2);
}

#[test]
fn a_peer_that_never_sends_a_newline_is_given_up_on_without_filling_memory() {
    let mut decoder = LineDecoder::new();
    let chunk = vec![b'x'; 64 * 1024];
    let mut events = Vec::new();
    for _ in 0..32 {
        events.extend(decoder.feed(&chunk));
        assert!(decoder.buffer_capacity_bytes() <= LINE_BYTES_MAX);
    }
    assert_eq!(events, [LineEvent::TooLong, LineEvent::Abandoned]);
    assert!(!decoder.is_usable());
    assert!(decoder.feed(b"\n{\"seq\":1,\"op\":\"hello\"}\n").is_empty());
    let last_words = ErrorReply::from(WireError::line_abandoned());
    assert!(last_words.message.contains("closing the connection"));
}

// ----- hostile lines (issue 10) -----

#[test]
fn a_line_that_gives_a_field_twice_is_refused_whatever_the_field() {
    let lines = [
        (r#"{"seq":1,"seq":2,"op":"hello","version":2}"#, "seq"),
        (
            r#"{"seq":1,"op":"hello","version":2,"version":2}"#,
            "version",
        ),
        (
            r#"{"seq":2,"op":"preempt","version":2,"client":7,"client":9,"lock":"a"}"#,
            "client",
        ),
        (
            r#"{"seq":2,"op":"preempt","version":2,"client":7,"lock":"a","lock":"b"}"#,
            "lock",
        ),
        // The same value twice is refused as well: the rule is about the line, not the values.
        (
            r#"{"seq":2,"op":"release","version":2,"client":7,"lock":"a","lock":"a"}"#,
            "lock",
        ),
        (
            concat!(
                r#"{"seq":2,"op":"release","version":2,"client":7,"lock":"a","#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","#,
                r#""secret":"00000000000000000000000000000000"}"#
            ),
            "secret",
        ),
        (
            r#"{"seq":2,"op":"preempt","op":"release","version":2,"client":7,"lock":"a"}"#,
            "op",
        ),
    ];
    for (line, field) in lines {
        let error = decode_request(line.as_bytes()).expect_err(line);
        assert_eq!(error.kind, WireErrorKind::Malformed, "{line}");
        assert_eq!(error.seq, None, "{line}: which seq would it echo?");
        assert_eq!(
            error.message,
            format!("the field `{field}` appears twice; send each field once"),
            "{line}"
        );
        assert!(
            !error.message.contains("5f3a9c0e"),
            "never quotes a secret: {}",
            error.message
        );
        let response = text(&encode_error(&ErrorReply::from(error))).to_string();
        assert!(
            response.starts_with(r#"{"error":"bad_request","#),
            "{response}"
        );
    }
    // A line that repeats a field and is not JSON either is called not JSON.
    let error = decode_request(br#"{"seq":1,"seq":2,"op":"#).expect_err("cut short");
    assert!(
        error.message.starts_with("not valid JSON"),
        "{}",
        error.message
    );
}

#[test]
fn a_malformed_secret_is_a_bad_request_that_never_quotes_it() {
    let cases: [(&str, &str); 7] = [
        (
            r#""5f3a9c0e7b2d4186a1c3e5f7092b4d6""#,
            "this one has 31 characters",
        ),
        (
            r#""5f3a9c0e7b2d4186a1c3e5f7092b4d6e0""#,
            "this one has 33 characters",
        ),
        (r#""""#, "this one has 0 characters"),
        (
            r#""5f3a9c0e7b2d4186a1c3e5f7092b4dzz""#,
            "hex digits 0-9 and a-f only",
        ),
        (
            r#""+f3a9c0e7b2d4186a1c3e5f7092b4d6e""#,
            "hex digits 0-9 and a-f only",
        ),
        // 32 bytes of UTF-8 that are not 32 hex digits: no slicing inside a character.
        (r#""éééééééééééééééé""#, "hex digits 0-9 and a-f only"),
        ("5039201938475629", "`secret` must be a string"),
    ];
    for (value, fragment) in cases {
        let line = format!(
            r#"{{"seq":4,"op":"check","version":2,"client":7,"secret":{value},"lock":"a"}}"#
        );
        let error = decode_request(line.as_bytes()).expect_err(&line);
        assert_eq!(error.kind, WireErrorKind::Malformed, "{line}");
        assert_eq!(error.seq, Some(4), "{line}");
        assert!(
            error.message.contains(fragment),
            "{line}\n  message: {}\n  should say: {fragment}",
            error.message
        );
        let shown = value.trim_matches('"');
        if !shown.is_empty() {
            let response = text(&encode_error(&ErrorReply::from(error))).to_string();
            assert!(
                !response.contains(shown),
                "the refusal quotes the secret: {response}"
            );
        }
    }
    for value in ["null", "true", "[]", "{}"] {
        let line = format!(
            r#"{{"seq":4,"op":"release","version":2,"client":7,"secret":{value},"lock":"a"}}"#
        );
        let error = decode_request(line.as_bytes()).expect_err(&line);
        assert!(
            error.message.contains("`secret` must be a string"),
            "{}",
            error.message
        );
    }
    // Upper-case hex is the same secret; a missing one is left to the node (`unauthorized`).
    let upper = format!(
        r#"{{"seq":4,"op":"check","version":2,"client":7,"secret":"{}","lock":"a"}}"#,
        SECRET_HEX.to_uppercase()
    );
    let decoded = decode_request(upper.as_bytes()).expect("upper-case hex is fine");
    let WireOp::Check { secret: given, .. } = decoded.op else {
        panic!("a check")
    };
    assert_eq!(given, Some(secret()));
    let missing = decode_request(br#"{"seq":4,"op":"check","version":2,"client":7,"lock":"a"}"#)
        .expect("a missing secret decodes");
    assert!(matches!(missing.op, WireOp::Check { secret: None, .. }));
    // A hello takes no secret.
    let error = decode_request(
        br#"{"seq":1,"op":"hello","version":2,"secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e"}"#,
    )
    .expect_err("hello has no secret yet");
    assert!(
        error.message.contains("unknown field `secret` for hello"),
        "{}",
        error.message
    );
}

#[test]
fn a_decoded_request_never_shows_its_secret_in_debug_output() {
    let line = format!(
        r#"{{"seq":2,"op":"preempt","version":2,"client":7,"secret":"{SECRET_HEX}","lock":"a"}}"#
    );
    let request = decode_request(line.as_bytes()).expect("decodes");
    let shown = format!("{request:?} {:?}", request.clone().into_client_request());
    assert!(!shown.contains(SECRET_HEX), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

#[test]
fn the_welcome_round_trips_with_its_secret() {
    for bytes in [[0u8; 16], [0xff; 16], [0xa5; 16]] {
        let secret = ClientSecret::from_bytes(bytes);
        let reply = node_reply(
            1,
            3,
            ReplyBody::Welcome {
                nonce: 9,
                client: ClientId(7),
                secret,
            },
        );
        let line = encode_reply(&reply);
        let shown: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert!(
            text(&line).contains(&format!(r#""secret":"{shown}""#)),
            "{}",
            text(&line)
        );
        assert_eq!(
            decode_reply(&line),
            Ok(WireReply::Ok {
                seq: 1,
                index: 3,
                term: TERM,
                answer: Answer::Welcome {
                    client: ClientId(7),
                    nonce: 9,
                    secret,
                },
            })
        );
    }
}

#[test]
fn the_three_refusals_of_version_2_encode_decode_and_say_what_to_do() {
    let cases = [
        (
            ServiceError::UnknownClient {
                client: ClientId(999_999),
            },
            ErrorCode::UnknownClient,
            "unknown_client",
            "no hello issued client id 999999; nothing was done",
        ),
        (
            ServiceError::Unauthorized,
            ErrorCode::Unauthorized,
            "unauthorized",
            "Send the secret your welcome gave",
        ),
        (
            ServiceError::SeqReused { seq: 6 },
            ErrorCode::SeqReused,
            "seq_reused",
            "a new operation takes a new, higher seq",
        ),
    ];
    for (error, code, name, advice) in cases {
        assert_eq!(code.name(), name);
        let line = encode_reply(&node_reply(6, 40, ReplyBody::Error(error)));
        let shown = text(&line).to_string();
        assert!(
            shown.starts_with(&format!(
                r#"{{"seq":6,"error":"{name}","term":2,"message":""#
            )),
            "{shown}"
        );
        assert!(shown.contains(advice), "{shown} should say {advice:?}");
        assert!(
            !shown.contains("\"index\""),
            "refusals carry no index: {shown}"
        );
        let Ok(WireReply::Error(decoded)) = decode_reply(&line) else {
            panic!("{shown} decodes as an error")
        };
        assert_eq!(decoded.code, code);
        assert_eq!(decoded.seq, Some(6));
        assert_eq!(decoded.term, Some(TERM));
        // And as a front end or a test would write it directly.
        let direct = WireReply::Error(ErrorReply {
            seq: Some(1),
            term: Some(4),
            code,
            message: "m".into(),
        });
        assert_eq!(decode_reply(&encode_wire_reply(&direct)), Ok(direct));
    }
}

// ----- the 1 MiB rule, however the bytes arrive -----

/// Feeds `stream` to a fresh decoder in the pieces that `cuts` (sorted offsets) make, and
/// returns every event in order and whether the decoder is still usable.
fn feed_in_pieces(stream: &[u8], cuts: &[usize]) -> (Vec<LineEvent>, bool) {
    let mut decoder = LineDecoder::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        let cut = cut.clamp(start, stream.len());
        events.extend(decoder.feed(&stream[start..cut]));
        assert!(decoder.buffer_capacity_bytes() <= LINE_BYTES_MAX);
        start = cut;
    }
    (events, decoder.is_usable())
}

/// Every cut from `from` to `to`, one byte apart.
fn byte_by_byte(from: usize, to: usize) -> Vec<usize> {
    (from..to).collect()
}

/// splitmix64: a fixed, seeded stream of split points, the same on every run.
fn split_points(seed: u64, count: usize, len: usize) -> Vec<usize> {
    let mut state = seed;
    let mut points: Vec<usize> = (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z % (len as u64 + 1)) as usize
        })
        .collect();
    points.sort_unstable();
    points
}

/// The ways a stream whose first line is `line_bytes` long (then its newline, then `after`)
/// can arrive: named, for the failure message.
fn splittings(line_bytes: usize, total: usize) -> Vec<(String, Vec<usize>)> {
    const KIB64: usize = LINE_BYTES_MAX;
    const MIB: usize = 1024 * 1024;
    let newline = line_bytes;
    let mut ways: Vec<(String, Vec<usize>)> = vec![
        ("one write".into(), vec![]),
        (
            "the newline alone in the last write".into(),
            vec![newline, newline + 1],
        ),
        ("the newline starting the last write".into(), vec![newline]),
        ("the newline ending a write".into(), vec![newline + 1]),
        ("cut at 64 KiB".into(), vec![KIB64]),
        ("cut at 64 KiB - 1".into(), vec![KIB64 - 1]),
        ("cut at 64 KiB + 1".into(), vec![KIB64 + 1]),
        ("cut at 1 MiB".into(), vec![MIB]),
        ("cut at 1 MiB - 1".into(), vec![MIB - 1]),
        ("cut at 1 MiB + 1".into(), vec![MIB + 1]),
        ("cut at 64 KiB and 1 MiB".into(), vec![KIB64, MIB]),
        (
            "byte by byte across 64 KiB".into(),
            byte_by_byte(KIB64 - 8, KIB64 + 8),
        ),
        (
            "byte by byte over the line's tail and the rest".into(),
            byte_by_byte(newline.saturating_sub(40), total),
        ),
        (
            "byte by byte across 1 MiB".into(),
            byte_by_byte(MIB - 8, (MIB + 8).min(total)),
        ),
        (
            "4 KiB reads".into(),
            (1..=total / 4096).map(|n| n * 4096).collect(),
        ),
        (
            "64 KiB + 1 reads".into(),
            (1..=total / (KIB64 + 1)).map(|n| n * (KIB64 + 1)).collect(),
        ),
        (
            "7 byte reads over the first 64 KiB".into(),
            (1..KIB64 / 7 + 2).map(|n| n * 7).collect(),
        ),
    ];
    for seed in 0..8 {
        ways.push((
            format!("random cuts, seed {seed}"),
            split_points(seed, 64, total),
        ));
    }
    ways
}

fn overlong_stream(line_bytes: usize) -> Vec<u8> {
    let mut stream = vec![b'x'; line_bytes];
    stream.push(b'\n');
    stream.extend_from_slice(HELLO);
    stream.push(b'\n');
    stream
}

#[test]
fn the_1_mib_rule_holds_however_the_bytes_arrive() {
    const MIB: usize = 1024 * 1024;
    let cases: [(usize, Vec<LineEvent>, bool); 5] = [
        // The line the issue found accepted when its newline came in the same read.
        (
            MIB + 10,
            vec![LineEvent::TooLong, LineEvent::Abandoned],
            false,
        ),
        (
            MIB + 1,
            vec![LineEvent::TooLong, LineEvent::Abandoned],
            false,
        ),
        // Exactly 1 MiB is an overlong line, discarded; the connection stays.
        (
            MIB,
            vec![LineEvent::TooLong, LineEvent::Line(HELLO.to_vec())],
            true,
        ),
        (
            LINE_BYTES_MAX + 1,
            vec![LineEvent::TooLong, LineEvent::Line(HELLO.to_vec())],
            true,
        ),
        (
            LINE_BYTES_MAX,
            vec![
                LineEvent::Line(vec![b'x'; LINE_BYTES_MAX]),
                LineEvent::Line(HELLO.to_vec()),
            ],
            true,
        ),
    ];
    for (line_bytes, expected, usable) in cases {
        let stream = overlong_stream(line_bytes);
        for (way, cuts) in splittings(line_bytes, stream.len()) {
            let (events, still_usable) = feed_in_pieces(&stream, &cuts);
            assert_eq!(
                events, expected,
                "a {line_bytes}-byte line fed as {way}: events differ"
            );
            assert_eq!(
                still_usable, usable,
                "a {line_bytes}-byte line fed as {way}: usable?"
            );
        }
    }
}

// ----- the documented session -----

/// What a person typed into `nc`, and what the server answered: either the node's reply, or
/// the refusal the codec itself produces. An acquire that waits is answered later: its line
/// is an exchange with nothing `printed`, and its late answer one with nothing `typed`.
struct Exchange {
    typed: &'static str,
    node: Option<ClientReply>,
    printed: &'static str,
}

fn session() -> Vec<Exchange> {
    let granted = |seq, token| outcome(seq, token, Outcome::Granted { token });
    let welcome = ReplyBody::Welcome {
        nonce: 0,
        client: ClientId(7),
        secret: secret(),
    };
    let unavailable = ReplyBody::Error(ServiceError::Unavailable);
    let not_leader = ReplyBody::Error(ServiceError::NotLeader {
        leader: Some(ServerId(1)),
        term: 3,
    });
    let refused = |seq, index, error| in_term(3, node_reply(seq, index, ReplyBody::Error(error)));
    let owner = Outcome::Owner {
        owner: ClientId(7),
        token: 12,
    };
    vec![
        Exchange {
            typed: r#"{"seq":1,"op":"hello","version":2}"#,
            node: Some(node_reply(1, 3, welcome)),
            printed: concat!(
                r#"{"seq":1,"ok":"welcome","term":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","version":2,"nonce":0,"index":3}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":2,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":3,"term":2}"#
            ),
            node: Some(granted(2, 12)),
            printed: r#"{"seq":2,"ok":"granted","term":2,"token":12,"index":12}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":2,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":3,"term":2}"#
            ),
            node: Some(granted(2, 12)),
            printed: r#"{"seq":2,"ok":"granted","term":2,"token":12,"index":12}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":3,"op":"check","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":12,"term":2}"#
            ),
            node: Some(outcome(3, 12, owner)),
            printed: r#"{"seq":3,"ok":"owner","term":2,"owner":7,"token":12,"index":12}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":4,"op":"check","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"scanner","#,
                r#""consistency":"linearizable","seen_index":12,"term":2}"#
            ),
            node: Some(outcome(4, 13, Outcome::Free)),
            printed: r#"{"seq":4,"ok":"free","term":2,"index":13}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":5,"op":"release","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"scanner","#,
                r#""seen_index":13,"term":2}"#
            ),
            node: Some(outcome(5, 14, Outcome::NotOwner)),
            printed: r#"{"seq":5,"ok":"not_owner","term":2,"index":14}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":6,"op":"release","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":14,"term":2}"#
            ),
            node: Some(in_term(3, node_reply(6, 14, unavailable))),
            printed: concat!(
                r#"{"seq":6,"error":"unavailable","term":3,"message":"this server cannot serve "#,
                r#"the request now (it knows no leader, or its replica is behind your "#,
                r#"seen_index); retry the same seq after a pause, here or on another server"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":6,"op":"release","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":14,"term":3}"#
            ),
            node: Some(in_term(3, outcome(6, 16, Outcome::Released))),
            printed: r#"{"seq":6,"ok":"released","term":3,"index":16}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":7,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":16}"#
            ),
            node: Some(in_term(3, node_reply(7, 16, not_leader))),
            printed: concat!(
                r#"{"seq":7,"error":"not_leader","term":3,"leader":1,"#,
                r#""leader_address":"10.0.0.1:7100","message":"the request did not name the "#,
                r#"current leader's term; resend the same seq with term 3 to server 1 at "#,
                r#"`10.0.0.1:7100`"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":7,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":16,"term":3}"#
            ),
            node: Some(in_term(3, granted(7, 17))),
            printed: r#"{"seq":7,"ok":"granted","term":3,"token":17,"index":17}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":7,"op":"release","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":17,"term":3}"#
            ),
            node: Some(refused(7, 17, ServiceError::SeqReused { seq: 7 })),
            printed: concat!(
                r#"{"seq":7,"error":"seq_reused","term":3,"message":"seq 7 was already used "#,
                r#"by this client for another operation, lock or claim; nothing was done. A "#,
                r#"retry repeats its operation exactly; a new operation takes a new, higher seq"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":8,"op":"release","version":2,"client":9,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","#,
                r#""seen_index":17,"term":3}"#
            ),
            node: Some(refused(8, 17, ServiceError::Unauthorized)),
            printed: concat!(
                r#"{"seq":8,"error":"unauthorized","term":3,"message":"the request's `secret` "#,
                r#"is missing or is not the one issued with its client id; nothing was done. "#,
                r#"Send the secret your welcome gave"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":8,"op":"preempt","version":2,"client":70,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""seen_index":17,"term":3}"#
            ),
            node: Some(refused(
                8,
                17,
                ServiceError::UnknownClient {
                    client: ClientId(70),
                },
            )),
            printed: concat!(
                r#"{"seq":8,"error":"unknown_client","term":3,"message":"no hello issued "#,
                r#"client id 70; nothing was done. Say hello to get an id and its secret"}"#
            ),
        },
        Exchange {
            typed: r#"{"seq":8,"op":"preempt","version":2,"lock":"printer"}"#,
            node: None,
            printed: concat!(
                r#"{"seq":8,"error":"bad_request","message":"preempt needs `client` "#,
                r#"(the id hello gave you, a whole number from 1)"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":8,"op":"check","version":2,"client":7,"secret":"5f3a9c0e","#,
                r#""lock":"printer"}"#
            ),
            node: None,
            printed: concat!(
                r#"{"seq":8,"error":"bad_request","message":"`secret` must be the 32 hex "#,
                r#"digits of the secret your welcome gave: a client secret is 32 hex digits; "#,
                r#"this one has 8 characters"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":8,"op":"check","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","#,
                r#""consistency":"strong"}"#
            ),
            node: None,
            printed: concat!(
                r#"{"seq":8,"error":"bad_request","message":"`consistency` must be "#,
                r#"\"local\" or \"linearizable\"; got the string `strong`"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":8,"op":"check","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"printer","lock":"scanner"}"#
            ),
            node: None,
            printed: concat!(
                r#"{"error":"bad_request","message":"the field `lock` appears twice; send "#,
                r#"each field once"}"#
            ),
        },
        Exchange {
            typed: "hello",
            node: None,
            printed: concat!(
                r#"{"error":"bad_request","message":"not valid JSON: "#,
                r#"expected value at line 1 column 1"}"#
            ),
        },
        Exchange {
            typed: r#"{"seq":9,"op":"hello"}"#,
            node: None,
            printed: concat!(
                r#"{"seq":9,"error":"unsupported_version","version":2,"message":"this server "#,
                r#"speaks version 2 of the protocol, not version 1 (a request without `version` "#,
                r#"is version 1). Version 2 proves who a client is: the welcome to hello carries "#,
                r#"a `secret`, and every later request must carry it in a `secret` field. Send "#,
                r#"\"version\":2 on every request"}"#
            ),
        },
    ]
    .into_iter()
    .chain(waiting_session())
    .chain(shared_session())
    .collect()
}

/// The session's second part: acquires that wait in line, time out and are cancelled.
fn waiting_session() -> Vec<Exchange> {
    let reply =
        |seq, index, outcome| in_term(3, node_reply(seq, index, ReplyBody::Outcome(outcome)));
    vec![
        Exchange {
            typed: concat!(
                r#"{"seq":10,"op":"acquire","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"scanner","wait_ms":30000,"#,
                r#""seen_index":17,"term":3}"#
            ),
            node: Some(reply(10, 21, Outcome::Granted { token: 21 })),
            printed: r#"{"seq":10,"ok":"granted","term":3,"token":21,"index":21}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":11,"op":"acquire","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","wait_ms":2000,"#,
                r#""seen_index":21,"term":3}"#
            ),
            node: Some(reply(11, 23, Outcome::TimedOut)),
            printed: r#"{"seq":11,"ok":"timeout","term":3,"index":23}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":12,"op":"acquire","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","wait_ms":60000,"#,
                r#""seen_index":23,"term":3}"#
            ),
            node: None,
            printed: "",
        },
        Exchange {
            typed: concat!(
                r#"{"seq":13,"op":"cancel","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","#,
                r#""seen_index":23,"term":3}"#
            ),
            node: Some(reply(12, 25, Outcome::Cancelled)),
            printed: r#"{"seq":12,"ok":"cancelled","term":3,"index":25}"#,
        },
        Exchange {
            typed: "",
            node: Some(reply(13, 25, Outcome::Cancelled)),
            printed: r#"{"seq":13,"ok":"cancelled","term":3,"index":25}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":14,"op":"cancel","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","#,
                r#""seen_index":25,"term":3}"#
            ),
            node: Some(reply(14, 26, Outcome::NotWaiting)),
            printed: r#"{"seq":14,"ok":"not_waiting","term":3,"index":26}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":15,"op":"acquire","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"door","wait_ms":7200000,"#,
                r#""seen_index":26,"term":3}"#
            ),
            node: None,
            printed: concat!(
                r#"{"seq":15,"error":"bad_request","message":"`wait_ms` is 7200000, above the "#,
                r#"limit of 3600000 (one hour); wait at most that long, and acquire again if the "#,
                r#"wait runs out"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":15,"op":"acquire","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"stapler","wait_ms":5000,"#,
                r#""seen_index":26,"term":3}"#
            ),
            node: Some(in_term(
                3,
                node_reply(
                    15,
                    26,
                    ReplyBody::Error(ServiceError::QueueFull { waiters_max: 1024 }),
                ),
            )),
            printed: concat!(
                r#"{"seq":15,"error":"queue_full","term":3,"message":"the lock's queue already "#,
                r#"holds 1024 waiters; nothing was done. Back off, then retry the same seq (any "#,
                r#"server gives the same answer until the queue drains)","waiters_max":1024}"#
            ),
        },
    ]
}

/// The second identity of the session's third part, a writer.
const WRITER_SECRET_HEX: &str = "9e8d7c6b5a4f30211203f4e5d6c7b8a9";

/// The session's third part: two readers share a lock, a writer queues behind them and is
/// granted on their release, a semaphore of 2 refuses a third holder, and claims that disagree
/// with the lock's permits or with their own seq are refused.
fn shared_session() -> Vec<Exchange> {
    let reply =
        |seq, index, outcome| in_term(3, node_reply(seq, index, ReplyBody::Outcome(outcome)));
    let writer_welcome = ReplyBody::Welcome {
        nonce: 2,
        client: ClientId(11),
        secret: ClientSecret::parse_hex(WRITER_SECRET_HEX).expect("32 hex digits"),
    };
    vec![
        Exchange {
            typed: concat!(
                r#"{"seq":16,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"shelf","mode":"shared","#,
                r#""seen_index":26,"term":3}"#
            ),
            node: Some(reply(16, 28, Outcome::Granted { token: 28 })),
            printed: r#"{"seq":16,"ok":"granted","term":3,"token":28,"index":28}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":17,"op":"check","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"shelf","#,
                r#""seen_index":28,"term":3}"#
            ),
            node: Some(reply(
                17,
                28,
                Outcome::Shared {
                    holders: 2,
                    permits: None,
                },
            )),
            printed: r#"{"seq":17,"ok":"shared","term":3,"holders":2,"index":28}"#,
        },
        Exchange {
            typed: r#"{"seq":1,"op":"hello","version":2,"nonce":2}"#,
            node: Some(in_term(3, node_reply(1, 29, writer_welcome))),
            printed: concat!(
                r#"{"seq":1,"ok":"welcome","term":3,"client":11,"#,
                r#""secret":"9e8d7c6b5a4f30211203f4e5d6c7b8a9","version":2,"nonce":2,"index":29}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":2,"op":"acquire","version":2,"client":11,"#,
                r#""secret":"9e8d7c6b5a4f30211203f4e5d6c7b8a9","lock":"shelf","wait_ms":60000,"#,
                r#""seen_index":29,"term":3}"#
            ),
            node: None,
            printed: "",
        },
        Exchange {
            typed: concat!(
                r#"{"seq":18,"op":"release","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"shelf","#,
                r#""seen_index":29,"term":3}"#
            ),
            node: Some(reply(18, 31, Outcome::Released)),
            printed: r#"{"seq":18,"ok":"released","term":3,"index":31}"#,
        },
        Exchange {
            typed: "",
            node: Some(reply(2, 32, Outcome::Granted { token: 32 })),
            printed: r#"{"seq":2,"ok":"granted","term":3,"token":32,"index":32}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":19,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"tape","permits":2,"#,
                r#""seen_index":32,"term":3}"#
            ),
            node: Some(reply(19, 33, Outcome::Granted { token: 33 })),
            printed: r#"{"seq":19,"ok":"granted","term":3,"token":33,"index":33}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":3,"op":"preempt","version":2,"client":11,"#,
                r#""secret":"9e8d7c6b5a4f30211203f4e5d6c7b8a9","lock":"tape","permits":2,"#,
                r#""seen_index":33,"term":3}"#
            ),
            node: Some(reply(3, 34, Outcome::HeldBy { owner: ClientId(9) })),
            printed: r#"{"seq":3,"ok":"held_by","term":3,"owner":9,"index":34}"#,
        },
        Exchange {
            typed: concat!(
                r#"{"seq":4,"op":"acquire","version":2,"client":11,"#,
                r#""secret":"9e8d7c6b5a4f30211203f4e5d6c7b8a9","lock":"tape","permits":3,"#,
                r#""wait_ms":10000,"seen_index":34,"term":3}"#
            ),
            node: Some(reply(4, 35, Outcome::PermitsMismatch { permits: Some(2) })),
            printed: concat!(
                r#"{"seq":4,"error":"permits_mismatch","term":3,"permits":2,"message":"the lock "#,
                r#"is in use as a semaphore of 2 permits, and your claim named other permits; "#,
                r#"nothing was done. Claim with the lock's permits (or none), or wait until it "#,
                r#"is free; a retry of this seq gets this answer again"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":5,"op":"acquire","version":2,"client":11,"#,
                r#""secret":"9e8d7c6b5a4f30211203f4e5d6c7b8a9","lock":"tape","permits":100,"#,
                r#""wait_ms":10000,"seen_index":34,"term":3}"#
            ),
            node: None,
            printed: concat!(
                r#"{"seq":5,"error":"bad_request","message":"`permits` is 100; it must be 1 to "#,
                r#"64, the most holders a lock has at once"}"#
            ),
        },
        Exchange {
            typed: concat!(
                r#"{"seq":19,"op":"preempt","version":2,"client":7,"#,
                r#""secret":"5f3a9c0e7b2d4186a1c3e5f7092b4d6e","lock":"tape","#,
                r#""seen_index":34,"term":3}"#
            ),
            node: Some(in_term(
                3,
                node_reply(
                    19,
                    34,
                    ReplyBody::Error(ServiceError::SeqReused { seq: 19 }),
                ),
            )),
            printed: concat!(
                r#"{"seq":19,"error":"seq_reused","term":3,"message":"seq 19 was already used by "#,
                r#"this client for another operation, lock or claim; nothing was done. A retry "#,
                r#"repeats its operation exactly; a new operation takes a new, higher seq"}"#
            ),
        },
    ]
}

/// The version 1 hello of the session, whose refusal the reference also shows elsewhere.
const VERSION_1_HELLO: &str = r#"{"seq":9,"op":"hello"}"#;

/// The lines of docs/PROTOCOL.md's session transcript: the code block after "## An nc
/// session", without its `$ nc` line.
fn documented_session() -> Vec<&'static str> {
    let section = PROTOCOL_MD
        .split_once("\n## An nc session\n")
        .expect("docs/PROTOCOL.md has an nc session section")
        .1;
    let block = section
        .split_once("```\n")
        .expect("the session is a code block")
        .1
        .split_once("\n```")
        .expect("the code block ends")
        .0;
    let mut lines: Vec<&str> = block.lines().collect();
    assert!(
        lines.first().is_some_and(|line| line.starts_with("$ nc ")),
        "the session starts with the nc command: {lines:?}"
    );
    lines.remove(0);
    lines
}

#[test]
fn the_nc_session_in_the_protocol_reference_is_what_the_codec_says() {
    let mut expected = Vec::new();
    // Seqs typed and not answered yet, oldest first: every answer printed answers one of them
    // (an acquire that waits is answered after later lines), and none is left at the end.
    let mut unanswered: Vec<u64> = Vec::new();
    for exchange in session() {
        if !exchange.typed.is_empty() {
            match decode_request(exchange.typed.as_bytes()) {
                Ok(request) => {
                    let waits = matches!(request.op, WireOp::Acquire { .. });
                    assert!(
                        waits || !exchange.printed.is_empty(),
                        "only a waiting acquire goes unanswered: {}",
                        exchange.typed
                    );
                    assert!(exchange.node.is_some() || exchange.printed.is_empty());
                    unanswered.push(request.seq);
                }
                Err(error) => {
                    assert!(exchange.node.is_none(), "{}", exchange.typed);
                    let refused = encode_error(&ErrorReply::from(error));
                    assert_eq!(text(&refused), format!("{}\n", exchange.printed));
                }
            }
        }
        if let Some(reply) = &exchange.node {
            let at = unanswered.iter().position(|&seq| seq == reply.seq);
            let at = at.unwrap_or_else(|| panic!("{} answers nothing typed", exchange.printed));
            unanswered.remove(at);
            let printed = encode_reply_with(reply, &addresses);
            assert_eq!(text(&printed), format!("{}\n", exchange.printed));
        }
        for line in [exchange.typed, exchange.printed] {
            if !line.is_empty() {
                expected.push(line);
            }
        }
    }
    assert!(
        unanswered.is_empty(),
        "every request was answered: {unanswered:?}"
    );
    let documented = documented_session();
    for (at, (documented, expected)) in documented.iter().zip(&expected).enumerate() {
        assert_eq!(
            documented,
            expected,
            "line {} of docs/PROTOCOL.md's session differs from what the codec says",
            at + 1
        );
    }
    assert_eq!(
        documented.len(),
        expected.len(),
        "docs/PROTOCOL.md's session and the test's have as many lines"
    );
}

#[test]
fn the_reference_shows_the_codecs_lines_wherever_it_shows_a_welcome_or_a_version_refusal() {
    // Outside the session, the reference quotes lines too: the welcome and the version 1
    // refusal must be the codec's own.
    let session = session();
    let version_1 = session
        .iter()
        .find(|exchange| exchange.typed == VERSION_1_HELLO)
        .expect("the session shows a version 1 hello");
    for line in [session[0].printed, version_1.printed] {
        let copies = PROTOCOL_MD.lines().filter(|&shown| shown == line).count();
        assert!(
            copies >= 2,
            "docs/PROTOCOL.md should show\n{line}\nbeyond its session"
        );
    }
}

// ----- status -----

/// What s2, a follower of s1 in term 3, says about itself in the reference's example.
fn follower_status() -> ServerStatus {
    ServerStatus {
        server: ServerId(2),
        role: Role::Follower,
        leader: Some(ServerId(1)),
        commit_index: 57,
        last_index: 58,
        snapshot_index: 40,
        log_bytes: 5_312,
        uptime_ms: 3_725_114,
    }
}

const STATUS_REQUEST: &str = r#"{"seq":1,"op":"status","version":2}"#;
const STATUS_REPLY: &str = r#"{"seq":1,"ok":"status","term":3,"leader":1,"index":56,"server":2,"role":"follower","commit_index":57,"last_index":58,"snapshot_index":40,"log_bytes":5312,"uptime_ms":3725114}"#;

#[test]
fn a_status_request_takes_only_the_common_fields_and_never_reaches_the_node() {
    let status = WireRequest {
        seq: 1,
        seen_index: 0,
        term: 0,
        op: WireOp::Status,
    };
    let line = encode_request(&status);
    assert_eq!(text(&line), format!("{STATUS_REQUEST}\n"));
    let decoded = decode_request(&line).expect("a status request decodes");
    assert_eq!(decoded, status);
    assert_eq!(
        decoded.into_client_request(),
        None,
        "the front end answers it"
    );
    // A client that sends its seen_index and term with every request may send them here too.
    let generic = decode_request(br#"{"seq":4,"op":"status","version":2,"seen_index":9,"term":3}"#)
        .expect("the common fields are accepted");
    assert_eq!(generic.op, WireOp::Status);
}

#[test]
fn a_status_request_with_anything_else_or_without_its_version_is_refused() {
    let with_client = refusal(&format!(
        r#"{{"seq":5,"op":"status","version":2,"client":7,"secret":"{SECRET_HEX}"}}"#
    ));
    assert!(
        with_client.contains(
            "unknown field `client` for status (it takes seq, op, version, seen_index, term, \
             nothing else)"
        ) || with_client.contains("unknown field `secret` for status"),
        "{with_client}"
    );
    assert!(with_client.contains("\"seq\":5"), "{with_client}");
    assert!(!with_client.contains(SECRET_HEX), "{with_client}");
    let old = refusal(r#"{"seq":5,"op":"status"}"#);
    assert!(
        old.contains("\"error\":\"unsupported_version\""),
        "a version 1 line is refused for its version: {old}"
    );
    let twice = refusal(r#"{"seq":5,"op":"status","op":"status","version":2}"#);
    assert!(twice.contains("the field `op` appears twice"), "{twice}");
    let capital = refusal(r#"{"seq":5,"op":"Status","version":2}"#);
    assert!(
        capital.contains(
            "unknown op `Status` (expected hello, keepalive, preempt, release, check, acquire, cancel, status, watch or unwatch)"
        ),
        "{capital}"
    );
}

#[test]
fn a_status_reply_reads_as_the_reference_shows_it_and_round_trips() {
    let reply = WireReply::status(1, 3, 56, follower_status());
    let line = encode_wire_reply(&reply);
    assert_eq!(text(&line), format!("{STATUS_REPLY}\n"));
    assert_eq!(decode_reply(&line), Ok(reply));
    // A server that knows no leader leaves `leader` out.
    let lost = WireReply::status(
        2,
        4,
        56,
        ServerStatus {
            role: Role::Candidate,
            leader: None,
            ..follower_status()
        },
    );
    let line = encode_wire_reply(&lost);
    assert!(!text(&line).contains("leader"), "{}", text(&line));
    assert!(text(&line).contains("\"role\":\"candidate\""));
    assert_eq!(decode_reply(&line), Ok(lost));
    assert_eq!(follower_status().log_entries(), 18);
    for role in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        assert_eq!(parse_role(role_name(role)), Some(role));
    }
}

#[test]
fn a_status_reply_that_cannot_be_true_of_one_server_is_refused() {
    let broken = |from: &str, to: &str, fragment: &str| {
        assert!(STATUS_REPLY.contains(from), "{from}");
        let line = STATUS_REPLY.replace(from, to);
        let error = decode_reply(line.as_bytes()).expect_err("a broken status is refused");
        assert_eq!(error.kind, WireErrorKind::Malformed, "{line}");
        assert!(
            error.message.contains(fragment),
            "{line}: {}",
            error.message
        );
    };
    broken("\"role\":\"follower\",", "", "status needs `role`");
    broken("\"server\":2,", "", "status needs `server`");
    broken(
        "\"uptime_ms\":3725114",
        "\"uptime\":3725114",
        "status needs `uptime_ms`",
    );
    broken("\"term\":3,", "", "status needs `term`");
    broken("\"follower\"", "\"boss\"", "unknown role `boss`");
    broken("\"index\":56", "\"index\":60", "indexes out of order");
    broken(
        "\"last_index\":58",
        "\"last_index\":50",
        "indexes out of order",
    );
    broken(
        "\"snapshot_index\":40",
        "\"snapshot_index\":57",
        "indexes out of order",
    );
    broken(
        "\"commit_index\":57",
        "\"commit_index\":-1",
        "malformed reply",
    );
    broken(
        "\"role\":\"follower\"",
        "\"role\":\"leader\"",
        "says the server leads but names another leader",
    );
}

#[test]
fn the_reference_shows_the_codecs_status_lines() {
    for line in [STATUS_REQUEST, STATUS_REPLY] {
        assert!(
            PROTOCOL_MD.lines().any(|shown| shown == line),
            "docs/PROTOCOL.md should show\n{line}"
        );
    }
}

// ----- sessions -----

/// Sessions are additive to version 2: a hello may carry `ttl_ms`, `keepalive` is a new op,
/// and its answer and the two new refusals read back as what the node said.
#[test]
fn sessions_travel_as_a_ttl_on_hello_a_keepalive_and_two_new_refusals() {
    let hello = decode_request(br#"{"seq":1,"op":"hello","version":2,"nonce":4,"ttl_ms":10000}"#)
        .expect("a hello with a TTL");
    assert_eq!(
        hello.clone().into_client_request().map(|r| r.body),
        Some(RequestBody::Hello {
            nonce: 4,
            ttl_ms: Some(10_000)
        })
    );
    assert_eq!(
        text(&encode_request(&hello)),
        "{\"seq\":1,\"op\":\"hello\",\"version\":2,\"nonce\":4,\"ttl_ms\":10000}\n"
    );
    let line =
        format!(r#"{{"seq":5,"op":"keepalive","version":2,"client":7,"secret":"{SECRET_HEX}"}}"#);
    let keepalive = decode_request(line.as_bytes()).expect("a keepalive");
    assert_eq!(
        keepalive.op,
        WireOp::Keepalive {
            client: ClientId(7),
            secret: Some(secret())
        }
    );
    assert_eq!(
        WireRequest::try_from(
            keepalive
                .clone()
                .into_client_request()
                .expect("for the node")
        ),
        Ok(keepalive.clone()),
        "round trip through the node's request"
    );
    assert!(
        refusal(r#"{"seq":5,"op":"keepalive","version":2,"client":7,"lock":"a"}"#)
            .contains("unknown field `lock` for keepalive"),
        "a keepalive takes no lock"
    );
    assert!(
        refusal(r#"{"seq":1,"op":"hello","version":2,"ttl_ms":-1}"#)
            .contains("`ttl_ms` must be the session's TTL in milliseconds")
    );

    let kept = node_reply(
        5,
        16,
        ReplyBody::KeptAlive {
            ttl_ms: Some(10_000),
        },
    );
    let line = encode_reply(&kept);
    assert_eq!(
        text(&line),
        "{\"seq\":5,\"ok\":\"kept_alive\",\"term\":2,\"index\":16,\"ttl_ms\":10000}\n"
    );
    assert_eq!(
        decode_reply(&line).expect("decodes"),
        WireReply::Ok {
            seq: 5,
            index: 16,
            term: TERM,
            answer: Answer::KeptAlive {
                ttl_ms: Some(10_000)
            }
        }
    );
    let expired = node_reply(
        6,
        0,
        ReplyBody::Error(ServiceError::SessionExpired {
            client: ClientId(7),
        }),
    );
    let WireReply::Error(error) = decode_reply(&encode_reply(&expired)).expect("decodes") else {
        panic!("an error")
    };
    assert_eq!(error.code, ErrorCode::SessionExpired);
    assert!(
        error.message.contains("Say hello again"),
        "{}",
        error.message
    );
    let delayed = node_reply(
        7,
        0,
        ReplyBody::Error(ServiceError::LockDelayed {
            retry_after_ms: 1_500,
        }),
    );
    let line = encode_reply(&delayed);
    assert!(
        text(&line).contains("\"retry_after_ms\":1500"),
        "{}",
        text(&line)
    );
    let WireReply::Error(error) = decode_reply(&line).expect("decodes") else {
        panic!("an error")
    };
    assert_eq!(
        error.code,
        ErrorCode::LockDelayed {
            retry_after_ms: 1_500
        }
    );
    assert!(
        decode_reply(br#"{"seq":7,"error":"lock_delayed","term":2,"message":"m"}"#).is_err(),
        "a lock_delayed without retry_after_ms is malformed"
    );
}

/// Shared locks and semaphores on the wire (docs/PROTOCOL.md, "Shared locks and semaphores"):
/// every node claim has a line, `permits` alone reads as shared, and a bad `mode` or
/// `permits` is a `bad_request` that names the field and its bound, before any node sees it.
#[test]
fn claims_travel_both_ways_and_bad_ones_are_refused_naming_the_bound() {
    for claim in [Claim::SHARED, Claim::semaphore(3), Claim::EXCLUSIVE] {
        for op in [
            Operation::Preempt {
                lock: "a".into(),
                claim,
            },
            Operation::Acquire {
                lock: "a".into(),
                wait_ms: 0,
                claim,
            },
        ] {
            let node = client_op(2, 0, 7, op);
            let wire = WireRequest::try_from(node.clone()).expect("every claim has a line");
            let line = encode_request(&wire);
            let back = decode_request(&line).expect("an encoded claim decodes");
            assert_eq!(back.into_client_request(), Some(node), "{}", text(&line));
        }
    }
    let line = |fields: &str| {
        format!(
            r#"{{"seq":2,"op":"preempt","version":2,"client":7,"secret":"{SECRET_HEX}","lock":"a",{fields}}}"#
        )
    };
    let permits_alone = decode_request(line(r#""permits":2"#).as_bytes()).expect("decodes");
    assert!(
        matches!(permits_alone.op, WireOp::Preempt { claim, .. } if claim == Claim::semaphore(2)),
        "permits without a mode is one permit: {permits_alone:?}"
    );
    let refusals = [
        (r#""permits":0"#, "`permits` is 0; it must be 1 to 64"),
        (r#""permits":65"#, "`permits` is 65; it must be 1 to 64"),
        (
            r#""permits":-1"#,
            "`permits` must be how many holders the lock allows at once",
        ),
        (
            r#""mode":"reader""#,
            r#"`mode` must be "exclusive" (one holder) or "shared" (many); got the string `reader`"#,
        ),
        (r#""mode":true"#, "got true"),
    ];
    for (fields, expected) in refusals {
        let refused = decode_request(line(fields).as_bytes()).expect_err(fields);
        assert_eq!(refused.seq, Some(2), "{fields}");
        assert!(
            refused.message.contains(expected),
            "{fields}: {}",
            refused.message
        );
        let careful = lockstep::net::protocol::decode_request_carefully(line(fields).as_bytes());
        assert_eq!(careful, Err(refused), "both decoders agree on {fields}");
    }
    // Only preempt and acquire take a claim: a release names no mode.
    let release = format!(
        r#"{{"seq":2,"op":"release","version":2,"client":7,"secret":"{SECRET_HEX}","lock":"a","mode":"shared"}}"#
    );
    let refused = decode_request(release.as_bytes()).expect_err("a release with a mode");
    assert!(
        refused.message.contains("unknown field `mode` for release"),
        "{}",
        refused.message
    );
}

/// A shared lock's check answers how many hold it and its permits; a permits mismatch is an
/// error code with the permits in force; both decode back to what the node said.
#[test]
fn a_shared_check_and_a_permits_mismatch_round_trip_as_the_node_said_them() {
    let shared = node_reply(
        4,
        31,
        ReplyBody::Outcome(Outcome::Shared {
            holders: 2,
            permits: Some(3),
        }),
    );
    let line = encode_reply(&shared);
    assert_eq!(
        text(&line),
        "{\"seq\":4,\"ok\":\"shared\",\"term\":2,\"holders\":2,\"permits\":3,\"index\":31}\n"
    );
    let WireReply::Ok { answer, .. } = decode_reply(&line).expect("decodes") else {
        panic!("an ok reply");
    };
    assert_eq!(
        answer,
        Answer::Outcome(Outcome::Shared {
            holders: 2,
            permits: Some(3)
        })
    );
    for permits in [Some(2), None] {
        let mismatch = node_reply(
            5,
            32,
            ReplyBody::Outcome(Outcome::PermitsMismatch { permits }),
        );
        let line = encode_reply(&mismatch);
        let WireReply::Error(error) = decode_reply(&line).expect("decodes") else {
            panic!("permits_mismatch is an error on the wire: {}", text(&line));
        };
        assert_eq!(error.code, ErrorCode::PermitsMismatch { permits });
        assert_eq!(error.term, Some(2));
        assert_eq!(text(&line).contains("\"permits\":"), permits.is_some());
    }
    assert!(
        decode_reply(br#"{"seq":4,"ok":"shared","term":2,"index":31}"#).is_err(),
        "a shared answer without holders is malformed"
    );
}

// ----- watches (issue 12 §2) -----

/// What one watch line or response of the watching session stands for.
enum WatchPrinted {
    /// A watch line the node's reply encodes to.
    Watch(lockstep::node::watch::WatchReply),
    /// A response the node's reply encodes to.
    Node(ClientReply),
    /// The codec's own refusal of the line typed just before.
    Refused,
}

fn scanner_state(owner: u64, token: u64) -> Vec<lockstep::node::watch::LockState> {
    use lockstep::node::watch::{LockState, LockView};
    let holders = vec![lockstep::node::Holder {
        owner: ClientId(owner),
        token,
    }];
    vec![LockState {
        lock: "scanner".into(),
        view: LockView {
            holders,
            waiters: 0,
        },
    }]
}

/// The session's watching part: what was typed, then what was printed for it.
fn watch_session() -> Vec<(&'static str, Vec<WatchPrinted>)> {
    use lockstep::node::watch::{
        Change, LockChange, WatchCancel, WatchEvent, WatchRefusal, WatchReply,
    };
    let event = |id, index, change| {
        let changes = vec![LockChange {
            lock: "scanner".into(),
            change,
        }];
        WatchPrinted::Watch(WatchReply::Event {
            id,
            event: WatchEvent { index, changes },
        })
    };
    let released = |id| event(id, 35, Change::Released { owner: ClientId(7) });
    let granted = |id| {
        let owner = ClientId(9);
        event(id, 36, Change::Granted { owner, token: 36 })
    };
    let release_reply = in_term(3, outcome(21, 35, Outcome::Released));
    let current = WatchReply::Current {
        id: 1,
        index: 34,
        state: scanner_state(7, 21),
        compacted: None,
    };
    let compacted = WatchReply::Current {
        id: 3,
        index: 36,
        state: scanner_state(9, 36),
        compacted: Some(20),
    };
    let stopped = WatchReply::Cancelled {
        id: 1,
        reason: WatchCancel::Stopped,
    };
    let in_use = WatchReply::Refused {
        id: 2,
        refusal: WatchRefusal::IdInUse,
    };
    let resumed = WatchReply::Resumed { id: 2, index: 36 };
    vec![
        ("watch 1", vec![WatchPrinted::Watch(current)]),
        (
            "release",
            vec![released(1), WatchPrinted::Node(release_reply)],
        ),
        ("", vec![granted(1)]),
        ("unwatch", vec![WatchPrinted::Watch(stopped)]),
        (
            "watch 2",
            vec![WatchPrinted::Watch(resumed), released(2), granted(2)],
        ),
        ("watch 3", vec![WatchPrinted::Watch(compacted)]),
        ("both", vec![WatchPrinted::Refused]),
        ("id 2 again", vec![WatchPrinted::Watch(in_use)]),
    ]
}

/// The lines of the watching part of docs/PROTOCOL.md's session.
fn documented_watch_session() -> Vec<&'static str> {
    let section = PROTOCOL_MD
        .split_once("\n### The session goes on: watching a lock\n")
        .expect("docs/PROTOCOL.md's session goes on with a watch")
        .1;
    let block = section.split_once("```\n").expect("a code block").1;
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .lines()
        .collect()
}

/// docs/PROTOCOL.md's watching session, line by line: each typed line decodes (a watch to a
/// watch request, a refusal to the printed `bad_request`), each printed watch line is the
/// codec's encoding of the node's watch reply and decodes back to it, each response the
/// codec's encoding of the node's reply.
#[test]
fn the_watching_part_of_the_nc_session_is_what_the_codec_says() {
    use lockstep::net::protocol::{decode_watch_line, encode_watch_reply, is_watch_line};
    let documented = documented_watch_session();
    let mut lines = documented.iter();
    let mut last_typed_error = None;
    for (what, printed) in watch_session() {
        if !what.is_empty() {
            let typed = lines.next().expect("a typed line");
            match decode_request(typed.as_bytes()) {
                Ok(request) => {
                    let watching = matches!(request.op, WireOp::Watch(_));
                    assert!(watching || what == "release", "{what}: {typed}");
                    last_typed_error = None;
                }
                Err(error) => last_typed_error = Some(error),
            }
        }
        for answer in printed {
            let line = *lines.next().expect("a printed line");
            let expected = match &answer {
                WatchPrinted::Watch(reply) => {
                    assert!(is_watch_line(line.as_bytes()), "{line}");
                    let decoded = decode_watch_line(line.as_bytes()).expect("it decodes");
                    assert_eq!(&decoded, reply, "{line}");
                    encode_watch_reply(reply)
                }
                WatchPrinted::Node(reply) => {
                    assert!(!is_watch_line(line.as_bytes()), "{line}");
                    encode_reply_with(reply, &addresses)
                }
                WatchPrinted::Refused => {
                    let error = last_typed_error
                        .take()
                        .expect("the line before was refused");
                    encode_error(&ErrorReply::from(error))
                }
            };
            assert_eq!(text(&expected), format!("{line}\n"), "{what}");
        }
    }
    assert_eq!(lines.next(), None, "every documented line is checked");
}

/// What the codec refuses of a watch before it reaches a node, each with its reason.
#[test]
fn a_watch_that_could_never_be_served_is_refused_by_the_codec_with_its_reason() {
    let start = r#"{"seq":3,"op":"watch","version":2,"client":7,"#;
    let long = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
    let cases = [
        (r#""id":1,"lock":"""#.to_string(), "`lock` cannot be empty"),
        (
            format!(r#""id":1,"lock":"{long}""#),
            "above the limit of 256",
        ),
        (
            format!(r#""id":1,"prefix":"{long}""#),
            "`prefix` is 257 bytes",
        ),
        (r#""id":1"#.to_string(), "watch needs `lock`"),
        (r#""lock":"a""#.to_string(), "watch needs `id`"),
        (
            r#""id":1,"prefix":3"#.to_string(),
            "`prefix` must be a string",
        ),
        (
            r#""id":1,"lock":"a","from":-1"#.to_string(),
            "`from` must be",
        ),
        (
            r#""id":1,"lock":"a","wait_ms":5"#.to_string(),
            "unknown field `wait_ms`",
        ),
    ];
    for (fields, reason) in cases {
        let line = format!("{start}{fields}}}");
        let error = decode_request(line.as_bytes()).expect_err(&line);
        assert_eq!(error.seq, Some(3), "{line}");
        assert!(error.message.contains(reason), "{line}: {}", error.message);
    }
    let no_client = r#"{"seq":3,"op":"watch","version":2,"id":1,"lock":"a"}"#;
    let error = decode_request(no_client.as_bytes()).expect_err("no client");
    assert!(error.message.contains("watch needs `client`"), "{error}");
    let unwatch_with_lock = r#"{"seq":4,"op":"unwatch","version":2,"id":1,"lock":"a"}"#;
    let error = decode_request(unwatch_with_lock.as_bytes()).expect_err("lock on unwatch");
    assert!(
        error
            .message
            .contains("it takes seq, op, version, seen_index, term, id")
    );
}

/// Every watch request round-trips through the encoder, the empty prefix included, and a
/// watch never becomes a node request.
#[test]
fn every_watch_request_round_trips_and_never_becomes_a_node_request() {
    use lockstep::net::protocol::WatchRequest;
    use lockstep::node::watch::WatchTarget;
    let requests = [
        WatchRequest::Start {
            client: ClientId(7),
            secret: Some(secret()),
            id: 1,
            target: WatchTarget::Lock("scanner".into()),
            from: None,
        },
        WatchRequest::Start {
            client: ClientId(7),
            secret: Some(secret()),
            id: 2,
            target: WatchTarget::Prefix(String::new()),
            from: Some(40),
        },
        WatchRequest::Stop { id: 2 },
    ];
    for watch in requests {
        let request = WireRequest {
            seq: 5,
            seen_index: 9,
            term: 3,
            op: WireOp::Watch(watch),
        };
        let line = encode_request(&request);
        assert_eq!(
            decode_request(&line),
            Ok(request.clone()),
            "{}",
            text(&line)
        );
        assert_eq!(request.into_client_request(), None);
    }
}

/// Every ending a watch line can carry round-trips, and a line that lacks what its ending
/// needs is refused, never guessed.
#[test]
fn every_watch_ending_round_trips_and_an_incomplete_one_is_refused() {
    use lockstep::net::protocol::{decode_watch_line, encode_watch_reply};
    use lockstep::node::watch::{WatchCancel, WatchRefusal, WatchReply};
    let refused = |refusal| WatchReply::Refused { id: 4, refusal };
    let endings = [
        WatchReply::Cancelled {
            id: 4,
            reason: WatchCancel::FellBehind { kept_after: 40 },
        },
        refused(WatchRefusal::TooManyWatches { max: 16 }),
        refused(WatchRefusal::BadTarget {
            reason: "the lock name is empty".into(),
        }),
        refused(WatchRefusal::Unauthorized),
        refused(WatchRefusal::UnknownClient {
            client: ClientId(70),
        }),
    ];
    for reply in endings {
        let line = encode_watch_reply(&reply);
        assert_eq!(decode_watch_line(&line), Ok(reply), "{}", text(&line));
    }
    for broken in [
        r#"{"watch":4,"end":"fell_behind"}"#,
        r#"{"watch":4,"end":"too_many_watches"}"#,
        r#"{"watch":4,"end":"vanished"}"#,
        r#"{"watch":4,"start":"resumed"}"#,
        r#"{"watch":4,"index":3}"#,
        r#"{"watch":4,"start":"compacted","index":3,"state":[]}"#,
    ] {
        assert!(decode_watch_line(broken.as_bytes()).is_err(), "{broken}");
    }
}
