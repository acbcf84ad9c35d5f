//! `Parse`: turns input chunks into validated records, dead letters and one
//! [`Meta`] per join worker.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::{Bundle, Bundler, DeadLetter, Meta, Parsed, ParsedSink, Side};
use crate::event::{exposure_route, parse_action, parse_exposure, Origin, Source};
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
    /// use rliv_dataflows::operators::{Bundle, ParseChunks, Parsed};
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
    /// let records: Vec<Parsed> = out
    ///     .try_iter()
    ///     .flat_map(|e| match e { Event::Messages(_, v) => v, _ => Vec::new() })
    ///     .flat_map(|b: Bundle<Parsed>| b.items)
    ///     .collect();
    /// assert!(records.iter().any(|p| matches!(p, Parsed::Action(a) if a.ts_ms == 4)));
    /// ```
    fn parse_chunks(self) -> Stream<'scope, u64, Vec<Bundle<Parsed>>>;
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

/// The join worker of a parsed record: exposures and actions by their
/// exposure identity, a meta by its target, side records stay here.
fn join_worker(p: &Parsed, me: u64) -> u64 {
    match p {
        Parsed::Exposure(e) => exposure_route(e.request_id, e.item_id),
        Parsed::Action(a) => exposure_route(a.request_id, a.item_id),
        Parsed::Meta(m) => u64::from(m.target),
        Parsed::Side(_) => me,
    }
}

impl<'scope> ParseChunks<'scope> for Stream<'scope, u64, Vec<Chunk>> {
    fn parse_chunks(self) -> Stream<'scope, u64, Vec<Bundle<Parsed>>> {
        let peers = self.scope().peers() as u32;
        let me = self.scope().index() as u64;
        let workers = u64::from(peers);
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
                                Bundler::new(peers as usize, chunk.data.len() / 100, |p| {
                                    join_worker(p, me)
                                });
                            let meta = parse_chunk(&chunk, &mut records);
                            for target in 0..peers {
                                records.push(Parsed::Meta(Meta {
                                    target,
                                    ..meta.clone()
                                }));
                            }
                            session.give_iterator(records.finish().into_iter());
                        }
                    });
                }
            },
        )
        .container::<Vec<_>>()
    }
}

/// Parses one chunk into `out`; returns its [`Meta`] (target 0).
pub fn parse_chunk(chunk: &Chunk, out: &mut impl ParsedSink) -> Meta {
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
            let parsed = match source {
                Source::Exposures => parse_exposure(line, origin).map(|e| {
                    counters.inc(Counter::ExposuresParsed);
                    max_ts = max_ts.max(Some(e.ts_ms));
                    Parsed::Exposure(e)
                }),
                Source::Actions => parse_action(line, origin).map(|a| {
                    counters.inc(Counter::ActionsParsed);
                    max_ts = max_ts.max(Some(a.ts_ms));
                    Parsed::Action(a)
                }),
            };
            match parsed {
                Ok(p) => out.push(p),
                Err(r) => dead(out, &mut counters, origin, r.reason, r.detail, line),
            }
        }
    }
    if !counters.is_zero() {
        out.push(Parsed::Side(Side::Counts(counters)));
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
    out: &mut impl ParsedSink,
    counters: &mut Counters,
    origin: Origin,
    reason: Reason,
    detail: String,
    line: &[u8],
) {
    counters.inc(reason.counter());
    out.push(Parsed::Side(Side::Dead(DeadLetter {
        origin,
        reason,
        detail,
        raw: String::from_utf8_lossy(line).into_owned(),
    })));
}

#[cfg(test)]
mod tests {
    use super::parse_worker;

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
