//! The `rliv` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rliv::config::Config;
use rliv_dataflows::job::JobError;
use rliv_dataflows::{run_replay, Progress, ReplayRequest, Summary};
use rliv_state::{PairKey, Store};

#[derive(Parser)]
#[command(name = "rliv", version, about = "Lifelong interaction value of user-author pairs (RLIV-UA): \
streaming label join, RocksDB pair state and ASA transitions.", long_about = None)]
struct Cli {
    /// A TOML file overriding configs/default.toml (see `rliv config show`).
    #[arg(long, global = true, env = "RLIV_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a synthetic KuaiRand-like log (exposures + delayed actions).
    Gen {
        /// Output directory.
        #[arg(long, default_value = "data")]
        out: PathBuf,
        /// Number of exposures (default: gen.exposures).
        #[arg(long)]
        exposures: Option<u64>,
        /// Random seed (default: gen.seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Files per stream (default: gen.files).
        #[arg(long)]
        files: Option<usize>,
        /// Write gzip-compressed files.
        #[arg(long)]
        gzip: bool,
    },
    /// Replay exposure and action files into a pair-state directory
    /// (with --train, train the learner on its transitions as they come).
    Replay(ReplayArgs),
    /// Run the job continuously on Kafka topics ([kafka] in the config):
    /// exactly-once pair state, transitions and dead letters to topics.
    Run(RunArgs),
    /// Kafka helpers: create the topics, load a JSONL file into a topic.
    Kafka {
        #[command(subcommand)]
        cmd: KafkaCmd,
    },
    /// Train the learner from a transitions file (JSONL, as `replay --transitions` writes).
    Train {
        /// Transitions JSONL (.gz too).
        #[arg(long)]
        transitions: PathBuf,
        /// Checkpoint directory (ckpt-<step>/ with safetensors + manifest.json).
        #[arg(long)]
        checkpoints: PathBuf,
        /// Continue from the newest usable checkpoint in --checkpoints (and skip
        /// the transitions it already trained on).
        #[arg(long)]
        resume: bool,
        /// Updates drawn from the buffer after the file ends (more epochs over it).
        #[arg(long, default_value_t = 0)]
        extra_updates: u64,
        /// Dead-letter file for bad lines (default: CHECKPOINTS/dead-letters.jsonl).
        #[arg(long)]
        dead_letters: Option<PathBuf>,
        /// No progress lines.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Also serve /rank on this address while training (over --state).
        #[arg(long, requires = "state")]
        serve: Option<String>,
        /// Pair-state directory for --serve.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Print pair state, sorted by (user_id, author_id).
    Dump {
        #[arg(long)]
        state: PathBuf,
        /// Only this user's pairs (one prefix scan).
        #[arg(long)]
        user: Option<u64>,
        /// Only pairs with this author.
        #[arg(long)]
        author: Option<u64>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Stop after this many pairs.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Serve POST /rank over the pair state and the newest checkpoint (hot reload).
    /// SIGTERM or SIGINT stops it: the requests in flight are answered, then it exits 0.
    Serve {
        /// Pair-state directory (read as a RocksDB secondary; a replay may be writing it).
        #[arg(long)]
        state: PathBuf,
        /// Checkpoint directory of the learner (watched for new checkpoints).
        #[arg(long)]
        checkpoints: PathBuf,
        /// Listen address (default: serve.addr, loopback).
        #[arg(long)]
        addr: Option<String>,
    },
    /// Show the job checkpoint of a state directory (input positions, counters).
    Status {
        #[arg(long)]
        state: PathBuf,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Closed-loop evaluation: simulated users (configs/sim.toml) ranked by
    /// each policy; after every simulated day its events go through the
    /// real replay -> learner path (rliv policies) or the baselines' logs.
    /// Prints mean and 95% CI over seeds; writes summary.json, runs.json.
    Sim(SimArgs),
    /// On held-out transitions: each tower's predicted LIV against the
    /// pair's realized discounted return, by decile, with Spearman's rho
    /// (the pair's own history beside it).
    EvalLiv {
        /// Transitions (JSONL, as `replay --transitions` writes; .gz too).
        #[arg(long)]
        transitions: PathBuf,
        /// Checkpoint directory (the newest usable checkpoint is scored).
        #[arg(long)]
        checkpoints: PathBuf,
        /// Discount of the realized return (default: the model's gamma).
        #[arg(long)]
        gamma: Option<f64>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures (not tests).
    Bench {
        #[command(subcommand)]
        cmd: rliv::bench::BenchCmd,
    },
}

#[derive(clap::Args)]
struct SimArgs {
    /// The simulated world (default: the embedded configs/sim.toml).
    #[arg(long)]
    sim_config: Option<PathBuf>,
    /// Comma-separated policies: rliv, rliv_gamma0 (the same model, myopic),
    /// random, item_ctr, item_watch, pair_history, oracle (myopic oracle).
    #[arg(
        long,
        default_value = "rliv,rliv_gamma0,pair_history,item_watch,random,oracle"
    )]
    policies: String,
    /// Number of seeds (worlds); seed i is `seed + i`.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated days of random-policy logs every method starts from.
    #[arg(long, default_value_t = 3)]
    warmup_rounds: u32,
    /// Simulated days ranked by the policy (the ones measured).
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Output directory (events, states, checkpoints, summary.json, runs.json).
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No per-round lines.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum KafkaCmd {
    /// Create the exposures, actions, transitions and dead-letter topics.
    CreateTopics {
        #[arg(long, default_value_t = 2)]
        partitions: i32,
    },
    /// Produce each line of a JSONL file as one message (keyed by request_id).
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Print every message of a topic (from the beginning to the current end).
    Consume {
        #[arg(long)]
        topic: String,
    },
    /// Per input partition: the group's committed offset, the end, the lag (JSON lines).
    Offsets,
}

/// What `replay` and `run` share: the state, the outputs, the learner and
/// the service beside the job.
#[derive(clap::Args)]
struct JobArgs {
    /// State directory (RocksDB): pair counters, input positions, the
    /// transition log. Running again on the same directory resumes or continues.
    #[arg(long)]
    state: PathBuf,
    /// Also write ASA transitions as JSONL here.
    #[arg(long)]
    transitions: Option<PathBuf>,
    /// Dead-letter JSONL file (default: STATE/dead-letters.jsonl).
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// Worker threads (default: replay.workers).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Print the closing summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Train the learner on the transitions as they come (needs --checkpoints).
    #[arg(long, requires = "checkpoints")]
    train: bool,
    /// Checkpoint directory of the learner.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// Continue the learner from its newest checkpoint (with --train).
    #[arg(long)]
    resume: bool,
    /// Serve /rank and /metrics on this address while the job runs (models
    /// from --checkpoints; `run` defaults them to STATE/checkpoints).
    #[arg(long)]
    serve: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Stop once every partition is at its end (otherwise run until Ctrl-C / SIGTERM).
    #[arg(long)]
    until_end: bool,
    /// Close the exposures still open when the run stops (default: keep
    /// them, so the next run continues the stream).
    #[arg(long)]
    drain_at_end: bool,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (defaults + --config + RLIV__* env).
    Show,
}

#[derive(Copy, Clone, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Exposure files or directories (.jsonl, .jsonl.gz); repeat or list several.
    #[arg(long, required = true, num_args = 1..)]
    exposures: Vec<PathBuf>,
    /// Action files or directories.
    #[arg(long, num_args = 1..)]
    actions: Vec<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
    /// Keep exposures still open at the end in the state, for the next replay.
    #[arg(long)]
    keep_open: bool,
    /// Allow replaying inputs this state already finished.
    #[arg(long)]
    allow_repeat: bool,
}

fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rliv: error: {e:#}");
            // Bad input or usage (exit 2): a missing or refused input, a bad
            // configuration (file, RLIV__* variable or value), a bad argument.
            let bad_input = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<JobError>(),
                    Some(JobError::Input(_) | JobError::Resume(_) | JobError::Config(_))
                ) || matches!(
                    c.downcast_ref::<rliv_state::StateError>(),
                    Some(rliv_state::StateError::NotAStore(_) | rliv_state::StateError::Config(_))
                ) || c.downcast_ref::<rliv::train::UsageError>().is_some()
                    || c.downcast_ref::<rliv::config::ConfigError>().is_some()
            });
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.cmd {
        Cmd::Gen {
            out,
            exposures,
            seed,
            files,
            gzip,
        } => {
            let mut g = cfg.gen.clone();
            g.exposures = exposures.unwrap_or(g.exposures);
            g.seed = seed.unwrap_or(g.seed);
            g.files = files.unwrap_or(g.files);
            g.gzip |= gzip;
            let t = Instant::now();
            let s = rliv::gen::generate(&g, &out)?;
            eprintln!(
                "rliv gen: {} exposures, {} actions into {} in {:.1}s",
                s.exposures,
                s.actions,
                out.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Replay(args) => {
            if args.job.serve.is_some() && args.job.checkpoints.is_none() {
                bail!(rliv::train::UsageError(
                    "replay --serve needs --checkpoints (the models to serve)".into()
                ));
            }
            replay(&cfg, args, None)
        }
        Cmd::Run(mut args) => {
            let (run, _progress) = rliv::run::kafka_run(&cfg.kafka, args.until_end)?;
            let job = &mut args.job;
            if job.checkpoints.is_none() && job.serve.is_some() {
                job.checkpoints = Some(job.state.join("checkpoints"));
            }
            let mut cfg = cfg.clone();
            cfg.replay.drain_at_end = args.drain_at_end;
            let replay_args = ReplayArgs {
                exposures: Vec::new(),
                actions: Vec::new(),
                job: args.job,
                keep_open: !args.drain_at_end,
                allow_repeat: false,
            };
            replay(&cfg, replay_args, Some(run))
        }
        Cmd::Kafka { cmd } => match cmd {
            KafkaCmd::CreateTopics { partitions } => {
                rliv::run::create_topics(&cfg.kafka, partitions)
            }
            KafkaCmd::Produce { topic, file } => {
                let n = rliv::run::produce(&cfg.kafka, &topic, &file)?;
                eprintln!("kafka: {n} messages to {topic}");
                Ok(())
            }
            KafkaCmd::Offsets => rliv::run::offsets(&cfg.kafka),
            KafkaCmd::Consume { topic } => {
                let n = rliv::run::consume(&cfg.kafka, &topic)?;
                eprintln!("kafka: {n} messages in {topic}");
                Ok(())
            }
        },
        Cmd::Train {
            transitions,
            checkpoints,
            resume,
            extra_updates,
            dead_letters,
            quiet,
            serve,
            state,
        } => {
            let progress = Arc::new(rliv_learner::trainer::TrainProgress::default());
            let _server = match (serve, state) {
                (Some(addr), Some(state)) => Some(start_server(
                    &cfg,
                    addr,
                    &state,
                    &checkpoints,
                    Some(progress.clone()),
                )?),
                _ => None,
            };
            rliv::train::train_file(
                &cfg.learner,
                &transitions,
                &checkpoints,
                resume,
                extra_updates,
                dead_letters,
                quiet,
                &progress,
            )
        }
        Cmd::Serve {
            state,
            checkpoints,
            addr,
        } => {
            let addr = addr.unwrap_or_else(|| cfg.serve.addr.clone());
            // Before the server starts: a signal from then on drains it.
            let stop = rliv::signal::install("serve: draining the requests in flight")
                .context("installing the SIGTERM/SIGINT handlers")?;
            let server = start_server(&cfg, addr, &state, &checkpoints, None)?;
            server.run_until(|| stop.wait().to_string());
            Ok(())
        }
        Cmd::Dump {
            state,
            user,
            author,
            format,
            limit,
        } => dump(&state, user, author, format, limit),
        Cmd::Status { state } => {
            let store = Store::open_read_only(&state)?;
            match rliv_dataflows::Checkpoint::load(&store)? {
                Some(cp) => println!("{}", serde_json::to_string_pretty(&cp)?),
                None => println!("{}: no replay has committed yet", state.display()),
            }
            Ok(())
        }
        Cmd::Config {
            cmd: ConfigCmd::Show,
        } => {
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
        Cmd::Bench { cmd } => rliv::bench::run(&cfg, cmd, cli.config.as_deref()),
        Cmd::Sim(args) => sim(&cfg, args),
        Cmd::EvalLiv {
            transitions,
            checkpoints,
            gamma,
            json,
        } => {
            let (report, gamma) = rliv::eval_liv::run(&transitions, &checkpoints, gamma)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", rliv::eval_liv::table(&report, gamma));
            }
            Ok(())
        }
    }
}

fn sim(cfg: &Config, args: SimArgs) -> Result<()> {
    let world = match &args.sim_config {
        Some(p) => rliv_sim::SimConfig::load(p)
            .map_err(|e| rliv::train::UsageError(format!("{}: {e}", p.display())))?,
        None => rliv_sim::SimConfig::from_toml_str(rliv::sim::DEFAULT_SIM_TOML)
            .map_err(|e| anyhow::anyhow!("the embedded configs/sim.toml: {e}"))?,
    };
    let policies: Vec<String> = args
        .policies
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let opts = rliv::sim::SimOptions {
        sim: world,
        policies,
        seeds: (0..args.seeds).map(|i| args.seed + i).collect(),
        warmup_rounds: args.warmup_rounds,
        rounds: args.rounds,
        out: args.out.clone(),
        quiet: args.quiet,
    };
    let (summaries, pairs) = rliv::sim::run(cfg, &opts)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"summary": summaries, "paired": pairs})
            )?
        );
    } else {
        println!(
            "rliv sim: {} seed(s), {} warm-up day(s) of random-policy logs, {} measured day(s); mean ± 95% CI over seeds",
            opts.seeds.len(),
            opts.warmup_rounds,
            opts.rounds
        );
        print!("{}", rliv::sim::table(&summaries));
        print!("{}", rliv::sim::paired_table(&pairs));
        println!(
            "(summary.json, paired.json, runs.json and the learning curves, {}, in {})",
            rliv::sim::CURVE_PNG,
            args.out.display()
        );
    }
    Ok(())
}

fn start_server(
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
    scfg.validate().map_err(rliv::train::UsageError)?;
    let server = rliv::serve::Server::start(scfg, state, checkpoints)?;
    server.state.set_training(training);
    eprintln!(
        "serve: listening on http://{} (POST /rank, GET /healthz, GET /metrics)",
        server.addr
    );
    Ok(server)
}

fn replay(
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
    req.allow_repeat = args.allow_repeat;
    if let Some(w) = job.workers {
        req.replay.workers = w;
    }
    if args.keep_open {
        req.replay.drain_at_end = false;
    }
    let progress = Arc::new(Progress::default());
    req.progress = Some(progress.clone());
    if !is_run {
        // A run installs its own stop (`run::kafka_run`).
        let stop = rliv::signal::install(
            "replay: stopping at the next chunk boundary and committing (the same command resumes it)",
        )
        .context("installing the SIGTERM/SIGINT handlers")?;
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

fn progress_bar(p: &Progress, done: &std::sync::atomic::AtomicBool) {
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

fn print_summary(s: &Summary, what: &str) {
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

fn dump(
    state: &std::path::Path,
    user: Option<u64>,
    author: Option<u64>,
    format: Format,
    limit: Option<u64>,
) -> Result<()> {
    let store = Store::open_read_only(state)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = Vec::with_capacity(256);
    if let Format::Csv = format {
        out.write_all(rliv_state::json::PAIR_CSV_HEADER.as_bytes())?;
    }
    let mut n = 0u64;
    let mut emit = |k: &PairKey, c: &rliv_state::PairCounters| -> Result<bool> {
        if limit.is_some_and(|l| n >= l) {
            return Ok(false);
        }
        line.clear();
        match format {
            Format::Jsonl => rliv_state::json::write_pair_jsonl(&mut line, k, c),
            Format::Csv => rliv_state::json::write_pair_csv(&mut line, k, c),
        }
        n += 1;
        match out.write_all(&line) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    if let (Some(u), Some(a)) = (user, author) {
        if let Some(c) = store.get_pair(PairKey::new(u, a))? {
            emit(&PairKey::new(u, a), &c)?;
        }
    } else {
        for item in store.scan_pairs(user)? {
            let (k, c) = item?;
            if author.is_some_and(|a| a != k.author_id) {
                continue;
            }
            if !emit(&k, &c)? {
                break;
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => bail!(e),
        _ => Ok(()),
    }
}
