//! A probe for emuhost's own tests: shows what arrived in the emulated host and ends the
//! way it is told.
//!
//! Arguments: `show` prints every argument (Rust debug quoting), the working directory,
//! the uid and each `PROBE_*`, `RUST_*`, `RAS_*`, `CI` and `NO_COLOR` variable; `exit N`
//! exits with N; `panic` panics (exit 101, as a failing test does); `sleep N` sleeps N
//! seconds; `time N PROGRAM ARGS...` (N words: the program and its arguments) runs a program
//! with stdin from /dev/null, its output captured, stopped after 120 s, and prints
//! `time status CODE elapsed SECONDS`, `time stdout "..."` and `time stderr "..."` (Rust
//! debug quoting; CODE is 128 + the signal number when a signal ended it).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `time` lets a program run.
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(cmd) = it.next() {
        match cmd.as_str() {
            "show" => show(&args),
            "exit" => std::process::exit(it.next().and_then(|n| n.parse().ok()).unwrap_or(2)),
            "panic" => panic!("probe asked to panic"),
            "time" => {
                let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let words: Vec<&String> = it.by_ref().take(n).collect();
                time(&words);
            }
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

fn time(words: &[&String]) {
    let Some((program, args)) = words.split_first() else {
        println!("time status 127 elapsed 0 (no program)");
        return;
    };
    let started = Instant::now();
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            println!("time status 127 elapsed 0 (cannot run {program}: {e})");
            return;
        }
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < TIME_LIMIT => {
                std::thread::sleep(Duration::from_millis(1))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let code = match status {
        Some(s) => s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(255),
        None => {
            println!("time limit of {} s reached; killed", TIME_LIMIT.as_secs());
            137
        }
    };
    println!("time status {code} elapsed {elapsed:.3}");
    println!("time stdout {:?}", stdout.join().unwrap_or_default());
    println!("time stderr {:?}", stderr.join().unwrap_or_default());
}
