//! Runs every example binary (built by `cargo test` beside this test) and checks its output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cargo test` builds the examples into `<target>/<profile>/examples/`; this test runs from
/// `<target>/<profile>/deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target layout");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run through `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// Runs an example to completion (at most 120 s) and returns its stdout.
fn run(name: &str) -> String {
    let mut child = Command::new(example(name))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("example starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_lines(output: &str, expected: &[&str]) {
    for line in expected {
        assert!(output.contains(line), "missing {line:?} in:\n{output}");
    }
}

#[test]
fn order_monolith() {
    let out = run("order_monolith");
    assert_lines(
        &out,
        &[
            "[orders]        #1 placed by alice for $29.99",
            "[inventory]     #1 reserved 2 item(s)",
            "[payments]      #1 charged $29.99 to alice",
            "[shipping]      #1 ($29.99 paid) shipped as TRK-0001",
            "[notifications] #1 is on its way (tracking TRK-0001)",
            "== order #1 of alice: Shipped { tracking: \"TRK-0001\" }, total $29.99",
            "[payments]      #2 declined: insufficient funds: $5.00 available, $39.98 due",
            "[inventory]     #2 stock released",
            "== order #2 of bob: Cancelled { reason: \"insufficient funds: $5.00 available, $39.98 due\" }",
            "== refused: an order needs at least one item",
            "   dead letters: 0",
        ],
    );
}

#[test]
fn backpressure() {
    let out = run("backpressure");
    assert_lines(
        &out,
        &[
            "mailbox peak 8 of 8 (never above the bound)",
            "dead letters 0",
        ],
    );
    assert!(out.contains("the sink handled 1000 readings"), "{out}");
}
