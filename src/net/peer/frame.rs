//! Peer frames: how servers cut their TCP byte streams into messages, as a pure codec.
//!
//! Every frame is a big-endian `u32` payload length followed by that many payload bytes. The
//! payload is one [`PeerFrame`] as JSON. This module must never touch a socket, and must never
//! allocate on the word of a length prefix: a frame longer than the decoder's limit is refused
//! as soon as its four length bytes have arrived, and the decoder only ever holds bytes it was
//! actually given.

use crate::net::peer::handshake::{Handshake, Nonce, Proof};
use crate::node::PeerMessage;
use serde::{Deserialize, Serialize};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Largest payload a peer may send. A snapshot of a large lock table is the biggest message;
/// 16 MiB leaves room for about 100,000 held locks with long names.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What one frame carries.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerFrame {
    /// Connector to acceptor, first frame: who is calling and whom it means to reach.
    Handshake(Handshake),
    /// Acceptor to connector, when both hold a cluster secret: the acceptor's fresh nonce.
    Challenge { nonce: Nonce },
    /// Connector to acceptor, answering a challenge: the connector's proof of the secret.
    Proof { proof: Proof },
    /// Acceptor to connector: the handshake passed; `Message` frames may follow. With a
    /// cluster secret it carries the acceptor's proof, which the connector checks first.
    Accepted { proof: Option<Proof> },
    /// Acceptor to connector: the handshake failed, and why. The acceptor closes next.
    Refused { reason: String },
    /// A Raft message, connector to acceptor.
    Message(PeerMessage),
    /// Either way, after the handshake: "still here". Each side sends one whenever it has had
    /// nothing else to write for a keepalive interval, so that a link that carries nothing for
    /// longer is known dead (`transport::PeerTiming`). Added in peer protocol version 3.
    Keepalive,
}

/// Why a byte stream is not a sequence of frames. Any of these ends the connection.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame with an empty payload")]
    Empty,
    #[error("a frame of {length_bytes} bytes, more than the limit of {length_bytes_max}")]
    TooLong {
        length_bytes: u64,
        length_bytes_max: u64,
    },
    #[error("the stream ended {buffered_bytes} bytes into a frame")]
    Truncated { buffered_bytes: usize },
    #[error("a frame that is not a peer frame: {reason}")]
    Undecodable { reason: String },
}

/// Appends `payload` as one frame to `out`. Panics on an empty or oversized payload: the
/// encoder's own messages are bounded, so that is a bug, not bad input.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(!payload.is_empty(), "peer frame: an empty payload");
    assert!(
        payload.len() <= FRAME_BYTES_MAX,
        "peer frame: a payload of {} bytes, over the limit of {FRAME_BYTES_MAX}",
        payload.len()
    );
    let length = u32::try_from(payload.len()).expect("bounded by FRAME_BYTES_MAX");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends `frame`, JSON-encoded, to `out`. A message too large for one frame (a snapshot of
/// more than [`FRAME_BYTES_MAX`]) is an error, and nothing is appended.
pub fn encode_peer_frame(frame: &PeerFrame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_BYTES]);
    serde_json::to_writer(&mut *out, frame).expect("peer frames serialise");
    let length_bytes = out.len() - start - LENGTH_PREFIX_BYTES;
    if length_bytes > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(FrameError::TooLong {
            length_bytes: length_bytes as u64,
            length_bytes_max: FRAME_BYTES_MAX as u64,
        });
    }
    assert!(length_bytes > 0, "JSON is never empty");
    let length = u32::try_from(length_bytes).expect("bounded by FRAME_BYTES_MAX");
    out[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Decodes one frame's payload.
pub fn decode_peer_frame(payload: &[u8]) -> Result<PeerFrame, FrameError> {
    serde_json::from_slice(payload).map_err(|error| FrameError::Undecodable {
        reason: error.to_string(),
    })
}

/// Splits a byte stream into frame payloads with bounded memory: it holds at most one frame
/// plus the bytes of one `feed`. One per inbound connection.
///
/// Contract: feed bytes in the order they were read. After an error the decoder refuses
/// everything: close the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
    buffer: Vec<u8>,
    failed: bool,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_limit(FRAME_BYTES_MAX)
    }

    /// A decoder with another payload limit: small while a handshake is read, for tests.
    pub fn with_limit(frame_bytes_max: usize) -> FrameDecoder {
        assert!(frame_bytes_max > 0, "frame decoder: a limit of 0 bytes");
        FrameDecoder {
            frame_bytes_max,
            buffer: Vec::new(),
            failed: false,
        }
    }

    /// Raises the payload limit, for the frames after a handshake. Frames whose length was
    /// already checked stay checked: raising never lets through what the old limit refused.
    pub fn raise_limit(&mut self, frame_bytes_max: usize) {
        assert!(
            frame_bytes_max >= self.frame_bytes_max,
            "frame decoder: the limit only rises"
        );
        self.frame_bytes_max = frame_bytes_max;
    }

    /// Takes the next bytes of the stream; returns the payloads of the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        if self.failed {
            return Err(FrameError::Undecodable {
                reason: "the stream already broke the framing".into(),
            });
        }
        // Check the length of the frame in progress before keeping any of its payload.
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut consumed = 0;
        // Bounded: every round consumes at least one whole frame.
        while let Some(length) = self.next_length(consumed)? {
            let start = consumed + LENGTH_PREFIX_BYTES;
            if self.buffer.len() < start + length {
                break;
            }
            frames.push(self.buffer[start..start + length].to_vec());
            consumed = start + length;
        }
        self.buffer.drain(..consumed);
        if self.buffer.is_empty() && self.buffer.capacity() > 64 * 1024 {
            self.buffer = Vec::new();
        }
        assert!(
            self.buffer.len() <= LENGTH_PREFIX_BYTES + self.frame_bytes_max + bytes.len(),
            "frame decoder: holding more than one frame and one read"
        );
        Ok(frames)
    }

    /// The payload length of the frame starting at `at`, once its prefix has arrived.
    fn next_length(&mut self, at: usize) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buffer.get(at..at + LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(prefix.try_into().expect("four bytes"));
        let error = if length == 0 {
            FrameError::Empty
        } else if length as usize > self.frame_bytes_max {
            FrameError::TooLong {
                length_bytes: u64::from(length),
                length_bytes_max: self.frame_bytes_max as u64,
            }
        } else {
            return Ok(Some(length as usize));
        };
        self.failed = true;
        self.buffer = Vec::new();
        Err(error)
    }

    /// At the end of the stream: an error if it stopped inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered_bytes: self.buffer.len(),
            })
        }
    }

    /// Bytes allocated for the frame in progress.
    pub fn buffer_capacity_bytes(&self) -> usize {
        self.buffer.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ServerId;

    fn heartbeat() -> PeerMessage {
        PeerMessage::AppendEntries {
            term: 3,
            prev_log_index: 7,
            prev_log_term: 2,
            entries: Vec::new(),
            leader_commit: 7,
            round: 11,
            urgent: false,
        }
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let frames = [
            PeerFrame::Message(heartbeat()),
            PeerFrame::Accepted { proof: None },
            PeerFrame::Accepted {
                proof: Some(Proof([7; 32])),
            },
            PeerFrame::Challenge {
                nonce: Nonce([9; 32]),
            },
            PeerFrame::Proof {
                proof: Proof([8; 32]),
            },
            PeerFrame::Refused {
                reason: "wrong cluster".into(),
            },
            PeerFrame::Handshake(Handshake::new("lockstep", ServerId(1), ServerId(2))),
            PeerFrame::Keepalive,
        ];
        let mut stream = Vec::new();
        for frame in &frames {
            encode_peer_frame(frame, &mut stream).unwrap();
        }
        let mut whole = FrameDecoder::new();
        let payloads = whole.feed(&stream).unwrap();
        let decoded: Vec<PeerFrame> = payloads
            .iter()
            .map(|p| decode_peer_frame(p).unwrap())
            .collect();
        assert_eq!(decoded, frames);
        whole.finish().unwrap();

        let mut trickled = FrameDecoder::new();
        let mut count = 0;
        for byte in &stream {
            count += trickled.feed(std::slice::from_ref(byte)).unwrap().len();
        }
        assert_eq!(count, frames.len());
        trickled.finish().unwrap();
    }

    #[test]
    fn an_oversize_frame_is_refused_on_its_prefix_before_allocating() {
        let mut decoder = FrameDecoder::with_limit(1024);
        let claimed: u32 = 1 << 30;
        let error = decoder.feed(&claimed.to_be_bytes()).unwrap_err();
        assert_eq!(
            error,
            FrameError::TooLong {
                length_bytes: 1 << 30,
                length_bytes_max: 1024
            }
        );
        assert!(decoder.buffer_capacity_bytes() < 1024);
        // The stream is broken for good.
        assert!(decoder.feed(b"more").is_err());
    }

    #[test]
    fn the_limit_itself_is_allowed_and_one_more_byte_is_not() {
        let mut at_limit = Vec::new();
        encode_frame(&[b'x'; 16], &mut at_limit);
        assert_eq!(
            FrameDecoder::with_limit(16).feed(&at_limit).unwrap().len(),
            1
        );
        let mut over = Vec::new();
        encode_frame(&[b'x'; 17], &mut over);
        assert!(matches!(
            FrameDecoder::with_limit(16).feed(&over),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn a_raised_limit_lets_larger_frames_through_after_a_partial_one() {
        let mut stream = Vec::new();
        encode_frame(&[b'x'; 8], &mut stream);
        encode_frame(&[b'y'; 64], &mut stream);
        let mut decoder = FrameDecoder::with_limit(16);
        // The first frame, and only the prefix of the second, under the handshake's limit.
        assert_eq!(
            decoder.feed(&stream[..12 + 2]).unwrap(),
            vec![vec![b'x'; 8]]
        );
        decoder.raise_limit(64);
        assert_eq!(
            decoder.feed(&stream[12 + 2..]).unwrap(),
            vec![vec![b'y'; 64]]
        );
        decoder.finish().unwrap();
    }

    #[test]
    fn an_empty_frame_is_refused() {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.feed(&[0, 0, 0, 0]).unwrap_err(), FrameError::Empty);
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated() {
        let mut stream = Vec::new();
        encode_peer_frame(&PeerFrame::Message(heartbeat()), &mut stream).unwrap();
        let mut decoder = FrameDecoder::new();
        assert!(
            decoder
                .feed(&stream[..stream.len() - 3])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            decoder.finish().unwrap_err(),
            FrameError::Truncated {
                buffered_bytes: stream.len() - 3
            }
        );
        // Only the prefix arrived: still truncated.
        let mut prefix_only = FrameDecoder::new();
        assert!(prefix_only.feed(&stream[..2]).unwrap().is_empty());
        assert!(prefix_only.finish().is_err());
    }

    #[test]
    fn a_payload_that_is_not_a_peer_frame_is_undecodable() {
        assert!(matches!(
            decode_peer_frame(b"{\"nonsense\":1}"),
            Err(FrameError::Undecodable { .. })
        ));
        assert!(matches!(
            decode_peer_frame(b"\xff\xfe"),
            Err(FrameError::Undecodable { .. })
        ));
    }
}
