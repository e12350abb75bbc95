//! Rebuild when a migration is added: `sqlx::migrate!` embeds the folders' files, and
//! Cargo does not otherwise watch them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
