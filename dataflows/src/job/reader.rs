//! The input operator: on worker 0, one chunk per epoch, at most
//! `max_inflight_chunks` ahead of the committer; a stop request ends the
//! run at a chunk boundary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use timely::dataflow::operators::generic::operator::source;

use crate::config::ReplayConfig;
use crate::input::{Chunk, ChunkSource, Next};
use crate::operators::{Abort, InputMark, Report};

/// The reader: on worker 0, hands out one chunk per epoch, at most
/// `max_inflight_chunks` ahead of the committer.
pub(super) fn read_input<'scope>(
    scope: timely::dataflow::Scope<'scope, u64>,
    reader: Option<Box<dyn ChunkSource>>,
    cfg: ReplayConfig,
    tx: Sender<Report>,
    done_before: Arc<AtomicU64>,
    abort: Arc<Abort>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> timely::dataflow::Stream<'scope, u64, Vec<Chunk>> {
    source(scope, "ReadInput", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut reader = reader;
        let mut cap = match &reader {
            Some(r) => {
                let mut c = cap;
                c.downgrade(&r.next_epoch());
                Some(c)
            }
            None => None,
        };
        let commit_every = Duration::from_millis(cfg.commit_interval_ms);
        let mut last_commit = Instant::now();
        move |output| {
            let (Some(c), Some(r)) = (cap.as_mut(), reader.as_mut()) else {
                cap = None;
                return;
            };
            if abort.raised() {
                cap = None;
                return;
            }
            for _ in 0..4 {
                let epoch = r.next_epoch();
                if epoch >= done_before.load(Ordering::Acquire) + cfg.max_inflight_chunks as u64 {
                    activator.activate_after(Duration::from_micros(300));
                    return;
                }
                let stopping = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                let next = match if stopping { Ok(Next::End) } else { r.next() } {
                    Ok(next) => next,
                    Err(e) => {
                        abort.raise(e.to_string());
                        cap = None;
                        return;
                    }
                };
                let (chunk, last) = match next {
                    Next::Pending => {
                        // A live stream with nothing new: poll again shortly.
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    Next::Chunk(mut chunk) => {
                        chunk.commit = last_commit.elapsed() >= commit_every;
                        (chunk, false)
                    }
                    Next::End => {
                        let chunk = Chunk {
                            epoch,
                            commit: true,
                            last: true,
                            stopped: stopping,
                            exhausted_after: [r.exhausts_at_end() && !stopping; 2],
                            ..Chunk::default()
                        };
                        (chunk, true)
                    }
                };
                if chunk.commit {
                    last_commit = Instant::now();
                }
                let _ = tx.send(Report::Input(InputMark {
                    epoch,
                    positions: r.positions(),
                    commit: chunk.commit,
                    last,
                    stopped: chunk.stopped,
                }));
                c.downgrade(&epoch);
                output.session(c).give(chunk);
                if last {
                    cap = None;
                    reader = None;
                    return;
                }
                c.downgrade(&(epoch + 1));
            }
            activator.activate();
        }
    })
    .container::<Vec<_>>()
}
