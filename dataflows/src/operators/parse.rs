//! `Parse`: turns input chunks into validated records, dead letters and one
//! [`Meta`] per join worker.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::{DeadLetter, Meta, ParsedBundle, ParsedBundler, Side};
use crate::event::{parse_action, parse_exposure, Origin, Source};
use crate::input::Chunk;
use crate::metrics::{Counter, Counters, Reason};

pub trait ParseChunks<'scope> {
    /// Parses chunks on the worker [`parse_worker`] picks, and bundles the records
    /// by the join worker they go to.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Event};
    /// use rliv_dataflows::input::Chunk;
    /// use rliv_dataflows::event::Source;
    /// use rliv_dataflows::operators::{ParseChunks, ParsedBundle};
    ///
    /// let out = timely::example(|scope| {
    ///     let chunk = Chunk {
    ///         source: Some(Source::Actions),
    ///         first_line: 1,
    ///         data: b"{\"request_id\":1,\"user_id\":2,\"item_id\":3,\"ts_ms\":4,\"action\":\"click\"}\nnot json\n".to_vec(),
    ///         ..Chunk::default()
    ///     };
    ///     vec![chunk].to_stream(scope).container::<Vec<_>>().parse_chunks().capture()
    /// });
    /// let bundles: Vec<ParsedBundle> = out
    ///     .try_iter()
    ///     .flat_map(|e| match e { Event::Messages(_, v) => v, _ => Vec::new() })
    ///     .collect();
    /// assert!(bundles.iter().flat_map(|b| &b.actions).any(|a| a.ts_ms == 4));
    /// // Side records: the line that is not JSON (a dead letter) and the counts.
    /// assert_eq!(bundles.iter().map(|b| b.sides.len()).sum::<usize>(), 2);
    /// ```
    fn parse_chunks(self) -> Stream<'scope, u64, Vec<ParsedBundle>>;
}

/// The worker that parses chunk `epoch`. Worker 0 also reads every chunk
/// (about a third of the cost of parsing it), so with several workers it
/// parses one chunk in `2 * peers - 1` and every other worker two.
pub fn parse_worker(epoch: u64, peers: u64) -> u64 {
    if peers <= 1 {
        return 0;
    }
    match epoch % (2 * peers - 1) {
        0 => 0,
        slot => slot.div_ceil(2),
    }
}

impl<'scope> ParseChunks<'scope> for Stream<'scope, u64, Vec<Chunk>> {
    fn parse_chunks(self) -> Stream<'scope, u64, Vec<ParsedBundle>> {
        let peers = self.scope().peers();
        let me = self.scope().index();
        let workers = peers as u64;
        self.unary(
            Exchange::new(move |c: &Chunk| parse_worker(c.epoch, workers)),
            "Parse",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for chunk in data.drain(..) {
                            // Records go straight into their join worker's bundle.
                            let mut records =
                                ParsedBundler::new(peers, me, chunk.source, chunk.data.len() / 100);
                            let meta = parse_chunk(&chunk, &mut records);
                            session.give_iterator(records.finish(meta).into_iter());
                        }
                    });
                }
            },
        )
        .container::<Vec<_>>()
    }
}

/// Parses one chunk into `out`; returns its [`Meta`] (`finish` gives each
/// bundle its copy).
pub fn parse_chunk(chunk: &Chunk, out: &mut ParsedBundler) -> Meta {
    let mut counters = Counters::default();
    let mut max_ts: Option<i64> = None;
    let mut too_long = chunk.too_long.iter().peekable();
    if let Some(source) = chunk.source {
        let mut start = 0usize;
        for (idx, end) in memchr::memchr_iter(b'\n', &chunk.data).enumerate() {
            let line = &chunk.data[start..end];
            start = end + 1;
            let origin = Origin {
                file: chunk.file,
                line: chunk.first_line + idx as u64,
            };
            if too_long.peek().is_some_and(|i| **i as usize == idx) {
                too_long.next();
                counters.inc(Counter::Lines);
                dead(
                    out,
                    &mut counters,
                    origin,
                    Reason::LineTooLong,
                    "line longer than replay.max_line_bytes".into(),
                    line,
                );
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            counters.inc(Counter::Lines);
            let rejected = match source {
                Source::Exposures => parse_exposure(line, origin).map(|e| {
                    counters.inc(Counter::ExposuresParsed);
                    max_ts = max_ts.max(Some(e.ts_ms));
                    out.exposure(e);
                }),
                Source::Actions => parse_action(line, origin).map(|a| {
                    counters.inc(Counter::ActionsParsed);
                    max_ts = max_ts.max(Some(a.ts_ms));
                    out.action(a);
                }),
            };
            if let Err(r) = rejected {
                dead(out, &mut counters, origin, r.reason, r.detail, line);
            }
        }
    }
    if !counters.is_zero() {
        out.side(Side::Counts(counters));
    }
    Meta {
        target: 0,
        source: chunk.source,
        // A partitioned source (Kafka) reports its own progress: the slowest
        // of its live partitions, not this chunk's newest record.
        max_ts: match chunk.source_progress {
            Some(p) => Some(p),
            None => max_ts,
        },
        exhausted_after: chunk.exhausted_after,
        commit: chunk.commit,
        last: chunk.last,
        stopped: chunk.stopped,
    }
}

fn dead(
    out: &mut ParsedBundler,
    counters: &mut Counters,
    origin: Origin,
    reason: Reason,
    detail: String,
    line: &[u8],
) {
    counters.inc(reason.counter());
    out.side(Side::Dead(DeadLetter {
        origin,
        reason,
        detail,
        raw: String::from_utf8_lossy(line).into_owned(),
    }));
}

#[cfg(test)]
mod tests {
    use super::{parse_chunk, parse_worker, ParsedBundler};
    use crate::event::{exposure_route, Source};
    use crate::input::Chunk;

    #[test]
    fn bundles_route_records_by_identity_in_input_order_and_keep_sides_here() {
        let mut data = Vec::new();
        for r in 0..30u64 {
            data.extend_from_slice(
                format!(
                    r#"{{"request_id":{r},"user_id":1,"item_id":{},"author_id":2,"ts_ms":{}}}"#,
                    r % 4,
                    100 - r
                )
                .as_bytes(),
            );
            data.push(b'\n');
        }
        data.extend_from_slice(b"not json\n");
        let chunk = Chunk {
            source: Some(Source::Exposures),
            first_line: 1,
            data,
            commit: true,
            ..Chunk::default()
        };
        let mut out = ParsedBundler::new(3, 1, Some(Source::Exposures), 31);
        let meta = parse_chunk(&chunk, &mut out);
        let bundles = out.finish(meta);
        assert_eq!(bundles.len(), 3);
        let mut seen = 0;
        for (i, b) in bundles.iter().enumerate() {
            assert_eq!((b.to, b.meta.target as usize), (i as u64, i));
            assert!(b.meta.commit && b.meta.max_ts == Some(100));
            assert!(b
                .exposures
                .iter()
                .all(|e| exposure_route(e.request_id, e.item_id) % 3 == i as u64));
            // Input order: request ids rise within a bundle.
            assert!(b
                .exposures
                .windows(2)
                .all(|w| w[0].request_id < w[1].request_id));
            // The dead letter and the counts stay on the parsing worker.
            assert_eq!(b.sides.len(), if i == 1 { 2 } else { 0 });
            seen += b.exposures.len();
        }
        assert_eq!(seen, 30);
    }

    #[test]
    fn worker_zero_parses_one_chunk_in_2p_minus_1_and_the_others_two() {
        assert!((0..10).all(|e| parse_worker(e, 1) == 0));
        for peers in 2..6u64 {
            let cycle = 2 * peers - 1;
            let mut n = vec![0u64; peers as usize];
            for e in 0..cycle * 10 {
                let w = parse_worker(e, peers);
                assert!(w < peers);
                n[w as usize] += 1;
            }
            assert_eq!(n[0], 10);
            assert!(n[1..].iter().all(|c| *c == 20), "{peers} workers: {n:?}");
        }
    }
}
