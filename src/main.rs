//! The `rliv` command line: parses the arguments and dispatches.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rliv::config::Config;
use rliv_dataflows::job::JobError;
use rliv_state::Store;

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
    Replay(cli::replay::ReplayArgs),
    /// Run the job continuously on Kafka topics ([kafka] in the config):
    /// exactly-once pair state, transitions and dead letters to topics.
    Run(cli::replay::RunArgs),
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
        /// State directory: one store, or a cluster job's shards p0..pN (merged).
        #[arg(long)]
        state: PathBuf,
        /// Only this user's pairs (one prefix scan).
        #[arg(long)]
        user: Option<u64>,
        /// Only pairs with this author.
        #[arg(long)]
        author: Option<u64>,
        #[arg(long, value_enum, default_value_t = cli::dump::Format::Jsonl)]
        format: cli::dump::Format,
        /// Stop after this many pairs.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Serve POST /rank over the pair state and the newest checkpoint (hot reload).
    /// SIGTERM or SIGINT stops it: the requests in flight are answered, then it exits 0.
    Serve {
        /// Pair-state directory (read as a RocksDB secondary; a replay may be writing it):
        /// one store, or a cluster job's shards p0..pN (each user read from its own).
        #[arg(long)]
        state: PathBuf,
        /// Checkpoint directory of the learner (watched for new checkpoints).
        #[arg(long)]
        checkpoints: PathBuf,
        /// Listen address (default: serve.addr, loopback).
        #[arg(long)]
        addr: Option<String>,
    },
    /// The live relationship metrics ([views]) as of the state's last commit:
    /// deep pairs, weekly gifted users, revenue, new fans per day; totals and
    /// per author.
    Views {
        /// State directory (a cluster's: the views are in process 0's shard).
        #[arg(long)]
        state: PathBuf,
        /// Only this author.
        #[arg(long)]
        author: Option<u64>,
        #[arg(long, value_enum, default_value_t = cli::views::Format::Jsonl)]
        format: cli::views::Format,
    },
    /// Show the job checkpoint of a state directory (input positions, counters).
    Status {
        /// State directory: one store, or a cluster job's shards (checkpoint in p0).
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
    Sim(cli::sim::SimArgs),
    /// The paper's offline evaluation on the simulator: Tables 2-3 (the
    /// baselines DeepFM, CQL, DQN, TD3, RLUR, RLIV-UA and its ablations,
    /// mean and 95% CI over seeds) and Figure 5 (learning curves), written
    /// as Markdown, CSV and PNG (configs/experiment.toml).
    Experiment(cli::experiment::ExperimentArgs),
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

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (defaults + --config + RLIV__* env).
    Show,
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
            cli::replay::replay(&cfg, args, None)
        }
        Cmd::Run(mut args) => {
            let peer = args.job.process.filter(|i| *i != 0);
            let (run, _progress) = rliv::run::kafka_run(&cfg.kafka, args.until_end, peer)?;
            let job = &mut args.job;
            if job.checkpoints.is_none() && job.serve.is_some() {
                job.checkpoints = Some(job.state.join("checkpoints"));
            }
            let mut cfg = cfg.clone();
            cfg.replay.drain_at_end = args.drain_at_end;
            let replay_args = cli::replay::ReplayArgs {
                exposures: Vec::new(),
                actions: Vec::new(),
                job: args.job,
                keep_open: !args.drain_at_end,
                allow_repeat: false,
            };
            cli::replay::replay(&cfg, replay_args, Some(run))
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
                (Some(addr), Some(state)) => Some(cli::replay::start_server(
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
            let server = cli::replay::start_server(&cfg, addr, &state, &checkpoints, None)?;
            server.run_until(|| stop.wait().to_string());
            Ok(())
        }
        Cmd::Dump {
            state,
            user,
            author,
            format,
            limit,
        } => cli::dump::dump(&state, user, author, format, limit),
        Cmd::Status { state } => {
            // A cluster state's checkpoint is in process 0's shard; stdout
            // stays the checkpoint alone, the shards are listed on stderr.
            let layout = rliv_state::Layout::of(&state)?;
            if let rliv_state::Layout::Cluster(dirs) = &layout {
                for (i, dir) in dirs.iter().enumerate() {
                    eprintln!("shard {i}: {}", dir.display());
                }
            }
            let store = Store::open_read_only(layout.primary())?;
            match rliv_dataflows::Checkpoint::load(&store)? {
                Some(cp) => println!("{}", serde_json::to_string_pretty(&cp)?),
                None => println!("{}: no replay has committed yet", state.display()),
            }
            Ok(())
        }
        Cmd::Views {
            state,
            author,
            format,
        } => cli::views::views(&state, author, format),
        Cmd::Config {
            cmd: ConfigCmd::Show,
        } => {
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
        Cmd::Bench { cmd } => rliv::bench::run(&cfg, cmd, cli.config.as_deref()),
        Cmd::Sim(args) => cli::sim::sim(&cfg, args),
        Cmd::Experiment(args) => cli::experiment::command(&cfg, args),
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
