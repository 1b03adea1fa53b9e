//! The faults carried out on the engine's hosts: what the world leaves to the driver
//! ([`Testbed`]): power, daemons, links, VIPs removed by hand, reloads.

use cplb_core::config::ClusterConfig;
use cplb_core::time::Instant;
use cplb_core::vrrp::VirtualIp;

use super::Lan;
use super::host::{self, ETH0};
use crate::faults::Testbed;
use crate::observe::Observer;
use crate::views::HostView;
use crate::world::{ApiServer, World};

impl Testbed for Lan {
    fn views(&self, world: &World) -> Vec<HostView> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_controller())
            .map(|(i, h)| HostView {
                name: h.spec.name.clone(),
                powered: world.network().powered(i),
                address: h.spec.address,
                prefix_len: h.spec.prefix_len,
                eth0_vips: h.vips_on_eth0.iter().map(|(v, p)| (*v, *p)).collect(),
                local_vips: h
                    .dataplane
                    .local_vips
                    .iter()
                    .map(|v| (*v, if v.is_ipv6() { 128 } else { 32 }))
                    .collect(),
                services: h.dataplane.services.clone(),
                loop_guards: h.dataplane.loop_guards.clone(),
                proxy: h.dataplane.proxy_port.map(|p| (p, h.dataplane.proxy_backends.clone())),
            })
            .collect()
    }

    fn power_on(&mut self, world: &World, obs: &mut Observer, _now: Instant, h: usize) {
        if self.hosts[h].is_controller() {
            self.start_daemon(h, world, obs);
        }
    }

    fn power_off(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        self.hosts[h].power_off();
    }

    fn stop(&mut self, world: &World, obs: &mut Observer, now: Instant, h: usize) {
        let local = world.clock(h).local(now);
        if let Some(d) = self.hosts[h].daemon.as_mut() {
            // cplbd resigns and removes every address and rule it set on SIGTERM.
            d.node.shutdown(local);
            self.pump(h, world, obs);
            self.hosts[h].daemon_gone();
            obs.daemon_gone(now, h);
        }
    }

    fn start(&mut self, world: &World, obs: &mut Observer, _now: Instant, h: usize) {
        if self.hosts[h].daemon.is_none() && self.hosts[h].is_controller() {
            self.start_daemon(h, world, obs);
        }
    }

    fn crash(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        self.hosts[h].daemon_gone();
    }

    fn network_changed(&mut self, _world: &World, _obs: &mut Observer, _now: Instant) {}

    fn link(&mut self, world: &World, obs: &mut Observer, now: Instant, h: usize, up: bool) {
        let local = world.clock(h).local(now);
        if let Some(d) = self.hosts[h].daemon.as_mut() {
            d.node.handle_link(local, ETH0, up);
            self.pump(h, world, obs);
        }
    }

    fn api_server(&mut self, _: &World, _: &mut Observer, _: Instant, _: usize, _: ApiServer) {}

    fn clock_changed(&mut self, world: &World, obs: &mut Observer, _now: Instant, h: usize) {
        self.pump(h, world, obs);
    }

    fn remove_vips(&mut self, _world: &World, _now: Instant, h: usize) -> Vec<VirtualIp> {
        let vips = std::mem::take(&mut self.hosts[h].vips_on_eth0);
        vips.into_iter().map(|(addr, prefix_len)| VirtualIp { addr, prefix_len }).collect()
    }

    fn vips_removed(
        &mut self,
        world: &World,
        obs: &mut Observer,
        now: Instant,
        h: usize,
        vips: &[VirtualIp],
    ) {
        let local = world.clock(h).local(now);
        if let Some(d) = self.hosts[h].daemon.as_mut() {
            for vip in vips {
                d.node.handle_address(local, ETH0, vip.addr, false);
            }
            self.pump(h, world, obs);
        }
    }

    fn refuse_kernel(&mut self, _: &World, _: &mut Observer, _: Instant, _: usize) {}

    fn reload(
        &mut self,
        world: &World,
        obs: &mut Observer,
        now: Instant,
        h: usize,
        file: &ClusterConfig,
    ) {
        let cluster = world.files().cluster_addresses(h);
        let config = host::node_config(file, &self.hosts[h].spec, self.spec.vrrp, &cluster);
        let local = world.clock(h).local(now);
        if let (Some(config), Some(d)) = (config, self.hosts[h].daemon.as_mut()) {
            // The node tells how it took the reload up, as an event.
            let _ = d.node.handle_config(local, config);
            self.pump(h, world, obs);
        }
    }
}
