//! The scenario catalog, built into the binary so `cplb sim run NAME` works anywhere.

/// Name and text of every catalog scenario (`scenarios/catalog/NAME.yaml`).
#[rustfmt::skip]
pub const CATALOG: &[(&str, &str)] = &[
    ("seed-poweroff", include_str!("../catalog/seed-poweroff.yaml")),
    ("graceful-stop", include_str!("../catalog/graceful-stop.yaml")),
    ("apiserver-down", include_str!("../catalog/apiserver-down.yaml")),
    ("apiserver-hangs", include_str!("../catalog/apiserver-hangs.yaml")),
    ("master-partitioned", include_str!("../catalog/master-partitioned.yaml")),
    ("split-heal", include_str!("../catalog/split-heal.yaml")),
    ("one-way-advert-loss", include_str!("../catalog/one-way-advert-loss.yaml")),
    ("loss-30", include_str!("../catalog/loss-30.yaml")),
    ("jitter-reorder", include_str!("../catalog/jitter-reorder.yaml")),
    ("flapping-link", include_str!("../catalog/flapping-link.yaml")),
    ("rolling-restart", include_str!("../catalog/rolling-restart.yaml")),
    ("power-cycle-all", include_str!("../catalog/power-cycle-all.yaml")),
    ("crash-leaves-vip", include_str!("../catalog/crash-leaves-vip.yaml")),
    ("foreign-cluster-same-vrid", include_str!("../catalog/foreign-cluster-same-vrid.yaml")),
    ("ipvs-dr-two-instances", include_str!("../catalog/ipvs-dr-two-instances.yaml")),
    ("clock-drift", include_str!("../catalog/clock-drift.yaml")),
    ("ipv6-poweroff", include_str!("../catalog/ipv6-poweroff.yaml")),
    ("regress-ipv6-unicast", include_str!("../catalog/regress-ipv6-unicast.yaml")),
    ("regress-crash-ipvs-loop", include_str!("../catalog/regress-crash-ipvs-loop.yaml")),
    ("vip-removed-by-hand", include_str!("../catalog/vip-removed-by-hand.yaml")),
    ("kernel-refuses-vip", include_str!("../catalog/kernel-refuses-vip.yaml")),
    ("reload-same-and-added", include_str!("../catalog/reload-same-and-added.yaml")),
    ("regress-refusal-hold", include_str!("../catalog/regress-refusal-hold.yaml")),
];

/// The text of a catalog scenario.
pub fn get(name: &str) -> Option<&'static str> {
    CATALOG.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}
