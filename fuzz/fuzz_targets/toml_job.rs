//! Any text as a TOML job file: loading never panics, and a refusal always
//! renders as a diagnostic (spans inside the text, carets in place).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = gatherd::load::load_str(Path::new("fuzz/job.toml"), text) {
        let _ = e.render(false);
    }
});
