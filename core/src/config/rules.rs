//! The rules between fields of a configuration that reads well field by field: unique VRIDs
//! and VIPs, virtual servers on a VIP, `--single`, `externalAddress` with virtual servers.

use super::diagnostic::Severity;
use super::model::{ApiSpec, Cplb, VirtualServer, VrrpInstance};
use super::walk::{Walker, join};
use super::yaml::{Mark, NodeId};

/// Rules that compare instances: unique VRIDs (explicit or automatic) and unique VIPs.
pub(super) fn instance_rules(w: &mut Walker<'_>, instances: &[(VrrpInstance, NodeId)], path: &str) {
    for (i, (inst, id)) in instances.iter().enumerate() {
        let earlier = instances.get(..i).unwrap_or_default();
        if let Some(j) =
            earlier.iter().position(|(o, _)| o.virtual_router_id == inst.virtual_router_id)
        {
            let vrid = inst.virtual_router_id;
            w.error(
                &format!("{path}[{i}].virtualRouterID"),
                *id,
                format!("virtualRouterID {vrid} is also used by vrrpInstances[{j}]: every instance needs its own VRID (an unset one is 51 + its index)"),
            );
        }
        for vip in &inst.virtual_ips {
            if let Some(j) =
                earlier.iter().position(|(o, _)| o.virtual_ips.iter().any(|v| v.addr == vip.addr))
            {
                w.error(
                    &format!("{path}[{i}].virtualIPs"),
                    *id,
                    format!(
                        "VIP {} is also in vrrpInstances[{j}]: two instances would fight over it",
                        vip.addr
                    ),
                );
            }
        }
    }
}

/// Rules for virtual servers against the instances: each listens on a VIP, once.
pub(super) fn server_rules(
    w: &mut Walker<'_>,
    servers: &[(VirtualServer, NodeId)],
    instances: &[(VrrpInstance, NodeId)],
    path: &str,
) {
    for (i, (vs, id)) in servers.iter().enumerate() {
        let ip = vs.ip_address;
        if !instances.iter().any(|(inst, _)| inst.virtual_ips.iter().any(|v| v.addr == ip)) {
            let vips: Vec<String> = instances
                .iter()
                .flat_map(|(inst, _)| inst.virtual_ips.iter().map(|v| v.addr.to_string()))
                .collect();
            let known = if vips.is_empty() {
                "there are no VIPs".to_owned()
            } else {
                format!("the VIPs are {}", vips.join(", "))
            };
            w.error(&format!("{path}[{i}].ipAddress"), *id, format!("{ip} is not one of the VRRP instances' virtualIPs ({known}): no node would own it"));
        }
        if servers.get(..i).unwrap_or_default().iter().any(|(o, _)| o.ip_address == ip) {
            w.error(
                &format!("{path}[{i}].ipAddress"),
                *id,
                format!("a virtual server for {ip} is already defined"),
            );
        }
    }
}

/// Rules across `spec`: `--single`, and externalAddress with virtual servers.
pub(super) fn cross_spec_rules(
    w: &mut Walker<'_>,
    cplb: &Cplb,
    api: &ApiSpec,
    cplb_path: &str,
    mark: Mark,
    single: bool,
    spec_path: &str,
) {
    if single && cplb.enabled {
        let message =
            "control plane load balancing cannot be used in a single-node cluster (--single)"
                .into();
        w.report(Severity::Error, &join(cplb_path, "enabled"), mark, message);
    }
    let has_servers = cplb.keepalived.as_ref().is_some_and(|k| !k.virtual_servers.is_empty());
    if has_servers && !api.external_address.is_empty() {
        let message = format!(
            "{spec_path}.api.externalAddress ({}) and virtual servers cannot be used together: remove one",
            api.external_address
        );
        w.report(Severity::Error, &join(cplb_path, "keepalived.virtualServers"), mark, message);
    }
}
