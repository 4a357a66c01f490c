//! The process metrics, on native runtimes only: a WebAssembly isolate has no process to read.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The process metrics every Prometheus client library exports (CPU, memory, file
/// descriptors, threads, start time), read by `metrics-process` on each scrape. Native
/// runtimes only: a WebAssembly isolate has no process to read.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// The process families, as `# TYPE` names them.
pub(super) const PROCESS_FAMILIES: [&str; 8] = [
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let now = metrics_process::collector::collect();
        if let Some(cpu) = now.cpu_seconds_total {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "sizes and counts far below 2^53"
        )]
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors",
                now.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (0: unlimited)",
                now.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                now.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes (0: unlimited)",
                now.virtual_memory_max_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                now.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                now.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                now.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value as f64);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}
