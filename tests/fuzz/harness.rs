//! The fuzzing loop every target shares: seeded proptest runs over random bytes and over
//! mutations of valid inputs, a bounded number of cases in CI and as long as asked otherwise.
//!
//! Deterministic: the cases of chunk `k` of a target come from a ChaCha RNG seeded with the
//! target's name and `k`, so the same chunk gives the same cases on every machine and run.
//! Nothing here reads a clock except to decide when a timed run stops (between chunks).
//!
//! Knobs (environment variables):
//! - `LOCKSTEP_FUZZ_CASES`: cases per chunk (default [`CASES_DEFAULT`]);
//! - `LOCKSTEP_FUZZ_SECONDS`: keep running chunks 0, 1, 2, ... until this many seconds have
//!   passed, then print cases per second (use with `--release -- --nocapture`);
//! - `LOCKSTEP_FUZZ_CHUNK`: the first chunk to run (what a failure report says to set).

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Cases per target in CI: enough to try every mutation kind on every corpus entry many times,
/// few enough that the whole file stays well under 30 s in a debug build.
pub const CASES_DEFAULT: u32 = 1024;

/// One edit of a valid input. Positions are proptest [`Index`]es, which fit any length and
/// shrink towards the start.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    Overwrite {
        at: Index,
        byte: u8,
    },
    Truncate {
        at: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        length: u8,
    },
    /// This input up to `cut`, then corpus entry `other` from `other_cut`.
    Splice {
        other: Index,
        cut: Index,
        other_cut: Index,
    },
}

/// Where a case's bytes come from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Random bytes, after the target's `random_prefix` when `prefixed`.
    Random { bytes: Vec<u8>, prefixed: bool },
    /// A corpus entry with edits applied in order.
    Mutated {
        base: Index,
        mutations: Vec<Mutation>,
    },
}

/// One generated case: the input, and cut points for targets that read a stream in pieces.
#[derive(Clone, Debug)]
pub struct Case {
    pub input: Input,
    pub cuts: Vec<Index>,
}

/// A mutation with its positions resolved against the bytes it was applied to.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Applied {
    FlipBit { at: usize },
    Overwrite { at: usize },
    Truncate { at: usize },
    Insert { at: usize, length: usize },
    Delete { at: usize, length: usize },
    Splice { other: usize },
}

/// A case turned into bytes, with what was done to make them.
#[derive(Clone, Debug)]
pub struct Materialized {
    pub bytes: Vec<u8>,
    /// The corpus entry the bytes were mutated from; `None` for random bytes.
    pub base: Option<usize>,
    pub applied: Vec<Applied>,
}

impl Materialized {
    /// The one mutation, when there was exactly one.
    pub fn single(&self) -> Option<Applied> {
        match self.applied.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// Whether another corpus entry's bytes went into this one.
    pub fn spliced(&self) -> bool {
        self.applied
            .iter()
            .any(|applied| matches!(applied, Applied::Splice { .. }))
    }
}

/// What a target fuzzes and with what.
pub struct Target<'a> {
    pub name: &'static str,
    /// Valid inputs to mutate; at least one.
    pub corpus: &'a [Vec<u8>],
    /// Longest random input.
    pub random_bytes_max: usize,
    /// Put in front of half the random inputs (a valid file header, say), so that random
    /// bytes get past the first check.
    pub random_prefix: &'a [u8],
    /// Tokens that mean something to the target's parser, for insertions.
    pub dictionary: &'a [&'a str],
}

fn mutation(dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Mutation> {
    let inserted = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..16),
        prop::sample::select(dictionary),
    ];
    let interesting = prop::sample::select(vec![0u8, 0xff, 0x7f, 0x80, b'\n', b'"', b'0', b' ']);
    let byte = prop_oneof![any::<u8>(), interesting];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), byte).prop_map(|(at, byte)| Mutation::Overwrite { at, byte }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), inserted).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<Index>(), 1u8..32).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(other, cut, other_cut)| {
            Mutation::Splice {
                other,
                cut,
                other_cut,
            }
        }),
    ]
}

fn case_strategy(target: &Target<'_>) -> impl Strategy<Value = Case> + use<> {
    let dictionary: Vec<Vec<u8>> = if target.dictionary.is_empty() {
        vec![vec![0]]
    } else {
        target
            .dictionary
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect()
    };
    let random = (
        prop::collection::vec(any::<u8>(), 0..=target.random_bytes_max),
        any::<bool>(),
    )
        .prop_map(|(bytes, prefixed)| Input::Random { bytes, prefixed });
    // Half the mutated cases have exactly one edit, so that a target can check exactly what
    // one bit flip or one truncation must do.
    let mutations = prop_oneof![
        prop::collection::vec(mutation(dictionary.clone()), 1..=1),
        prop::collection::vec(mutation(dictionary), 2..=5),
    ];
    let mutated = (any::<Index>(), mutations)
        .prop_map(|(base, mutations)| Input::Mutated { base, mutations });
    let input = prop_oneof![1 => random, 3 => mutated];
    (input, prop::collection::vec(any::<Index>(), 0..8))
        .prop_map(|(input, cuts)| Case { input, cuts })
}

/// The bytes of `case` for `target`.
pub fn materialize(target: &Target<'_>, case: &Case) -> Materialized {
    let (base, mutations) = match &case.input {
        Input::Random { bytes, prefixed } => {
            let mut all = if *prefixed {
                target.random_prefix.to_vec()
            } else {
                Vec::new()
            };
            all.extend_from_slice(bytes);
            return Materialized {
                bytes: all,
                base: None,
                applied: Vec::new(),
            };
        }
        Input::Mutated { base, mutations } => (base.index(target.corpus.len()), mutations),
    };
    let mut bytes = target.corpus[base].clone();
    let applied = mutations
        .iter()
        .map(|mutation| apply(target.corpus, &mut bytes, mutation))
        .collect();
    Materialized {
        bytes,
        base: Some(base),
        applied,
    }
}

/// An index into `0..size`, 0 for an empty range.
fn position(at: &Index, size: usize) -> usize {
    if size == 0 { 0 } else { at.index(size) }
}

fn apply(corpus: &[Vec<u8>], bytes: &mut Vec<u8>, mutation: &Mutation) -> Applied {
    let length = bytes.len();
    match mutation {
        Mutation::FlipBit { at, bit } if length > 0 => {
            let at = position(at, length);
            bytes[at] ^= 1 << bit;
            Applied::FlipBit { at }
        }
        Mutation::Overwrite { at, byte } if length > 0 => {
            let at = position(at, length);
            bytes[at] = *byte;
            Applied::Overwrite { at }
        }
        Mutation::FlipBit { .. } | Mutation::Overwrite { .. } | Mutation::Truncate { .. } => {
            let at = match mutation {
                Mutation::Truncate { at } => position(at, length),
                _ => 0,
            };
            bytes.truncate(at);
            Applied::Truncate { at }
        }
        Mutation::Insert {
            at,
            bytes: inserted,
        } => {
            let at = position(at, length + 1);
            bytes.splice(at..at, inserted.iter().copied());
            Applied::Insert {
                at,
                length: inserted.len(),
            }
        }
        Mutation::Delete {
            at,
            length: deleted,
        } => {
            let at = position(at, length + 1);
            let end = (at + usize::from(*deleted)).min(length);
            bytes.drain(at..end);
            Applied::Delete {
                at,
                length: end - at,
            }
        }
        Mutation::Splice {
            other,
            cut,
            other_cut,
        } => {
            let other = other.index(corpus.len());
            let cut = position(cut, length + 1);
            let source = &corpus[other];
            let other_cut = position(other_cut, source.len() + 1);
            bytes.truncate(cut);
            bytes.extend_from_slice(&source[other_cut..]);
            Applied::Splice { other }
        }
    }
}

/// `bytes` cut at the case's cut points, in order, empty pieces included.
pub fn pieces<'b>(case: &Case, bytes: &'b [u8]) -> Vec<&'b [u8]> {
    let mut cuts: Vec<usize> = case
        .cuts
        .iter()
        .map(|cut| position(cut, bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    assert_eq!(pieces.concat(), bytes, "harness: pieces cover the input");
    pieces
}

/// A case's bytes read as a program, for targets whose inputs are sequences of events (frames
/// of a handshake, requests to a cluster) rather than one byte string. Reading past the end
/// gives zeros, so every byte string is a program, and mutating the bytes mutates the events.
pub struct Script<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Script<'a> {
    pub fn new(bytes: &'a [u8]) -> Script<'a> {
        Script { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        byte
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `choices`, by the next byte.
    pub fn pick<'c, T>(&mut self, choices: &'c [T]) -> &'c T {
        &choices[usize::from(self.byte()) % choices.len()]
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// The next `length` bytes (zeros past the end).
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.byte()).collect()
    }

    /// A string of up to `chars_max` characters: ASCII, control characters, Latin-1 and a
    /// four-byte character, so that byte and character limits differ.
    pub fn text(&mut self, chars_max: usize) -> String {
        let length = usize::from(self.byte()) * chars_max / 255;
        (0..length)
            .map(|_| match self.byte() {
                byte @ 0..=0xbf => char::from(byte),
                0xc0..=0xdf => '\u{e9}',
                _ => '\u{1f512}',
            })
            .collect()
    }
}

/// Lowercase hex, for failure reports.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn environment_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let number = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number"));
    Some(number)
}

/// The RNG seed of a target's chunk: the target's name and the chunk number, nothing else.
fn chunk_seed(name: &str, chunk: u64) -> [u8; 32] {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut name_hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        name_hash = (name_hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&name_hash.to_le_bytes());
    seed[8..16].copy_from_slice(&chunk.to_le_bytes());
    seed
}

/// Runs `check` on the target's cases: one chunk of `LOCKSTEP_FUZZ_CASES` in CI, or chunk
/// after chunk for `LOCKSTEP_FUZZ_SECONDS`. `check` gets the case and its bytes, and returns
/// an error (or panics) when a property does not hold. A failure is shrunk by proptest and
/// reported with the chunk, the seed, the case and its bytes in hex.
pub fn fuzz(target: &Target<'_>, check: impl Fn(&Case, &Materialized) -> Result<(), String>) {
    assert!(
        !target.corpus.is_empty(),
        "fuzz target {}: an empty corpus",
        target.name
    );
    let cases = environment_number("LOCKSTEP_FUZZ_CASES").unwrap_or(u64::from(CASES_DEFAULT));
    let cases = u32::try_from(cases.max(1)).expect("LOCKSTEP_FUZZ_CASES fits in u32");
    let budget = environment_number("LOCKSTEP_FUZZ_SECONDS").map(Duration::from_secs);
    let first_chunk = environment_number("LOCKSTEP_FUZZ_CHUNK").unwrap_or(0);
    let strategy = case_strategy(target);
    let started = Instant::now();
    let mut chunk = first_chunk;
    loop {
        run_chunk(target, &strategy, cases, chunk, &check);
        chunk += 1;
        let done = match budget {
            None => true,
            Some(budget) => started.elapsed() >= budget,
        };
        if done {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (chunk - first_chunk) * u64::from(cases);
    println!(
        "fuzz {}: {total} cases clean in {elapsed:.1} s ({:.0} cases/s), chunks {first_chunk} \
         to {}",
        target.name,
        total as f64 / elapsed.max(1e-9),
        chunk - 1
    );
}

fn run_chunk(
    target: &Target<'_>,
    strategy: &impl Strategy<Value = Case>,
    cases: u32,
    chunk: u64,
    check: &impl Fn(&Case, &Materialized) -> Result<(), String>,
) {
    let config = Config {
        cases,
        // Reproduction is by chunk number; no regression files in the source tree.
        failure_persistence: None,
        ..Config::default()
    };
    let seed = chunk_seed(target.name, chunk);
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let result = runner.run(strategy, |case| {
        let materialized = materialize(target, &case);
        check(&case, &materialized).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Abort(reason)) => panic!("fuzz {}: aborted: {reason}", target.name),
        Err(TestError::Fail(reason, case)) => {
            let materialized = materialize(target, &case);
            panic!(
                "fuzz {} failed: {reason}\n\
                 chunk {chunk} (seed {}), reproduce with LOCKSTEP_FUZZ_CHUNK={chunk} \
                 LOCKSTEP_FUZZ_CASES={cases} cargo test --test fuzz {}\n\
                 minimal case: {case:?}\n\
                 base corpus entry: {:?}, mutations: {:?}\n\
                 input ({} bytes, hex): {}",
                target.name,
                hex(&seed),
                target.name,
                materialized.base,
                materialized.applied,
                materialized.bytes.len(),
                hex(&materialized.bytes)
            );
        }
    }
}

/// A scratch directory, removed on drop (also when a test fails). On tmpfs (`/dev/shm`) when
/// the machine has one: recovering a torn tail fsyncs, and the targets open thousands of logs.
pub struct ScratchDirectory {
    path: PathBuf,
}

impl ScratchDirectory {
    pub fn new(name: &str) -> ScratchDirectory {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let shared_memory = Path::new("/dev/shm");
        let parent = if shared_memory.is_dir() {
            shared_memory.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = parent.join(format!(
            "lockstep-fuzz-{name}-{}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("fuzz: create a scratch directory");
        ScratchDirectory { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The cases a chunk of a target generates, as text, for the determinism test.
fn chunk_cases(target: &Target<'_>, chunk: u64, cases: usize) -> Vec<String> {
    use proptest::strategy::ValueTree;
    let seed = chunk_seed(target.name, chunk);
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = case_strategy(target);
    (0..cases)
        .map(|_| {
            let case = strategy
                .new_tree(&mut runner)
                .expect("harness: a case")
                .current();
            let materialized = materialize(target, &case);
            format!("{case:?} {}", hex(&materialized.bytes))
        })
        .collect()
}

/// Same target and chunk, same cases, on every run; another chunk or target, other cases.
#[test]
fn the_same_chunk_gives_the_same_cases() {
    let corpus = vec![b"{\"seq\":1}".to_vec(), b"LSTEPWAL".to_vec()];
    let target = |name| Target {
        name,
        corpus: &corpus,
        random_bytes_max: 64,
        random_prefix: b"prefix",
        dictionary: &["token"],
    };
    let first = chunk_cases(&target("a"), 3, 50);
    assert_eq!(first, chunk_cases(&target("a"), 3, 50));
    assert_ne!(first, chunk_cases(&target("a"), 4, 50));
    assert_ne!(first, chunk_cases(&target("b"), 3, 50));
    let kinds = [
        "Random",
        "FlipBit",
        "Overwrite",
        "Truncate",
        "Insert",
        "Delete",
        "Splice",
    ];
    for kind in kinds {
        assert!(
            first.iter().any(|case| case.contains(kind)),
            "50 cases hold no {kind}"
        );
    }
}
