//! `rliv experiment --quick` through the real binary: every file it promises
//! is written and parses, with one row per method of the default tables and
//! one CSV row per Markdown row (who wins is not asserted: that is what the
//! experiment measures). Bad input is refused with a usage error.

mod common;

use common::{ok, rliv_bin, s};
use std::process::Command;

/// Rows of a Markdown table after its header (`| Models |`), up to the
/// first blank line.
fn md_rows(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .skip_while(|l| !l.starts_with("| Models |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_quick_experiment_writes_both_tables_the_csvs_and_figure_5() {
    let t = tempfile::tempdir().expect("tmp");
    let out = t.path().join("exp");
    let run = ok(Command::new(rliv_bin())
        .args(["experiment", "--quick", "-q", "--out", s(&out)])
        .output()
        .expect("rliv experiment"));
    let printed = String::from_utf8_lossy(&run.stdout);
    for (md, csv, first) in [
        ("table2.md", "table2.csv", "RankingModel"),
        ("table3.md", "table3.csv", "RLIV-UA (w/o MT & SL)"),
    ] {
        let text = std::fs::read_to_string(out.join(md)).expect(md);
        assert!(printed.contains(&text), "{md} is what was printed");
        let rows = md_rows(&text);
        assert!(rows.len() >= 3, "{md}: {rows:?}");
        assert_eq!(rows[0][0], first, "{md}: table order of the config");
        let csv_text = std::fs::read_to_string(out.join(csv)).expect(csv);
        let mut lines = csv_text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(&header[..3], ["model", "policy", "seeds"]);
        assert!(header.contains(&"session_length_mean") && header.contains(&"ctr_ci95"));
        let body: Vec<&str> = lines.collect();
        // The paper's own numbers follow as a second table in the Markdown
        // only; the CSV has our rows.
        assert_eq!(body.len(), rows.len(), "{csv}: one row per method");
        for (line, row) in body.iter().zip(&rows) {
            let cells: Vec<&str> = line.rsplitn(header.len() - 2, ',').collect();
            assert_eq!(cells.len(), header.len() - 2, "{line}");
            for c in &cells[..cells.len() - 1] {
                let x: f64 = c
                    .parse()
                    .unwrap_or_else(|_| panic!("{csv}: {c:?} in {line}"));
                assert!(x.is_finite(), "{line}");
            }
            assert!(
                line.starts_with(&format!("\"{}\"", row[0])),
                "{line} vs {row:?}"
            );
            // "mean ± ci" cells
            assert!(row[1..].iter().all(|c| c.contains(" ± ")), "{row:?}");
        }
    }
    let png = std::fs::read(out.join("figure5.png")).expect("figure5.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    let w = u32::from_be_bytes(png[16..20].try_into().expect("width"));
    assert_eq!(w, 1800, "three panels: session length, watch time, CTR");
    let runs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("runs.json")).expect("runs")).expect("json");
    let runs = runs.as_array().expect("a list of runs");
    for name in [
        "deepfm",
        "cql",
        "dqn",
        "td3",
        "rlur",
        "rliv",
        "rliv_wo_mt_sl",
    ] {
        let n = runs.iter().filter(|r| r["policy"] == name).count();
        assert_eq!(n, 2, "{name}: one run per quick seed");
    }
}

#[test]
fn an_unknown_policy_or_a_bad_file_is_a_usage_error() {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = t.path().join("e.toml");
    std::fs::write(
        &cfg,
        "seeds = 1\nfirst_seed = 1\nwarmup_rounds = 1\nrounds = 1\nfigure5 = []\n\
         table3 = []\n[[table2]]\nlabel = \"X\"\npolicy = \"no_such_policy\"\n",
    )
    .expect("write");
    for args in [
        vec![
            "experiment",
            "--experiment-config",
            s(&cfg),
            "--out",
            s(t.path()),
        ],
        vec!["experiment", "--experiment-config", "/nonexistent/e.toml"],
        vec!["experiment", "--seeds", "0", "--out", s(t.path())],
    ] {
        let out = Command::new(rliv_bin()).args(&args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("rliv: error:"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
