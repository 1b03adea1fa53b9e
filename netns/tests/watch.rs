//! The rtnetlink watcher live, in a network namespace of our own: a link set down and up,
//! its carrier lost with its veth peer, addresses added and removed, the link deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cplb_lab::topology;
use cplb_netns::kernel::watch::{KernelEvent, Watcher};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace, deleted on drop (also when the test fails).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        assert!(topology::is_root(), "needs root (creates network namespaces)");
        let ns = Self(format!("cplbt-{tag}-{}", std::process::id()));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        ip(&["netns", "add", &ns.0]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A [`Watcher`] running on a thread inside a namespace, its events sent over a channel.
/// Dropping it stops the thread, and with it the socket that holds the namespace.
struct Watching {
    events: mpsc::Receiver<KernelEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<()>>>,
}

impl Watching {
    fn start(ns: &Netns) -> Self {
        let (tx, events) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = topology::in_namespace(&ns.0, move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let rt = rt.expect("a tokio runtime");
            rt.block_on(async move {
                let mut watcher = Watcher::open().expect("subscribing");
                let _ = ready_tx.send(());
                while !stopping.load(Ordering::SeqCst) {
                    let next = tokio::time::timeout(Duration::from_millis(50), watcher.next());
                    match next.await {
                        Ok(Some(event)) => {
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => {}
                    }
                }
            });
        })
        .expect("entering the namespace");
        ready.recv_timeout(Duration::from_secs(10)).expect("the watcher subscribed");
        Self { events, stop, thread: Some(thread) }
    }

    /// Waits for an event `wanted` accepts, skipping others; panics after 10 s, saying
    /// what came instead.
    fn wait(&self, what: &str, wanted: impl Fn(&KernelEvent) -> bool) -> KernelEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if wanted(&event) => return event,
                Ok(event) => seen.push(event),
                Err(_) => panic!("no event {what} within 10 s; saw {seen:#?}"),
            }
        }
    }

    fn wait_link(&self, name: &str, up: bool) -> u32 {
        let what = format!("{name} up={up}");
        match self.wait(
            &what,
            |e| matches!(e, KernelEvent::Link { name: n, up: u, .. } if n == name && *u == up),
        ) {
            KernelEvent::Link { index, .. } => index,
            _ => unreachable!(),
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
#[ignore = "needs root: creates a network namespace and a veth pair"]
fn live_link_down_carrier_loss_and_addresses_are_reported() {
    // The watcher is dropped first (declared last), then the namespace.
    let ns = Netns::new("watch");
    let watching = Watching::start(&ns);

    ns.ip(&["link", "add", "wa0", "type", "veth", "peer", "name", "wb0"]);
    ns.ip(&["link", "set", "wa0", "up"]);
    ns.ip(&["link", "set", "wb0", "up"]);
    let index = watching.wait_link("wa0", true);

    // Administratively down, then up again.
    ns.ip(&["link", "set", "wa0", "down"]);
    assert_eq!(watching.wait_link("wa0", false), index);
    ns.ip(&["link", "set", "wa0", "up"]);
    watching.wait_link("wa0", true);

    // Still set up, but the carrier goes with the peer.
    ns.ip(&["link", "set", "wb0", "down"]);
    watching.wait_link("wa0", false);
    ns.ip(&["link", "set", "wb0", "up"]);
    watching.wait_link("wa0", true);

    for (text, addr, prefix_len) in
        [("10.200.7.1/24", "10.200.7.1", 24), ("fd00:7::1/64", "fd00:7::1", 64)]
    {
        let addr: IpAddr = addr.parse().unwrap();
        let event = |present| KernelEvent::Address { index, addr, prefix_len, present };
        ns.ip(&["addr", "add", text, "dev", "wa0", "nodad"]);
        watching.wait(&format!("{text} added"), |e| *e == event(true));
        ns.ip(&["addr", "del", text, "dev", "wa0"]);
        watching.wait(&format!("{text} removed"), |e| *e == event(false));
    }

    ns.ip(&["link", "del", "wa0"]);
    let gone = KernelEvent::LinkRemoved { index, name: "wa0".into() };
    watching.wait("wa0 removed", |e| *e == gone);
}
