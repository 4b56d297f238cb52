//! Any text as the configuration file: accepted or refused with a message,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = gatherd::config::Config::parse(Path::new("fuzz/config.toml"), text) {
        let _ = e.to_string();
    }
});
