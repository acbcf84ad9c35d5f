//! A local Tansu broker (an Apache-Kafka-compatible broker) for the Kafka
//! tests and `rliv bench kafka`: sqlite storage in a directory, a free
//! loopback port, killed on drop. The binary is `RLIV_TANSU`, or
//! `~/.cache/rliv/tools/bin/tansu` (`scripts/install-tansu.sh` builds it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the Tansu binary is expected.
pub fn binary() -> PathBuf {
    std::env::var("RLIV_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/rliv/tools/bin/tansu")
        })
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker with its storage (and log) in `dir`.
    pub fn start(dir: &Path) -> Result<Broker> {
        let mut b = Broker {
            port: free_port()?,
            dir: dir.to_path_buf(),
            child: None,
        };
        b.restart()?;
        Ok(b)
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port and storage; waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let bin = binary();
        if !bin.exists() {
            bail!(
                "the Tansu broker is not installed at {}: run scripts/install-tansu.sh (scripts/test.sh does)",
                bin.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log"))?;
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tansu")?;
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(self.addr()).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("tansu did not listen on {}", self.addr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
