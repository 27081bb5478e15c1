//! Control requests a worker answers between batches: copies of its
//! counters and latency histograms answered at once, flow-table reads
//! advanced as jobs of at most `SCAN_BUDGET` slots per gap. Nothing here
//! runs per packet; answers allocate.

use std::time::Instant;

use super::{elapsed_ns, Worker, WorkerRequest};
use crate::flow_scan::{FlowRecord, Job, SCAN_BUDGET};

impl Worker {
    /// Answers queued control requests and advances the oldest flow-table
    /// job by `SCAN_BUDGET` slots; `run` calls it between batches. The time
    /// it takes goes into the control histogram, so a stall shows in
    /// `yardctl latency`.
    pub fn serve_control(&mut self) {
        if self.control.is_empty() && self.jobs.is_empty() {
            return;
        }
        let started = Instant::now();
        while let Ok(request) = self.control.try_recv() {
            self.answer(request);
        }
        let now = self.now_ns();
        if let Some(job) = self.jobs.front_mut() {
            if job.step(&self.flows, self.queue, now, SCAN_BUDGET) {
                self.jobs.pop_front();
            }
        }
        self.latency.record_control(elapsed_ns(started));
    }

    /// Whether flow-table jobs are still in progress (tests drive
    /// `serve_control` by hand until they are done).
    pub fn control_pending(&self) -> bool {
        !self.jobs.is_empty()
    }

    fn answer(&mut self, request: WorkerRequest) {
        // A requester that gave up has dropped its receiver; nothing to do.
        let _ = match request {
            WorkerRequest::Stats(reply) => {
                // Counters of the config the control thread reads, even
                // if no batch has run since it was published.
                let snapshot = self.config.load_full();
                self.fit_counters(&snapshot);
                if let Some(fast) = &self.path.fast {
                    self.path.stats.cache = fast.counters();
                }
                reply.send(self.path.stats.clone()).map_err(drop)
            }
            WorkerRequest::Flows(scan, reply) => {
                self.jobs.push_back(Job::flows(scan, reply));
                Ok(())
            }
            WorkerRequest::ActiveFlows(reply) => {
                self.jobs.push_back(Job::active(reply));
                Ok(())
            }
            WorkerRequest::Peek(keys, reply) => {
                self.jobs.push_back(Job::peek(keys, reply));
                Ok(())
            }
            WorkerRequest::Lookup(key, reply) => {
                let now = self.now_ns();
                let queue = self.queue;
                let found = self.flows.get_mut(&key, now).map(|entry| FlowRecord {
                    queue,
                    key,
                    entry: *entry,
                });
                reply.send(found).map_err(drop)
            }
            WorkerRequest::Latency(reply) => {
                reply.send(self.latency.snapshot(self.queue)).map_err(drop)
            }
        };
    }
}
