//! Fuzz target for the peer frame decoder: what another server (or anything that connects to
//! the peer port and gets past the preamble) can make a server hold and decode.
//!
//! The oracle is a reference decoder that reads the whole stream at once by the documented
//! framing (a big-endian `u32` length, then the payload). The real decoder, fed the same bytes
//! in any pieces, must agree with it, and must hold only memory it was given bytes for.

use crate::harness::{self, Case, Target};
use lockstep::net::peer::frame::{
    FRAME_BYTES_MAX, FrameDecoder, FrameError, LENGTH_PREFIX_BYTES, PeerFrame, decode_peer_frame,
    encode_peer_frame,
};
use lockstep::node::{Claim, ClientId, Command, Entry, PeerMessage};

/// A small limit, so that random lengths cross it often.
const SMALL_FRAME_BYTES_MAX: usize = 64;

fn valid_frames() -> Vec<Vec<PeerFrame>> {
    let entries = vec![
        Entry {
            term: 2,
            command: Command::Noop,
        },
        Entry {
            term: 2,
            command: Command::Preempt {
                client: ClientId(7),
                seq: 3,
                lock: "printer".into(),
                claim: Claim::EXCLUSIVE,
            },
        },
    ];
    let append = PeerMessage::AppendEntries {
        term: 2,
        prev_log_index: 4,
        prev_log_term: 1,
        entries,
        leader_commit: 4,
        round: 9,
        urgent: false,
    };
    let response = PeerMessage::AppendResponse {
        term: 2,
        success: false,
        match_index: 0,
        conflict_index: 3,
        conflict_term: Some(1),
        round: 9,
    };
    let votes = vec![
        PeerFrame::Message(PeerMessage::PreVote {
            term: 3,
            last_log_index: 6,
            last_log_term: 2,
        }),
        PeerFrame::Message(PeerMessage::VoteResponse {
            term: 3,
            granted: true,
        }),
        PeerFrame::Message(PeerMessage::ReadIndexResponse { id: 1, index: None }),
    ];
    vec![
        vec![
            PeerFrame::Message(PeerMessage::ReadIndexRequest { id: 1 }),
            PeerFrame::Message(append),
        ],
        vec![
            PeerFrame::Refused {
                reason: "wrong cluster \u{e9}\n".into(),
            },
            PeerFrame::Message(response),
        ],
        votes,
    ]
}

fn encode_stream(frames: &[PeerFrame]) -> Vec<u8> {
    let mut stream = Vec::new();
    for frame in frames {
        encode_peer_frame(frame, &mut stream).expect("fuzz: a small frame encodes");
    }
    stream
}

/// What the documented framing makes of a whole stream.
#[derive(Debug, PartialEq)]
struct Framed {
    payloads: Vec<Vec<u8>>,
    error: Option<FrameError>,
    /// Bytes of an incomplete frame at the end (when there is no error).
    leftover_bytes: usize,
}

fn reference_framing(stream: &[u8], frame_bytes_max: usize) -> Framed {
    let mut payloads = Vec::new();
    let mut at = 0;
    // Bounded: every round takes at least one whole frame or stops.
    loop {
        let left = stream.len() - at;
        if left < LENGTH_PREFIX_BYTES {
            break;
        }
        let prefix: [u8; 4] = stream[at..at + 4].try_into().unwrap();
        let length = u32::from_be_bytes(prefix) as usize;
        let error = if length == 0 {
            FrameError::Empty
        } else if length > frame_bytes_max {
            FrameError::TooLong {
                length_bytes: length as u64,
                length_bytes_max: frame_bytes_max as u64,
            }
        } else if left - LENGTH_PREFIX_BYTES < length {
            break;
        } else {
            payloads.push(stream[at + 4..at + 4 + length].to_vec());
            at += 4 + length;
            continue;
        };
        return Framed {
            payloads,
            error: Some(error),
            leftover_bytes: 0,
        };
    }
    Framed {
        payloads,
        error: None,
        leftover_bytes: stream.len() - at,
    }
}

/// Feeds `pieces` to a decoder with `frame_bytes_max`, checking its memory after each.
fn decode_pieces(pieces: &[&[u8]], frame_bytes_max: usize) -> Result<Framed, String> {
    let mut decoder = if frame_bytes_max == FRAME_BYTES_MAX {
        FrameDecoder::new()
    } else {
        FrameDecoder::with_limit(frame_bytes_max)
    };
    let mut payloads = Vec::new();
    let mut fed_bytes = 0;
    let mut piece_bytes_max = 0;
    for piece in pieces {
        fed_bytes += piece.len();
        piece_bytes_max = piece_bytes_max.max(piece.len());
        let result = decoder.feed(piece);
        // Never more than twice what it was given, nor than twice a frame and one read: no
        // allocation on the word of a length prefix.
        let capacity = decoder.buffer_capacity_bytes();
        let bound = (2 * fed_bytes)
            .max(8)
            .min(2 * (LENGTH_PREFIX_BYTES + frame_bytes_max + piece_bytes_max));
        if capacity > bound {
            return Err(format!(
                "holds {capacity} bytes after being fed {fed_bytes}"
            ));
        }
        match result {
            Ok(complete) => payloads.extend(complete),
            Err(error) => {
                if decoder.feed(&[0, 0, 0, 1, b'x']).is_ok() {
                    return Err(format!("decoded again after {error}"));
                }
                return Ok(Framed {
                    payloads,
                    error: Some(error),
                    leftover_bytes: 0,
                });
            }
        }
    }
    let leftover_bytes = match decoder.finish() {
        Ok(()) => 0,
        Err(FrameError::Truncated { buffered_bytes }) => buffered_bytes,
        Err(other) => return Err(format!("finish gave {other}")),
    };
    Ok(Framed {
        payloads,
        error: None,
        leftover_bytes,
    })
}

/// The decoder agrees with the reference. After an error, the frames completed in the same
/// read as the bad length are not returned (the connection closes anyway), so what came out
/// is a prefix of the reference's frames.
fn check_stream(pieces: &[&[u8]], frame_bytes_max: usize) -> Result<(), String> {
    let stream = pieces.concat();
    let expected = reference_framing(&stream, frame_bytes_max);
    let decoded = decode_pieces(pieces, frame_bytes_max)?;
    let agrees = match expected.error {
        None => decoded == expected,
        Some(_) => {
            decoded.error == expected.error && expected.payloads.starts_with(&decoded.payloads)
        }
    };
    if !agrees {
        return Err(format!(
            "limit {frame_bytes_max}, pieces of {:?} bytes: decoded {decoded:?}, expected \
             {expected:?}",
            pieces.iter().map(|piece| piece.len()).collect::<Vec<_>>()
        ));
    }
    for payload in &expected.payloads {
        check_payload(payload)?;
    }
    Ok(())
}

/// A payload that decodes re-encodes to a frame that decodes to the same thing.
fn check_payload(payload: &[u8]) -> Result<(), String> {
    let Ok(frame) = decode_peer_frame(payload) else {
        return Ok(());
    };
    let mut again = Vec::new();
    encode_peer_frame(&frame, &mut again).map_err(|error| format!("re-encoding: {error}"))?;
    match decode_peer_frame(&again[LENGTH_PREFIX_BYTES..]) {
        Ok(decoded) if decoded == frame => Ok(()),
        other => Err(format!("{frame:?} re-encoded and decoded as {other:?}")),
    }
}

/// A valid stream decodes to its frames however it is split: at every single boundary, and
/// byte by byte.
fn check_every_split(frames: &[PeerFrame]) {
    let stream = encode_stream(frames);
    let mut splits: Vec<Vec<&[u8]>> = (0..=stream.len())
        .map(|at| vec![&stream[..at], &stream[at..]])
        .collect();
    splits.push(stream.chunks(1).collect());
    for pieces in splits {
        let decoded = decode_pieces(&pieces, FRAME_BYTES_MAX).unwrap();
        assert_eq!(decoded.error, None);
        assert_eq!(decoded.leftover_bytes, 0);
        let frames_decoded: Vec<PeerFrame> = decoded
            .payloads
            .iter()
            .map(|payload| decode_peer_frame(payload).unwrap())
            .collect();
        assert_eq!(frames_decoded, frames, "split at {:?}", pieces[0].len());
    }
}

const DICTIONARY: &[&str] = &[
    "\0\0\0\u{1}",
    "\0\0\0\0",
    "\u{7f}\u{7f}\u{7f}\u{7f}",
    "\0\0\u{1}\0",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "1e400",
    "18446744073709551616",
    "\"accepted\"",
    "{\"refused\":{\"reason\":\"\"}}",
    "{\"message\":",
    "\\ud800",
];

#[test]
fn peer_frame_decoder() {
    let valid = valid_frames();
    for frames in &valid {
        check_every_split(frames);
    }
    let corpus: Vec<Vec<u8>> = valid.iter().map(|frames| encode_stream(frames)).collect();
    let target = Target {
        name: "peer_frame_decoder",
        corpus: &corpus,
        random_bytes_max: 256,
        random_prefix: &[0, 0, 0, 24],
        dictionary: DICTIONARY,
    };
    harness::fuzz(&target, |case: &Case, materialized| {
        let pieces = harness::pieces(case, &materialized.bytes);
        check_stream(&pieces, FRAME_BYTES_MAX)?;
        check_stream(&pieces, SMALL_FRAME_BYTES_MAX)?;
        // Every payload-sized slice as one frame's payload, whatever the framing said.
        check_payload(&materialized.bytes)
    });
}
