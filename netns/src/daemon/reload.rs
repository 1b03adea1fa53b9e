//! SIGHUP, and an interface deleted and created again: the plan made anew and handed to
//! the node, which keeps unchanged instances untouched. What was bound or opened at start
//! with privileges since dropped cannot change without a restart, and such a reload is
//! refused whole.

use cplb_core::config::{Keepalived, LbKind, LoadBalancerMode};
use cplb_core::node;
use cplb_core::vrrp::IfIndex;

use super::config::{self, FileConfig};
use super::context::Daemon;
use super::driver::Driver;
use super::{plan, receive};
use crate::kernel::linux::LinuxKernel;

impl Daemon {
    /// Reads the file again (`recreated: None`) or follows an interface created again by
    /// name, works out the plan and replaces the node's configuration. An invalid file or
    /// a plan that cannot be made changes nothing.
    pub(super) async fn reload(
        &mut self,
        driver: &mut Driver<LinuxKernel>,
        recreated: Option<&str>,
    ) {
        let file = match recreated {
            Some(name) => {
                if self.replan.is_none() {
                    tracing::info!(interface = name, "interface created again: following it");
                }
                self.file.clone()
            }
            None => {
                tracing::info!(config = %self.options.config.display(), "SIGHUP: reloading");
                match config::on_reload(&self.options.config, self.options.single) {
                    Some(f) => f,
                    None => return,
                }
            }
        };
        let made = plan::make(
            &file.keepalived,
            file.api_port,
            &self.options.real_servers,
            &driver.kernel.netlink,
            node::API_TRACKER,
        )
        .await;
        let plan = match made {
            Ok(p) => p,
            Err(e) if recreated.is_some() => {
                if self.replan.is_none() {
                    tracing::warn!(error = %e, "the interface is back but not usable yet; waiting");
                }
                self.replan = recreated.map(str::to_owned);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        self.replan = None;
        let ready = self.local_vips.is_some() || driver.kernel.ipvs.is_none();
        if let Some(why) = needs_restart(&self.file.keepalived, &file.keepalived, ready) {
            tracing::error!(
                "reload refused: {why} needs a restart; the running configuration stays"
            );
            return;
        }
        if let Some(name) = recreated {
            self.forget_interface(&mut driver.kernel, name);
        }
        if let Err(e) = receive::open_sockets(&mut driver.kernel, &plan) {
            tracing::error!(error = %e, "reload refused: the running configuration stays");
            return;
        }
        self.follow_sockets(&driver.kernel);
        self.apply(driver, file, plan);
    }

    /// Closes the sockets of an interface that was deleted (they are opened again on the
    /// new one).
    fn forget_interface(&self, kernel: &mut LinuxKernel, name: &str) {
        let gone: Vec<IfIndex> = self
            .plan
            .groups
            .iter()
            .filter(|g| g.iface.name == name)
            .map(|g| IfIndex(g.iface.index))
            .collect();
        kernel.sockets.retain(|(i, _), _| !gone.contains(i));
        kernel.announcers.retain(|i, _| !gone.contains(i));
    }

    /// Hands the new configuration to the node; it becomes the daemon's when the node
    /// takes it.
    fn apply(&mut self, driver: &mut Driver<LinuxKernel>, file: FileConfig, plan: plan::Plan) {
        let config = plan::node_config(
            &file.keepalived,
            file.api_port,
            &plan,
            self.local_vips.as_ref().map(|(i, _)| *i),
            super::host::balancing(&driver.kernel),
            &self.options.vrrp_tuning(),
        );
        let now = driver.now();
        match driver.node.handle_config(now, config) {
            Ok(r) => {
                tracing::info!(
                    kept = r.kept.len(),
                    added = r.added.len(),
                    removed = r.removed.len(),
                    "configuration reloaded"
                );
                for group in plan.groups.iter().filter(|g| !g.iface.up) {
                    driver.node.handle_link(now, IfIndex(group.iface.index), false);
                }
                self.file = file;
                self.plan = plan;
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running configuration stays")
            }
        }
    }
}

/// Why a new configuration cannot be taken up without a restart, if it cannot: the proxy's
/// listener and the data plane were set up at start.
fn needs_restart(running: &Keepalived, new: &Keepalived, local_vips_ready: bool) -> Option<String> {
    if new.mode() != running.mode() {
        return Some(format!(
            "changing the load balancer mode ({:?} to {:?})",
            running.mode(),
            new.mode()
        ));
    }
    if new.mode() == LoadBalancerMode::UserspaceProxy
        && new.user_space_proxy_bind_port != running.user_space_proxy_bind_port
    {
        return Some(format!(
            "moving userSpaceProxyBindPort ({} to {})",
            running.user_space_proxy_bind_port, new.user_space_proxy_bind_port
        ));
    }
    let dr = new.virtual_servers.iter().any(|v| v.lb_kind == LbKind::Dr);
    if new.mode() == LoadBalancerMode::Ipvs && dr && !local_vips_ready {
        return Some("a first direct-routing virtual server (dummyvip0)".to_owned());
    }
    None
}
