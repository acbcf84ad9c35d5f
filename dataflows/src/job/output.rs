//! Append-only output files whose committed length is recorded (cut back to
//! it on resume).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;

/// An append-only output file whose committed length is recorded.
pub(super) struct OutputFile {
    pub(super) path: PathBuf,
    pub(super) out: BufWriter<File>,
    pub(super) len: u64,
}

impl OutputFile {
    /// Opens `path` cut back to `committed` bytes (what the last commit recorded).
    pub(super) fn open(path: &Path, committed: u64) -> Result<OutputFile, JobError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| out_err(path, e))?;
        let actual = f.metadata().map_err(|e| out_err(path, e))?.len();
        if actual < committed {
            return Err(JobError::Resume(format!(
                "{} has {actual} bytes but the state's last commit recorded {committed}: it was changed or \
                 replaced since; restore it or start over with a new --state",
                path.display()
            )));
        }
        f.set_len(committed).map_err(|e| out_err(path, e))?;
        f.seek(SeekFrom::Start(committed))
            .map_err(|e| out_err(path, e))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, f),
            len: committed,
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        self.out
            .write_all(bytes)
            .map_err(|e| out_err(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn flush(&mut self, sync: bool) -> Result<(), JobError> {
        self.out.flush().map_err(|e| out_err(&self.path, e))?;
        if sync {
            self.out
                .get_ref()
                .sync_data()
                .map_err(|e| out_err(&self.path, e))?;
        }
        Ok(())
    }
}
