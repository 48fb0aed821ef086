//! Runs every example binary (built by `cargo test` beside this test) and checks its output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `order_monolith --serve` in headless Chromium (feature `live-view`).
#[cfg(feature = "live-view")]
mod live_view;

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
    run_with(name, &[])
}

/// [`run`] with command-line arguments. `EVENTDRIVEN_STORE` is removed from the example's
/// environment, so only the arguments choose its store.
fn run_with(name: &str, args: &[&str]) -> String {
    let mut child = Command::new(example(name))
        .args(args)
        .env_remove("EVENTDRIVEN_STORE")
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
            "sagas resumed from the store: 0",
            // alice: every step of her order's saga succeeds.
            "[orders]        #1 placed by alice for $29.99 (order-1, version 1)\n\
             [inventory]     #1 reserved 2 item(s)\n\
             [payments]      #1 charged $29.99 to alice (PAY-0001)\n\
             [shipping]      #1 dispatched to Springfield as TRK-0001\n\
             [orders]        #1 confirmed (order-1, version 2)\n",
            "[notifications] #1 told alice it is on its way (tracking TRK-0001)",
            "== order #1 of alice: Confirmed { tracking: \"TRK-0001\" }, total $29.99; saga completed",
            // bob: his payment is declined; the stock is released and the order cancelled.
            "[orders]        #2 placed by bob for $39.98 (order-2, version 1)\n\
             [inventory]     #2 reserved 1 item(s)\n\
             [payments]      #2 declined: insufficient funds: $5.00 available, $39.98 due\n\
             [inventory]     #2 stock released\n\
             [orders]        #2 cancelled (order-2, version 2)\n",
            "[notifications] #2 told bob it was cancelled",
            "== order #2 of bob: Cancelled { reason: \"step `charge payment` failed: insufficient funds: $5.00 available, $39.98 due\" }, total $39.98; saga compensated",
            // dave: the shipment times out; he is refunded, the stock released, the order
            // cancelled; the late parcel is called off.
            "[orders]        #3 placed by dave for $24.99 (order-3, version 1)\n\
             [inventory]     #3 reserved 2 item(s)\n\
             [payments]      #3 charged $24.99 to dave (PAY-0002)\n\
             [shipping]      #3 goes to Far Isle: asking the remote warehouse\n\
             [payments]      #3 refunded $24.99 to dave (PAY-0002)\n\
             [inventory]     #3 stock released\n\
             [orders]        #3 cancelled (order-3, version 2)\n",
            "[notifications] #3 told dave it was cancelled",
            "== order #3 of dave: Cancelled { reason: \"step `create shipment` failed: timed out after 300ms\" }, total $24.99; saga compensated",
            "[shipping]      #3 dispatched to Far Isle as TRK-0002\n\
             [shipping]      #3 parcel TRK-0002 called off: the order was cancelled\n",
            "== a second later, shipping holds for #3: Some(Parcel { tracking: \"TRK-0002\", called_off: true })",
            // carol: refused by the aggregate before any saga starts.
            "== refused: an order needs at least one item (nothing stored, no saga started)",
            "   dead letters: 0",
            // The saga instances, as stored.
            "== the sagas (order-fulfillment)\n\
             \x20  1  completed    step -  last error: -\n\
             \x20  2  compensated  step -  last error: step `charge payment` failed: insufficient funds: $5.00 available, $39.98 due\n\
             \x20  3  compensated  step -  last error: step `create shipment` failed: timed out after 300ms\n\
             \x20  by status: running 0, compensating 0, completed 1, compensated 2, needs_attention 0\n",
            // What the SQLite store holds after the run.
            "   6 events (head at position 6)\n\
             \x20  order-1  version 2: order.placed, order.confirmed\n\
             \x20  order-2  version 2: order.placed, order.cancelled\n\
             \x20  order-3  version 2: order.placed, order.cancelled\n",
            "   processed ids: notify_cancelled 2, notify_confirmed 1",
            "   dead letters stored: 0",
            "   saga instances stored: 3",
            "   order #1 reloaded from 2 events: alice for $29.99, Confirmed { tracking: \"TRK-0001\" } (version 2)",
        ],
    );
    // Carol's order used up no id, and started no saga.
    assert!(!out.contains("order-4"), "{out}");
    // The store was a fresh SQLite file in a temp directory, removed at the end.
    let db = out
        .lines()
        .find_map(|line| line.strip_prefix("store: sqlite at "))
        .unwrap_or_else(|| panic!("no store line in:\n{out}"));
    let db = PathBuf::from(db);
    assert!(db.ends_with("orders.db"), "{}", db.display());
    let dir = db.parent().expect("the database's directory");
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    assert!(name.starts_with("eventdriven-orders-"), "{}", dir.display());
    assert!(!dir.exists(), "{} was not removed", dir.display());
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

#[test]
fn stream_analytics() {
    let out = run("stream_analytics");
    let expected = [
        "minute 09:00 ada: 2 orders, 15.00",
        "minute 09:00 bob: 1 orders, 8.00",
        "minute 09:00 ada: 3 orders, 17.00 (update 1)",
        "minute 09:01 ada: 1 orders, 4.50",
        "minute 09:01 bob: 1 orders, 25.00",
        "minute 09:01 cy: 1 orders, 9.99",
        "minute 09:02 ada: 1 orders, 1.00",
        "paid: order 1 (ada) 50 s after it was placed",
        "paid: order 2 (bob) 55 s after it was placed",
        "paid: order 5 (cy) 60 s after it was placed",
        "late for per-customer-minute: order 8 (bob) at 09:00:50, watermark 09:02:05",
        "dead letters 0",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
}

/// The lines `bank_account` prints on every store (the stream names hold a run id, so the
/// conflict line is checked from `expected at` on).
fn assert_bank_account(out: &str, store: &str) {
    assert_lines(
        out,
        &[
            &format!("== 1. store: {store}"),
            "Open { owner: \"Ada\" } -> account.opened (version 1)",
            "Open { owner: \"Ada\" } -> refused: the account is already open",
            "Deposit { amount: 0 } -> refused: the amount must be more than 0",
            "(another, unopened account) Deposit { amount: 10 } -> refused: the account is not open",
            "Withdraw { amount: 500 } -> refused: insufficient funds: balance 150, requested 500",
            "Withdraw { amount: 30 } -> account.withdrawn (version 4)",
            "replayed 4 events -> balance 120 (version 4)",
            "snapshot taken at version 5",
            "snapshot taken at version 10",
            "snapshot taken at version 15",
            "loaded from snapshot at version 15 + 1 newer events -> balance 420",
            "(without snapshots: replayed 16 events -> balance 420)",
            "writer B loaded version 16 (balance 420)",
            "writer A: Withdraw { amount: 300 } -> account.withdrawn (version 17)",
            "expected at version 16, but it is at version 17 (nothing stored)",
            "writer B retries with repo.execute -> committed at version 18 (attempts: 1",
            "received 18 events; the repository committed 18",
            "final balance 20 (the store says 20 at version 18)",
            "== done",
        ],
    );
    assert!(out.contains("\nconflict: stream `account-acc-"), "{out}");
}

#[test]
fn bank_account() {
    // The default store: SQLite in a fresh temp directory, removed at the end.
    let out = run("bank_account");
    assert_bank_account(&out, "sqlite (a fresh bank.db in ");
}

#[test]
fn bank_account_in_memory() {
    let out = run_with("bank_account", &["--store", "memory:"]);
    assert_bank_account(&out, "memory");
}

#[cfg(feature = "postgres")]
#[test]
fn bank_account_on_postgres() {
    let Some(url) = std::env::var("EVENTDRIVEN_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        if std::env::var("EVENTDRIVEN_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("skipped bank_account_on_postgres: EVENTDRIVEN_SKIP_POSTGRES=1");
            return;
        }
        panic!(
            "EVENTDRIVEN_POSTGRES_URL is not set: run the tests through scripts/with-postgres.sh \
             (or set EVENTDRIVEN_SKIP_POSTGRES=1 to skip the PostgreSQL runs)"
        );
    };
    // Runs twice on the same database: the run id in the stream names keeps them apart.
    for _ in 0..2 {
        let out = run_with("bank_account", &["--store", &url]);
        assert_bank_account(&out, "postgres (chosen by --store or EVENTDRIVEN_STORE)");
    }
}

/// The lines `product_catalog` prints on every store: the commands, the read models' answers
/// and the rebuild's outcome. (Positions are checked on SQLite only: on a shared PostgreSQL
/// database other runs' events sit in the same store.)
fn assert_product_catalog(out: &str, store: &str) {
    assert_lines(
        out,
        &[
            &format!("== 1. store: {store}"),
            "create KB-100 \"Compact Keyboard\" in keyboard at $49.00 -> version 1",
            "create MN-400 \"UltraWide Monitor Pro\" in monitor at $549.00 -> version 1",
            "create KB-100 \"Compact Keyboard\" in keyboard at $49.00 -> refused: product KB-100 already exists",
            "change the price of KB-200 to $119.00 -> version 2",
            "change the price of MS-200 to $29.00 -> refused: MS-200 already costs $29.00",
            "change the price of XX-999 to $10.00 -> refused: there is no product XX-999",
            "change the price of MN-100 to $0.00 -> refused: the price must be more than $0.00",
            "GetProduct KB-200: \"Mechanical Keyboard Pro\" in keyboard at $119.00, version 2",
            "GetProduct XX-999: no such product",
            // Each search: its header, then its page in name order.
            "text \"pro\" (any case): total 3, page 1 of 1 (10 per page)\n\
             \x20 MS-300  Gaming Mouse PRO          mouse       $79.00\n\
             \x20 KB-200  Mechanical Keyboard Pro   keyboard   $119.00\n\
             \x20 MN-400  UltraWide Monitor Pro     monitor    $499.00\n",
            "category monitor: total 4, page 1 of 1 (10 per page)\n\
             \x20 MN-100  24-inch Monitor           monitor    $179.00\n\
             \x20 MN-200  27-inch 4K Monitor        monitor    $329.00\n\
             \x20 MN-300  Portable Monitor          monitor    $219.00\n\
             \x20 MN-400  UltraWide Monitor Pro     monitor    $499.00\n",
            "price $40.00 to $150.00: total 5, page 1 of 1 (10 per page)\n\
             \x20 KB-100  Compact Keyboard          keyboard    $49.00\n\
             \x20 MS-300  Gaming Mouse PRO          mouse       $79.00\n\
             \x20 KB-200  Mechanical Keyboard Pro   keyboard   $119.00\n\
             \x20 MS-400  Vertical Mouse            mouse       $45.00\n\
             \x20 KB-400  Wireless Keyboard         keyboard    $69.00\n",
            "everything by name: total 12, page 1 of 3 (4 per page)\n\
             \x20 MN-100  24-inch Monitor           monitor    $179.00\n\
             \x20 MN-200  27-inch 4K Monitor        monitor    $329.00\n\
             \x20 MS-100  Basic Mouse               mouse       $12.00\n\
             \x20 KB-100  Compact Keyboard          keyboard    $49.00\n",
            "everything by name: total 12, page 2 of 3 (4 per page)\n\
             \x20 KB-300  Ergonomic Split Keyboard  keyboard   $159.00\n\
             \x20 MS-300  Gaming Mouse PRO          mouse       $79.00\n\
             \x20 KB-200  Mechanical Keyboard Pro   keyboard   $119.00\n\
             \x20 MN-300  Portable Monitor          monitor    $219.00\n",
            "meanwhile: change the price of MS-400 to $39.00 -> version 2",
            "text \"pro\" (any case) again: total 3, page 1 of 1 (10 per page)\n\
             \x20 MS-300  Gaming Mouse PRO          mouse       $79.00\n\
             \x20 KB-200  Mechanical Keyboard Pro   keyboard   $119.00\n\
             \x20 MN-400  UltraWide Monitor Pro     monitor    $499.00\n\
             same answer as before the rebuild\n",
            "catalog.products Live, position ",
            "catalog.search   Live, position ",
            "== done",
        ],
    );
}

#[test]
fn product_catalog() {
    // The default store: SQLite in a fresh temp directory, removed at the end.
    let out = run("product_catalog");
    assert_product_catalog(&out, "sqlite (a fresh catalog.db in ");
    // A fresh store: 12 products created, 3 prices changed, then one more during the
    // rebuild, which replays the first 15 and then applies the 16th.
    assert_lines(
        &out,
        &[
            "== 3. both projections caught up with the store (position 15)",
            "reset committed; replaying the events up to position 15",
            "live again at position 16: 31 events applied since the start",
            "catalog.products Live, position 16, store head 16",
            "catalog.search   Live, position 16, store head 16",
        ],
    );
    let dir = out
        .lines()
        .find_map(|line| line.strip_prefix("== 1. store: sqlite (a fresh catalog.db in "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no store line in:\n{out}"));
    let dir = PathBuf::from(dir);
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    assert!(
        name.starts_with("eventdriven-catalog-"),
        "{}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[cfg(feature = "postgres")]
#[test]
fn product_catalog_on_postgres() {
    let Some(url) = std::env::var("EVENTDRIVEN_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        if std::env::var("EVENTDRIVEN_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("skipped product_catalog_on_postgres: EVENTDRIVEN_SKIP_POSTGRES=1");
            return;
        }
        panic!(
            "EVENTDRIVEN_POSTGRES_URL is not set: run the tests through scripts/with-postgres.sh \
             (or set EVENTDRIVEN_SKIP_POSTGRES=1 to skip the PostgreSQL runs)"
        );
    };
    // Runs twice on the same database: each run fills its own catalog, and the second run's
    // projections resume from the checkpoints the first left (its rebuild replays both).
    for _ in 0..2 {
        let out = run_with("product_catalog", &["--store", &url]);
        assert_product_catalog(&out, "postgres (chosen by --store or EVENTDRIVEN_STORE)");
    }
}

/// The URL of a broker the tests were given in `var`, or `None` when they are to be skipped:
/// outside CI with `skip=1` only (as the bridge suite does); a missing URL fails otherwise.
#[cfg(feature = "nats")]
fn broker_url(var: &str, skip: &str, script: &str) -> Option<String> {
    if let Some(url) = std::env::var(var).ok().filter(|url| !url.is_empty()) {
        return Some(url);
    }
    if std::env::var(skip).as_deref() == Ok("1") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("!!!!!!!! SKIPPED: distributed_orders ({skip}=1 and no {var}) !!!!!!!!");
        return None;
    }
    panic!(
        "{var} is not set: run the tests through {script}, point {var} at your own server, \
         or (outside CI) set {skip}=1 to skip them"
    );
}

/// `distributed_orders` on `broker`: two child processes, the orders' outcomes, and each
/// order's correlation id in both processes.
#[cfg(feature = "nats")]
fn assert_distributed_orders(broker: &str) {
    let out = run_with("distributed_orders", &["--broker", broker]);
    assert_lines(
        &out,
        &[
            &format!("== two processes on {broker} (run "),
            "[fulfillment] #1 reserved 2 item(s)",
            "[fulfillment] #1 charged $29.99 to alice (PAY-0001)",
            "[fulfillment] #1 dispatched to Springfield as TRK-0001",
            "[fulfillment] #2 declined: insufficient funds: $5.00 available, $39.98 due",
            "[fulfillment] #2 stock released",
            "[fulfillment] #3 shipment timed out after 300ms",
            "[fulfillment] #3 refunded $24.99 to dave (PAY-0002)",
            "[fulfillment] #3 stock released",
            "[orders]      carol's order refused: an order needs at least one item (nothing stored)",
            "[fulfillment] shop.closed arrived: 3 order(s) in all",
            "   #1 alice  Confirmed { tracking: \"TRK-0001\" }",
            "   #2 bob    Cancelled { reason: \"insufficient funds: $5.00 available, $39.98 due\" }",
            "   #3 dave   Cancelled { reason: \"shipment timed out after 300ms\" }",
            "== every order reached its expected state",
            "== the fulfillment process ended: exit status: 0",
            "== the orders process ended: exit status: 0",
            "== both processes succeeded",
        ],
    );
    // Each order's correlation id, printed by the orders process when it was placed, is the
    // one the fulfillment process saw and the one of the outcome that came back.
    for (order, customer) in [(1, "alice"), (2, "bob"), (3, "dave")] {
        let placed = format!("[orders]      #{order} placed by {customer} for ");
        let correlation = out
            .lines()
            .find_map(|line| line.strip_prefix(placed.as_str()))
            .and_then(|rest| rest.split("correlation ").nth(1))
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no line {placed:?} in:\n{out}"));
        let arrived = format!("#{order} order.placed arrived: {customer} ");
        let back = format!("[orders]      #{order} fulfillment.");
        for (what, prefix) in [
            ("fulfillment", arrived.as_str()),
            ("outcome", back.as_str()),
        ] {
            assert!(
                out.lines().any(|line| line.contains(prefix)
                    && line.ends_with(&format!("(correlation {correlation})"))),
                "#{order}: the {what} line does not carry correlation {correlation}:\n{out}"
            );
        }
    }
}

#[cfg(feature = "nats")]
#[test]
fn distributed_orders_on_nats() {
    let Some(url) = broker_url(
        "EVENTDRIVEN_NATS_URL",
        "EVENTDRIVEN_SKIP_NATS",
        "scripts/with-nats.sh",
    ) else {
        return;
    };
    assert_distributed_orders(&url);
}

#[cfg(all(feature = "nats", feature = "redis"))]
#[test]
fn distributed_orders_on_redis() {
    let Some(url) = broker_url(
        "EVENTDRIVEN_REDIS_URL",
        "EVENTDRIVEN_SKIP_REDIS",
        "scripts/with-redis.sh",
    ) else {
        return;
    };
    assert_distributed_orders(&url);
}

#[cfg(all(feature = "nats", feature = "kafka"))]
#[test]
fn distributed_orders_on_kafka() {
    let Some(url) = broker_url(
        "EVENTDRIVEN_KAFKA_URL",
        "EVENTDRIVEN_SKIP_KAFKA",
        "scripts/with-kafka.sh",
    ) else {
        return;
    };
    assert_distributed_orders(&url);
}

#[cfg(all(feature = "nats", feature = "sqs"))]
#[test]
fn distributed_orders_on_sqs() {
    let Some(url) = broker_url(
        "EVENTDRIVEN_SQS_URL",
        "EVENTDRIVEN_SKIP_SQS",
        "scripts/with-sqs.sh",
    ) else {
        return;
    };
    assert_distributed_orders(&url);
}

#[cfg(all(feature = "nats", feature = "amqp"))]
#[test]
fn distributed_orders_on_rabbitmq() {
    let Some(url) = broker_url(
        "EVENTDRIVEN_AMQP_URL",
        "EVENTDRIVEN_SKIP_AMQP",
        "scripts/with-rabbitmq.sh",
    ) else {
        return;
    };
    assert_distributed_orders(&url);
}
