//! The `ras-harness` command line.

fn main() {
    println!("ras-harness");
}
