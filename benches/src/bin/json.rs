//! `json SECONDS THREADS USERS`
//!
//! A Rust program built on a real library: `THREADS` threads each loop over
//! JSON documents with `serde_json`. One document is `USERS` user records
//! (nested objects and arrays of strings and numbers: an address, tags,
//! orders, a string map; about 700 B of JSON per user, so a few hundred KB
//! for the default 500), drawn from a deterministic per-thread seed. Each
//! document is
//!
//! 1. built as typed structs and serialised to a `String`;
//! 2. parsed back into a `serde_json::Value` tree and into the typed
//!    `#[derive(Deserialize)]` structs;
//! 3. transformed: the `Value` is filtered and mapped into a new tree
//!    (formatted strings, cloned address subtrees), the typed records are
//!    grouped into a `HashMap` of per-SKU totals and summarised;
//! 4. serialised again (the new tree compact, the summary pretty-printed);
//! 5. dropped, all of it.
//!
//! Nearly every step allocates: strings, vectors and map nodes of many
//! small sizes, built up and then freed in bulk. One op is one byte of
//! document JSON (step 1's text) taken through all five steps, so
//! `Mops/s` reads as MB/s, the unit JSON libraries are measured in; the
//! documents per second are printed too (`docs_per_s=`). Documents come
//! from fixed seeds, so the two rates are proportional for given
//! arguments.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use hakmem_benches::args::Args;
use hakmem_benches::print_result;
use hakmem_benches::rng::Rng;

/// Stack size of the worker threads (the derive code's frames are large).
const STACK_SIZE: usize = 2 << 20;

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Margaret", "Ken", "Radia",
    "Dennis", "Leslie",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Hamilton", "Thompson",
    "Perlman",
];
const CITIES: [&str; 8] = [
    "Tokyo", "Lisbon", "Nairobi", "Montreal", "Oslo", "Santiago", "Pune", "Perth",
];
const TAGS: [&str; 10] = [
    "admin", "beta", "premium", "trial", "mobile", "desktop", "eu", "us", "apac", "legacy",
];
const SKUS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Document {
    id: u64,
    generator: String,
    users: Vec<User>,
}

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    age: u32,
    score: f64,
    active: bool,
    tags: Vec<String>,
    address: Address,
    orders: Vec<Order>,
    attributes: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    zip: String,
    geo: [f64; 2],
}

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    sku: String,
    quantity: u32,
    price: f64,
    note: Option<String>,
}

/// The typed transformation's output, pretty-printed.
#[derive(Serialize)]
struct Summary<'a> {
    document: u64,
    active_users: usize,
    revenue: f64,
    top_skus: Vec<SkuTotal<'a>>,
    cities: BTreeMap<&'a str, Vec<String>>,
}

#[derive(Serialize)]
struct SkuTotal<'a> {
    sku: &'a str,
    quantity: u64,
    revenue: f64,
}

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len())]
}

fn money(rng: &mut Rng) -> f64 {
    rng.range(100, 100_000) as f64 / 100.0
}

fn user(rng: &mut Rng, id: u64) -> User {
    let (first, last) = (pick(rng, &FIRST), pick(rng, &LAST));
    let tags = (0..rng.range(1, 6))
        .map(|_| pick(rng, &TAGS).to_owned())
        .collect();
    let orders = (0..rng.range(0, 8))
        .map(|_| Order {
            id: rng.next_u64() >> 16,
            sku: format!("SKU-{:04}", rng.below(SKUS)),
            quantity: rng.range(1, 20) as u32,
            price: money(rng),
            note: (rng.below(4) == 0).then(|| format!("deliver after {}:00", rng.range(8, 18))),
        })
        .collect();
    let attributes = (0..rng.range(1, 5))
        .map(|i| (format!("attr{i}"), format!("{:x}", rng.next_u64())))
        .collect();
    User {
        id,
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            rng.below(1000)
        ),
        age: rng.range(18, 90) as u32,
        score: rng.next_u64() as f64 / u64::MAX as f64,
        active: rng.below(3) != 0,
        tags,
        address: Address {
            street: format!("{} {} Street", rng.range(1, 999), pick(rng, &LAST)),
            city: pick(rng, &CITIES).to_owned(),
            zip: format!("{:05}", rng.below(100_000)),
            geo: [
                rng.range(0, 180_000) as f64 / 1000.0 - 90.0,
                rng.range(0, 360_000) as f64 / 1000.0 - 180.0,
            ],
        },
        orders,
        attributes,
    }
}

/// Step 3 on the `Value` tree: the active users with their orders above a
/// price, reshaped, each carrying a clone of its address subtree.
fn transform_value(doc: &Value) -> Value {
    let users = doc["users"].as_array().map_or(&[][..], Vec::as_slice);
    let out: Vec<Value> = users
        .iter()
        .filter(|u| u["active"].as_bool() == Some(true))
        .map(|u| {
            let big: Vec<Value> = u["orders"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["price"].as_f64().unwrap_or(0.0) > 250.0)
                .map(|o| {
                    json!({
                        "order": o["id"].clone(),
                        "label": format!(
                            "{} x{} @ {:.2}",
                            o["sku"].as_str().unwrap_or(""),
                            o["quantity"],
                            o["price"].as_f64().unwrap_or(0.0)
                        ),
                    })
                })
                .collect();
            let mut m = Map::new();
            m.insert("id".into(), u["id"].clone());
            m.insert(
                "contact".into(),
                Value::String(format!(
                    "{} <{}>",
                    u["name"].as_str().unwrap_or(""),
                    u["email"].as_str().unwrap_or("")
                )),
            );
            m.insert("address".into(), u["address"].clone());
            m.insert("tags".into(), u["tags"].clone());
            m.insert("big_orders".into(), Value::Array(big));
            Value::Object(m)
        })
        .collect();
    json!({ "source": doc["id"].clone(), "active": out })
}

/// Step 3 on the typed structs: per-SKU totals, the top ten, and the
/// active users' names by city.
fn summarise(doc: &Document) -> Summary<'_> {
    let mut skus: HashMap<&str, (u64, f64)> = HashMap::new();
    let mut cities: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut revenue = 0.0;
    let mut active = 0;
    for u in doc.users.iter().filter(|u| u.active) {
        active += 1;
        cities
            .entry(&u.address.city)
            .or_default()
            .push(format!("{} ({})", u.name, u.age));
        for o in &u.orders {
            let e = skus.entry(&o.sku).or_default();
            e.0 += u64::from(o.quantity);
            let r = f64::from(o.quantity) * o.price;
            e.1 += r;
            revenue += r;
        }
    }
    let mut top: Vec<SkuTotal<'_>> = skus
        .into_iter()
        .map(|(sku, (quantity, revenue))| SkuTotal {
            sku,
            quantity,
            revenue,
        })
        .collect();
    top.sort_by(|a, b| b.revenue.total_cmp(&a.revenue).then(a.sku.cmp(b.sku)));
    top.truncate(10);
    Summary {
        document: doc.id,
        active_users: active,
        revenue,
        top_skus: top,
        cities,
    }
}

/// One document through all five steps; returns the size of its JSON text.
fn process(rng: &mut Rng, id: u64, users: usize) -> usize {
    let doc = Document {
        id,
        generator: format!("hakmem-benches json v{}", env!("CARGO_PKG_VERSION")),
        users: (0..users as u64)
            .map(|i| user(rng, id * 100_000 + i))
            .collect(),
    };
    let text = serde_json::to_string(&doc).expect("serialise");
    drop(doc);

    let tree: Value = serde_json::from_str(&text).expect("parse into Value");
    let typed: Document = serde_json::from_str(&text).expect("parse into structs");

    let reshaped = transform_value(&tree);
    let summary = summarise(&typed);
    let out1 = serde_json::to_string(&reshaped).expect("serialise reshaped");
    let out2 = serde_json::to_string_pretty(&summary).expect("serialise summary");
    black_box((out1.len(), out2.len()));
    text.len()
}

fn main() {
    let a = Args::parse("json SECONDS THREADS USERS", 3);
    let seconds = a.get(0, "SECONDS", 1);
    let nthreads = a.get_usize(1, "THREADS", 1);
    let users = a.get_usize(2, "USERS", 1);

    let stop = AtomicBool::new(false);
    let docs = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..nthreads {
            let (stop, docs, bytes) = (&stop, &docs, &bytes);
            let spawned = std::thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(s, move || {
                    let mut rng = Rng::new(0x15_0000 + t as u64);
                    let (mut n, mut b) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        b += process(&mut rng, t as u64 * 1_000_000 + n, users) as u64;
                        n += 1;
                    }
                    docs.fetch_add(n, Ordering::Relaxed);
                    bytes.fetch_add(b, Ordering::Relaxed);
                });
            if let Err(e) = spawned {
                eprintln!("error: could not create a thread: {e}");
                std::process::exit(1);
            }
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed();
    let n = docs.load(Ordering::SeqCst);
    let b = bytes.load(Ordering::SeqCst);
    let avg_kib = b.checked_div(n).unwrap_or(0) / 1024;
    print_result(
        "json",
        b,
        elapsed,
        &format!(
            "threads={nthreads} users={users} docs={n} docs_per_s={:.1} doc_kib={avg_kib}",
            n as f64 / elapsed.as_secs_f64()
        ),
    );
}
