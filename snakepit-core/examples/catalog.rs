//! Prints the event catalog and checks a config file.
//!
//! ```text
//! cargo run -p snakepit-core --example catalog [-- snakepit.toml]
//! ```

use snakepit_core::{Catalog, Config};

fn main() {
    let catalog = Catalog::builtin();
    for (id, spec) in catalog.iter() {
        let measurements: Vec<String> = spec
            .measurements
            .iter()
            .map(|m| format!("{} ({})", m.key, m.unit.as_str()))
            .collect();
        println!(
            "{id:>4} {:<45} {:<6} {}",
            spec.name,
            spec.origin.as_str(),
            measurements.join(", ")
        );
    }
    if let Some(path) = std::env::args().nth(1) {
        match Config::load(&path) {
            Ok(config) => println!("\n{path}: ok, {} sinks", config.sinks.len()),
            Err(e) => {
                eprintln!("\n{e}");
                std::process::exit(1);
            }
        }
    }
}
