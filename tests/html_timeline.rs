//! The HTML timeline in a real browser: headless Chromium from Debian's packages loads pages
//! the built `lockstep` wrote, and the DOM it dumps must show no error, a lane per server and
//! client, and the failing step highlighted.
//!
//! Stories:
//! - a scenario whose scripted expectation fails (`run --html DIR`): every lane, the step on
//!   the client whose answer was wrong;
//! - a history that cannot be linearized (`check --html FILE`): client lanes only, the window
//!   and the furthest partial linearization listed, the culprit highlighted;
//! - the 60 s, ~100,000-event run: the page drives its own zooming, panning and filtering
//!   (`#selftest`) and must finish without an error. Its render times are printed, never
//!   asserted.
//!
//! The pages record errors themselves (uncaught exceptions, rejected promises, console.error,
//! resources that fail to load) in `data-error-count` and `data-errors` on `<html>`; Chromium's
//! own log is searched for uncaught errors too. Each browser runs in its own process group with
//! a fresh profile in a scratch directory; a guard kills the group and the directory goes,
//! even when an assertion fails.
//!
//! Without /usr/bin/chromium the tests do not pass quietly: as root with apt-get they install
//! it (and say so), otherwise they fail saying how to install it.

mod common;

use common::{Scratch, lockstep, text};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// A bound on one page load, not a measurement: a browser still running then is killed and the
/// test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);

/// Makes sure Chromium is installed, once per test process.
fn chromium() -> &'static Path {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        if Path::new(CHROMIUM).exists() {
            return Ok(());
        }
        install_chromium()
    });
    if let Err(why) = ready {
        panic!("{why}");
    }
    Path::new(CHROMIUM)
}

fn install_chromium() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !(root && apt) {
        return Err(format!(
            "{CHROMIUM} is missing, and these tests need a real browser. Install Debian's \
             package as root: `apt-get update && apt-get install -y chromium` (this test \
             installs it itself when it runs as root with apt-get)."
        ));
    }
    eprintln!("{CHROMIUM} is missing: installing Debian's chromium package with apt-get");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium"][..],
    ] {
        eprintln!("running: apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|error| format!("cannot run apt-get: {error}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed: {status}", args.join(" ")));
        }
    }
    if Path::new(CHROMIUM).exists() {
        Ok(())
    } else {
        Err(format!(
            "apt-get installed chromium, but {CHROMIUM} is still missing"
        ))
    }
}

/// A browser process group: dropping it kills every process in the group and reaps the leader.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this test created for its own child (the
            // child is its leader and has not been reaped yet); it touches no memory.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the browser made of a page.
struct Loaded {
    /// The DOM after the scripts ran, as Chromium serialises it.
    dom: String,
    /// Chromium's own log.
    log: String,
}

/// Loads `page` (with `fragment`, e.g. `#selftest`) in headless Chromium and dumps the DOM.
fn load(scratch: &Scratch, page: &Path, fragment: &str) -> Loaded {
    let profile = scratch
        .0
        .join(format!("profile-{}", fragment.trim_start_matches('#')));
    std::fs::create_dir_all(&profile).expect("a fresh profile directory");
    let url = format!("file://{}{fragment}", page.display());
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut browser = Browser {
        child: command.spawn().expect("start chromium"),
    };
    let mut stdout = browser.child.stdout.take().expect("piped");
    let mut stderr = browser.child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    loop {
        if browser.child.try_wait().expect("poll chromium").is_some() {
            break;
        }
        assert!(
            started.elapsed() < BROWSER_DEADLINE,
            "chromium still running after {BROWSER_DEADLINE:?} on {url}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(browser);
    Loaded {
        dom: out.join().expect("stdout reader"),
        log: err.join().expect("stderr reader"),
    }
}

/// The value of attribute `name` in the first start tag that contains `marker`.
fn attribute(dom: &str, marker: &str, name: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..=at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!(" {name}=\"");
    let value_start = tag.find(&key)? + key.len();
    let value_end = value_start + tag[value_start..].find('"')?;
    Some(tag[value_start..value_end].to_string())
}

/// The root element's attribute.
fn root(dom: &str, name: &str) -> Option<String> {
    attribute(dom, "<html", name)
}

/// The lanes the page drew, as (name, kind), in order.
fn lanes(dom: &str) -> Vec<(String, String)> {
    let mut lanes = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(" data-lane=\"") {
        let name = attribute(rest, " data-lane=\"", "data-lane").expect("a lane name");
        let kind = attribute(rest, " data-lane=\"", "data-kind").expect("a lane kind");
        let class = attribute(rest, " data-lane=\"", "class").unwrap_or_default();
        if class.split(' ').any(|word| word == "lane-label") {
            lanes.push((name, kind));
        }
        rest = &rest[at + 1..];
    }
    lanes
}

/// The page loaded, ran to the end, and met no error.
fn assert_clean(loaded: &Loaded, what: &str) {
    let dom = &loaded.dom;
    assert!(
        dom.contains("<html"),
        "{what}: no DOM dumped; chromium said:\n{}",
        loaded.log
    );
    assert_eq!(
        root(dom, "data-error-count").as_deref(),
        Some("0"),
        "{what}: the page recorded errors: {:?}",
        root(dom, "data-errors")
    );
    assert_eq!(
        root(dom, "data-timeline-ready").as_deref(),
        Some("true"),
        "{what}: the script did not finish; chromium said:\n{}",
        loaded.log
    );
    for line in loaded.log.lines() {
        let console_error = line.contains("CONSOLE") && line.contains("ERROR");
        assert!(
            !line.contains("Uncaught") && !console_error,
            "{what}: chromium logged an error: {line}"
        );
    }
}

fn names(lanes: &[(String, String)]) -> Vec<(&str, &str)> {
    lanes
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str()))
        .collect()
}

/// The JSON blob's failing step id, as the page was written.
fn step_id_in_file(page: &Path) -> String {
    let text = std::fs::read_to_string(page).expect("the page");
    let key = "\"step_id\":\"";
    let start = text.find(key).expect("a failing step in the blob") + key.len();
    let end = start + text[start..].find('"').expect("the id ends");
    text[start..end].to_string()
}

/// c1 takes `a`; c2 is scripted to be granted it too, which it cannot be.
const FAILING_SCENARIO: &str = "
name: wrong-expectation
description: c2 expects a lock that c1 holds, so the scripted expectation fails.
seed: 11
duration: 3s
cluster: {servers: 3, clients: 2}
network: {latency: {min: 1ms, max: 5ms}}
events:
  - {at: 500ms, client: c1, op: preempt, lock: a, expect: granted}
  - {at: 1s, crash: leader}
  - {at: 1500ms, client: c2, op: preempt, lock: a, expect: granted}
  - {at: 2s, restart: all}
";

#[test]
fn a_failing_run_draws_every_lane_and_highlights_the_failing_step_in_chromium() {
    let scratch = Scratch::new("failing-run");
    let scenario = scratch.file("wrong-expectation.yaml", FAILING_SCENARIO);
    let out = scratch.0.join("pages");
    let output = lockstep(&[
        "run",
        &scenario.display().to_string(),
        "--html",
        &out.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let page = out.join("wrong-expectation.html");
    assert!(text(&output.stdout).contains(&format!("timeline: {}", page.display())));
    let loaded = load(&scratch, &page, "");
    assert_clean(&loaded, "failing run");
    let dom = &loaded.dom;
    assert_eq!(
        names(&lanes(dom)),
        [
            ("s1", "server"),
            ("s2", "server"),
            ("s3", "server"),
            ("c1", "client"),
            ("c2", "client")
        ]
    );
    assert_eq!(root(dom, "data-lanes").as_deref(), Some("5"));
    // The step: c2's preempt, in view, highlighted, with c2's lane marked.
    let step = step_id_in_file(&page);
    assert!(step.starts_with("op-"), "{step}");
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "data-step-id"),
        Some(step)
    );
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "class").as_deref(),
        Some("failing-step highlighted")
    );
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "data-visible").as_deref(),
        Some("true")
    );
    assert_eq!(
        attribute(dom, "class=\"lane-label failing\"", "data-lane").as_deref(),
        Some("c2")
    );
    assert!(dom.contains("expected granted"), "the failure is explained");
}

/// c1 holds `a` and never lets it go; c2 is granted it anyway.
const DOUBLE_GRANT: &str = r#"{"client":"alice","op":"preempt","lock":"a","call":1000,"return":2000,"result":"granted","token":1}
{"client":"bob","op":"check","lock":"a","consistency":"linearizable","call":3000,"return":4000,"result":"owner","owner":"alice","token":1}
{"client":"bob","op":"preempt","lock":"a","call":5000,"return":6000,"result":"granted","token":2}
{"client":"carol","op":"release","lock":"b","call":5500,"return":null,"result":"unknown"}
"#;

#[test]
fn a_history_that_cannot_be_linearized_shows_its_window_in_chromium() {
    let scratch = Scratch::new("not-linearizable");
    let history = scratch.file("history.jsonl", DOUBLE_GRANT);
    let page = scratch.0.join("history.html");
    let output = lockstep(&[
        "check",
        "--html",
        &page.display().to_string(),
        &history.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let loaded = load(&scratch, &page, "");
    assert_clean(&loaded, "history");
    let dom = &loaded.dom;
    assert_eq!(
        names(&lanes(dom)),
        [("alice", "client"), ("bob", "client"), ("carol", "client")],
        "a history has client lanes only"
    );
    // bob's grant (called third of four) cannot be placed.
    assert_eq!(step_id_in_file(&page), "op-2");
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "data-step-id").as_deref(),
        Some("op-2")
    );
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "data-visible").as_deref(),
        Some("true")
    );
    assert_eq!(
        attribute(dom, "class=\"culprit\"", "data-op").as_deref(),
        Some("2"),
        "the window table marks the culprit"
    );
    assert!(dom.contains("id=\"window-ops\""), "the window is listed");
    assert!(
        dom.contains("Furthest partial linearization"),
        "the furthest partial linearization is listed"
    );
    assert!(
        dom.contains("held by alice (token 1)"),
        "with the state after each step"
    );
}

#[test]
fn the_sixty_second_run_stays_usable_while_it_zooms_pans_and_filters_in_chromium() {
    let scratch = Scratch::new("sixty-seconds");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/timeline/sixty-seconds.yaml");
    let page = scratch.0.join("sixty.html");
    let trace = scratch.0.join("sixty.jsonl");
    let output = lockstep(&[
        "run",
        &scenario.display().to_string(),
        "--html",
        &page.display().to_string(),
        "--trace",
        &trace.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let events = std::fs::read_to_string(&trace)
        .expect("the trace")
        .lines()
        .count();
    assert!(events > 90_000, "a large run: {events} trace events");
    let loaded = load(&scratch, &page, "#selftest");
    assert_clean(&loaded, "sixty seconds");
    let dom = &loaded.dom;
    let servers = (1..=5).map(|n| (format!("s{n}"), "server".to_string()));
    let clients = (1..=8).map(|n| (format!("c{n}"), "client".to_string()));
    assert_eq!(lanes(dom), servers.chain(clients).collect::<Vec<_>>());
    assert_eq!(root(dom, "data-selftest").as_deref(), Some("done"));
    assert_eq!(root(dom, "data-selftest-renders").as_deref(), Some("36"));
    // Measured, not asserted: README has figures from a release build.
    let size = std::fs::metadata(&page).expect("the page").len();
    println!(
        "sixty seconds: {events} trace events, page {size} bytes, first render at {} ms, \
         slowest self-test render {} ms",
        root(dom, "data-first-render-ms").unwrap_or_default(),
        root(dom, "data-selftest-max-render-ms").unwrap_or_default(),
    );
}

/// Guards the guard: the helpers above would pass a page that never ran its script if
/// `attribute` could not read what it is pointed at.
#[test]
fn the_dom_readers_find_attributes_and_lanes() {
    let dom = "<html lang=\"en\" data-error-count=\"0\"><body>\
        <div class=\"lane-label\" data-lane=\"s1\" data-kind=\"server\">s1</div>\
        <div class=\"lane-label failing\" data-lane=\"c1\" data-kind=\"client\">c1</div>\
        <div class=\"failing-step highlighted\" id=\"failing-step\" data-step-id=\"op-3\"></div>";
    assert_eq!(root(dom, "data-error-count").as_deref(), Some("0"));
    assert_eq!(root(dom, "data-timeline-ready"), None);
    assert_eq!(
        attribute(dom, "id=\"failing-step\"", "data-step-id").as_deref(),
        Some("op-3")
    );
    assert_eq!(
        names(&lanes(dom)),
        [("s1", "server"), ("c1", "client")],
        "a failing lane's label has a second class"
    );
}
