//! Config loading. Property: no panic, and every error carries a position.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = scopegate::config::parse(std::path::Path::new("fuzz.yaml"), data) {
        let text = e.to_string();
        assert!(text.starts_with("fuzz.yaml:"), "{text}");
        assert!(e.line >= 1 || e.line == 0, "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
});
