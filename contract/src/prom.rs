//! The Prometheus text exposition format, as each crate renders its own
//! figures for `/metrics`.

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A metric family with one unlabeled sample.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    out.push_str(&format!("{name} {value}\n"));
}
