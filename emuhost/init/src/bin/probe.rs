//! A probe for emuhost's own tests: shows what arrived in the emulated host and ends the
//! way it is told.
//!
//! Arguments: `show` prints every argument (Rust debug quoting), the working directory,
//! the uid and each `PROBE_*`, `RUST_*`, `RAS_*`, `CI` and `NO_COLOR` variable; `exit N`
//! exits with N; `panic` panics (exit 101, as a failing test does); `sleep N` sleeps N
//! seconds.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(cmd) = it.next() {
        match cmd.as_str() {
            "show" => show(&args),
            "exit" => std::process::exit(it.next().and_then(|n| n.parse().ok()).unwrap_or(2)),
            "panic" => panic!("probe asked to panic"),
            "sleep" => {
                let secs = it.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                std::thread::sleep(Duration::from_secs(secs));
            }
            _ => {}
        }
    }
}

fn show(args: &[String]) {
    for a in args {
        println!("arg {a:?}");
    }
    match std::env::current_dir() {
        Ok(d) => println!("cwd {}", d.display()),
        Err(e) => println!("cwd error {e}"),
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .unwrap_or_default();
    println!("uid {}", uid.split_whitespace().nth(1).unwrap_or("?"));
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            ["PROBE_", "RUST_", "RAS_"].iter().any(|p| k.starts_with(p))
                || k == "CI"
                || k == "NO_COLOR"
        })
        .collect();
    vars.sort();
    for (k, v) in vars {
        println!("env {k}={v:?}");
    }
}
