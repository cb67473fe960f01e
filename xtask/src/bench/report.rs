//! Samples, the merged table (median and spread over runs), and `bench/results.json`.

use std::path::Path;

use serde_json::{Value, json};

use super::stats;

/// Every row a complete run produces (the quick test checks them all).
#[cfg(test)]
pub(crate) const EXPECTED_KEYS: &[&str] = &[
    "a.p50",
    "a.p95",
    "a.p99",
    "a.open",
    "b.down",
    "b.down.handed",
    "b.up",
    "b.up.default_queue",
    "c.server",
    "c.raw_small",
    "d.rate",
    "d.p50",
    "d.p99",
    "e.default.time",
    "e.default.lost",
    "e.default.probe",
    "e.default.failures",
    "e.zero.time",
    "e.zero.lost",
    "e.zero.probe",
    "e.zero.failures",
    "f.codec/encode_update_100B",
    "f.codec/decode_update_100B",
    "f.codec/encode_publish_100B",
    "f.codec/decode_publish_100B",
    "f.codec/decode_ack",
    "f.recovery/push_1000",
    "f.recovery/ack_1000",
    "f.recovery/replay_1000",
    "r.resume_same.p50",
    "r.resume_same.p95",
    "r.resume_other.p50",
    "r.resume_other.p95",
    "r.up",
    "r.fanout",
    "r.append",
    "g.password.time",
    "g.password.cpu",
    "g.token.time",
    "g.token.cpu",
    "k.drain",
    "k.back",
    "k.lost",
    "k.closed",
    "h.node.down",
    "h.node.down.cpu",
    "h.node.down.server",
    "h.node.down.steady",
    "h.node.up",
    "h.node.up.cpu",
    "h.python.down",
    "h.python.down.cpu",
    "h.python.down.server",
    "h.python.up",
    "h.python.up.cpu",
];

/// What a value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Ms,
    Seconds,
    PerSec,
    Bytes,
    Count,
    Ns,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::PerSec => "per second",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::Ns => "ns",
        }
    }

    pub(crate) fn format(self, v: f64) -> String {
        match self {
            Unit::Ms if v.abs() < 10.0 => format!("{v:.3} ms"),
            Unit::Ms => format!("{v:.1} ms"),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::PerSec if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::PerSec => format!("{:.0} k/s", v / 1e3),
            Unit::Bytes if v.abs() >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
            Unit::Bytes => format!("{v:.0} B"),
            Unit::Count => format!("{v:.0}"),
            Unit::Ns => format!("{v:.1} ns"),
        }
    }
}

/// A target, printed next to the figure with a pass/miss mark; never asserted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    None,
    /// Tether / baseline at most this.
    RatioAtMost(f64),
    /// Tether / baseline at least this.
    RatioAtLeast(f64),
    AtMost(f64),
    Below(f64),
    Zero,
}

impl Target {
    fn describe(self, unit: Unit) -> Option<String> {
        Some(match self {
            Target::None => return None,
            Target::RatioAtMost(r) => format!("≤ {r}×"),
            Target::RatioAtLeast(r) => format!("≥ {r}×"),
            Target::AtMost(v) => format!("≤ {}", unit.format(v)),
            Target::Below(v) => format!("< {}", unit.format(v)),
            Target::Zero => "0".into(),
        })
    }

    fn passes(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::None => None,
            Target::RatioAtMost(r) => ratio.map(|x| x <= r),
            Target::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Target::AtMost(v) => Some(value <= v),
            Target::Below(v) => Some(value < v),
            Target::Zero => Some(value == 0.0),
        }
    }
}

/// One figure from one run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Stable id, e.g. `a.p50`; the first letter is the measure.
    pub(crate) key: String,
    /// What it is, for people.
    pub(crate) measure: String,
    pub(crate) unit: Unit,
    /// Tether's figure.
    pub(crate) value: f64,
    /// The raw tokio-tungstenite figure measured in the same run, if there is one.
    pub(crate) baseline: Option<f64>,
    pub(crate) target: Target,
    /// Details worth keeping (counts, errors seen).
    pub(crate) note: Option<String>,
}

impl Sample {
    pub(crate) fn new(key: &str, measure: &str, unit: Unit, value: f64) -> Sample {
        Sample {
            key: key.into(),
            measure: measure.into(),
            unit,
            value,
            baseline: None,
            target: Target::None,
            note: None,
        }
    }

    pub(crate) fn baseline(mut self, baseline: f64) -> Sample {
        self.baseline = Some(baseline);
        self
    }

    pub(crate) fn target(mut self, target: Target) -> Sample {
        self.target = target;
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Sample {
        self.note = Some(note.into());
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.value / b)
    }

    /// A progress line.
    pub(crate) fn one_line(&self) -> String {
        let mut s = format!("{}: {}", self.measure, self.unit.format(self.value));
        if let (Some(b), Some(r)) = (self.baseline, self.ratio()) {
            s.push_str(&format!(" (raw {}, {r:.2}×)", self.unit.format(b)));
        }
        if let Some(n) = &self.note {
            s.push_str(&format!(" [{n}]"));
        }
        s
    }
}

/// A row: one key's samples over every run.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    measure: String,
    unit: Unit,
    target: Target,
    values: Vec<f64>,
    baselines: Vec<f64>,
    ratios: Vec<f64>,
    notes: Vec<String>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        (!self.ratios.is_empty()).then(|| stats::median(&self.ratios))
    }

    fn pass(&self) -> Option<bool> {
        self.target
            .passes(stats::median(&self.values), self.ratio())
    }
}

/// Everything measured.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    quick: bool,
    runs: u32,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// (measure, message) for every measure that failed.
    pub(crate) errors: Vec<(String, String)>,
}

fn spread(v: &[f64], unit: Unit) -> String {
    if v.len() < 2 {
        return unit.format(stats::median(v));
    }
    let (lo, hi) = stats::min_max(v);
    format!(
        "{} ({} – {})",
        unit.format(stats::median(v)),
        unit.format(lo),
        unit.format(hi)
    )
}

fn ratio_spread(v: &[f64]) -> String {
    if v.len() < 2 {
        return format!("{:.2}×", stats::median(v));
    }
    let (lo, hi) = stats::min_max(v);
    format!("{:.2}× ({lo:.2}–{hi:.2})", stats::median(v))
}

fn summary(v: &[f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let (lo, hi) = stats::min_max(v);
    json!({"median": stats::median(v), "min": lo, "max": hi, "samples": v})
}

impl Report {
    pub(crate) fn new(quick: bool, runs: u32) -> Report {
        Report {
            quick,
            runs,
            rows: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub(crate) fn error(&mut self, measure: &str, message: String) {
        self.errors.push((measure.into(), message));
    }

    pub(crate) fn add(&mut self, samples: Vec<Sample>) {
        for s in samples {
            let ratio = s.ratio();
            let row = match self.rows.iter_mut().position(|r| r.key == s.key) {
                Some(i) => &mut self.rows[i],
                None => {
                    self.rows.push(Row {
                        key: s.key.clone(),
                        measure: s.measure.clone(),
                        unit: s.unit,
                        target: s.target,
                        values: Vec::new(),
                        baselines: Vec::new(),
                        ratios: Vec::new(),
                        notes: Vec::new(),
                    });
                    let last = self.rows.len() - 1;
                    &mut self.rows[last]
                }
            };
            row.values.push(s.value);
            row.baselines.extend(s.baseline);
            row.ratios.extend(ratio);
            row.notes.extend(s.note);
        }
    }

    /// The keys of every row.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.key.as_str()).collect()
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        let header = [
            "#",
            "measure",
            "Tether",
            "raw baseline",
            "ratio",
            "target",
            "",
        ];
        let mut lines: Vec<[String; 7]> = Vec::new();
        for r in &self.rows {
            let target = r.target.describe(r.unit).unwrap_or_else(|| "—".into());
            let mark = match r.pass() {
                Some(true) => "pass",
                Some(false) => "MISS",
                None => "",
            };
            lines.push([
                r.key.chars().next().map(String::from).unwrap_or_default(),
                r.measure.clone(),
                spread(&r.values, r.unit),
                if r.baselines.is_empty() {
                    "—".into()
                } else {
                    spread(&r.baselines, r.unit)
                },
                if r.ratios.is_empty() {
                    "—".into()
                } else {
                    ratio_spread(&r.ratios)
                },
                target,
                mark.into(),
            ]);
        }
        let mut widths = header.map(|h| h.chars().count());
        for l in &lines {
            for (w, cell) in widths.iter_mut().zip(l.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let row = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", parts.join(" | "));
        };
        println!();
        println!(
            "Tether benchmarks{}: median of {} run{} (min–max)",
            if self.quick {
                " (--quick: tiny sizes, figures not meaningful)"
            } else {
                ""
            },
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        );
        row(&header.map(String::from));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for l in &lines {
            row(l);
        }
        for r in &self.rows {
            let mut notes = r.notes.clone();
            notes.dedup();
            if !notes.is_empty() {
                println!("  {}: {}", r.key, notes.join("; "));
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        for (m, e) in &self.errors {
            println!("ERROR in ({m}): {e}");
        }
    }

    /// Writes the JSON results file, creating its directory.
    pub(crate) fn write_json(&self, path: &Path, command: &str) -> std::io::Result<()> {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.key.chars().next().map(String::from).unwrap_or_default(),
                    "key": r.key,
                    "measure": r.measure,
                    "unit": r.unit.name(),
                    "value": summary(&r.values),
                    "baseline": summary(&r.baselines),
                    "ratio": summary(&r.ratios),
                    "target": r.target.describe(r.unit),
                    "pass": r.pass(),
                    "notes": r.notes,
                })
            })
            .collect();
        let generated = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let doc = json!({
            "command": command,
            "quick": self.quick,
            "runs": self.runs,
            "generated_unix": generated,
            "rows": rows,
            "notes": self.notes,
            "errors": self.errors.iter().map(|(m, e)| json!({"measure": m, "error": e})).collect::<Vec<_>>(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}
