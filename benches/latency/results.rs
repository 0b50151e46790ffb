//! Every sample criterion was given, kept to break the path into its parts and to put each
//! path against the floor: medians, as a table and as JSON.

use crate::floor::RoundTrip;
use crate::sigbus::Parts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// More than any emulated run takes; a native run of cheap samples stops keeping there.
const KEEP: usize = 200_000;

/// What the run measured.
#[derive(Default)]
pub struct Results {
    /// The null MMIO exit round trips.
    pub null_exit: Vec<RoundTrip>,
    /// Signal deliveries by how the thread waited ("blocked", "spinning"), and the
    /// thread hop ("thread hop").
    pub signal: BTreeMap<&'static str, Vec<i64>>,
    /// The hwpoison path by bench id ("ext_dabt/acpi", ...).
    pub paths: BTreeMap<String, Vec<Parts>>,
    /// A quick null-exit median taken before the groups, when the floor group is filtered
    /// out (it sizes the sigbus group's measurement time).
    pub calibration_ns: Option<i64>,
}

impl Results {
    pub fn push_null_exit(&mut self, rt: RoundTrip) {
        if self.null_exit.len() < KEEP {
            self.null_exit.push(rt);
        }
    }

    pub fn push_signal(&mut self, waiting: &'static str, ns: i64) {
        let v = self.signal.entry(waiting).or_default();
        if v.len() < KEEP {
            v.push(ns);
        }
    }

    /// The floor every ratio is taken against: the median host-timed null exit.
    pub fn floor_ns(&self) -> Option<i64> {
        median(self.null_exit.iter().map(|r| r.host_ns as i64)).or(self.calibration_ns)
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let floor = self.floor_ns();
        let _ = writeln!(out, "\nlatency: medians (n = samples)");
        let _ = writeln!(out, "floor");
        let row = |out: &mut String, name: &str, v: Option<i64>, n: usize| {
            let _ = writeln!(out, "  {name:<32} {:>12}  n={n}", us(v));
        };
        row(
            &mut out,
            "null_mmio_exit (host clock)",
            median(self.null_exit.iter().map(|r| r.host_ns as i64)),
            self.null_exit.len(),
        );
        let guest: Vec<i64> = self
            .null_exit
            .iter()
            .filter_map(|r| r.guest_ns.map(|n| n as i64))
            .collect();
        row(
            &mut out,
            "null_mmio_exit (guest counter)",
            median(guest.iter().copied()),
            guest.len(),
        );
        if self.null_exit.is_empty() && self.calibration_ns.is_some() {
            row(
                &mut out,
                "null_mmio_exit (calibration)",
                self.calibration_ns,
                0,
            );
        }
        for (waiting, v) in &self.signal {
            let name = match *waiting {
                "thread hop" => "thread hop (message and answer)".to_owned(),
                w => format!("signal to a {w} thread"),
            };
            row(&mut out, &name, median(v.iter().copied()), v.len());
        }
        if self.paths.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "sigbus_to_injection {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>10} {:>10} | {:>6} {:>6}",
            "signal",
            "hva_to_gpa",
            "decide",
            "cper",
            "inject",
            "reentry",
            "to_ioctl",
            "to_vector",
            "ratio",
            "n"
        );
        for (id, parts) in &self.paths {
            let m = |f: fn(&Parts) -> i64| median(parts.iter().map(f));
            let to_vector = m(Parts::to_vector);
            let _ = writeln!(
                out,
                "  {id:<17} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>10} {:>10} | {:>6} {:>6}",
                us(m(|p| p.signal)),
                us(m(|p| p.hva_to_gpa)),
                us(m(|p| p.decide)),
                us(m(|p| p.cper)),
                us(m(|p| p.inject)),
                us(m(|p| p.reentry)),
                us(m(Parts::to_ioctl_return)),
                us(to_vector),
                ratio(to_vector, floor),
                parts.len()
            );
        }
        let _ = writeln!(out, "register ioctls (medians)");
        for (id, parts) in &self.paths {
            let ioctls: Vec<String> = ioctl_medians(parts)
                .into_iter()
                .map(|(name, ns)| format!("{name} {}", us(Some(ns)).trim()))
                .collect();
            let _ = writeln!(out, "  {id:<17} {}", ioctls.join(", "));
        }
        out
    }

    /// The same as JSON (nanoseconds).
    pub fn json(&self) -> Value {
        let floor = self.floor_ns();
        let paths: BTreeMap<&String, Value> = self
            .paths
            .iter()
            .map(|(id, parts)| {
                let m = |f: fn(&Parts) -> i64| median(parts.iter().map(f));
                let ioctls: BTreeMap<&str, i64> = ioctl_medians(parts).into_iter().collect();
                let to_vector = m(Parts::to_vector);
                let v = json!({
                    "samples": parts.len(),
                    "signal_ns": m(|p| p.signal),
                    "hva_to_gpa_ns": m(|p| p.hva_to_gpa),
                    "decide_ns": m(|p| p.decide),
                    "cper_ns": m(|p| p.cper),
                    "inject_ns": m(|p| p.inject),
                    "reentry_ns": m(|p| p.reentry),
                    "to_ioctl_return_ns": m(Parts::to_ioctl_return),
                    "to_vector_ns": to_vector,
                    "ratio_to_null_exit": to_vector.zip(floor).map(|(t, f)| t as f64 / f as f64),
                    "ioctls_ns": ioctls,
                });
                (id, v)
            })
            .collect();
        let signal: BTreeMap<&str, Value> = self
            .signal
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    json!({"samples": v.len(), "median_ns": median(v.iter().copied())}),
                )
            })
            .collect();
        json!({
            "null_mmio_exit": {
                "samples": self.null_exit.len(),
                "median_ns": median(self.null_exit.iter().map(|r| r.host_ns as i64)),
                "guest_counter_median_ns":
                    median(self.null_exit.iter().filter_map(|r| r.guest_ns.map(|n| n as i64))),
                "calibration_ns": self.calibration_ns,
            },
            "signal_to_thread": signal,
            "sigbus_to_injection": paths,
        })
    }
}

/// Each ioctl's median, in the order the path makes them.
fn ioctl_medians(parts: &[Parts]) -> Vec<(&'static str, i64)> {
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    first
        .ioctls
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| {
            median(parts.iter().filter_map(|p| p.ioctls.get(i).map(|x| x.1))).map(|m| (*name, m))
        })
        .collect()
}

/// The median (lower middle for an even count).
pub fn median(values: impl Iterator<Item = i64>) -> Option<i64> {
    let mut v: Vec<i64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

fn us(ns: Option<i64>) -> String {
    ns.map_or("-".into(), |n| format!("{:.1} µs", n as f64 / 1000.0))
}

fn ratio(ns: Option<i64>, floor: Option<i64>) -> String {
    match (ns, floor) {
        (Some(n), Some(f)) if f > 0 => format!("{:.2}", n as f64 / f as f64),
        _ => "-".into(),
    }
}
