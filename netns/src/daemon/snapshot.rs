//! The status snapshot (`cplb status`, metrics, SIGUSR1), built from the node on demand.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use cplb_core::config::LoadBalancerMode;
use cplb_core::vrrp::State;

use super::{Daemon, Driver};
use crate::kernel::linux::LinuxKernel;
use crate::status::{
    DataplaneStatus, InstanceStatus, RefusalStatus, ServerStatus, ServiceStatus, Snapshot,
};

/// The daemon now.
pub(super) fn build(daemon: &Daemon, driver: &Driver<LinuxKernel>) -> Snapshot {
    let node = &driver.node;
    let router = node.router();
    let interface = |index: u32| {
        daemon
            .plan
            .groups
            .iter()
            .find(|g| g.iface.index == index)
            .map_or_else(|| index.to_string(), |g| g.iface.name.clone())
    };
    let instances = node
        .instances()
        .map(|(id, cfg)| {
            let stats = router.stats(id).cloned().unwrap_or_default();
            InstanceStatus {
                name: cfg.name.clone(),
                vrid: cfg.vrid.get(),
                interface: interface(cfg.ifindex.0),
                state: router.state(id).map_or("unknown", State::as_str).to_lowercase(),
                priority: router.priority(id).map_or(0, |p| p.0),
                vips: cfg
                    .virtual_ips
                    .iter()
                    .map(|v| format!("{}/{}", v.addr, v.prefix_len))
                    .collect(),
                master: router.master(id).map(|m| m.to_string()),
                transitions: driver.transitions.get(&id).copied().unwrap_or(0),
                adverts_sent: stats.adverts_sent,
                adverts_received: stats.adverts_received,
                became_master: stats.became_master,
                priority_zero_sent: stats.priority_zero_sent,
                priority_zero_received: stats.priority_zero_received,
                dropped: stats.dropped.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect(),
                takeover_seconds: driver.vip_clock.takeovers(id),
                vip_unheld_s: driver.vip_clock.unheld_s(id),
            }
        })
        .collect();
    let d = node.desired();
    let mode = daemon.file.keepalived.mode();
    let kernel = match (mode, driver.kernel.ipvs.is_some()) {
        (LoadBalancerMode::UserspaceProxy, _) => "nftables",
        (LoadBalancerMode::Ipvs, true) => "ipvs",
        (LoadBalancerMode::Ipvs, false) => "nftables-nat",
        (LoadBalancerMode::VipOnly, _) => "none",
    };
    let stats = &daemon.proxy_stats;
    let now = driver.now();
    Snapshot {
        pid: std::process::id(),
        uptime_s: driver.started.elapsed().as_secs_f64(),
        address: daemon.plan.own_api.ip().to_string(),
        instances,
        real_servers: node
            .config()
            .real_servers
            .iter()
            .map(|s| ServerStatus {
                address: s.to_string(),
                healthy: node.health().is_healthy(*s),
                local: *s == node.config().own_api,
            })
            .collect(),
        dataplane: DataplaneStatus {
            mode: match mode {
                LoadBalancerMode::UserspaceProxy => "userspace-proxy",
                LoadBalancerMode::Ipvs => "ipvs",
                LoadBalancerMode::VipOnly => "vip-only",
            }
            .to_owned(),
            kernel: kernel.to_owned(),
            proxy_port: d.proxy_port,
            proxy_backends: d.proxy_backends.iter().map(ToString::to_string).collect(),
            redirects: d.redirects.iter().map(ToString::to_string).collect(),
            services: d
                .services
                .iter()
                .map(|s| ServiceStatus {
                    address: SocketAddr::new(s.key.vip, s.key.port).to_string(),
                    fwmark: s.fwmark,
                    scheduler: s.algo.as_str().to_owned(),
                    forwarding: s.forwarding.as_str().to_owned(),
                    persistence_s: s.persistence_secs,
                    real_servers: s
                        .real_servers
                        .iter()
                        .map(|r| format!("{} {}", r.addr, r.weight))
                        .collect(),
                })
                .collect(),
            local_vips: d.local_vips.iter().map(ToString::to_string).collect(),
            loop_guards: d
                .loop_guards
                .iter()
                .map(|g| {
                    let from: Vec<String> =
                        g.real_servers.iter().map(ToString::to_string).collect();
                    let service = SocketAddr::new(g.service.vip, g.service.port);
                    format!("{service} mark {} unless from {}", g.fwmark, from.join(", "))
                })
                .collect(),
            local_vip_interface: daemon.local_vips.as_ref().map(|(_, n)| n.clone()),
            applied: node.settled(),
            proxy_accepted: stats.accepted.load(Ordering::Relaxed),
            proxy_forwarded: stats.forwarded.load(Ordering::Relaxed),
            proxy_dial_failures: stats.dial_failures.load(Ordering::Relaxed),
            proxy_unserved: stats.unserved.load(Ordering::Relaxed),
            proxy_refused: stats.refused.load(Ordering::Relaxed),
            proxy_active: stats.active.load(Ordering::Relaxed),
            proxy_idle_closed: stats.idle_closed.load(Ordering::Relaxed),
            proxy_max_connections: stats.max_connections.load(Ordering::Relaxed),
        },
        unrouted_dropped: router
            .unrouted_stats()
            .dropped
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect(),
        kernel_refusals: node
            .refusals()
            .into_iter()
            .map(|(object, r)| RefusalStatus {
                object: object.to_string(),
                kind: object.kind().to_owned(),
                reason: r.reason,
                attempts: r.attempts,
                since_s: now.saturating_duration_since(r.since).as_secs_f64(),
            })
            .collect(),
        // Filled in by the status socket and the metrics endpoint (serve.rs).
        process: None,
        endpoints: None,
    }
}
