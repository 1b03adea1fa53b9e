//! SIGHUP, and an interface deleted and created again: the plan made anew and handed to
//! the node, which keeps unchanged instances untouched, and refuses a reload whole when what
//! was bound or opened at start (with privileges since dropped) would have to change.

use cplb_core::node::{self, NodeConfig};
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
        let config = self.node_config(driver, &file, &plan);
        if let Err(e) = driver.node.check_config(&config) {
            tracing::error!("reload refused: {e}; the running configuration stays");
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
        self.apply(driver, file, plan, config);
    }

    /// The node's configuration for a file and its plan.
    fn node_config(
        &self,
        driver: &Driver<LinuxKernel>,
        file: &FileConfig,
        plan: &plan::Plan,
    ) -> NodeConfig {
        plan::node_config(
            &file.keepalived,
            file.api_port,
            plan,
            self.local_vips.as_ref().map(|(i, _)| *i),
            super::host::balancing(&driver.kernel),
            &self.options.vrrp_tuning(),
        )
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
    fn apply(
        &mut self,
        driver: &mut Driver<LinuxKernel>,
        file: FileConfig,
        plan: plan::Plan,
        config: NodeConfig,
    ) {
        let now = driver.now();
        // The node says what it took up, or why not (a change that needs a restart, an
        // invalid set of instances), in its events.
        if driver.node.handle_config(now, config).is_ok() {
            for group in plan.groups.iter().filter(|g| !g.iface.up) {
                driver.node.handle_link(now, IfIndex(group.iface.index), false);
            }
            self.file = file;
            self.plan = plan;
        }
    }
}
