//! Reading one entry of `keepalived.virtualServers`, with k0s's defaults and ranges.

use core::net::IpAddr;
use core::time::Duration;

use super::duration::parse_go_duration;
use super::k0s_format::field;
use super::model::{Cidr, LbAlgo, LbKind, VirtualServer};
use super::scalar::{Plain, resolve};
use super::walk::{Walker, join};
use super::yaml::NodeId;

const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_PERSISTENCE: u32 = 360;
const MAX_PERSISTENCE: i128 = 2_678_400;

/// One virtual server.
pub(super) fn virtual_server(w: &mut Walker<'_>, id: NodeId, path: &str) -> Option<VirtualServer> {
    let mut f = w.mapping(id, path)?;
    let ip_path = join(path, "ipAddress");
    let ip = match field(w, &mut f, "ipAddress") {
        Some(a) => w.text(a, &ip_path).and_then(|t| match t.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) if t.is_empty() => {
                w.error(&ip_path, a, "IPAddress must be defined".into());
                None
            }
            Err(_) => {
                let hint = if Cidr::parse(&t).is_some() {
                    " (a bare IP, without the prefix length)"
                } else {
                    ""
                };
                w.error(&ip_path, a, format!("invalid IP address {t:?}{hint}"));
                None
            }
        }),
        None => {
            w.error(
                &ip_path,
                id,
                "IPAddress must be defined: the VIP this virtual server listens on".into(),
            );
            None
        }
    };
    let delay = match field(w, &mut f, "delayLoop") {
        Some(d) => delay_loop(w, d, &join(path, "delayLoop")),
        None => Some(DEFAULT_DELAY_LOOP),
    };
    let algo = match field(w, &mut f, "lbAlgo") {
        Some(a) => w.one_of(a, &join(path, "lbAlgo"), "LBAlgo", &LbAlgo::ALL, |x| x.as_str()),
        None => Some(LbAlgo::Rr),
    };
    let kind = match field(w, &mut f, "lbKind") {
        Some(k) => w.one_of(k, &join(path, "lbKind"), "LBKind", &LbKind::ALL, |x| x.as_str()),
        None => Some(LbKind::Dr),
    };
    let persistence = match field(w, &mut f, "persistenceTimeoutSeconds") {
        Some(p) => {
            let pp = join(path, "persistenceTimeoutSeconds");
            match w.int(p, &pp)? {
                0 => Some(DEFAULT_PERSISTENCE),
                n @ 1..=MAX_PERSISTENCE => u32::try_from(n).ok(),
                n => {
                    w.error(&pp, p, format!("PersistenceTimeout must be in the range of 1-2678400 (31 days), got {n}"));
                    None
                }
            }
        }
        None => Some(DEFAULT_PERSISTENCE),
    };
    w.unknown_fields(
        &f,
        &["ipAddress", "delayLoop", "lbAlgo", "lbKind", "persistenceTimeoutSeconds"],
    );
    Some(VirtualServer {
        ip_address: ip?,
        delay_loop: delay?,
        lb_algo: algo?,
        lb_kind: kind?,
        persistence_timeout_seconds: persistence?,
    })
}

fn delay_loop(w: &mut Walker<'_>, id: NodeId, path: &str) -> Option<Duration> {
    let Some((raw, plain)) = w.document().scalar(id) else {
        let what = w.document().describe(id);
        w.error(
            path,
            id,
            format!("delayLoop must be a duration such as \"1m\" or \"30s\", got {what}"),
        );
        return None;
    };
    if plain && matches!(resolve(raw), Plain::Int(_) | Plain::Float(_)) {
        w.error(
            path,
            id,
            format!(
                "delayLoop must be a duration with a unit, such as \"{raw}s\"; got the number {raw}"
            ),
        );
        return None;
    }
    if plain && resolve(raw) == Plain::Null {
        return Some(DEFAULT_DELAY_LOOP);
    }
    let ns = match parse_go_duration(raw) {
        Ok(ns) => ns,
        Err(e) => {
            w.error(
                path,
                id,
                format!("delayLoop: {e} (units: ns, us, ms, s, m, h; e.g. \"1m\", \"1.5s\")"),
            );
            return None;
        }
    };
    if ns == 0 {
        return Some(DEFAULT_DELAY_LOOP);
    }
    let micros = ns / 1_000;
    if micros <= 0 {
        w.error(path, id, format!("DelayLoop must be positive, got {raw:?}"));
        return None;
    }
    if ns % 1_000 != 0 {
        w.warn(
            path,
            id,
            format!(
                "delayLoop {raw:?} is truncated to whole microseconds ({micros}µs), as k0s does"
            ),
        );
    }
    let delay = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
    if delay < crate::lb::MIN_HEALTH_INTERVAL {
        w.warn(
            path,
            id,
            format!("delayLoop {raw:?} is below 100ms: cplb health-checks at most every 100ms"),
        );
    }
    Some(delay)
}
