//! AFL++ harness for one fuzz target, chosen by `BFF_FUZZ_TARGET`.
//!
//! ```text
//! cargo afl build --release -p bff-proxy-fuzz --features afl --bin bff-fuzz-afl
//! cargo run --release -p bff-proxy-fuzz -- seeds path fuzz/out/seeds-path
//! BFF_FUZZ_TARGET=path cargo afl fuzz -i fuzz/out/seeds-path -o fuzz/out/afl-path \
//!     -E 10000000 target/release/bff-fuzz-afl
//! ```

fn main() {
    let target = std::env::var("BFF_FUZZ_TARGET").unwrap_or_default();
    if !bff_proxy::fuzzing::TARGETS.contains(&target.as_str()) {
        eprintln!(
            "BFF_FUZZ_TARGET must be one of {}",
            bff_proxy::fuzzing::TARGETS.join(", ")
        );
        std::process::exit(2);
    }
    // Set up once, before the fork server starts: the logout-token target makes an
    // RSA key on first use, which would otherwise happen in every forked child.
    for seed in bff_proxy::fuzzing::seeds(&target) {
        bff_proxy::fuzzing::run(&target, &seed);
    }
    afl::fuzz!(|data: &[u8]| {
        bff_proxy::fuzzing::run(&target, data);
    });
}
