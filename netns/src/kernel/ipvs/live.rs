//! Against the real kernel, in a network namespace of its own. Skips (and says why) when
//! not root or when the kernel has no IPVS. The qemu guest test runs these (by the path
//! `kernel::ipvs::live::`) where the kernel has IPVS.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::fs::File;
use std::process::Command;

use cplb_core::config::{LbAlgo, LbKind};
use cplb_core::lb::{Change, FWMARK_BASE, RealServer, ServiceKey, ServiceSpec};
use genetlink::GenetlinkError;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::GenlFamily;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::{AsyncSocket, TokioSocket};
use nix::sched::{CloneFlags, setns};

use super::{ENOENT, Ipvs, IpvsError, Listing, Outcome, ServiceRef};

/// A named network namespace, deleted on drop (also when the test panics).
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn create() -> Result<Self, String> {
        let name = format!("cplb-ipvs-test-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("ip netns add: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("ip netns add {name}: {}", stderr.trim()));
        }
        let netns = Self { name };
        // The kernel refuses a real server it has no route to (EINVAL, found in the
        // guest): the test's servers are on the namespace's own network.
        for args in [
            ["link", "set", "lo", "up"].as_slice(),
            ["addr", "add", "192.0.2.1/24", "dev", "lo"].as_slice(),
        ] {
            let out = Command::new("ip")
                .args(["-n", &netns.name])
                .args(args)
                .output()
                .map_err(|e| format!("ip {args:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        Ok(netns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The driver's whole life with a kernel: listing, reconciling, strays and what is not
/// cplb's, the clean-up of a predecessor's services, every scheduler and forwarding kind.
/// Over sockets of type `S`: the kernel's, or the fake kernel's (see [`super::fake`]).
pub(super) async fn scenario<S: AsyncSocket + Send + 'static>() {
    let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
    let key = ServiceKey { vip, port: 6443 };
    let rs = |last| RealServer { addr: SocketAddr::from(([192, 0, 2, last], 6443)), weight: 1 };
    let spec = ServiceSpec {
        key,
        fwmark: FWMARK_BASE,
        algo: LbAlgo::Rr,
        forwarding: LbKind::Dr,
        persistence_secs: 360,
        real_servers: vec![rs(11), rs(12)],
    };
    let mut ipvs = Ipvs::open_on::<S>().await.unwrap();
    let none = ipvs.listing(&[]).await.unwrap();
    assert_eq!(none, Listing::default(), "a fresh namespace has no services");

    let two = vec![spec.clone()];
    ipvs.reconcile(&none, &two).await.unwrap();
    assert_eq!(
        ipvs.listing(&two).await.unwrap(),
        Listing { services: two.clone(), strays: vec![] }
    );
    // Reconciling from the same stale listing again converges (add is an update).
    ipvs.reconcile(&none, &two).await.unwrap();
    // A second handle knows nothing of what the first did: it reads it all back.
    assert_eq!(Ipvs::open_on::<S>().await.unwrap().listing(&two).await.unwrap().services, two);
    let on_the_kernel = ipvs.kernel_services().await.unwrap();
    assert_eq!(on_the_kernel.len(), 1);
    assert_eq!((on_the_kernel[0].fwmark, on_the_kernel[0].addr), (FWMARK_BASE, None));

    // A mark of cplb's that is no longer wanted goes; what cplbd never creates stays,
    // even on its VIP: a TCP service there (a keepalived's, an operator's), a mark
    // outside cplb's range, a service on another VIP.
    let legacy = ServiceSpec { fwmark: 0, ..spec.clone() };
    let stray = ServiceSpec { fwmark: FWMARK_BASE + 1, ..spec.clone() };
    let foreign_mark = ServiceSpec { fwmark: 7, ..spec.clone() };
    let other_vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 201));
    let foreign_vip =
        ServiceSpec { key: ServiceKey { vip: other_vip, port: 6443 }, fwmark: 0, ..spec.clone() };
    for s in [&legacy, &stray, &foreign_mark, &foreign_vip] {
        ipvs.apply(&[Change::AddService(s.clone())]).await.unwrap();
    }
    let found = ipvs.listing(&two).await.unwrap();
    assert_eq!(found.services, std::slice::from_ref(&spec));
    assert_eq!(
        found.strays,
        [ServiceRef {
            key: ServiceKey { vip: Ipv4Addr::UNSPECIFIED.into(), port: 0 },
            fwmark: FWMARK_BASE + 1
        }]
    );
    ipvs.reconcile(&found, &two).await.unwrap();
    assert_eq!(
        ipvs.listing(&two).await.unwrap(),
        Listing { services: two.clone(), strays: vec![] }
    );
    let left: Vec<(u32, Option<SocketAddr>)> =
        ipvs.kernel_services().await.unwrap().iter().map(|s| (s.fwmark, s.addr)).collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        left.contains(&(7, None))
            && left.contains(&(0, Some(SocketAddr::new(vip, 6443))))
            && left.contains(&(0, Some(SocketAddr::new(other_vip, 6443))))
    );
    ipvs.remove_service(ServiceRef::from(&foreign_mark)).await.unwrap();
    assert_eq!(ipvs.remove_services_for(&[vip, other_vip]).await.unwrap(), 2);

    let one = vec![ServiceSpec {
        algo: LbAlgo::Wlc,
        persistence_secs: 0,
        real_servers: vec![rs(12)],
        ..spec.clone()
    }];
    let current = ipvs.listing(&one).await.unwrap();
    ipvs.reconcile(&current, &one).await.unwrap();
    assert_eq!(ipvs.listing(&one).await.unwrap().services, one);
    let current = ipvs.listing(&[]).await.unwrap();
    assert_eq!(current.strays.len(), 1, "unwanted now");
    ipvs.reconcile(&current, &[]).await.unwrap();
    assert!(ipvs.kernel_services().await.unwrap().is_empty());

    // Every scheduler k0s accepts, with every forwarding kind, is created and read back.
    let algos = [
        LbAlgo::Rr,
        LbAlgo::Wrr,
        LbAlgo::Lc,
        LbAlgo::Wlc,
        LbAlgo::Lblc,
        LbAlgo::Dh,
        LbAlgo::Sh,
        LbAlgo::Sed,
        LbAlgo::Nq,
    ];
    for algo in algos {
        for forwarding in [LbKind::Dr, LbKind::Nat, LbKind::Tun] {
            let want = vec![ServiceSpec {
                key,
                fwmark: FWMARK_BASE,
                algo,
                forwarding,
                persistence_secs: 60,
                real_servers: vec![rs(11), RealServer { weight: 3, ..rs(12) }],
            }];
            ipvs.reconcile(&Listing::default(), &want).await.unwrap();
            assert_eq!(
                Ipvs::open_on::<S>().await.unwrap().listing(&want).await.unwrap().services,
                want,
                "{algo:?} {forwarding:?}"
            );
            let current = ipvs.listing(&[]).await.unwrap();
            ipvs.reconcile(&current, &[]).await.unwrap();
            assert!(ipvs.kernel_services().await.unwrap().is_empty());
        }
    }
}

/// Changes for other drivers never reach the kernel (the family is not even resolved).
#[test]
fn apply_ignores_other_drivers_changes() {
    let runtime = runtime();
    runtime.block_on(async {
        let mut nl = Ipvs::connect::<TokioSocket>().unwrap();
        let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
        let changes = [
            Change::SetProxy { port: 6444, backends: vec![SocketAddr::new(vip, 6443)] },
            Change::StopProxy,
            Change::AddRedirect(SocketAddr::new(vip, 6443)),
            Change::RemoveRedirect(SocketAddr::new(vip, 6443)),
            Change::AddLocalVip(vip),
            Change::RemoveLocalVip(vip),
        ];
        nl.apply(&changes).await.unwrap();
        assert_eq!(nl.requests, 0, "nothing sent");
    });
}

/// A family no kernel has. (Family names are at most GENL_NAMSIZ - 1 = 15 bytes, or
/// EINVAL.)
#[derive(Debug)]
struct NoSuchFamily;

impl GenlFamily for NoSuchFamily {
    fn family_name() -> &'static str {
        "cplb-nosuch"
    }

    fn command(&self) -> u8 {
        0
    }

    fn version(&self) -> u8 {
        1
    }
}

/// The connection against the real kernel, through the controller family that every
/// kernel has: a request answered by one reply, an errno, and a multi-part dump.
#[test]
fn generic_netlink_roundtrips_with_the_kernel() {
    let runtime = runtime();
    runtime.block_on(async {
        let mut nl = Ipvs::connect::<TokioSocket>().unwrap();
        // GENL_ID_CTRL: nlctrl's fixed id.
        assert_eq!(nl.handle.resolve_family::<GenlCtrl>().await.unwrap().id, 16);
        match nl.handle.resolve_family::<NoSuchFamily>().await {
            Err(GenetlinkError::NetlinkError(e)) => assert_eq!(e.raw_os_error(), Some(ENOENT)),
            other => panic!("resolving a family the kernel lacks: {other:?}"),
        }
        // CTRL_CMD_GETFAMILY as a dump lists every family, nlctrl among them.
        let request = GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![] };
        let outcome = nl
            .exchange(request, NLM_F_REQUEST | NLM_F_DUMP, || "family dump".to_owned())
            .await
            .unwrap();
        let Outcome::Ok(replies) = outcome else {
            panic!("family dump refused: {outcome:?}");
        };
        let names: Vec<&str> = replies
            .iter()
            .flat_map(|r| &r.nlas)
            .filter_map(|nla| match nla {
                GenlCtrlAttrs::FamilyName(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert!(names.contains(&"nlctrl"), "{names:?}");
        assert_eq!(nl.requests, 1);
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn ipvs_live() {
    if effective_uid() != Some(0) {
        eprintln!("skipped: ipvs_live: not root (IPVS commands need CAP_NET_ADMIN)");
        return;
    }
    match runtime().block_on(Ipvs::open()) {
        Err(IpvsError::Unavailable { reason }) => {
            eprintln!("skipped: ipvs_live: {reason}");
            return;
        }
        Err(e) => panic!("opening IPVS: {e}"),
        Ok(_) => {}
    }
    let netns = TestNetns::create().unwrap();
    let path = netns.path();
    let result = std::thread::spawn(move || {
        // Network namespaces are per thread: only this one enters it, and the sockets
        // it opens (its runtime runs on it) belong to it.
        let ns = File::open(&path).unwrap();
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        runtime().block_on(scenario::<TokioSocket>());
    })
    .join();
    drop(netns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
