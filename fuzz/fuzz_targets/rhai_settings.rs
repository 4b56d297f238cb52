//! Any text as a Rhai job file: compiling it and reading its settings (the
//! top-level `const`s) never panics and never runs it; a refusal renders.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = gatherd::load::load_str(Path::new("fuzz/job.rhai"), text) {
        let _ = e.render(false);
    }
});
