//! `sqlx::migrate!` embeds the files under `migrations/` at compile time, but
//! cargo does not know that: without this, a new migration file leaves an
//! incremental build with the old set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
