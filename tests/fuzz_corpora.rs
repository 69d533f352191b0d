//! Replays every saved fuzz input (`fuzz/corpus/<target>/`) through its target on stable Rust: the inputs
//! cargo-fuzz found interesting, and any that once crashed, must stay harmless. A target with no inputs is an
//! error: the corpora are part of the tests.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_saved_fuzz_input_is_harmless() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let mut replayed = Vec::new();
    for (name, target) in targets::TARGETS {
        let dir = corpora.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{}: no inputs", dir.display());
        for input in &inputs {
            let data = std::fs::read(input).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", input.display());
        }
        replayed.push(format!("{name}: {}", inputs.len()));
    }
    eprintln!("replayed {}", replayed.join(", "));
}
