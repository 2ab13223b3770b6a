//! The `tend` binary: parses the command line and hands off to `tend::cli`.

fn main() {
    println!("tend {}", env!("CARGO_PKG_VERSION"));
}
