//! `rliv replay` and `rliv run`: the job's arguments, the progress bar and
//! the closing summary; and starting the ranking service beside a job.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rliv::config::Config;
use rliv_dataflows::{run_replay, Progress, ReplayRequest, Summary};

/// What `replay` and `run` share: the state, the outputs, the learner and
/// the service beside the job.
#[derive(clap::Args)]
pub(crate) struct JobArgs {
    /// State directory (RocksDB): pair counters, input positions, the
    /// transition log. Running again on the same directory resumes or continues.
    #[arg(long)]
    pub(crate) state: PathBuf,
    /// Also write ASA transitions as JSONL here.
    #[arg(long)]
    pub(crate) transitions: Option<PathBuf>,
    /// Dead-letter JSONL file (default: STATE/dead-letters.jsonl).
    #[arg(long)]
    pub(crate) dead_letters: Option<PathBuf>,
    /// Worker threads (default: replay.workers).
    #[arg(short = 'w', long)]
    pub(crate) workers: Option<usize>,
    /// Print the closing summary as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Train the learner on the transitions as they come (needs --checkpoints).
    #[arg(long, requires = "checkpoints")]
    pub(crate) train: bool,
    /// Checkpoint directory of the learner.
    #[arg(long)]
    pub(crate) checkpoints: Option<PathBuf>,
    /// Continue the learner from its newest checkpoint (with --train).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Serve /rank and /metrics on this address while the job runs (models
    /// from --checkpoints; `run` defaults them to STATE/checkpoints).
    #[arg(long)]
    pub(crate) serve: Option<String>,
    /// Cluster mode: the number of processes of the job (each runs this
    /// command with its own --process; all with the same -w and config).
    #[arg(long, requires_all = ["process", "hosts"], help_heading = "Cluster mode")]
    pub(crate) processes: Option<usize>,
    /// Cluster mode: this process's index, 0..processes. Process 0 reads the
    /// input, writes the outputs and the job checkpoint, and runs --train.
    #[arg(long, requires = "processes", help_heading = "Cluster mode")]
    pub(crate) process: Option<usize>,
    /// Cluster mode: a file with one host:port per line, process 0 first;
    /// each process listens on its own line. Process I keeps its pair state
    /// in STATE/pI.
    #[arg(long, requires = "processes", help_heading = "Cluster mode")]
    pub(crate) hosts: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) job: JobArgs,
    /// Stop once every partition is at its end (otherwise run until Ctrl-C / SIGTERM).
    #[arg(long)]
    pub(crate) until_end: bool,
    /// Close the exposures still open when the run stops (default: keep
    /// them, so the next run continues the stream).
    #[arg(long)]
    pub(crate) drain_at_end: bool,
}

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// Exposure files or directories (.jsonl, .jsonl.gz); repeat or list several.
    #[arg(long, required = true, num_args = 1..)]
    pub(crate) exposures: Vec<PathBuf>,
    /// Action files or directories.
    #[arg(long, num_args = 1..)]
    pub(crate) actions: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) job: JobArgs,
    /// Keep exposures still open at the end in the state, for the next replay.
    #[arg(long)]
    pub(crate) keep_open: bool,
    /// Allow replaying inputs this state already finished.
    #[arg(long)]
    pub(crate) allow_repeat: bool,
}

pub(crate) fn start_server(
    cfg: &Config,
    addr: String,
    state: &std::path::Path,
    checkpoints: &std::path::Path,
    training: Option<Arc<rliv_learner::trainer::TrainProgress>>,
) -> Result<rliv::serve::Server> {
    let scfg = rliv::serve::ServeConfig {
        addr,
        ..cfg.serve.clone()
    };
    // The address may come from a flag (--addr, --serve): a bad one is a usage error.
    scfg.validate()
        .map_err(|e| rliv::train::UsageError(e.to_string()))?;
    let server = rliv::serve::Server::start(scfg, state, checkpoints)?;
    server.state.set_training(training);
    eprintln!(
        "serve: listening on http://{} (POST /rank, GET /healthz, GET /metrics)",
        server.addr
    );
    Ok(server)
}

pub(crate) fn replay(
    cfg: &Config,
    args: ReplayArgs,
    kafka: Option<rliv_dataflows::job::KafkaRun>,
) -> Result<()> {
    let job = args.job;
    let mut req = ReplayRequest::new(args.exposures, args.actions, job.state);
    let is_run = kafka.is_some();
    req.kafka = kafka;
    req.transitions = job.transitions;
    req.dead_letters = job.dead_letters;
    req.join = cfg.join.clone();
    req.replay = cfg.replay.clone();
    req.store = cfg.state.clone();
    req.views = cfg.views.clone();
    req.allow_repeat = args.allow_repeat;
    if let Some(w) = job.workers {
        req.replay.workers = w;
    }
    if args.keep_open {
        req.replay.drain_at_end = false;
    }
    if let (Some(n), Some(i), Some(hosts)) = (job.processes, job.process, &job.hosts) {
        let spec = rliv_dataflows::job::ClusterSpec::from_host_file(hosts, n, i)?;
        if i != 0 && (job.train || job.serve.is_some()) {
            anyhow::bail!(rliv::train::UsageError(format!(
                "--process {i}: --train and --serve run on process 0 (it holds the transition log and the checkpoint)"
            )));
        }
        req.cluster = Some(spec);
    }
    let progress = Arc::new(Progress::default());
    req.progress = Some(progress.clone());
    if !is_run {
        // A run installs its own stop (`run::kafka_run`).
        let what = match job.process.filter(|i| *i != 0) {
            Some(i) => format!("replay: process {i} exits now (signal process 0 to stop a cluster at a chunk boundary)"),
            None => "replay: stopping at the next chunk boundary and committing (the same command resumes it)".into(),
        };
        let stop =
            rliv::signal::install(&what).context("installing the SIGTERM/SIGINT handlers")?;
        req.stop = Some(stop.flag());
    }
    let learner = match (job.train, &job.checkpoints) {
        (true, Some(dir)) => {
            let (attached, feed) = rliv::train::attach(
                &cfg.learner,
                dir,
                job.resume,
                &req.state_dir,
                cfg.replay.transitions_channel_capacity,
                job.quiet,
            )?;
            req.learner = Some(feed);
            Some(attached)
        }
        _ => None,
    };
    let _server = match (&job.serve, &job.checkpoints) {
        (Some(addr), Some(ck)) => {
            let server = start_server(
                cfg,
                addr.clone(),
                &req.state_dir,
                ck,
                learner.as_ref().map(|a| a.progress.clone()),
            )?;
            server.state.set_job(Some(Arc::new(rliv::JobMetrics(
                rliv_dataflows::metrics::JobFigures {
                    progress: progress.clone(),
                    kafka: req.kafka.as_ref().map(|k| k.progress.clone()),
                },
            ))));
            Some(server)
        }
        _ => None,
    };
    let show = !job.quiet && std::io::stderr().is_terminal();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bar_thread = show.then(|| {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::spawn(move || progress_bar(&progress, &done))
    });
    let result = run_replay(req);
    done.store(true, Ordering::SeqCst);
    if let Some(t) = bar_thread {
        let _ = t.join();
    }
    // The replay dropped its end of the channel: the learner finishes its
    // owed updates and writes its final checkpoint.
    let trained = match learner {
        Some(a) => {
            let r = a
                .handle
                .join()
                .map_err(|_| anyhow::anyhow!("the learner thread panicked"))?;
            Some(r.context("training failed")?)
        }
        None => None,
    };
    let summary = result.context("replay failed")?;
    if job.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, if is_run { "run" } else { "replay" });
    }
    if let Some((_, t)) = trained {
        rliv::train::print_summary(&t);
    }
    Ok(())
}

pub(crate) fn progress_bar(p: &Progress, done: &std::sync::atomic::AtomicBool) {
    let bar = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    bar.set_style(style);
    let start = Instant::now();
    while !done.load(Ordering::SeqCst) {
        let lines = p.lines.load(Ordering::Relaxed);
        let rate = lines as f64 / start.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{lines} events ({:.2} M/s)  closed exposures {}  pairs {}",
            rate / 1e6,
            p.closed_exposures.load(Ordering::Relaxed),
            p.pairs.load(Ordering::Relaxed)
        ));
        bar.tick();
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}

pub(crate) fn print_summary(s: &Summary, what: &str) {
    if let Some(i) = s.process.filter(|i| *i != 0) {
        eprintln!(
            "{what}: process {i} {} in {:.2}s ({} workers), peak RSS {:.0} MiB; process 0 reports the job",
            if s.up_to_date {
                "had nothing to do (the state holds exactly these inputs)"
            } else {
                "finished its part"
            },
            s.elapsed_s,
            s.workers,
            s.peak_rss_bytes as f64 / (1 << 20) as f64
        );
        return;
    }
    if s.up_to_date {
        eprintln!(
            "replay: the state already holds exactly these inputs, replayed to the end; nothing to do \
             ({} pairs; --allow-repeat replays them again)",
            s.pairs_total
        );
        return;
    }
    let g = |k: &str| s.run.get(k).copied().unwrap_or(0);
    let mut out = String::new();
    out += &format!(
        "{what} {}: {} input events in {:.2}s ({:.0} events/s, {} workers), peak RSS {:.0} MiB\n",
        match (s.resumed, s.finished || what == "run") {
            (true, true) => "resumed and finished",
            (false, true) => "finished",
            (true, false) =>
                "resumed and stopped before the end of its input (the same command resumes it)",
            (false, false) => "stopped before the end of its input (the same command resumes it)",
        },
        g("lines"),
        s.elapsed_s,
        s.events_per_s,
        s.workers,
        s.peak_rss_bytes as f64 / (1 << 20) as f64
    );
    out += &format!(
        "  exposures {}  actions {}  closed exposures {}  transitions {}  pairs in state {} (+{} new)\n",
        g("exposures_parsed"),
        g("actions_parsed"),
        g("closed_exposures"),
        g("transitions"),
        s.pairs_total,
        g("new_pairs")
    );
    out += &format!(
        "  attributed actions {}  duplicates: exposures {} actions {}\n",
        g("attributed_actions"),
        g("duplicate_exposures"),
        g("duplicate_actions")
    );
    out += &format!(
        "  late actions {}  orphan actions {}  out-of-window {}  user mismatch {}  late exposures {}\n",
        g("late_actions"),
        g("orphan_actions"),
        g("out_of_window_actions"),
        g("user_mismatch_actions"),
        g("late_exposures")
    );
    let rejected: Vec<String> = s
        .run
        .iter()
        .filter(|(k, v)| k.starts_with("rejected_") && **v > 0)
        .map(|(k, v)| format!("{}={v}", &k["rejected_".len()..]))
        .collect();
    out += &format!(
        "  rejected lines: {}\n",
        if rejected.is_empty() {
            "none".to_string()
        } else {
            rejected.join(" ")
        }
    );
    if s.open_exposures > 0 {
        out += &format!(
            "  {} exposures left open in the state (--keep-open)\n",
            s.open_exposures
        );
    }
    out += &format!("  dead letters: {}\n", s.dead_letters);
    eprint!("{out}");
}
