//! CQRS: a product catalog whose writes and reads are two separate models.
//!
//! - **Write side.** `Product` is an event-sourced aggregate. The `Catalog` actor handles the
//!   commands `CreateProduct` and `ChangePrice` with `Repository::execute_in`: the product
//!   decides against its state rebuilt from its events, and what it decides
//!   (`product.created`, `product.price_changed`) is appended to its stream, then published.
//! - **Read side.** Two projections follow the event store, each into its own table in the
//!   store's database: `products` answers `GetProduct`, `product_search` answers
//!   `SearchProducts` (text in the name, any case; category; price range; pages). Each writes
//!   through its batch's transaction (`ctx.tx()`), so the rows and the projection's checkpoint
//!   commit together: every event is applied exactly once, across retries and restarts (as
//!   long as one instance of each projection runs at a time).
//! - **Queries.** The `CatalogQueries` actor answers both queries with SQL on the store's read
//!   connections. The read side lags the write side a little; after each command the example
//!   waits for the projections to reach the store's head, so what it prints never depends on
//!   timing. At the end it rebuilds the search projection while the app keeps running, and
//!   shows that the same search gives the same answer once it is live again.
//!
//! Run it with `cargo run --example product_catalog` (SQLite in a fresh temp directory,
//! removed at the end), or on PostgreSQL with
//! `cargo run --example product_catalog --features postgres -- --store postgres://user@host/db`
//! (or `EVENTDRIVEN_STORE=URL`).

use std::time::Duration;

use anyhow::{bail, Context as _};
use eventdriven::aggregate::{Repository, RepositoryError};
use eventdriven::prelude::*;
use eventdriven::projection::{
    Projection, ProjectionContext, ProjectionError, ProjectionHandle, ProjectionState, Projector,
};
use eventdriven::store::{Store, StoreTx};
use eventdriven_examples::{open_store, run_id};

/// How long the example waits for a projection before it gives up.
const WAIT: Duration = Duration::from_secs(30);

// ---- the write side: commands, events, the aggregate ---------------------------------------

/// A command's reply: the product's version after it, or why it was refused.
type Reply = Result<u64, RepositoryError<ProductError>>;

#[derive(Command, Clone, Debug)]
#[command(reply = Reply)]
struct CreateProduct {
    sku: String,
    name: String,
    category: String,
    price_cents: u64,
}

#[derive(Command, Clone, Debug)]
#[command(reply = Reply)]
struct ChangePrice {
    sku: String,
    price_cents: u64,
}

// The events say which catalog they belong to: see `main` for why there is more than one.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "product.created")]
struct ProductCreated {
    catalog: String,
    sku: String,
    name: String,
    category: String,
    price_cents: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "product.price_changed")]
struct PriceChanged {
    catalog: String,
    sku: String,
    from_cents: u64,
    price_cents: u64,
}

#[derive(Events, Clone, Debug)]
enum ProductEvent {
    Created(ProductCreated),
    PriceChanged(PriceChanged),
}

#[derive(Clone, Debug)]
enum ProductCommand {
    Create {
        catalog: String,
        product: CreateProduct,
    },
    ChangePrice(ChangePrice),
}

#[derive(Debug, thiserror::Error)]
enum ProductError {
    #[error("product {0} already exists")]
    Exists(String),
    #[error("there is no product {0}")]
    Unknown(String),
    // (Prices are `u64`: a negative price cannot even be written down.)
    #[error("the price must be more than $0.00")]
    ZeroPrice,
    #[error("{sku} already costs {}", dollars(*.price_cents))]
    Unchanged { sku: String, price_cents: u64 },
}

/// What the decisions need: whether the product exists, and its price.
#[derive(Default)]
struct Product {
    created: Option<(String, String)>, // (catalog, sku)
    price_cents: u64,
}

impl Aggregate for Product {
    const TYPE: &'static str = "product"; // streams are named `product-{catalog}.{sku}`
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn handle(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::Create {
                catalog,
                product: p,
            } => {
                if self.created.is_some() {
                    return Err(ProductError::Exists(p.sku));
                }
                if p.price_cents == 0 {
                    return Err(ProductError::ZeroPrice);
                }
                let created = ProductCreated {
                    catalog,
                    sku: p.sku,
                    name: p.name,
                    category: p.category,
                    price_cents: p.price_cents,
                };
                Ok(vec![created.into()])
            }
            ProductCommand::ChangePrice(ChangePrice { sku, price_cents }) => {
                let Some((catalog, _)) = &self.created else {
                    return Err(ProductError::Unknown(sku));
                };
                if price_cents == 0 {
                    return Err(ProductError::ZeroPrice);
                }
                if price_cents == self.price_cents {
                    return Err(ProductError::Unchanged { sku, price_cents });
                }
                let catalog = catalog.clone();
                let from_cents = self.price_cents;
                let changed = PriceChanged {
                    catalog,
                    sku,
                    from_cents,
                    price_cents,
                };
                Ok(vec![changed.into()])
            }
        }
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::Created(e) => {
                self.created = Some((e.catalog.clone(), e.sku.clone()));
                self.price_cents = e.price_cents;
            }
            ProductEvent::PriceChanged(e) => self.price_cents = e.price_cents,
        }
    }
}

/// Takes the catalog's commands: each runs on its product, whose events are stored, then
/// published through the handler's context.
struct Catalog {
    catalog: String,
    repo: Repository<Product>,
}

#[handlers]
impl Catalog {
    #[handle]
    async fn create(&mut self, product: CreateProduct, ctx: &mut Context<Self>) -> Reply {
        let id = format!("{}.{}", self.catalog, product.sku);
        let catalog = self.catalog.clone();
        let command = ProductCommand::Create { catalog, product };
        Ok(self.repo.execute_in(ctx, &id, command).await?.version)
    }

    #[handle]
    async fn change_price(&mut self, change: ChangePrice, ctx: &mut Context<Self>) -> Reply {
        let id = format!("{}.{}", self.catalog, change.sku);
        let command = ProductCommand::ChangePrice(change);
        Ok(self.repo.execute_in(ctx, &id, command).await?.version)
    }
}

// ---- SQL on either backend -----------------------------------------------------------------

/// A value for a `$n` placeholder (SQLite and PostgreSQL both understand `$1`, `$2`, ...).
enum Arg {
    Text(String),
    Int(i64),
}

fn text(value: &str) -> Arg {
    Arg::Text(value.to_owned())
}

/// Cents as an SQL integer (a price beyond `i64::MAX` cents is not a concern here).
fn cents(value: u64) -> Arg {
    Arg::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Binds `args` to a query in order; the same code for both backends' query types.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(value) => query.bind(value.clone()),
                Arg::Int(value) => query.bind(*value),
            };
        }
        query
    }};
}

fn no_sql() -> sqlx::Error {
    sqlx::Error::Configuration("the catalog's read models need SQLite or PostgreSQL".into())
}

/// Runs one statement on the transaction's own connection: it commits (or rolls back) with
/// everything else the transaction does.
async fn execute(tx: &mut StoreTx, sql: &'static str, args: &[Arg]) -> Result<(), sqlx::Error> {
    if let Some(conn) = tx.sqlite() {
        bind_all!(sqlx::query(sql), args).execute(conn).await?;
        return Ok(());
    }
    #[cfg(feature = "postgres")]
    if let Some(conn) = tx.postgres() {
        bind_all!(sqlx::query(sql), args).execute(conn).await?;
        return Ok(());
    }
    Err(no_sql())
}

/// Rows of `sku, name, category, price_cents, version`, read outside any transaction.
async fn fetch_views(store: &Store, sql: &str, args: &[Arg]) -> sqlx::Result<Vec<ProductView>> {
    type Row = (String, String, String, i64, i64);
    // The SQL is assembled from fixed fragments only; every value is bound.
    let sql = sqlx::AssertSqlSafe(sql);
    #[cfg(feature = "postgres")]
    if let Some(pool) = store.postgres_pool() {
        let rows = bind_all!(sqlx::query_as::<_, Row>(sql), args);
        return Ok(rows.fetch_all(pool).await?.into_iter().map(view).collect());
    }
    let pool = store.sqlite_readers().ok_or_else(no_sql)?;
    let rows = bind_all!(sqlx::query_as::<_, Row>(sql), args);
    Ok(rows.fetch_all(pool).await?.into_iter().map(view).collect())
}

/// The one number a `SELECT COUNT(*)` returns.
async fn fetch_count(store: &Store, sql: &str, args: &[Arg]) -> sqlx::Result<u64> {
    let sql = sqlx::AssertSqlSafe(sql);
    #[cfg(feature = "postgres")]
    if let Some(pool) = store.postgres_pool() {
        let count = bind_all!(sqlx::query_scalar::<_, i64>(sql), args);
        return Ok(count.fetch_one(pool).await?.try_into().unwrap_or(0));
    }
    let pool = store.sqlite_readers().ok_or_else(no_sql)?;
    let count = bind_all!(sqlx::query_scalar::<_, i64>(sql), args);
    Ok(count.fetch_one(pool).await?.try_into().unwrap_or(0))
}

// ---- the read side: two projections, each with its own table -------------------------------

/// The tables, made once at start in one transaction. (`BIGINT` is an integer on both.)
async fn create_tables(store: &Store) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    for sql in [
        "CREATE TABLE IF NOT EXISTS products (catalog TEXT NOT NULL, sku TEXT NOT NULL, \
         name TEXT NOT NULL, category TEXT NOT NULL, price_cents BIGINT NOT NULL, \
         version BIGINT NOT NULL, PRIMARY KEY (catalog, sku))",
        "CREATE TABLE IF NOT EXISTS product_search (catalog TEXT NOT NULL, sku TEXT NOT NULL, \
         name TEXT NOT NULL, name_lower TEXT NOT NULL, category TEXT NOT NULL, \
         price_cents BIGINT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (catalog, sku))",
        "CREATE INDEX IF NOT EXISTS product_search_by_category \
         ON product_search (catalog, category, price_cents)",
    ] {
        execute(&mut tx, sql, &[]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Read model 1: a row per product, looked up by sku.
struct ProductsTable;

impl Projection for ProductsTable {
    type Event = ProductEvent;

    fn name(&self) -> &str {
        "catalog.products"
    }

    async fn apply(
        &mut self,
        event: ProductEvent,
        ctx: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        // The product's version is where the event sits in its stream.
        let version = cents(ctx.stored().version);
        let written = match event {
            ProductEvent::Created(e) => {
                let sql = "INSERT INTO products (catalog, sku, name, category, price_cents, \
                           version) VALUES ($1, $2, $3, $4, $5, $6)";
                let args = [
                    text(&e.catalog),
                    text(&e.sku),
                    text(&e.name),
                    text(&e.category),
                    cents(e.price_cents),
                    version,
                ];
                execute(ctx.tx(), sql, &args).await
            }
            ProductEvent::PriceChanged(e) => {
                let sql = "UPDATE products SET price_cents = $1, version = $2 \
                           WHERE catalog = $3 AND sku = $4";
                let args = [
                    cents(e.price_cents),
                    version,
                    text(&e.catalog),
                    text(&e.sku),
                ];
                execute(ctx.tx(), sql, &args).await
            }
        };
        written.map_err(ProjectionError::new)
    }

    async fn reset(&mut self, ctx: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        let emptied = execute(ctx.tx(), "DELETE FROM products", &[]).await;
        emptied.map_err(ProjectionError::new)
    }
}

/// Read model 2: the same products shaped for searching (the name also in lower case, an
/// index on category and price). It could just as well live in a search engine.
struct SearchIndex;

impl Projection for SearchIndex {
    type Event = ProductEvent;

    fn name(&self) -> &str {
        "catalog.search"
    }

    async fn apply(
        &mut self,
        event: ProductEvent,
        ctx: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        let version = cents(ctx.stored().version);
        let written = match event {
            ProductEvent::Created(e) => {
                let sql = "INSERT INTO product_search (catalog, sku, name, name_lower, \
                           category, price_cents, version) VALUES ($1, $2, $3, $4, $5, $6, $7)";
                let args = [
                    text(&e.catalog),
                    text(&e.sku),
                    text(&e.name),
                    Arg::Text(e.name.to_lowercase()),
                    text(&e.category),
                    cents(e.price_cents),
                    version,
                ];
                execute(ctx.tx(), sql, &args).await
            }
            ProductEvent::PriceChanged(e) => {
                let sql = "UPDATE product_search SET price_cents = $1, version = $2 \
                           WHERE catalog = $3 AND sku = $4";
                let args = [
                    cents(e.price_cents),
                    version,
                    text(&e.catalog),
                    text(&e.sku),
                ];
                execute(ctx.tx(), sql, &args).await
            }
        };
        written.map_err(ProjectionError::new)
    }

    async fn reset(&mut self, ctx: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        let emptied = execute(ctx.tx(), "DELETE FROM product_search", &[]).await;
        emptied.map_err(ProjectionError::new)
    }
}

// ---- the queries ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct ProductView {
    sku: String,
    name: String,
    category: String,
    price_cents: u64,
    version: u64,
}

fn view((sku, name, category, price, version): (String, String, String, i64, i64)) -> ProductView {
    let (price_cents, version) = (
        price.try_into().unwrap_or(0),
        version.try_into().unwrap_or(0),
    );
    ProductView {
        sku,
        name,
        category,
        price_cents,
        version,
    }
}

#[derive(Query, Debug)]
#[query(reply = sqlx::Result<Option<ProductView>>)]
struct GetProduct {
    sku: String,
}

/// Every filter is optional; the results come by name, `per_page` at a time from page 1.
#[derive(Query, Clone, Debug, Default)]
#[query(reply = sqlx::Result<Page>)]
struct SearchProducts {
    text: Option<String>,
    category: Option<String>,
    min_price: Option<u64>,
    max_price: Option<u64>,
    page: u32,
    per_page: u32,
}

impl SearchProducts {
    /// No filter yet: everything, `per_page` products on page `page`.
    fn page(page: u32, per_page: u32) -> Self {
        Self {
            page,
            per_page,
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Page {
    items: Vec<ProductView>,
    total: u64,
    page: u32,
    per_page: u32,
}

/// Answers the queries from the read models, by SQL on the store's read connections.
struct CatalogQueries {
    store: Store,
    catalog: String,
}

#[handlers]
impl CatalogQueries {
    #[query]
    async fn get(&self, q: GetProduct) -> sqlx::Result<Option<ProductView>> {
        let sql = "SELECT sku, name, category, price_cents, version FROM products \
                   WHERE catalog = $1 AND sku = $2";
        let args = [text(&self.catalog), text(&q.sku)];
        Ok(fetch_views(&self.store, sql, &args).await?.pop())
    }

    #[query]
    async fn search(&self, q: SearchProducts) -> sqlx::Result<Page> {
        // One condition per filter given, each with its own placeholder.
        let mut filter = "catalog = $1".to_owned();
        let mut args = vec![text(&self.catalog)];
        // (`?` in the condition stands for the value's placeholder.)
        let mut and = |condition: &str, arg: Arg| {
            args.push(arg);
            let condition = condition.replace('?', &format!("${}", args.len()));
            filter += &format!(" AND {condition}");
        };
        if let Some(text) = &q.text {
            // `LIKE` is case-sensitive on PostgreSQL: compare lower case with lower case, and
            // escape the pattern's own wildcards.
            let escaped = text.to_lowercase().replace('\\', r"\\").replace('%', r"\%");
            let pattern = format!("%{}%", escaped.replace('_', r"\_"));
            and(r"name_lower LIKE ? ESCAPE '\'", Arg::Text(pattern));
        }
        if let Some(category) = &q.category {
            and("category = ?", text(category));
        }
        if let Some(min) = q.min_price {
            and("price_cents >= ?", cents(min));
        }
        if let Some(max) = q.max_price {
            and("price_cents <= ?", cents(max));
        }
        let sql = format!("SELECT COUNT(*) FROM product_search WHERE {filter}");
        let total = fetch_count(&self.store, &sql, &args).await?;

        let (page, per_page) = (q.page.max(1), q.per_page.clamp(1, 100));
        let n = args.len();
        args.push(Arg::Int(per_page.into()));
        args.push(Arg::Int(i64::from(page - 1) * i64::from(per_page)));
        let sql = format!(
            "SELECT sku, name, category, price_cents, version FROM product_search \
             WHERE {filter} ORDER BY name, sku LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let items = fetch_views(&self.store, &sql, &args).await?;
        Ok(Page {
            items,
            total,
            page,
            per_page,
        })
    }
}

// ---- running it ----------------------------------------------------------------------------

fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// Prints a command's outcome. A refusal is an outcome; a store error ends the example.
fn report(shown: &str, reply: Reply) -> anyhow::Result<()> {
    match reply {
        Ok(version) => println!("{shown} -> version {version}"),
        Err(RepositoryError::Rejected(refusal)) => println!("{shown} -> refused: {refusal}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Waits until every projection applied everything stored so far and is live (waiting for
/// newer events); returns the store's head, the position they reached.
async fn caught_up(store: &Store, projections: &[&ProjectionHandle]) -> anyhow::Result<u64> {
    let head = store.head().await?;
    for projection in projections {
        if !projection.wait_for(head, WAIT).await {
            bail!("projection stuck: {:?}", projection.status());
        }
        // `Live` follows as soon as its next read finds nothing newer.
        let live = async {
            while projection.status().state != ProjectionState::Live {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let stuck = || format!("projection not live: {:?}", projection.status());
        tokio::time::timeout(WAIT, live).await.with_context(stuck)?;
    }
    Ok(head)
}

async fn search(app: &App, label: &str, query: SearchProducts) -> anyhow::Result<Page> {
    let page = app.query(query).await??;
    let pages = page.total.div_ceil(u64::from(page.per_page)).max(1);
    let (total, at, per_page) = (page.total, page.page, page.per_page);
    println!("{label}: total {total}, page {at} of {pages} ({per_page} per page)");
    for p in &page.items {
        let (name, price) = (&p.name, dollars(p.price_cents));
        println!("  {:<7} {name:<25} {:<9} {price:>8}", p.sku, p.category);
    }
    Ok(page)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run_id = run_id();

    // 1. The store, by URL; by default a fresh SQLite file. `_temp` is bound
    //    first, so it is dropped (and the directory removed) after the store.
    let (_temp, store, place) = open_store("catalog", "catalog.db").await?;
    if store.backend_name() == "memory" {
        bail!("the catalog keeps its read models in SQL tables: use SQLite or PostgreSQL");
    }
    println!("== 1. store: {} ({place})", store.backend_name());

    // Reruns on one PostgreSQL database must not collide: every run fills its own catalog
    // (the run id), which is part of the products' stream names and a column of both
    // tables, and the queries only see their catalog. The tables and the projections'
    // checkpoints are kept across runs, so a rerun also shows the projections resuming
    // where they stopped, and a rebuild replays the earlier runs' catalogs too.
    create_tables(&store).await?;
    let projector = Projector::new(store.clone());
    let products = projector.start(ProductsTable).await?;
    // Small batches for the search, so its rebuild below goes in visible steps.
    let search_index = projector.clone().batch(4).start(SearchIndex).await?;
    let both = [&products, &search_index];

    let catalog = run_id.clone();
    let app = App::builder()
        .actor(Catalog {
            catalog: catalog.clone(),
            repo: Repository::new(store.clone()),
        })
        .actor(CatalogQueries {
            store: store.clone(),
            catalog,
        })
        .build()
        .await?;

    // 2. The write side: commands, each decided by its product.
    println!("\n== 2. commands");
    let items = [
        ("KB-100", "Compact Keyboard", "keyboard", 4_900),
        ("KB-200", "Mechanical Keyboard Pro", "keyboard", 12_900),
        ("KB-300", "Ergonomic Split Keyboard", "keyboard", 15_900),
        ("KB-400", "Wireless Keyboard", "keyboard", 6_900),
        ("MS-100", "Basic Mouse", "mouse", 1_500),
        ("MS-200", "Wireless Mouse", "mouse", 2_900),
        ("MS-300", "Gaming Mouse PRO", "mouse", 7_900),
        ("MS-400", "Vertical Mouse", "mouse", 4_500),
        ("MN-100", "24-inch Monitor", "monitor", 17_900),
        ("MN-200", "27-inch 4K Monitor", "monitor", 32_900),
        ("MN-300", "Portable Monitor", "monitor", 21_900),
        ("MN-400", "UltraWide Monitor Pro", "monitor", 54_900),
        ("KB-100", "Compact Keyboard", "keyboard", 4_900), // again: refused
    ];
    for (sku, name, category, price_cents) in items {
        let shown = format!(
            "create {sku} {name:?} in {category} at {}",
            dollars(price_cents)
        );
        let (sku, name, category) = (sku.into(), name.into(), category.into());
        let create = CreateProduct {
            sku,
            name,
            category,
            price_cents,
        };
        report(&shown, app.send(create).await?)?;
    }
    let changes = [
        ("KB-200", 11_900),
        ("MS-100", 1_200),
        ("MN-400", 49_900),
        ("MS-200", 2_900), // unchanged: refused
        ("XX-999", 1_000), // unknown: refused
        ("MN-100", 0),     // free: refused
    ];
    for (sku, price_cents) in changes {
        let shown = format!("change the price of {sku} to {}", dollars(price_cents));
        let sku = sku.into();
        report(&shown, app.send(ChangePrice { sku, price_cents }).await?)?;
    }

    // 3. The read side is eventually consistent: wait until both projections applied every
    //    event stored so far (the store's head), then ask.
    let head = caught_up(&store, &both).await?;
    println!("\n== 3. both projections caught up with the store (position {head})");
    for sku in ["KB-200", "XX-999"] {
        let sku = sku.to_owned();
        match app.query(GetProduct { sku: sku.clone() }).await?? {
            Some(p) => println!(
                "GetProduct {sku}: {:?} in {} at {}, version {}",
                p.name,
                p.category,
                dollars(p.price_cents),
                p.version
            ),
            None => println!("GetProduct {sku}: no such product"),
        }
    }

    // 4. Searches on the second read model.
    println!("\n== 4. searches");
    let mut pro = SearchProducts::page(1, 10);
    pro.text = Some("pro".into());
    let found = search(&app, "text \"pro\" (any case)", pro.clone()).await?;
    let mut monitors = SearchProducts::page(1, 10);
    monitors.category = Some("monitor".into());
    search(&app, "category monitor", monitors).await?;
    let mut range = SearchProducts::page(1, 10);
    (range.min_price, range.max_price) = (Some(4_000), Some(15_000));
    search(&app, "price $40.00 to $150.00", range).await?;
    for page in [1, 2] {
        let all = SearchProducts::page(page, 4);
        search(&app, "everything by name", all).await?;
    }

    // 5. A rebuild, while the app runs: the search's table is emptied and its checkpoint
    //    reset in one transaction, then every event is replayed. Meanwhile the app takes
    //    commands; an event stored during the replay is applied after it.
    println!("\n== 5. rebuilding the search projection while the app runs");
    let head = store.head().await?;
    search_index.rebuild().await?;
    println!("reset committed; replaying the events up to position {head}");
    // Samples the progress until the projection is live again (how many steps it catches
    // depends on timing: a handle offers its status now and `wait_for` a position).
    let progress = tokio::spawn({
        let search_index = search_index.clone();
        async move {
            let mut seen = Vec::new();
            loop {
                let status = search_index.status();
                let sample = (status.state, status.position);
                if seen.last() != Some(&sample) {
                    seen.push(sample.clone());
                }
                if sample.0 == ProjectionState::Live {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let change = ChangePrice {
        sku: "MS-400".into(),
        price_cents: 3_900,
    };
    report(
        "meanwhile: change the price of MS-400 to $39.00",
        app.send(change).await?,
    )?;
    let steps = tokio::time::timeout(WAIT, progress)
        .await
        .context("no progress")??;
    for (state, position) in steps {
        println!("  progress: {state:?} at position {position}");
    }
    let head = caught_up(&store, &both).await?;
    let applied = search_index.status().applied;
    println!("live again at position {head}: {applied} events applied since the start");
    let again = search(&app, "text \"pro\" (any case) again", pro).await?;
    if again != found {
        bail!("the rebuilt search answers differently");
    }
    println!("same answer as before the rebuild");

    // 6. Where the projections stand: each live, at the store's head.
    println!("\n== 6. projections");
    let head = caught_up(&store, &both).await?;
    for projection in both {
        let s = projection.status();
        let (name, state, position) = (s.name, s.state, s.position);
        println!("{name:<16} {state:?}, position {position}, store head {head}");
    }

    for projection in both {
        projection.stop().await;
    }
    app.shutdown().await?;
    println!("\n== done");
    Ok(())
}
