//! Reading one entry of `keepalived.vrrpInstances`, with k0s's defaults and ranges.

use core::net::IpAddr;

use super::k0s_format::field;
use super::model::{Cidr, VrrpInstance};
use super::walk::{Fields, Walker, join};
use super::yaml::NodeId;

const DEFAULT_ADDRESS_LABEL: u32 = 10_000;
const FIRST_AUTO_VRID: usize = 51;

/// The instance at `index` of the list (its automatic VRID is 51 + index).
pub(super) fn instance(
    w: &mut Walker<'_>,
    id: NodeId,
    path: &str,
    index: usize,
) -> Option<VrrpInstance> {
    let mut f = w.mapping(id, path)?;
    let vips = virtual_ips(w, &mut f, id, path);
    let interface = match field(w, &mut f, "interface") {
        Some(i) => w.text(i, &join(path, "interface")),
        None => Some(String::new()),
    };
    let vrid = vrid(w, &mut f, id, path, index);
    let advert = match field(w, &mut f, "advertIntervalSeconds") {
        Some(a) => {
            let p = join(path, "advertIntervalSeconds");
            match w.int(a, &p)? {
                0 => Some(1),
                n @ 1..=255 => u8::try_from(n).ok(),
                n => {
                    w.error(&p, a, format!("advertIntervalSeconds must be 1 to 255 (VRRPv2 carries whole seconds in 8 bits), got {n}"));
                    None
                }
            }
        }
        None => Some(1),
    };
    let auth = auth_pass(w, &mut f, id, path);
    let (peers, source) = unicast(w, &mut f, path);
    let label = match field(w, &mut f, "addressLabel") {
        Some(l) => {
            let p = join(path, "addressLabel");
            match w.int(l, &p)? {
                0 => Some(DEFAULT_ADDRESS_LABEL),
                0xffff_ffff => {
                    w.error(&p, l, "AddressLabel 0xffffffff is reserved".into());
                    None
                }
                n => match u32::try_from(n) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let message = format!(
                            "addressLabel must be 0 to 4294967294 (an RFC 6724 label), got {n}"
                        );
                        w.error(&p, l, message);
                        None
                    }
                },
            }
        }
        None => Some(DEFAULT_ADDRESS_LABEL),
    };
    w.unknown_fields(
        &f,
        &[
            "virtualIPs",
            "interface",
            "virtualRouterID",
            "advertIntervalSeconds",
            "authPass",
            "unicastPeers",
            "unicastSourceIP",
            "addressLabel",
        ],
    );
    Some(VrrpInstance {
        virtual_ips: vips?,
        interface: interface?,
        virtual_router_id: vrid?,
        advert_interval_seconds: advert?,
        auth_pass: auth?,
        unicast_peers: peers?,
        unicast_source_ip: source?,
        address_label: label?,
    })
}

fn virtual_ips(w: &mut Walker<'_>, f: &mut Fields, id: NodeId, path: &str) -> Option<Vec<Cidr>> {
    let p = join(path, "virtualIPs");
    let Some(list) = field(w, f, "virtualIPs") else {
        w.error(&p, id, "VirtualIPs must be defined: give at least one address with its prefix, e.g. [\"192.168.122.200/24\"]".into());
        return None;
    };
    let items = w.text_list(list, &p)?;
    if items.is_empty() {
        w.error(&p, list, "VirtualIPs must be defined: the list is empty".into());
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, (text, item)) in items.iter().enumerate() {
        match Cidr::parse(text) {
            Some(c) => out.push(c),
            None => {
                let hint = if text.parse::<IpAddr>().is_ok() {
                    format!(" (add the prefix length, e.g. {text}/24)")
                } else {
                    String::new()
                };
                w.error(
                    &format!("{p}[{i}]"),
                    *item,
                    format!("VirtualIPs must be a CIDR (address/prefix). Got: {text}{hint}"),
                );
                ok = false;
            }
        }
    }
    if ok && out.iter().any(|c| c.addr.is_ipv4()) && out.iter().any(|c| c.addr.is_ipv6()) {
        w.warn(&p, list, "mixes IPv4 and IPv6 VIPs in one instance: VRRP runs one address family per instance; use one instance per family".into());
    }
    ok.then_some(out)
}

fn vrid(w: &mut Walker<'_>, f: &mut Fields, id: NodeId, path: &str, index: usize) -> Option<u8> {
    let p = join(path, "virtualRouterID");
    let explicit = match field(w, f, "virtualRouterID") {
        Some(v) => match w.int(v, &p)? {
            0 => None,
            n @ 1..=255 => u8::try_from(n).ok(),
            n => {
                w.error(&p, v, format!("VirtualRouterID must be in the range of 1-255, got {n}"));
                return None;
            }
        },
        None => None,
    };
    match explicit {
        Some(v) => Some(v),
        None => match u8::try_from(FIRST_AUTO_VRID + index) {
            Ok(v) => Some(v),
            Err(_) => {
                w.error(&p, id, "automatic virtualRouterIDs exceeded, specify them explicitly (51 + index passes 255)".into());
                None
            }
        },
    }
}

fn auth_pass(w: &mut Walker<'_>, f: &mut Fields, id: NodeId, path: &str) -> Option<String> {
    let p = join(path, "authPass");
    let Some(a) = field(w, f, "authPass") else {
        w.error(&p, id, "AuthPass must be defined: the VRRP password, 1 to 8 characters, the same on every controller".into());
        return None;
    };
    let pass = w.text(a, &p)?;
    if pass.is_empty() {
        w.error(&p, a, "AuthPass must be defined: it is empty".into());
        return None;
    }
    if pass.len() > 8 {
        w.error(
            &p,
            a,
            format!(
                "AuthPass must be 8 characters or less: got {} bytes; VRRPv2 carries only 8",
                pass.len()
            ),
        );
        return None;
    }
    Some(pass)
}

fn unicast(
    w: &mut Walker<'_>,
    f: &mut Fields,
    path: &str,
) -> (Option<Vec<IpAddr>>, Option<Option<IpAddr>>) {
    let peers_path = join(path, "unicastPeers");
    let source_path = join(path, "unicastSourceIP");
    let peers_id = field(w, f, "unicastPeers");
    let source_id = field(w, f, "unicastSourceIP");
    let source_text = match source_id {
        Some(s) => match w.text(s, &source_path) {
            Some(t) => Some((t, s)),
            None => return (None, None),
        },
        None => None,
    };
    let items = match peers_id {
        Some(list) => match w.text_list(list, &peers_path) {
            Some(items) => items,
            None => return (None, None),
        },
        None => Vec::new(),
    };
    let mut peers = Vec::new();
    let mut ok = true;
    for (i, (text, item)) in items.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) if peers.contains(&ip) => {
                w.error(
                    &format!("{peers_path}[{i}]"),
                    *item,
                    format!("unicast peer {ip} is listed twice"),
                );
                ok = false;
            }
            Ok(ip) => peers.push(ip),
            Err(_) => {
                w.error(&format!("{peers_path}[{i}]"), *item, format!("UnicastPeers require valid IP addresses: {text:?} is not one (no names, no prefix)"));
                ok = false;
            }
        }
    }
    let source = match source_text {
        Some((t, _)) if t.is_empty() => None,
        Some((t, s)) => {
            match t.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) if peers.is_empty() => {
                    w.warn(
                        &source_path,
                        s,
                        format!("{t:?} is not an IP address; it is ignored without unicastPeers"),
                    );
                    None
                }
                Err(_) => {
                    w.error(&source_path, s, format!("UnicastPeers require a valid UnicastSourceIP: {t:?} is not an IP address"));
                    return (None, None);
                }
            }
        }
        None => None,
    };
    if !peers.is_empty() {
        match (source, source_id.or(peers_id)) {
            (None, Some(at)) => {
                w.error(&source_path, at, "UnicastPeers require a valid UnicastSourceIP: set it to this node's own address on the interface".into());
                ok = false;
            }
            (Some(src), Some(at)) => {
                if peers.contains(&src) {
                    w.error(&peers_path, at, format!("UnicastPeers must not contain the UnicastSourceIP ({src}): list the other controllers only"));
                    ok = false;
                }
                if let Some(p) = peers.iter().find(|p| p.is_ipv4() != src.is_ipv4()) {
                    w.error(&peers_path, at, format!("unicast peer {p} and unicastSourceIP {src} are of different address families"));
                    ok = false;
                }
            }
            _ => {}
        }
    } else if let (Some(_), Some(s)) = (source, source_id) {
        w.warn(
            &source_path,
            s,
            "unicastSourceIP has no effect without unicastPeers (multicast is used)".into(),
        );
    }
    (ok.then_some(peers), Some(source))
}
