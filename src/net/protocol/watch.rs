//! The wire side of watches (docs/PROTOCOL.md, "watch"; docs/design.md, "Watches"): the
//! `watch` and `unwatch` request lines, and the watch lines a server streams back.
//!
//! Like the rest of the codec this never touches a socket or a clock, and bad input is a typed
//! [`WireError`], never a panic. A watch line is not a response to a `seq`: it carries the
//! client's watch id (`"watch":1`), and a connection may carry several watches and ordinary
//! responses interleaved. A client tells them apart by the `watch` field ([`is_watch_line`]).
//!
//! The target is refused here, before the node, when it could never be served: an empty or
//! overlong lock name, an overlong prefix, both or neither of `lock` and `prefix`.

use super::{RequestReader, Value, WireError, WireOp, WireRequest, append_line, describe};
use crate::node::watch::{
    LockChange, LockState, WATCH_PREFIX_BYTES_MAX, WatchCancel, WatchEvent, WatchRefusal,
    WatchReply, WatchTarget,
};
use crate::node::{ClientId, ClientSecret, LOCK_NAME_BYTES_MAX, LogIndex};
use serde::{Deserialize, Serialize};

/// The fields a `watch` request takes besides the common ones.
pub(super) const WATCH_FIELDS: &str = "client, secret, id, lock or prefix, from";
/// The fields an `unwatch` request takes besides the common ones.
pub(super) const UNWATCH_FIELDS: &str = "id";

/// A `watch` or an `unwatch` request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WatchRequest {
    /// `"op":"watch"`: streams the committed changes of `target` on this connection, from
    /// index `from` (changes at indexes >= it) or from now. `id` is the client's, unique among
    /// the connection's live watches; every watch line for it carries it.
    Start {
        client: ClientId,
        secret: Option<ClientSecret>,
        id: u64,
        target: WatchTarget,
        from: Option<LogIndex>,
    },
    /// `"op":"unwatch"`: stops this connection's watch `id`. It names no client: the watch was
    /// authenticated when it started, and stopping it reveals and changes nothing of anyone's.
    Stop { id: u64 },
}

impl WatchRequest {
    /// The `op` field's value.
    pub fn op_name(&self) -> &'static str {
        match self {
            WatchRequest::Start { .. } => "watch",
            WatchRequest::Stop { .. } => "unwatch",
        }
    }

    /// The watch id the request names.
    pub fn id(&self) -> u64 {
        match self {
            WatchRequest::Start { id, .. } | WatchRequest::Stop { id } => *id,
        }
    }
}

// ----- requests -----

/// A watch request's fields, in the order they are written.
#[derive(Serialize)]
struct WatchRequestFields<'a> {
    seq: u64,
    op: &'static str,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<ClientSecret>,
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seen_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
}

/// Appends the request line of `watch`, which `request` carries, to `out`.
pub(super) fn encode_watch_request(request: &WireRequest, watch: &WatchRequest, out: &mut Vec<u8>) {
    let mut fields = WatchRequestFields {
        seq: request.seq,
        op: watch.op_name(),
        version: super::PROTOCOL_VERSION,
        client: None,
        secret: None,
        id: watch.id(),
        lock: None,
        prefix: None,
        from: None,
        seen_index: (request.seen_index != 0).then_some(request.seen_index),
        term: (request.term != 0).then_some(request.term),
    };
    if let WatchRequest::Start {
        client,
        secret,
        target,
        from,
        ..
    } = watch
    {
        fields.client = Some(client.0);
        fields.secret = *secret;
        fields.from = *from;
        match target {
            WatchTarget::Lock(lock) => fields.lock = Some(lock),
            WatchTarget::Prefix(prefix) => fields.prefix = Some(prefix),
        }
    }
    append_line(&fields, out);
}

impl RequestReader {
    /// The careful decoder's `watch`: client, secret, id, exactly one of lock and prefix,
    /// optional from.
    pub(super) fn watch_op(&mut self) -> Result<WireOp, WireError> {
        let client = self.client("watch")?;
        let secret = self.secret()?;
        let id = self.watch_id("watch")?;
        let target = self.watch_target()?;
        const FROM: &str = "the first log index whose changes you want (the last you saw + 1)";
        let from = self.whole_number("from", FROM)?;
        Ok(WireOp::Watch(WatchRequest::Start {
            client,
            secret,
            id,
            target,
            from,
        }))
    }

    /// The careful decoder's `unwatch`: the id alone.
    pub(super) fn unwatch_op(&mut self) -> Result<WireOp, WireError> {
        let id = self.watch_id("unwatch")?;
        Ok(WireOp::Watch(WatchRequest::Stop { id }))
    }

    fn watch_id(&mut self, op: &str) -> Result<u64, WireError> {
        const WHAT: &str = "your number for this watch, unique among this connection's watches";
        self.whole_number("id", WHAT)?
            .ok_or_else(|| self.error(format!("{op} needs `id` ({WHAT})")))
    }

    fn watch_target(&mut self) -> Result<WatchTarget, WireError> {
        let lock = self.map.remove("lock");
        let prefix = self.map.remove("prefix");
        match (lock, prefix) {
            (Some(_), Some(_)) => Err(self.error(
                "watch takes `lock` or `prefix`, not both (a prefix covers every lock whose \
                 name starts with it)"
                    .into(),
            )),
            (None, None) => Err(self.error(format!(
                "watch needs `lock` (one lock's name, 1 to {LOCK_NAME_BYTES_MAX} bytes) or \
                 `prefix` (every lock whose name starts with it; \"\" for every lock)"
            ))),
            (Some(lock), None) => {
                // Put back for the shared lock-name rules.
                self.map.insert("lock".into(), lock);
                Ok(WatchTarget::Lock(self.lock("watch")?))
            }
            (None, Some(Value::String(prefix))) if prefix.len() > WATCH_PREFIX_BYTES_MAX => {
                Err(self.error(format!(
                    "`prefix` is {} bytes, above the limit of {WATCH_PREFIX_BYTES_MAX}",
                    prefix.len()
                )))
            }
            (None, Some(Value::String(prefix))) => Ok(WatchTarget::Prefix(prefix)),
            (None, Some(other)) => {
                let got = describe(&other);
                Err(self.error(format!("`prefix` must be a string; got {got}")))
            }
        }
    }
}

// ----- watch lines -----

/// A watch line's fields, in the order they are written. Decoding ignores fields not listed,
/// so that a server may add some within a version.
#[derive(Default, Serialize, Deserialize)]
struct WatchLineFields {
    watch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<Vec<LockState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changes: Option<Vec<LockChange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The line a server writes for `reply`, with its newline:
/// - `{"watch":1,"start":"current","index":12,"state":[...]}`: the state at `index` (a watch
///   without `from`); `"start":"compacted"` with `kept_after` when `from` was older than this
///   server keeps;
/// - `{"watch":1,"start":"resumed","index":14}`: served from `from`;
/// - `{"watch":1,"index":13,"changes":[...]}`: an event;
/// - `{"watch":1,"end":"stopped"}` and the other ends ([`end_name`]): nothing more follows.
#[must_use]
pub fn encode_watch_reply(reply: &WatchReply) -> Vec<u8> {
    let mut fields = WatchLineFields {
        watch: reply.id(),
        ..WatchLineFields::default()
    };
    match reply {
        WatchReply::Current {
            index,
            state,
            compacted,
            ..
        } => {
            let start = if compacted.is_some() {
                "compacted"
            } else {
                "current"
            };
            fields.start = Some(start.into());
            fields.index = Some(*index);
            fields.kept_after = *compacted;
            fields.state = Some(state.clone());
        }
        WatchReply::Resumed { index, .. } => {
            fields.start = Some("resumed".into());
            fields.index = Some(*index);
        }
        WatchReply::Event { event, .. } => {
            fields.index = Some(event.index);
            fields.changes = Some(event.changes.clone());
        }
        WatchReply::Cancelled { reason, .. } => {
            fields.end = Some(end_name_of_cancel(reason).into());
            if let WatchCancel::FellBehind { kept_after } = reason {
                fields.kept_after = Some(*kept_after);
            }
        }
        WatchReply::Refused { refusal, .. } => {
            fields.end = Some(end_name(refusal).into());
            match refusal {
                WatchRefusal::TooManyWatches { max } => fields.max = Some(*max),
                WatchRefusal::BadTarget { reason } => fields.reason = Some(reason.clone()),
                WatchRefusal::UnknownClient { client } => fields.client = Some(client.0),
                WatchRefusal::IdInUse | WatchRefusal::Unauthorized => {}
            }
        }
    }
    let mut line = Vec::new();
    append_line(&fields, &mut line);
    line
}

fn end_name_of_cancel(reason: &WatchCancel) -> &'static str {
    match reason {
        WatchCancel::Stopped => "stopped",
        WatchCancel::FellBehind { .. } => "fell_behind",
    }
}

/// The `end` of a watch that was not started.
pub fn end_name(refusal: &WatchRefusal) -> &'static str {
    match refusal {
        WatchRefusal::TooManyWatches { .. } => "too_many_watches",
        WatchRefusal::IdInUse => "id_in_use",
        WatchRefusal::BadTarget { .. } => "bad_target",
        WatchRefusal::Unauthorized => "unauthorized",
        WatchRefusal::UnknownClient { .. } => "unknown_client",
    }
}

/// Whether a line from a server is a watch line (it has a `watch` field) rather than a
/// response to a `seq`. Cheap: it looks for the field name, and [`decode_watch_line`] decides.
pub fn is_watch_line(line: &[u8]) -> bool {
    line.windows(8).any(|window| window == b"\"watch\":")
}

/// Decodes a watch line, for a client. A line that breaks the format is a [`WireError`].
pub fn decode_watch_line(line: &[u8]) -> Result<WatchReply, WireError> {
    let fields: WatchLineFields = serde_json::from_slice(line)
        .map_err(|error| WireError::malformed(None, format!("malformed watch line: {error}")))?;
    let id = fields.watch;
    let missing = |name: &str, what: &str| {
        WireError::malformed(None, format!("malformed watch line: {what} needs `{name}`"))
    };
    let index = || {
        fields
            .index
            .ok_or_else(|| missing("index", "a start or an event"))
    };
    match (fields.start.as_deref(), fields.end.as_deref()) {
        (Some(start @ ("current" | "compacted")), None) => {
            let compacted = match start {
                "compacted" => Some(
                    fields
                        .kept_after
                        .ok_or_else(|| missing("kept_after", "a compacted start"))?,
                ),
                _ => None,
            };
            Ok(WatchReply::Current {
                id,
                index: index()?,
                state: fields
                    .state
                    .clone()
                    .ok_or_else(|| missing("state", start))?,
                compacted,
            })
        }
        (Some("resumed"), None) => Ok(WatchReply::Resumed {
            id,
            index: index()?,
        }),
        (None, None) => {
            let changes = fields
                .changes
                .clone()
                .ok_or_else(|| missing("changes", "an event"))?;
            let event = WatchEvent {
                index: index()?,
                changes,
            };
            Ok(WatchReply::Event { id, event })
        }
        (None, Some(end)) => decode_end(id, end, &fields),
        (Some(start), end) => Err(WireError::malformed(
            None,
            format!("malformed watch line: start `{start}` with end {end:?}"),
        )),
    }
}

fn decode_end(id: u64, end: &str, fields: &WatchLineFields) -> Result<WatchReply, WireError> {
    let missing = |name: &str| {
        WireError::malformed(
            None,
            format!("malformed watch line: `{end}` needs `{name}`"),
        )
    };
    let refused = |refusal| Ok(WatchReply::Refused { id, refusal });
    match end {
        "stopped" => Ok(WatchReply::Cancelled {
            id,
            reason: WatchCancel::Stopped,
        }),
        "fell_behind" => Ok(WatchReply::Cancelled {
            id,
            reason: WatchCancel::FellBehind {
                kept_after: fields.kept_after.ok_or_else(|| missing("kept_after"))?,
            },
        }),
        "too_many_watches" => refused(WatchRefusal::TooManyWatches {
            max: fields.max.ok_or_else(|| missing("max"))?,
        }),
        "id_in_use" => refused(WatchRefusal::IdInUse),
        "bad_target" => refused(WatchRefusal::BadTarget {
            reason: fields.reason.clone().ok_or_else(|| missing("reason"))?,
        }),
        "unauthorized" => refused(WatchRefusal::Unauthorized),
        "unknown_client" => refused(WatchRefusal::UnknownClient {
            client: ClientId(fields.client.ok_or_else(|| missing("client"))?),
        }),
        other => Err(WireError::malformed(
            None,
            format!("malformed watch line: unknown end `{other}`"),
        )),
    }
}
