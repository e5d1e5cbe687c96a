//! Fuzz target for the client wire protocol: what any process that connects to a server's
//! client port can send it, and what a server can send a client.
//!
//! Written against the codec's public API only (`decode_request`, `decode_reply`,
//! `LineDecoder`, and `decode_request_carefully` to check that the fast path changes no
//! answer), with the session lines of docs/PROTOCOL.md as the valid inputs, so that it follows
//! the protocol document when the protocol changes.

use crate::harness::{self, Case, Target};
use lockstep::net::protocol::{
    ErrorReply, LINE_BYTES_MAX, LOCK_NAME_BYTES_MAX, LineDecoder, LineEvent,
    OVERLONG_LINE_BYTES_MAX, WireReply, decode_reply, decode_request, decode_request_carefully,
    encode_error, encode_request, encode_wire_reply,
};

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

/// Small limits, so that random streams cross them often: (line, overlong line).
const SMALL_LIMITS: (usize, u64) = (48, 160);

/// An error message quotes at most a short piece of the client's text, so it stays short.
const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// Every JSON line of docs/PROTOCOL.md: requests, replies, and refusals.
fn document_lines() -> Vec<&'static str> {
    PROTOCOL_MD
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("{\""))
        .collect()
}

/// A request that decodes re-encodes to a line that decodes to the same request; a refusal
/// becomes an error reply a client can read back, with the same seq and message.
fn check_request_line(line: &[u8]) -> Result<(), String> {
    // The fast path changes no answer: the careful decoder alone says the same.
    let decoded = decode_request(line);
    let carefully = decode_request_carefully(line);
    if decoded != carefully {
        return Err(format!(
            "decode_request said {decoded:?}, the careful decoder alone {carefully:?}"
        ));
    }
    match decoded {
        Ok(request) => {
            let encoded = encode_request(&request);
            let newlines = encoded.iter().filter(|&&byte| byte == b'\n').count();
            if newlines != 1 || encoded.last() != Some(&b'\n') {
                return Err(format!("{request:?} encodes to {newlines} newlines"));
            }
            match decode_request(&encoded) {
                Ok(again) if again == request => Ok(()),
                other => Err(format!("{request:?} re-encoded and decoded as {other:?}")),
            }
        }
        Err(error) => {
            if error.message.is_empty() || error.message.len() > ERROR_MESSAGE_BYTES_MAX {
                return Err(format!(
                    "a refusal of {} bytes: {error:?}",
                    error.message.len()
                ));
            }
            let (seq, message) = (error.seq, error.message.clone());
            let reply = encode_error(&ErrorReply::from(error));
            match decode_reply(&reply) {
                Ok(WireReply::Error(read)) if read.seq == seq && read.message == message => Ok(()),
                other => Err(format!("the refusal was read back as {other:?}")),
            }
        }
    }
}

/// A reply that decodes re-encodes to a line that decodes to the same reply.
fn check_reply_line(line: &[u8]) -> Result<(), String> {
    let Ok(reply) = decode_reply(line) else {
        return Ok(());
    };
    let encoded = encode_wire_reply(&reply);
    match decode_reply(&encoded) {
        Ok(again) if again == reply => Ok(()),
        other => Err(format!("{reply:?} re-encoded and decoded as {other:?}")),
    }
}

/// What the documented framing makes of a whole stream: each line up to the limit is a line;
/// a longer one is one `TooLong`, and one that runs past the overlong limit is also
/// `Abandoned`, which ends the stream. A line cut off by the end of the stream is no line.
///
/// Unless `strict`, the events stop, marked `Undetermined`, after the `TooLong` of the first
/// line that runs past the overlong limit and has its newline: what today's decoder does next
/// depends on how the bytes arrive (see
/// `issue_10_overlong_line_is_abandoned_however_it_arrives`).
fn reference_lines(stream: &[u8], limits: (usize, u64), strict: bool) -> Reference {
    let (line_bytes_max, overlong_line_bytes_max) = limits;
    let mut events = Vec::new();
    let segments: Vec<&[u8]> = stream.split(|&byte| byte == b'\n').collect();
    let last = segments.len() - 1;
    for (number, segment) in segments.into_iter().enumerate() {
        let ends_line = number < last;
        if segment.len() <= line_bytes_max {
            if ends_line {
                events.push(LineEvent::Line(segment.to_vec()));
            }
            continue;
        }
        events.push(LineEvent::TooLong);
        if segment.len() as u64 > overlong_line_bytes_max {
            if ends_line && !strict {
                return Reference::Undetermined(events);
            }
            events.push(LineEvent::Abandoned);
            break;
        }
    }
    Reference::Complete(events)
}

#[derive(Debug)]
enum Reference {
    /// Every event of the stream.
    Complete(Vec<LineEvent>),
    /// The first events of the stream; what follows them is not determined.
    Undetermined(Vec<LineEvent>),
}

/// Feeds `pieces` to a decoder with `limits`; checks its memory after every piece.
fn decode_lines(pieces: &[&[u8]], limits: (usize, u64)) -> Result<Vec<LineEvent>, String> {
    let mut decoder = if limits == (LINE_BYTES_MAX, OVERLONG_LINE_BYTES_MAX) {
        LineDecoder::new()
    } else {
        LineDecoder::with_limits(limits.0, limits.1)
    };
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(decoder.feed(piece));
        let (held, capacity) = (decoder.buffered_bytes(), decoder.buffer_capacity_bytes());
        if held > limits.0 || capacity > limits.0 {
            return Err(format!(
                "holds {held} bytes in {capacity}, limit {}",
                limits.0
            ));
        }
        if events.contains(&LineEvent::Abandoned) == decoder.is_usable() {
            return Err(format!("usable {} after {events:?}", decoder.is_usable()));
        }
    }
    Ok(events)
}

fn check_line_stream(pieces: &[&[u8]], limits: (usize, u64), strict: bool) -> Result<(), String> {
    let stream = pieces.concat();
    let expected = reference_lines(&stream, limits, strict);
    let decoded = decode_lines(pieces, limits)?;
    let agrees = match &expected {
        Reference::Complete(events) => decoded == *events,
        Reference::Undetermined(events) => decoded.starts_with(events),
    };
    if !agrees {
        return Err(format!(
            "limits {limits:?}, pieces of {:?} bytes: decoded {decoded:?}, expected {expected:?}",
            pieces.iter().map(|piece| piece.len()).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

fn dictionary() -> Vec<String> {
    let mut tokens: Vec<String> = [
        "\"seq\":",
        "\"op\":\"hello\"",
        "\"preempt\"",
        "\"release\"",
        "\"check\"",
        "\"client\":",
        "\"lock\":",
        "\"consistency\":\"linearizable\"",
        "\"version\":2",
        "\"seen_index\":",
        "\"term\":",
        "\"nonce\":",
        "\"secret\":\"",
        "18446744073709551615",
        "18446744073709551616",
        "-0",
        "0.5",
        "1e3",
        "null",
        "true",
        "\"\\u0000\"",
        "\n",
        "{",
        "}",
        "[",
        "\"",
        ",",
        "\"ok\":\"welcome\"",
        "\"error\":\"not_leader\"",
        "\"leader_address\":",
        "\"error\":\"unsupported_version\"",
    ]
    .iter()
    .map(|token| token.to_string())
    .collect();
    tokens.push(format!("\"{}\"", "x".repeat(LOCK_NAME_BYTES_MAX)));
    tokens.push(format!("\"{}\"", "x".repeat(LOCK_NAME_BYTES_MAX + 1)));
    tokens
}

/// The document's lines one by one, and as one session stream.
fn corpus() -> Vec<Vec<u8>> {
    let lines = document_lines();
    let mut corpus: Vec<Vec<u8>> = lines.iter().map(|line| line.as_bytes().to_vec()).collect();
    corpus.push(lines.join("\n").into_bytes());
    corpus
}

fn check_case(case: &Case, bytes: &[u8], strict: bool) -> Result<(), String> {
    check_request_line(bytes)?;
    check_reply_line(bytes)?;
    for line in bytes.split(|&byte| byte == b'\n') {
        check_request_line(line)?;
        check_reply_line(line)?;
    }
    let pieces = harness::pieces(case, bytes);
    check_line_stream(&pieces, SMALL_LIMITS, strict)?;
    check_line_stream(&pieces, (LINE_BYTES_MAX, OVERLONG_LINE_BYTES_MAX), strict)
}

#[test]
fn client_protocol_codec() {
    let lines = document_lines();
    let requests = lines
        .iter()
        .filter(|line| decode_request(line.as_bytes()).is_ok())
        .count();
    let replies = lines
        .iter()
        .filter(|line| decode_reply(line.as_bytes()).is_ok())
        .count();
    assert!(
        requests >= 5 && replies >= 5,
        "docs/PROTOCOL.md: {requests} requests, {replies} replies"
    );
    // A valid session gives its lines however it is split.
    let session = format!("{}\n", lines.join("\n"));
    let session = session.as_bytes();
    for at in 0..=session.len() {
        check_line_stream(&[&session[..at], &session[at..]], SMALL_LIMITS, false).unwrap();
        let pieces = [&session[..at], &session[at..]];
        let events = decode_lines(&pieces, (LINE_BYTES_MAX, OVERLONG_LINE_BYTES_MAX)).unwrap();
        let expected: Vec<LineEvent> = lines
            .iter()
            .map(|line| LineEvent::Line(line.as_bytes().to_vec()))
            .collect();
        assert_eq!(events, expected, "split at {at}");
    }
    let corpus = corpus();
    let dictionary = dictionary();
    let dictionary: Vec<&str> = dictionary.iter().map(String::as_str).collect();
    let target = Target {
        name: "client_protocol_codec",
        corpus: &corpus,
        random_bytes_max: 256,
        random_prefix: b"{\"seq\":1,",
        dictionary: &dictionary,
    };
    harness::fuzz(&target, |case, materialized| {
        check_case(case, &materialized.bytes, false)
    });
}

/// Issue 10, item 5: "the 1 MiB rule holds however the bytes arrive". A line that ran past the
/// overlong limit used to be abandoned only if a read ended inside it after the limit; with its
/// newline in the same read it was merely too long. The codec target checked strictly.
#[test]
fn issue_10_overlong_line_is_abandoned_however_it_arrives() {
    let mut stream = vec![b'x'; OVERLONG_LINE_BYTES_MAX as usize + 10];
    stream.push(b'\n');
    let whole = decode_lines(&[&stream], (LINE_BYTES_MAX, OVERLONG_LINE_BYTES_MAX)).unwrap();
    assert_eq!(whole, vec![LineEvent::TooLong, LineEvent::Abandoned]);
    let corpus = corpus();
    let target = Target {
        name: "client_protocol_codec_strict",
        corpus: &corpus,
        random_bytes_max: 512,
        random_prefix: &[b'x'; 200],
        dictionary: &[],
    };
    harness::fuzz(&target, |case, materialized| {
        check_case(case, &materialized.bytes, true)
    });
}
