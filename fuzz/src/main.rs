//! `bff-fuzz`: runs bff-proxy's fuzz targets (`bff_proxy::fuzzing`) for a number of
//! inputs each, with a seeded mutation driver: real seed inputs mutated (bit flips,
//! interesting bytes, inserts, deletes, splices, dictionary tokens), structured
//! inputs built with `arbitrary`, and plain random bytes. Deterministic for a seed.
//! A panic (a crash, or a broken property) is a finding: its input is saved and the
//! run exits 1.
//!
//! ```text
//! cargo run --release -p bff-proxy-fuzz -- all --inputs 10000000
//! cargo run --release -p bff-proxy-fuzz -- cookie_header --inputs 1000000 --seed 7
//! cargo run --release -p bff-proxy-fuzz -- seeds path fuzz/out/seeds-path   (for AFL++)
//! ```

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bff_proxy::fuzzing::{TARGETS, run, seeds};

mod inputs;

use inputs::{dictionary, generate, mutate};
use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};

struct Args {
    targets: Vec<String>,
    inputs: u64,
    seed: u64,
    out: PathBuf,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bff-fuzz <all|{}> [--inputs N] [--seed S] [--out DIR]\n       bff-fuzz seeds <target> <dir>\n       bff-fuzz replay <target> <file>...",
        TARGETS.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("seeds") {
        return write_seeds(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("replay") {
        return replay(&argv[1..]);
    }
    let Some(args) = parse(&argv) else {
        return usage();
    };
    let mut failed = false;
    for target in &args.targets {
        match fuzz(target, &args) {
            Ok(()) => {}
            Err(path) => {
                eprintln!("{target}: FINDING saved to {}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn parse(argv: &[String]) -> Option<Args> {
    let mut it = argv.iter();
    let which = it.next()?;
    let targets: Vec<String> = if which == "all" {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else if TARGETS.contains(&which.as_str()) {
        vec![which.clone()]
    } else {
        return None;
    };
    let mut args = Args {
        targets,
        inputs: 100_000,
        seed: 1,
        out: PathBuf::from("fuzz/out"),
    };
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--inputs" => args.inputs = value.replace('_', "").parse().ok()?,
            "--seed" => args.seed = value.parse().ok()?,
            "--out" => args.out = PathBuf::from(value),
            _ => return None,
        }
    }
    Some(args)
}

fn write_seeds(argv: &[String]) -> ExitCode {
    let (Some(target), Some(dir)) = (argv.first(), argv.get(1)) else {
        return usage();
    };
    let dir = PathBuf::from(dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return ExitCode::FAILURE;
    }
    for (i, seed) in seeds(target).iter().enumerate() {
        if std::fs::write(dir.join(format!("seed-{i}")), seed).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs saved inputs (findings, an AFL++ crash) through a target again; a panic
/// shows as usual.
fn replay(argv: &[String]) -> ExitCode {
    let Some((target, files)) = argv.split_first() else {
        return usage();
    };
    for file in files {
        let Ok(data) = std::fs::read(file) else {
            eprintln!("cannot read {file}");
            return ExitCode::FAILURE;
        };
        if !run(target, &data) {
            return usage();
        }
        println!("{file}: no panic");
    }
    ExitCode::SUCCESS
}

/// Runs one target; Err(path of the saved input) on a finding.
fn fuzz(target: &str, args: &Args) -> Result<(), PathBuf> {
    let seed_inputs = seeds(target);
    let dict = dictionary(target);
    let mut rng = StdRng::seed_from_u64(args.seed ^ fnv(target));
    let mut pool: Vec<Vec<u8>> = seed_inputs.clone();
    // Findings are reported once, not by the default hook for every input.
    let last_panic = Arc::new(Mutex::new(String::new()));
    let hook_slot = Arc::clone(&last_panic);
    panic::set_hook(Box::new(move |info| {
        if let Ok(mut slot) = hook_slot.lock() {
            *slot = info.to_string();
        }
    }));
    let started = Instant::now();
    let report_every = (args.inputs / 10).max(1);
    for i in 0..args.inputs {
        let input = match rng.gen_range(0..10) {
            0..=5 => {
                let parent = &pool[rng.gen_range(0..pool.len())];
                mutate(parent, &pool, &dict, &mut rng)
            }
            6..=8 => generate(target, &mut rng),
            _ => {
                let mut bytes = vec![0u8; rng.gen_range(0..256)];
                rng.fill_bytes(&mut bytes);
                bytes
            }
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(target, &input)));
        if outcome.is_err() {
            let _ = panic::take_hook();
            let dir = args.out.join("findings");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-{}-{i}.bin", args.seed));
            let _ = std::fs::write(&path, &input);
            eprintln!(
                "{target}: input {i} panicked: {}",
                last_panic.lock().map(|s| s.clone()).unwrap_or_default()
            );
            return Err(path);
        }
        // Keep some of what was tried, so mutations can stack over generations.
        if i % 64 == 0 {
            if pool.len() < 1024 {
                pool.push(input);
            } else {
                let at = rng.gen_range(seed_inputs.len()..pool.len());
                pool[at] = input;
            }
        }
        if (i + 1) % report_every == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{target}: {} inputs, {:.0}/s",
                i + 1,
                (i + 1) as f64 / secs.max(1e-9)
            );
        }
    }
    let _ = panic::take_hook();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{target}: {} inputs, no panic, {:.1} s ({:.0} inputs/s), seed {}",
        args.inputs,
        secs,
        args.inputs as f64 / secs.max(1e-9),
        args.seed
    );
    Ok(())
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
