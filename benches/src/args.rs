//! Positional command-line arguments, with a usage line on error.

use std::process::exit;

/// The positional arguments of a benchmark binary.
pub struct Args {
    values: Vec<String>,
    usage: &'static str,
}

impl Args {
    /// Reads the process arguments; exits with the usage line when there
    /// are not exactly `names` of them, or on `-h`/`--help`.
    pub fn parse(usage: &'static str, count: usize) -> Self {
        let values: Vec<String> = std::env::args().skip(1).collect();
        if values.len() != count || values.iter().any(|v| v == "-h" || v == "--help") {
            eprintln!("usage: {usage}");
            exit(2);
        }
        Args { values, usage }
    }

    /// The `i`th argument as a number; exits with a message if it is not one
    /// or is below `min`.
    pub fn get(&self, i: usize, name: &str, min: u64) -> u64 {
        match self.values[i].parse::<u64>() {
            Ok(v) if v >= min => v,
            _ => {
                eprintln!(
                    "error: {name} must be an integer >= {min}, got {:?}\nusage: {}",
                    self.values[i], self.usage
                );
                exit(2);
            }
        }
    }

    /// The `i`th argument as a `usize` (see [`Args::get`]).
    pub fn get_usize(&self, i: usize, name: &str, min: usize) -> usize {
        usize::try_from(self.get(i, name, min as u64)).unwrap_or(usize::MAX)
    }
}
