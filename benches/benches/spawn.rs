//! Spawning `ED_SPAWN_N` (default 100 000) idle actors per contender: the time it takes and the
//! memory each actor costs, every contender in a process of its own so the numbers don't mix.
//!
//! Run without arguments (as `cargo bench` does), this binary re-executes itself once per
//! contender with `--child NAME`; the child spawns the actors (each with a mailbox of 16 where
//! the framework has bounded ones; eventdriven: `N x .actor_with(Idle, Mailbox::bounded(16))`
//! then `build().await`; tokio: `N` tasks each awaiting an `mpsc::channel(16)`), sends every
//! actor one message and waits until all handled it, and prints one JSON line:
//!
//! - `spawn`: from the first spawn call until the last returned (eventdriven: `build()`);
//! - `ready`: until every actor handled its message;
//! - RSS before and after (`/proc/self/statm`, after a 50 ms pause once all are ready), whose
//!   difference divided by `N` is the memory per actor.
//!
//! The parent prints a table and writes `$CARGO_TARGET_DIR/ed-bench/spawn.json`. Arguments
//! that are not flags select contenders by name.
//!
//! ```text
//! cargo bench -p eventdriven-benches --bench spawn [-- eventdriven tokio]
//! ```

mod common;

use std::process::Command;

use common::{contender, report_dir, CONTENDERS};

/// Prefix of the child's result line on stdout.
const MARK: &str = "SPAWN_RESULT ";

fn count() -> usize {
    std::env::var("ED_SPAWN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Reads `"key": <number>` out of the child's one-line JSON.
fn field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 4;
    let rest = &json[at..];
    let end = rest
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().expect("number")
}

fn child(name: &str) {
    let contender = contender(name).unwrap_or_else(|| panic!("no contender {name}"));
    let report = (contender.spawn_idle)(count());
    println!("{MARK}{}", report.json(name));
    // Tearing 100 000 actors down is not part of the measurement.
    std::process::exit(0);
}

/// One child's result.
struct Run {
    spawn_ms: f64,
    ready_ms: f64,
    before: f64,
    after: f64,
}

/// Runs the child for `name`; its JSON line and parsed result, or `None` if it failed.
fn run_child(exe: &std::path::Path, name: &str) -> Option<(String, Run)> {
    let out = Command::new(exe)
        .args(["--child", name])
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(MARK)) else {
        eprintln!(
            "  {name}: child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    };
    let run = Run {
        spawn_ms: field(line, "spawn_ns") / 1e6,
        ready_ms: field(line, "ready_ns") / 1e6,
        before: field(line, "rss_before"),
        after: field(line, "rss_after"),
    };
    Some((line.to_owned(), run))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args.get(i + 1).expect("--child NAME"));
        return;
    }
    let wanted: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exe = std::env::current_exe().expect("current exe");
    let n = count();
    let reps: usize = std::env::var("ED_SPAWN_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let contenders: Vec<_> = CONTENDERS
        .iter()
        .filter(|c| wanted.is_empty() || wanted.iter().any(|w| *w == c.name))
        .collect();
    eprintln!("spawn: {n} idle actors per contender, one process each, {reps} repetitions");
    let mut runs: Vec<Vec<Run>> = contenders.iter().map(|_| Vec::new()).collect();
    let mut json = Vec::new();
    for rep in 0..reps {
        // Contenders interleaved, so a slow spell of the machine hits them alike.
        for (contender, runs) in contenders.iter().zip(&mut runs) {
            let Some((line, run)) = run_child(&exe, contender.name) else {
                continue;
            };
            eprintln!(
                "  rep {}: {:<12} spawn {:>8.1} ms, ready {:>8.1} ms, {:>7.0} B/actor",
                rep + 1,
                contender.name,
                run.spawn_ms,
                run.ready_ms,
                (run.after - run.before) / n as f64
            );
            json.push(line);
            runs.push(run);
        }
    }
    println!();
    println!(
        "Spawning {n} idle actors, one process per contender and repetition; median of {reps}:"
    );
    println!();
    println!(
        "| contender | spawn | per actor | ready (all handled 1 msg) | RSS before | RSS after \
         | memory per actor |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (contender, runs) in contenders.iter().zip(&runs) {
        if runs.is_empty() {
            println!("| {} | failed | | | | | |", contender.name);
            continue;
        }
        let pick = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let spawn_ms = pick(|r| r.spawn_ms);
        println!(
            "| {} | {spawn_ms:.1} ms | {:.2} µs | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.0} B |",
            contender.name,
            spawn_ms * 1e3 / n as f64,
            pick(|r| r.ready_ms),
            pick(|r| r.before) / 1048576.0,
            pick(|r| r.after) / 1048576.0,
            pick(|r| r.after - r.before) / n as f64,
        );
    }
    let path = report_dir().join("spawn.json");
    std::fs::write(&path, format!("[{}]\n", json.join(",\n "))).expect("write spawn.json");
    println!();
    println!("(written to {})", path.display());
}
