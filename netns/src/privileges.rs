//! Dropping every capability but the two the daemon needs once it runs: CAP_NET_ADMIN
//! (addresses, nftables, IPVS) and CAP_NET_RAW (VRRP and AF_PACKET sockets).
//!
//! Capabilities belong to threads. The daemon drops them on its only thread before the
//! runtime starts any other, so every thread it ever has runs with the reduced sets.

use caps::{CapSet, Capability, CapsHashSet};

/// Why the capabilities could not be reduced.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A capability the daemon needs is not permitted to it.
    #[error(
        "{0} is not permitted: run cplbd as root, or give it CAP_NET_ADMIN and CAP_NET_RAW (e.g. AmbientCapabilities= in its systemd unit)"
    )]
    Missing(Capability),
    /// A step failed.
    #[error("{what}: {error}")]
    Step {
        /// The step.
        what: String,
        /// What the system said.
        error: String,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    let what = what.into();
    move |e| PrivilegeError::Step { what, error: e.to_string() }
}

/// What the daemon keeps.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Reduces the bounding, inheritable, ambient, permitted and effective sets to [`KEPT`],
/// and forbids regaining privileges through exec.
///
/// Started unprivileged with only [`KEPT`] as ambient capabilities (`setpriv`, or the
/// shipped systemd unit), there is no CAP_SETPCAP to change the bounding set with; the
/// bounding set then stays as it is, which is harmless: it only limits what an exec could
/// gain, and no-new-privileges forbids that.
pub fn drop_to_network_only() -> Result<(), PrivilegeError> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(step("reading the permitted capabilities"))?;
    if let Some(missing) = KEPT.into_iter().find(|c| !permitted.contains(c)) {
        return Err(PrivilegeError::Missing(missing));
    }
    // The bounding set first: changing it needs CAP_SETPCAP, which goes last.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(step(format!("dropping {cap} from the bounding set")))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(step("clearing ambient capabilities"))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(step("clearing inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(step("setting effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(step("setting permitted capabilities"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| PrivilegeError::Step {
        what: "PR_SET_NO_NEW_PRIVS".into(),
        error: e.to_string(),
    })?;
    Ok(())
}

/// The effective set as the kernel reports it (`CapEff` of /proc/self/status), for logs.
pub fn effective() -> Vec<String> {
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)
        .map(|set| set.into_iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
