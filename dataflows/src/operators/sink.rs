//! `Sink`: hands each worker's completed epochs to the committer thread.

use std::collections::BTreeMap;

use crossbeam_channel::Sender;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use super::Side;

/// Where the reader stood after handing out one epoch's chunk.
#[derive(Clone, Debug)]
pub struct InputMark {
    pub epoch: u64,
    pub positions: crate::input::Positions,
    pub commit: bool,
    pub last: bool,
    /// The run was stopped before its input ended (it is not finished).
    pub stopped: bool,
}

/// A message to the committer: from the reader (`Input`) or a worker's sink.
pub enum Report {
    Input(InputMark),
    /// Everything worker `worker` produced at `epoch`.
    Epoch {
        worker: usize,
        epoch: u64,
        items: Vec<Side>,
    },
    /// Worker `worker` will send nothing more for epochs below `before`.
    Frontier {
        worker: usize,
        before: u64,
    },
    /// Cluster mode: process `process` committed its shard at `epoch`.
    Ack {
        process: usize,
        epoch: u64,
        open: u64,
    },
    /// Cluster mode: every shard has processed every epoch below `before`.
    Acked {
        before: u64,
    },
}

pub trait ReportSink {
    /// Sends completed epochs, then the new frontier, to `to`.
    fn report_to(self, to: Sender<Report>);
}

impl ReportSink for Stream<'_, u64, Vec<Side>> {
    fn report_to(self, to: Sender<Report>) {
        let worker = self.scope().index();
        let mut stash: BTreeMap<u64, Vec<Side>> = BTreeMap::new();
        let mut reported = 0u64;
        self.sink(Pipeline, "Sink", move |(input, frontier)| {
            input.for_each(|cap, data| {
                if let Some(t) = cap.least() {
                    stash.entry(*t).or_default().append(data);
                }
            });
            let before = frontier
                .frontier()
                .iter()
                .copied()
                .min()
                .unwrap_or(u64::MAX);
            while let Some((&epoch, _)) = stash.first_key_value() {
                if epoch >= before {
                    break;
                }
                if let Some((_, items)) = stash.pop_first() {
                    // The committer outlives the dataflow; if it is gone the job is aborting.
                    let _ = to.send(Report::Epoch {
                        worker,
                        epoch,
                        items,
                    });
                }
            }
            if before > reported {
                reported = before;
                let _ = to.send(Report::Frontier { worker, before });
            }
        });
    }
}
