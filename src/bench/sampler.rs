//! Sampling a server's memory while a job runs: its process tree's
//! resident set and the kernel's TCP buffers (machine-wide), on a thread
//! of its own, for the soak's curves and the overload's peak.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Samples the server's resident memory and the kernel's TCP buffers every
/// `every` on a thread of its own.
pub struct MemorySampler {
    samples: Arc<Mutex<Vec<[f64; 3]>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    pub fn start(pid: u32, started: Instant, every: Duration) -> MemorySampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let rss = crate::process::tree_rss_bytes(pid) as f64;
                    let tcp = (super::settle::sockets().tcp_mem_pages * super::settle::PAGE) as f64;
                    let at = started.elapsed().as_secs_f64();
                    samples.lock().unwrap().push([at, rss, tcp]);
                    std::thread::sleep(every);
                }
            })
        };
        MemorySampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest RSS sampled since `since` into the soak.
    pub fn peak_since(&self, since: Duration) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .filter(|[at, _, _]| *at >= since.as_secs_f64())
            .map(|[_, rss, _]| *rss as u64)
            .max()
            .unwrap_or(0)
    }

    /// The most TCP buffer memory the kernel had charged (machine-wide:
    /// the server's sockets and the clients') in any sample.
    pub fn peak_kernel_tcp(&self) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .map(|[_, _, tcp]| *tcp as u64)
            .max()
            .unwrap_or(0)
    }

    /// The RSS curve and the kernel's TCP memory curve.
    pub fn stop(mut self) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let rss = samples.iter().map(|&[at, rss, _]| [at, rss]).collect();
        let tcp = samples.iter().map(|&[at, _, tcp]| [at, tcp]).collect();
        (rss, tcp)
    }
}
