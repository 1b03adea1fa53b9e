//! The faults carried out on the engine's hosts: what the world leaves to the driver
//! ([`Testbed`]): power, daemons, links, VIPs removed by hand, reloads.

use cplb_core::config::ClusterConfig;
use cplb_core::time::Instant;

use super::Lan;
use super::host::{self, ETH0};
use crate::faults::Testbed;
use crate::observe::Observer;
use crate::world::{ApiServer, World};

impl Testbed for Lan {
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

    fn remove_vips(&mut self, world: &World, obs: &mut Observer, now: Instant, h: usize) {
        let vips: Vec<_> = std::mem::take(&mut self.hosts[h].vips_on_eth0).into_iter().collect();
        let local = world.clock(h).local(now);
        for vip in vips {
            obs.vip(h, vip, false);
            obs.note(now, format!("{} eth0: {vip} deleted by hand", self.hosts[h].spec.name));
            if let Some(d) = self.hosts[h].daemon.as_mut() {
                d.node.handle_address(local, ETH0, vip, false);
            }
        }
        self.pump(h, world, obs);
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
        let name = self.hosts[h].spec.name.clone();
        let cluster = world.files().cluster_addresses(h);
        let Some(config) = host::node_config(file, &self.hosts[h].spec, self.spec.vrrp, &cluster)
        else {
            obs.note(now, format!("{name} reload refused: no load balancing configured"));
            return;
        };
        let local = world.clock(h).local(now);
        let Some(d) = self.hosts[h].daemon.as_mut() else { return };
        let line = match d.node.handle_config(local, config) {
            Ok(r) => format!(
                "{name} reload: {} kept, {} added, {} removed",
                r.kept.len(),
                r.added.len(),
                r.removed.len()
            ),
            Err(e) => format!("{name} reload refused: {e}"),
        };
        obs.note(now, line);
        self.pump(h, world, obs);
    }
}
