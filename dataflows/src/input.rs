//! Reading JSONL input files (plain or `.gz`) as a deterministic sequence of
//! chunks, with resumable positions.
//!
//! Chunk boundaries depend only on the files (every `chunk_lines` lines, never
//! across a file), and the next chunk is taken from the source whose pending
//! chunk starts earliest in event time, so a resumed reader produces exactly
//! the chunks an uninterrupted one would have.
//!
//! Why one file (about 440 lines without its tests): the position types
//! (`Positions`, `SourcePos`, `InputName`), the per-file reader with its
//! resume-by-offset and the merge across sources define together what "the
//! same chunk sequence after a restart" means; split, each part would have
//! to restate that contract.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::Source;
use crate::kafka::partition::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0}: directory holds no .jsonl, .json, .ndjson or .gz files")]
    EmptyDir(PathBuf),
    #[error("kafka: {0}")]
    Kafka(String),
}

fn io(path: &Path, err: std::io::Error) -> InputError {
    InputError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Expands paths: a directory stands for its `*.jsonl`, `*.ndjson`, `*.json`
/// and `*.gz` files in name order; files are taken as given.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|_| InputError::Missing(p.clone()))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    f.is_file()
                        && [".jsonl", ".ndjson", ".json", ".gz"]
                            .iter()
                            .any(|ext| name.ends_with(ext))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(InputError::EmptyDir(p.clone()));
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Where one source's reading stands: the next line to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePos {
    /// Index into the source's file list.
    pub file: usize,
    /// Byte offset in the (decompressed) file.
    pub offset: u64,
    /// 1-based number of the next line.
    pub line: u64,
}

/// One chunk of input lines: one timely epoch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Chunk {
    pub epoch: u64,
    pub source: Option<Source>,
    /// Index into the job's file table.
    pub file: u32,
    /// Line number of the first line in `data`.
    pub first_line: u64,
    /// Lines, each ending in `\n` (over-long lines cut to the limit).
    #[serde(with = "crate::raw_bytes")]
    pub data: Vec<u8>,
    /// Indices (within the chunk) of lines that were cut.
    pub too_long: Vec<u32>,
    /// Per source: no chunk of it follows this one in this run.
    pub exhausted_after: [bool; 2],
    /// The job commits after this epoch.
    pub commit: bool,
    /// The empty end-of-input marker.
    pub last: bool,
    /// With `last`: the run was asked to stop (SIGTERM) before its input
    /// ended: nothing is drained and the run is not finished.
    #[serde(default)]
    pub stopped: bool,
    /// Event-time progress of the whole source after this chunk, when the
    /// source has several partitions (the minimum over its live partitions);
    /// `None`: the chunk's newest record is the source's progress.
    #[serde(default)]
    pub source_progress: Option<i64>,
}

/// Reads one file's lines, bounding memory for over-long lines.
struct LineReader {
    inner: Box<dyn BufRead + Send>,
    offset: u64,
    line: u64,
}

impl LineReader {
    fn open(path: &Path, pos: &SourcePos) -> Result<LineReader, InputError> {
        let mut file = File::open(path).map_err(|e| io(path, e))?;
        let gz = path.extension().is_some_and(|e| e == "gz");
        let mut inner: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(BufReader::new(file)),
            ))
        } else {
            file.seek(SeekFrom::Start(pos.offset))
                .map_err(|e| io(path, e))?;
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        if gz && pos.offset > 0 {
            let skipped = std::io::copy(&mut (&mut inner).take(pos.offset), &mut std::io::sink())
                .map_err(|e| io(path, e))?;
            if skipped != pos.offset {
                let msg = format!(
                    "resume offset {} is past the end ({skipped}): the file changed",
                    pos.offset
                );
                return Err(io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg),
                ));
            }
        }
        Ok(LineReader {
            inner,
            offset: pos.offset,
            line: pos.line.max(1),
        })
    }

    /// Appends the whole lines already buffered, at most `limit` of them and
    /// none longer than `max`, to `out` in one copy; returns how many. Zero
    /// means the next line needs [`LineReader::next_line`] (it crosses the
    /// buffer's end, is too long, or ends the file without a `\n`).
    fn buffered_lines(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        limit: usize,
    ) -> std::io::Result<usize> {
        let buf = self.inner.fill_buf()?;
        let (mut end, mut lines) = (0usize, 0usize);
        for nl in memchr::memchr_iter(b'\n', buf) {
            if lines == limit || nl - end > max {
                break;
            }
            end = nl + 1;
            lines += 1;
        }
        if lines > 0 {
            out.extend_from_slice(&buf[..end]);
            self.inner.consume(end);
            self.offset += end as u64;
            self.line += lines as u64;
        }
        Ok(lines)
    }

    /// Appends the next line and a `\n` to `out`; `None` at end of file, else
    /// whether the line was cut at `max` bytes.
    fn next_line(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Option<bool>> {
        let start = out.len();
        let mut cut = false;
        let mut any = false;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let content = if done { take - 1 } else { take };
            let room = max.saturating_sub(out.len() - start);
            cut |= content > room;
            out.extend_from_slice(&buf[..content.min(room)]);
            self.inner.consume(take);
            self.offset += take as u64;
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        out.push(b'\n');
        Ok(Some(cut))
    }
}

/// One source's files, read chunk by chunk.
pub struct SourceReader {
    source: Source,
    /// (index in the job's file table, path)
    files: Vec<(u32, PathBuf)>,
    pos: SourcePos,
    reader: Option<LineReader>,
    chunk_lines: usize,
    max_line_bytes: usize,
    /// The size of the last chunk: the next one's buffer is allocated once.
    last_bytes: usize,
}

impl SourceReader {
    pub fn new(
        source: Source,
        files: Vec<(u32, PathBuf)>,
        pos: SourcePos,
        chunk_lines: usize,
        max_line_bytes: usize,
    ) -> Self {
        SourceReader {
            source,
            files,
            pos,
            reader: None,
            chunk_lines,
            max_line_bytes,
            last_bytes: 0,
        }
    }

    /// The next chunk and the position after it, or `None` when all files are read.
    fn read_chunk(&mut self) -> Result<Option<(Chunk, SourcePos)>, InputError> {
        loop {
            let Some((file_idx, path)) = self.files.get(self.pos.file).cloned() else {
                return Ok(None);
            };
            if self.reader.is_none() {
                self.reader = Some(LineReader::open(&path, &self.pos)?);
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            let mut chunk = Chunk {
                source: Some(self.source),
                file: file_idx,
                first_line: reader.line,
                data: Vec::with_capacity(self.last_bytes + self.last_bytes / 8),
                ..Chunk::default()
            };
            let mut n = 0u32;
            let mut eof = false;
            while (n as usize) < self.chunk_lines {
                let whole = reader
                    .buffered_lines(
                        &mut chunk.data,
                        self.max_line_bytes,
                        self.chunk_lines - n as usize,
                    )
                    .map_err(|e| io(&path, e))?;
                if whole > 0 {
                    n += whole as u32;
                    continue;
                }
                match reader
                    .next_line(&mut chunk.data, self.max_line_bytes)
                    .map_err(|e| io(&path, e))?
                {
                    None => {
                        eof = true;
                        break;
                    }
                    Some(cut) => {
                        if cut {
                            chunk.too_long.push(n);
                        }
                        n += 1;
                    }
                }
            }
            let after = if eof {
                self.reader = None;
                SourcePos {
                    file: self.pos.file + 1,
                    offset: 0,
                    line: 1,
                }
            } else {
                SourcePos {
                    file: self.pos.file,
                    offset: reader.offset,
                    line: reader.line,
                }
            };
            self.pos = after.clone();
            self.last_bytes = chunk.data.len();
            if n > 0 {
                return Ok(Some((chunk, after)));
            }
        }
    }
}

/// Extracts `ts_ms` from the first line of a chunk without a full parse: only
/// used to decide which source to read next.
pub fn first_ts(data: &[u8]) -> Option<i64> {
    line_ts(&data[..memchr::memchr(b'\n', data).unwrap_or(data.len())])
}

/// [`first_ts`] of the chunk's last line.
pub fn last_ts(data: &[u8]) -> Option<i64> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    line_ts(&body[memchr::memrchr(b'\n', body).map_or(0, |i| i + 1)..])
}

fn line_ts(line: &[u8]) -> Option<i64> {
    let at = memchr::memmem::find(line, b"\"ts_ms\"")? + 7;
    let rest = &line[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Both sources, merged into one deterministic sequence of chunks.
/// Where an input stands: file positions per source, or Kafka offsets
/// (partition -> next offset to read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Positions {
    pub files: [SourcePos; 2],
    #[serde(default)]
    pub offsets: std::collections::BTreeMap<TopicPartition, i64>,
    /// Newest event time handed out per Kafka partition (its watermark).
    #[serde(default)]
    pub partition_ts: std::collections::BTreeMap<TopicPartition, i64>,
}

/// An entry of the job's file table: an input file, or a Kafka partition.
///
/// The table is persisted as text (the checkpoint's `files`, the `file` of
/// dead letters): a file's path as given, or `kafka:topic/partition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputName {
    File(String),
    Kafka(TopicPartition),
}

impl InputName {
    /// What marks a Kafka partition in the text form.
    const KAFKA_PREFIX: &'static str = "kafka:";

    /// Reads the text form: `kafka:topic/partition` is a partition,
    /// anything else a file.
    pub fn parse(text: &str) -> InputName {
        text.strip_prefix(Self::KAFKA_PREFIX)
            .and_then(|tp| tp.parse().ok())
            .map_or_else(|| InputName::File(text.to_string()), InputName::Kafka)
    }

    pub fn is_kafka(&self) -> bool {
        matches!(self, InputName::Kafka(_))
    }
}

impl std::fmt::Display for InputName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputName::File(path) => f.write_str(path),
            InputName::Kafka(tp) => write!(f, "{}{tp}", Self::KAFKA_PREFIX),
        }
    }
}

/// What an input source has next.
pub enum Next {
    Chunk(Chunk),
    /// Nothing now; ask again later (a live stream).
    Pending,
    /// The input ended.
    End,
}

/// An input of the job: files ([`Reader`]) or Kafka topics.
pub trait ChunkSource: Send {
    fn next_epoch(&self) -> u64;
    /// Called with the epoch the next chunk gets; advances on `Next::Chunk`.
    fn next(&mut self) -> Result<Next, InputError>;
    /// Position after the last chunk handed out.
    fn positions(&self) -> Positions;
    /// Whether `Next::End` means the sources are exhausted (files), so the
    /// watermark may pass them; a stream that merely stops (Kafka) keeps
    /// them live, so a later run continues it as one stream.
    fn exhausts_at_end(&self) -> bool {
        true
    }
}

/// A chunk read ahead, with the position after it and the `ts_ms` of its
/// first and last lines.
struct Ahead {
    chunk: Chunk,
    pos: SourcePos,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
}

pub struct Reader {
    sources: Vec<SourceReader>,
    ahead: Vec<Option<Ahead>>,
    done: [bool; 2],
    /// How far past its first record an action chunk may reach and still
    /// wait for the exposures before it (see [`Reader::next_chunk`]).
    lead_ms: i64,
    /// Position after the last chunk handed out, per source.
    pub positions: [SourcePos; 2],
    pub next_epoch: u64,
}

impl Reader {
    /// `sources[i]` must be the reader of `Source::ALL[i]`.
    pub fn new(sources: Vec<SourceReader>, next_epoch: u64) -> Reader {
        let positions = [sources[0].pos.clone(), sources[1].pos.clone()];
        Reader {
            ahead: vec![None, None],
            sources,
            done: [false; 2],
            lead_ms: 0,
            positions,
            next_epoch,
        }
    }

    /// Exposures are read up to `lead_ms` of event time ahead of the actions
    /// (the label join's window is a natural choice): see
    /// [`Reader::next_chunk`].
    pub fn with_lead(mut self, lead_ms: i64) -> Reader {
        self.lead_ms = lead_ms.max(0);
        self
    }

    fn fill(&mut self, s: usize) -> Result<(), InputError> {
        if self.ahead[s].is_none() && !self.done[s] {
            match self.sources[s].read_chunk()? {
                Some((chunk, pos)) => {
                    self.ahead[s] = Some(Ahead {
                        first_ts: first_ts(&chunk.data),
                        last_ts: last_ts(&chunk.data),
                        chunk,
                        pos,
                    });
                }
                None => self.done[s] = true,
            }
        }
        Ok(())
    }

    /// The next chunk, numbered with the next epoch; `None` when all input is read.
    ///
    /// The source whose next chunk starts earlier in event time goes first,
    /// except that an action chunk also waits for the exposures up to its
    /// last record (at most `lead_ms` past its first): an action refers to an
    /// exposure at or before its own time, so it then finds its exposure
    /// open instead of waiting for it in the join. The choice depends only on
    /// the chunks' contents, so a resumed run reads the same sequence.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, InputError> {
        self.fill(0)?;
        self.fill(1)?;
        let pick = match (&self.ahead[0], &self.ahead[1]) {
            (None, None) => return Ok(None),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (Some(e), Some(a)) => {
                let first = a.first_ts.unwrap_or(i64::MIN);
                let reach = a
                    .last_ts
                    .unwrap_or(first)
                    .clamp(first, first.saturating_add(self.lead_ms));
                usize::from(reach < e.first_ts.unwrap_or(i64::MIN))
            }
        };
        let Some(Ahead { mut chunk, pos, .. }) = self.ahead[pick].take() else {
            return Ok(None);
        };
        self.positions[pick] = pos;
        self.fill(pick)?;
        chunk.epoch = self.next_epoch;
        self.next_epoch += 1;
        chunk.exhausted_after = self.done;
        Ok(Some(chunk))
    }

    /// Sources with nothing at all to read in this run.
    pub fn exhausted(&mut self) -> Result<[bool; 2], InputError> {
        self.fill(0)?;
        self.fill(1)?;
        Ok(self.done)
    }
}

impl ChunkSource for Reader {
    fn next_epoch(&self) -> u64 {
        self.next_epoch
    }
    fn next(&mut self) -> Result<Next, InputError> {
        Ok(match self.next_chunk()? {
            Some(c) => Next::Chunk(c),
            None => Next::End,
        })
    }
    fn positions(&self) -> Positions {
        Positions {
            files: self.positions.clone(),
            ..Positions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
    use std::io::Write;

    fn write(dir: &Path, name: &str, lines: &[String]) -> std::io::Result<PathBuf> {
        let p = dir.join(name);
        let mut f = File::create(&p)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        Ok(p)
    }

    #[test]
    fn input_names_keep_their_text_form() -> TestResult {
        let tp = TopicPartition::new("ex.posures-1", 12);
        assert_eq!(tp.to_string(), "ex.posures-1/12");
        assert_eq!("ex.posures-1/12".parse::<TopicPartition>()?, tp);
        assert!("exposures".parse::<TopicPartition>().is_err());
        assert_eq!(serde_json::to_string(&tp)?, "\"ex.posures-1/12\"");
        let kafka = InputName::Kafka(tp);
        assert_eq!(kafka.to_string(), "kafka:ex.posures-1/12");
        assert_eq!(InputName::parse("kafka:ex.posures-1/12"), kafka);
        for file in ["data/exposures.jsonl", "kafka:no-partition"] {
            assert_eq!(InputName::parse(file), InputName::File(file.into()));
            assert_eq!(InputName::parse(file).to_string(), file);
        }
        Ok(())
    }

    fn lines(prefix: &str, n: usize, ts0: i64) -> Vec<String> {
        (0..n)
            .map(|i| format!("{{\"id\":\"{prefix}{i}\",\"ts_ms\":{}}}", ts0 + i as i64))
            .collect()
    }

    fn all_chunks(r: &mut Reader) -> Result<Vec<Chunk>, InputError> {
        std::iter::from_fn(|| r.next_chunk().transpose()).collect()
    }

    #[test]
    fn last_ts_reads_the_field_of_the_last_line() -> TestResult {
        assert_eq!(last_ts(b"{\"ts_ms\":7}\n{\"ts_ms\" : -42}\n"), Some(-42));
        assert_eq!(last_ts(b"{\"ts_ms\":7}\n{\"ts_ms\":9}"), Some(9));
        assert_eq!(last_ts(b"{\"ts_ms\":7}\n"), Some(7));
        assert_eq!(last_ts(b"{\"ts_ms\":7}\ngarbage\n"), None);
        Ok(())
    }

    #[test]
    fn action_chunks_wait_for_the_exposures_they_reach_up_to_the_lead() -> TestResult {
        let dir = tempfile::tempdir()?;
        // Exposure chunks start at ts 0, 4, 8, ..., 36; the first action
        // chunk starts at 1 and ends with a far-future record.
        let e = write(dir.path(), "e.jsonl", &lines("e", 40, 0))?;
        let mut acts = lines("a", 3, 1);
        acts.push("{\"id\":\"far\",\"ts_ms\":1000}".into());
        acts.extend(lines("b", 4, 40));
        let a = write(dir.path(), "a.jsonl", &acts)?;
        let order = |lead: i64| -> Result<String, InputError> {
            let mut r = Reader::new(
                vec![
                    SourceReader::new(
                        Source::Exposures,
                        vec![(0, e.clone())],
                        SourcePos::default(),
                        4,
                        1000,
                    ),
                    SourceReader::new(
                        Source::Actions,
                        vec![(1, a.clone())],
                        SourcePos::default(),
                        4,
                        1000,
                    ),
                ],
                0,
            )
            .with_lead(lead);
            Ok(all_chunks(&mut r)?
                .iter()
                .map(|c| match c.data.get(7) {
                    Some(b'e') => 'E',
                    _ => 'A',
                })
                .collect())
        };
        // By first record only: the action chunk goes before the exposure
        // chunk that starts after it.
        assert_eq!(order(0)?, "EAEEEEEEEEEA");
        // Exposures up to ts 1 + 10 first; the far-future record does not
        // hold the actions back any longer than the lead.
        assert_eq!(order(10)?, "EEEAEEEEEEEA");
        // Without a bound, every exposure it could reach comes first.
        assert_eq!(order(i64::MAX)?, "EEEEEEEEEEAA");
        Ok(())
    }

    #[test]
    fn resumed_reader_yields_the_same_chunks() -> TestResult {
        let dir = tempfile::tempdir()?;
        let e = write(dir.path(), "e.jsonl", &lines("e", 25, 0))?;
        let a = write(dir.path(), "a.jsonl", &lines("a", 17, 3))?;
        let make = |pe: SourcePos, pa: SourcePos, epoch| {
            Reader::new(
                vec![
                    SourceReader::new(Source::Exposures, vec![(0, e.clone())], pe, 4, 1000),
                    SourceReader::new(Source::Actions, vec![(1, a.clone())], pa, 4, 1000),
                ],
                epoch,
            )
        };
        let whole = all_chunks(&mut make(SourcePos::default(), SourcePos::default(), 0))?;
        assert_eq!(
            whole
                .iter()
                .map(|c| c.data.iter().filter(|b| **b == b'\n').count())
                .sum::<usize>(),
            42
        );
        for cut in 1..whole.len() {
            let mut r = make(SourcePos::default(), SourcePos::default(), 0);
            let head = (0..cut)
                .map(|_| {
                    r.next_chunk()?
                        .ok_or_else(|| InputError::Missing(PathBuf::from("a chunk")))
                })
                .collect::<Result<Vec<Chunk>, InputError>>()?;
            let [pe, pa] = r.positions.clone();
            let tail = all_chunks(&mut make(pe, pa, r.next_epoch))?;
            let joined: Vec<(u64, Vec<u8>, u64)> = head
                .iter()
                .chain(tail.iter())
                .map(|c| (c.epoch, c.data.clone(), c.first_line))
                .collect();
            let expect: Vec<(u64, Vec<u8>, u64)> = whole
                .iter()
                .map(|c| (c.epoch, c.data.clone(), c.first_line))
                .collect();
            assert_eq!(joined, expect, "cut after {cut} chunks");
        }
        assert!(whole.last().ok_or("no chunks")?.exhausted_after == [true, true]);
        Ok(())
    }

    #[test]
    fn gz_files_resume_at_their_decompressed_offset() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&p)?, flate2::Compression::fast());
        for l in lines("x", 10, 0) {
            writeln!(enc, "{l}")?;
        }
        enc.finish()?;
        let mut s = SourceReader::new(
            Source::Exposures,
            vec![(0, p.clone())],
            SourcePos::default(),
            3,
            1000,
        );
        let (first, pos) = s.read_chunk()?.ok_or("no chunk")?;
        assert_eq!(first.first_line, 1);
        let mut s2 = SourceReader::new(Source::Exposures, vec![(0, p)], pos, 3, 1000);
        let (second, _) = s2.read_chunk()?.ok_or("no chunk")?;
        assert_eq!(second.first_line, 4);
        assert!(String::from_utf8_lossy(&second.data).starts_with("{\"id\":\"x3\""));
        Ok(())
    }

    #[test]
    fn over_long_lines_are_cut_and_flagged_not_buffered_whole() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = write(
            dir.path(),
            "l.jsonl",
            &["short".to_string(), "y".repeat(10_000), "end".to_string()],
        )?;
        let mut s = SourceReader::new(Source::Actions, vec![(0, p)], SourcePos::default(), 10, 100);
        let (c, _) = s.read_chunk()?.ok_or("no chunk")?;
        assert_eq!(c.too_long, vec![1]);
        assert_eq!(c.data.len(), 6 + 101 + 4);
        Ok(())
    }

    #[test]
    fn first_ts_reads_the_field_of_the_first_line() -> TestResult {
        assert_eq!(
            first_ts(b"{\"a\":1, \"ts_ms\" : -42,\"b\":2}\n{\"ts_ms\":7}\n"),
            Some(-42)
        );
        assert_eq!(first_ts(b"garbage\n{\"ts_ms\":7}\n"), None);
        Ok(())
    }

    #[test]
    fn directories_expand_to_their_data_files_in_name_order() -> TestResult {
        let dir = tempfile::tempdir()?;
        write(dir.path(), "b.jsonl", &[])?;
        write(dir.path(), "a.jsonl", &[])?;
        write(dir.path(), "notes.txt", &[])?;
        let got = expand_paths(&[dir.path().to_path_buf()])?;
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("a file name")?;
        assert_eq!(names, vec!["a.jsonl", "b.jsonl"]);
        assert!(matches!(
            expand_paths(&[dir.path().join("zz")]),
            Err(InputError::Missing(_))
        ));
        Ok(())
    }
}
